"""A domain as data: one YAML file names its items' source, how a row becomes an item, how a reply is
scored and how the learn and transfer items are drawn (docs/adding-a-domain.md). The built-in domains
are such files (tasks/domains/); a stream names them, or a user's file by its path.

Everything a file says is checked here, before any data is read or model loaded: an error names the
file and the field, and says what to write instead.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

from harness.core.errors import ConfigError, DataError
from harness.core.suggest import did_you_mean
from harness.core.yaml_file import read_yaml

from .answers import SCORERS

KINDS = {"multiple_choice": "mc", "generation": "gen", "code": "code"}  # kind -> Task.kind
KEYS = ("name", "kind", "description", "source", "fields", "template", "scorer", "heldout")
FIELDS = {  # per kind: item field -> required
    "multiple_choice": {"question": True, "options": True, "answer": True},
    "generation": {"prompt": True, "reference": True},
    "code": {"prompt": True, "reference": True, "tests": True, "setup": False},
}
TRACE_FIELDS = {"prompt": "prompt", "reference": "answer"}  # TRACE rows are {"prompt", "answer"}
DATA_PREFIX = "data:"  # a file in the clbench data folder, checked against its manifest
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
FORMATS = (".jsonl", ".json", ".csv", ".parquet")


@dataclasses.dataclass(frozen=True)
class FileRef:
    """One file of rows: a path (in the data folder when `in_data`), or a hub dataset split."""

    path: str = ""
    in_data: bool = False
    hub: str = ""
    hub_name: str | None = None
    split: str = ""


@dataclasses.dataclass(frozen=True)
class DomainSpec:
    name: str
    kind: str  # a key of KINDS
    source: str  # mmlu | mbpp | trace | files
    files: dict  # role (learn, transfer, pool) -> FileRef, for trace and files
    reader: dict  # the mmlu or mbpp block, as written
    fields: dict  # item field -> row column (options: a column, or a list of columns)
    template: str | None
    scorer: str | None
    heldout: str | None
    path: Path
    digest: str  # sha256 of the file's bytes, recorded in provenance (the version covers the drawn items instead)

    @property
    def task_kind(self) -> str:
        return KINDS[self.kind]


def is_path(entry: str) -> bool:
    """A stream entry that names a domain file rather than a built-in domain."""
    return entry.endswith((".yaml", ".yml"))


def _need(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {message}")


def _file_ref(value, where: str) -> FileRef:
    if isinstance(value, str) and value.strip():
        if value.startswith(DATA_PREFIX):
            return FileRef(path=value[len(DATA_PREFIX):], in_data=True)
        _need(value.endswith(FORMATS), where, f"'{value}' is not one of {', '.join(FORMATS)}; "
              "give a JSONL, JSON (a list of rows), CSV (with a header) or Parquet file")
        return FileRef(path=value)
    if isinstance(value, dict) and "hub" in value:
        unknown = set(value) - {"hub", "name", "split"}
        _need(not unknown, where, f"unknown key(s) {sorted(unknown)}; a hub source has hub, name, split")
        _need(isinstance(value["hub"], str) and "/" in value["hub"], where + ".hub",
              "give the dataset id as owner/name, e.g. openai/gsm8k")
        _need(isinstance(value.get("split"), str), where + ".split", "give the split to read, e.g. train")
        _need(value.get("name") is None or isinstance(value["name"], str), where + ".name", "must be a string")
        return FileRef(hub=value["hub"], hub_name=value.get("name"), split=value["split"])
    raise ConfigError(f"{where}: expected a file path (relative to the domain file, absolute, or data:<path in "
                      "the data folder) or {hub: owner/name, name: config, split: train}")


def _id_range(value, where: str) -> list[int]:
    _need(isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)
          and 0 <= value[0] < value[1], where, "expected [first, last + 1] task ids, e.g. [601, 975]")
    return value


def _source(raw, where: str) -> tuple[str, dict, dict]:
    """(source kind, files by role, the mmlu/mbpp block)."""
    _need(isinstance(raw, dict) and raw, where, "expected a mapping: learn + transfer files, a pool file, "
          "trace: <TRACE task folder>, or a built-in reader (mmlu, mbpp)")
    keys = set(raw)
    if keys == {"mmlu"}:
        block = raw["mmlu"]
        _need(isinstance(block, dict), where + ".mmlu", "expected {categories, subjects, exclude_subjects, splits}")
        unknown = set(block) - {"categories", "subjects", "exclude_subjects", "splits"}
        _need(not unknown, where + ".mmlu", f"unknown key(s) {sorted(unknown)}; "
              "use categories, subjects, exclude_subjects, splits")
        for key in block:
            _need(isinstance(block[key], list) and all(isinstance(v, str) for v in block[key]), f"{where}.mmlu.{key}",
                  "expected a list of names")
        _need("categories" in block or "subjects" in block, where + ".mmlu", "name categories or subjects to draw from")
        return "mmlu", {}, block
    if keys == {"mbpp"}:
        block = raw["mbpp"]
        _need(isinstance(block, dict) and set(block) in ({"learn", "transfer"}, {"pool"}), where + ".mbpp",
              "expected {learn: [first, end], transfer: [first, end]} or {pool: [first, end]} task id ranges")
        return "mbpp", {}, {k: _id_range(v, f"{where}.mbpp.{k}") for k, v in block.items()}
    if keys == {"trace"}:
        _need(isinstance(raw["trace"], str) and raw["trace"].strip(), where + ".trace",
              "expected the path of a TRACE task folder (holding train.json and test.json)")
        folder = raw["trace"].rstrip("/")
        return "trace", {"learn": FileRef(path=f"{folder}/train.json"),
                         "transfer": FileRef(path=f"{folder}/test.json")}, {}
    if keys in ({"learn", "transfer"}, {"pool"}):
        return "files", {role: _file_ref(raw[role], f"{where}.{role}") for role in sorted(keys)}, {}
    raise ConfigError(f"{where}: has {sorted(keys)}; give either learn and transfer files, one pool file (split by "
                      "the data seed), trace: <folder>, mmlu: {...} or mbpp: {...}")


def _fields(raw, kind: str, source: str, where: str) -> dict:
    wanted = FIELDS[kind]
    if raw is None and source == "trace":
        raw = dict(TRACE_FIELDS)
    if source in ("mmlu", "mbpp"):
        _need(raw is None, where, f"the built-in {source} reader maps its own fields; remove `fields`")
        return {}
    _need(isinstance(raw, dict), where, f"expected a mapping of item field to column: {', '.join(wanted)}")
    unknown = set(raw) - set(wanted)
    _need(not unknown, where, f"unknown field(s) {sorted(unknown)} for kind {kind}; "
          f"{did_you_mean(sorted(unknown)[0], wanted) if unknown else ''}")
    for name, required in wanted.items():
        if name == "options":
            value = raw.get(name)
            _need(isinstance(value, str) or (isinstance(value, list) and 2 <= len(value) <= 10
                                             and all(isinstance(v, str) for v in value)),
                  f"{where}.options", "expected the column holding a list of options, or a list of 2-10 columns")
        elif required or name in raw:
            _need(isinstance(raw.get(name), str), f"{where}.{name}", f"expected the name of the row's column "
                  f"holding the {name}" + (" (required)" if name not in raw else ""))
    return dict(raw)


def parse(data, path: Path, digest: str) -> DomainSpec:
    where = str(path)
    _need(isinstance(data, dict), where, "the top level must be a mapping (name, kind, source, ...)")
    unknown = [k for k in data if k not in KEYS]
    _need(not unknown, f"{where}: {unknown[0] if unknown else ''}", f"unknown key; {did_you_mean(str(unknown[0]), KEYS)}"
          if unknown else "")
    name = data.get("name")
    _need(isinstance(name, str) and NAME.fullmatch(name) is not None, f"{where}: name",
          "expected a lower-case name of letters, digits and _ (at most 40), e.g. math")
    kind = data.get("kind")
    _need(kind in KINDS, f"{where}: kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    source, files, reader = _source(data.get("source"), f"{where}: source")
    _need(source != "mmlu" or kind == "multiple_choice", f"{where}: source.mmlu", "MMLU items are multiple_choice")
    _need(source != "mbpp" or kind == "code", f"{where}: source.mbpp", "MBPP items are code")
    fields = _fields(data.get("fields"), kind, source, f"{where}: fields")
    template = data.get("template")
    _need(template is None or (isinstance(template, str) and template.strip()), f"{where}: template",
          "expected a string with {column} placeholders")
    if template is not None:
        _need(source not in ("mmlu", "mbpp"), f"{where}: template", f"the built-in {source} reader writes its own "
              "prompts; remove `template`")
        braced = re.search(r"\{[^{}]*\}", template)  # {question.__class__}, {0}, {q:>10}: kept as text
        _need(PLACEHOLDER.search(template) is not None, f"{where}: template", "names no {column}" + (
            f" ({braced.group()} is not one: only a plain {{column}} is filled in)" if braced else "") +
            "; without one every item would get the same prompt")
    scorer = data.get("scorer")
    if kind == "generation":
        _need(scorer in SCORERS, f"{where}: scorer", f"{scorer!r} is not a scorer; use one of {', '.join(SCORERS)}")
    else:
        _need(scorer is None, f"{where}: scorer", f"a {kind} domain is scored by its kind; remove `scorer`")
    heldout = data.get("heldout")
    _need(heldout in (None, "humaneval") and (heldout is None or source == "mbpp"), f"{where}: heldout",
          "only the built-in mbpp code domain takes `heldout: humaneval`")
    _need(data.get("description") is None or isinstance(data["description"], str), f"{where}: description",
          "expected a string")
    return DomainSpec(name=name, kind=kind, source=source, files=files, reader=reader, fields=fields,
                      template=template, scorer=scorer, heldout=heldout, path=path, digest=digest)


def read(path: Path) -> DomainSpec:
    """The domain file at `path`, checked; a ConfigError naming the file and field otherwise."""
    try:
        data = read_yaml(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except (OSError, ValueError) as e:  # a NUL byte in the name, a directory, no permission
        raise ConfigError(f"{str(path)!r}: cannot read it as a domain file ({type(e).__name__}: {e})") from None
    return parse(data, path, digest)


def fill(template: str, row: dict, where: str) -> str:
    """The template with each {column} replaced by the row's value (no format specs, attributes or indexing:
    a domain file cannot reach into Python objects)."""
    def value(match):
        column = match.group(1)
        if column not in row:
            raise DataError(f"{where}: template names {{{column}}}, which this row lacks "
                            f"(columns: {', '.join(sorted(map(str, row)))}); fix the template or the row")
        return str(row[column])
    return PLACEHOLDER.sub(value, template)
