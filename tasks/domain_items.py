"""The rows of a domain file's sources, read through the DataSource (checksummed, size-bounded) and made
into items by the file's field mapping and template. A row that does not fit is a DataError naming the
file, the row and the field."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from harness.core.errors import DataError

from . import answers
from .data import DataSource, _digest_rows, _hub_rows, _jsonl, _offline, _text
from .domain_spec import DomainSpec, FileRef, fill
from .items import LETTERS, CodeItem, GenItem, MCItem


def _parse(raw: bytes, path: Path) -> list[dict]:
    suffix = path.suffix
    if suffix == ".jsonl":
        rows = _jsonl(raw, path)
    elif suffix == ".json":
        try:
            rows = json.loads(_text(raw, path))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix the file") from None
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of rows (objects); got a {type(rows).__name__}")
    elif suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(_text(raw, path), newline="")))
    else:  # .parquet (domain_spec admits no other suffix)
        try:
            import pyarrow.parquet as pq

            rows = pq.read_table(io.BytesIO(raw)).to_pylist()
        except ImportError:
            raise DataError(f"{path}: reading Parquet needs pyarrow; pip install pyarrow, or convert to JSONL") from None
        except Exception as e:  # pyarrow raises its own error types for a damaged file
            raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i + 1} is a {type(row).__name__}, not an object of columns; fix that row")
    return rows


def rows(spec: DomainSpec, role: str, ref: FileRef, src: DataSource) -> list[tuple[str, dict]]:
    """(where, row) for every row of one source file of the domain, where = file:row for messages."""
    if ref.hub:
        if _offline():
            raise DataError(f"{spec.path}: source.{role} reads {ref.hub} from the hub, which is off (HF_*_OFFLINE "
                            "set); download it to a local file and name that file instead")
        found = _hub_rows(ref.hub, ref.hub_name, ref.split, src.looked)
        src.checksums[f"hub:{ref.hub}/{ref.hub_name or ''}/{ref.split}"] = _digest_rows(found)
        return [(f"hub:{ref.hub}/{ref.split}#{i}", r) for i, r in enumerate(found)]
    if ref.in_data:
        if src.root is None:
            raise DataError(f"{spec.path}: source.{role} reads data:{ref.path}, but no data folder is set "
                            f"({src.looked}); set $CLBENCH_DATA to the clbench data folder")
        path = src.root / ref.path
        raw = src.read_bytes(ref.path)
    else:
        path = (spec.path.parent / ref.path).resolve()
        raw = src.read_file(path, f"domain:{spec.name}/{role}")
    return [(f"{path}:{i + 1}", r) for i, r in enumerate(_parse(raw, path))]


def _cell(row: dict, column: str, where: str, field: str):
    if column not in row:
        raise DataError(f"{where}: no column '{column}' (fields.{field}); the row has "
                        f"{', '.join(sorted(map(str, row)))}; fix fields.{field} in the domain file or the row")
    return row[column]


def _text_cell(row: dict, column: str, where: str, field: str) -> str:
    value = _cell(row, column, where, field)
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise DataError(f"{where}: column '{column}' (fields.{field}) is a {type(value).__name__}, not text")
    return str(value)


def _prompt(spec: DomainSpec, row: dict, where: str, field: str) -> str:
    return fill(spec.template, row, where) if spec.template else _text_cell(row, spec.fields[field], where, field)


def _mc(spec: DomainSpec, uid: str, row: dict, where: str) -> MCItem:
    column = spec.fields["options"]
    raw = _cell(row, column, where, "options") if isinstance(column, str) else [
        _text_cell(row, c, where, "options") for c in column]
    if not (isinstance(raw, list) and 2 <= len(raw) <= len(LETTERS)
            and all(isinstance(o, (str, int, float)) and not isinstance(o, bool) for o in raw)):
        raise DataError(f"{where}: fields.options must give 2-{len(LETTERS)} options as text; got {raw!r:.80}")
    options = tuple(str(o) for o in raw)
    answer = _cell(row, spec.fields["answer"], where, "answer")
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(options):
        index = answer  # an index, from 0
    elif isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip() in LETTERS[:len(options)]:
        index = LETTERS.index(answer.strip())
    elif isinstance(answer, str) and answer in options:
        index = options.index(answer)
    else:
        raise DataError(f"{where}: answer {answer!r:.60} is neither an option's index (from 0), its letter "
                        f"({LETTERS[0]}-{LETTERS[len(options) - 1]}) nor its text; fix fields.answer or the row")
    return MCItem(uid=uid, question=_prompt(spec, row, where, "question"), options=options, answer=index, source=where)


def _gen(spec: DomainSpec, uid: str, row: dict, where: str) -> GenItem:
    reference = _text_cell(row, spec.fields["reference"], where, "reference")
    answer = answers.answer(spec.scorer, reference)
    if not answer:
        raise DataError(f"{where}: the reference gives no answer for scorer {spec.scorer} ({reference!r:.60}); "
                        "fix the row or pick another scorer")
    return GenItem(uid=uid, prompt=_prompt(spec, row, where, "prompt"), reference=reference, answer=answer,
                   scorer=spec.scorer, source=where)


def _code(spec: DomainSpec, uid: str, row: dict, where: str) -> CodeItem:
    tests = _cell(row, spec.fields["tests"], where, "tests")
    if isinstance(tests, list) and all(isinstance(t, str) for t in tests):
        tests = "\n".join(tests)
    if not isinstance(tests, str) or not tests.strip():
        raise DataError(f"{where}: fields.tests must be Python test code or a list of assert lines")
    setup = _text_cell(row, spec.fields["setup"], where, "setup") if "setup" in spec.fields else ""
    return CodeItem(uid=uid, prompt=_prompt(spec, row, where, "prompt"),
                    reference=_text_cell(row, spec.fields["reference"], where, "reference"),
                    tests="\n".join([setup, tests]) if setup else tests, source=where)


MAKE = {"multiple_choice": _mc, "generation": _gen, "code": _code}


def items(spec: DomainSpec, role: str, src: DataSource) -> list:
    """Every row of one of the domain's sources (learn, transfer or pool) as an item, uid <name>/<role>/<row>."""
    make = MAKE[spec.kind]
    return [make(spec, f"{spec.name}/{role}/{i}", row, where)
            for i, (where, row) in enumerate(rows(spec, role, spec.files[role], src))]
