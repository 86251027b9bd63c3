"""Check stored run files: readable JSON, our schema version, a digest of the contents that holds (an edit
after writing shows), a well-formed body, and a run_id equal to the hash of the spec it holds (a hand-edited
config cannot pass as the original run)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ..core.errors import ConfigError
from ..core.json_file import read_json
from ..spec.config import MAX_VIEW_ITEMS
from ..spec.spec import RunSpec
from .files import READABLE_SCHEMAS, digest_problem, run_files
from .submissions import SHA256

STATUSES = {"running", "finished", "failed"}
# a view's summary -> the item column it is the mean of; the evaluation averages in float32, so a stored mean may
# differ from float64's by a few 1e-7 (1e-5 relative on a mean near 0): the bounds leave room for more items,
# far below any edit that would move a board
MEANS = {"gold_logprob": "gold_logprob", "reference_logprob": "reference_logprob", "mean_logprob": "logprob",
         "truncated": "truncated", "stop_rate": "stopped", "tail_repetition": "tail_repetition", "mean_length": "length"}
MEAN_TOLERANCE = 1e-4
# a RunSpec field's annotation -> the kind its stored value must be, as said in a problem
SPEC_KINDS = {"str": (str, "a string"), "int": (int, "an integer"), "tuple": (tuple, "a list"),
              "dict": (dict, "an object")}


def spec_problem(data: dict) -> tuple[RunSpec | None, str | None]:
    """(the RunSpec of a run record's `spec`, None), or (None, why) where it is not one every reader can use: a
    field of the wrong kind, text that is not UTF-8, a malformed method hash."""
    try:
        spec = RunSpec.from_dict(data["spec"])
        spec.run_id  # hashing walks the config: one nested deeper than the recursion limit raises here
    except (TypeError, KeyError, ValueError, AttributeError, RecursionError) as e:
        return None, f"spec is not a RunSpec: {type(e).__name__}: {str(e)[:200]}"
    for field in dataclasses.fields(RunSpec):  # the reports group, sort and print by every one of them
        kind, said = SPEC_KINDS[field.type]
        value = getattr(spec, field.name)
        if isinstance(value, bool) or not isinstance(value, kind):
            return None, f"spec.{field.name} is {repr(value)[:80]}, not {said}"
    if bad := [k for k in ("label", "method", "model") if not _utf8(getattr(spec, k))]:
        return None, f"spec.{bad[0]} holds text that is not UTF-8 (a lone surrogate)"
    if bad := [k for k in ("stream", "probes") if not all(isinstance(t, str) for t in getattr(spec, k))]:
        return None, f"spec.{bad[0]} is {list(getattr(spec, bad[0]))!r}, not a list of names"
    if bad := [k for k, v in spec.budget.items() if isinstance(v, (dict, list))]:
        return None, f"spec.budget.{bad[0]} is not a number or a string"
    try:
        spec.budget_config()
    except ConfigError as e:
        return None, f"spec.{e}"
    if spec.method_sha256 and not (isinstance(spec.method_sha256, str) and SHA256.fullmatch(spec.method_sha256)
                                   and ".py:" in spec.method):
        return None, "spec.method_sha256 is set but is not 64 hex digits of a 'file.py:Class' method's file"
    return spec, None


def problem(path: Path) -> tuple[dict | None, str | None]:
    """(data, None) for a good file, (None, reason) for a bad one."""
    data, why = read_json(path)
    if why:
        return None, why
    if not isinstance(data, dict):
        return None, "not a JSON object"
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in READABLE_SCHEMAS:
        return None, (f"schema_version {data.get('schema_version')!r}, this clbench reads {sorted(READABLE_SCHEMAS)}: "
                      "written by another clbench version")
    for key, kind in (("run_id", str), ("spec", dict), ("status", str), ("stages", list), ("provenance", dict)):
        if key not in data:
            return None, f"missing field '{key}'"
        if not isinstance(data[key], kind):
            return None, f"field '{key}' is a {type(data[key]).__name__}, not a {kind.__name__}"
    if why := digest_problem(data):
        return None, f"{why}; `clbench reproduce {data.get('run_id')}` recomputes its results"
    spec, why = spec_problem(data)
    if why:
        return None, why
    spec_id = spec.run_id
    if spec_id != data["run_id"]:
        return None, f"run_id {data['run_id']} does not match the hash of its spec ({spec_id}): edited or corrupt"
    if Path(path).stem != data["run_id"]:
        return None, f"file name does not match run_id {data['run_id']}"
    if data["status"] not in STATUSES:
        return None, f"status {data['status']!r} is not one of {sorted(STATUSES)}"
    stages = data["stages"]
    if len(set(spec.stream)) != len(spec.stream):
        return None, f"spec.stream names a task twice: {list(spec.stream)}"
    if not isinstance(data.get("sweep", ""), str) or not isinstance(data["provenance"].get("machine", {}), dict):
        return None, "field 'sweep' must be a string and provenance.machine an object"
    if not _utf8(data.get("sweep", "")):
        return None, "sweep is not UTF-8 text"
    cap = view_cap(spec)  # the most items a view of this run can hold
    if data["status"] == "finished" and len(stages) != len(spec.stream) + 1:
        return None, f"finished with {len(stages)} stages, its stream needs {len(spec.stream) + 1}"
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            return None, f"stages[{i}] is not an object"
        try:
            for task in spec.stream:
                score = stage["scores"][task]["recall"]["score"]
                if not (isinstance(score, (int, float)) and 0.0 <= score <= 1.0):
                    return None, f"stages[{i}].scores.{task}.recall.score is {score!r}, not in [0, 1]"
        except (KeyError, TypeError, IndexError):
            return None, f"stages[{i}] lacks scores for every task of its stream"
        if data["schema_version"] >= 2 and (why := items_problem(stage, f"stages[{i}]", cap)
                                            or uids_problem(stage, stages[0], f"stages[{i}]")):
            return None, why
    if (base := data.get("base_model")) is not None:  # the unprepared model's scores, read as stage 0's
        if not isinstance(base, dict):
            return None, "base_model is not an object"
        if data["schema_version"] >= 2 and stages and (why := items_problem(base, "base_model", cap)
                                                       or uids_problem(base, stages[0], "base_model")):
            return None, why
    info = data.get("method_info", {})
    if not isinstance(info, dict) or not all(isinstance(info.get(k, ""), str) for k in ("description", "citation")):
        return None, "field 'method_info' must be an object with string 'description' and 'citation'"
    if data["status"] == "finished" and not data["provenance"].get("data_checksums"):
        return None, "finished run without data checksums in its provenance"
    if "compute" in data and (why := compute_problem(data["compute"])):
        return None, why
    return data, report_problem(data)


def report_problem(data: dict) -> str | None:
    """What keeps the reports from reading a structurally valid run: the fields the leaderboard reads, of
    the wrong type, or metrics that cannot be computed from it (a file that passes validate must not crash
    `clbench leaderboard`)."""
    protocol = data.get("protocol")
    if protocol is not None and not (isinstance(protocol, dict) and isinstance(protocol.get("version", ""), str)):
        return "field 'protocol' must be an object with a string 'version'"
    for key in ("trainable_params", "total_params"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**15):
            return f"field '{key}' is {value!r}, not a count"
    if (data.get("trainable_params") or 0) > (data.get("total_params") or math.inf):
        return "field 'trainable_params' exceeds 'total_params'"
    packages = (data["provenance"].get("packages") or {})
    if not isinstance(packages, dict) or not all(isinstance(v, (str, type(None))) for v in packages.values()):
        return "provenance.packages must map package names to version strings"
    if data["status"] != "finished":
        return None
    from ..metrics.run_metrics import run_row

    try:
        run_row(data)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError) as e:
        return f"its metrics cannot be computed from it: {type(e).__name__}: {e}"
    return None


def view_cap(spec: RunSpec) -> int:
    """The most items a view of the spec's runs can hold: its budget's largest item count (every view is drawn
    to one of them; lm-eval's views store no items)."""
    budget = spec.budget_config()
    return max(budget.learn_items, budget.transfer_items, budget.code_items, budget.heldout_items,
               budget.general_items, budget.stop_prompts, budget.instruct_items)


def items_problem(stage: dict, where: str, cap: int = MAX_VIEW_ITEMS) -> str | None:
    """What is wrong with a stage's per-item records (schema_version 2): every task and probe view that
    has a score has `items`, columns of one length n (at most `cap`) with distinct string uids, and a score
    that is their mean."""
    for group in ("scores", "probes"):
        if not isinstance(stage.get(group, {}), dict):
            return f"{where}.{group} is not an object"
        for task, views in stage.get(group, {}).items():
            if not isinstance(views, dict):
                return f"{where}.{group}.{task} is not an object"
            for view, record in views.items():
                if not isinstance(record, dict):
                    return f"{where}.{group}.{task}.{view} is not an object"
                if view == "lm_eval":
                    continue
                at = f"{where}.{group}.{task}.{view}"
                items = record.get("items")
                if not isinstance(items, dict) or not isinstance(items.get("uid"), list):
                    return f"{at} has no per-item records (items.uid)"
                n = len(items["uid"])
                if n > cap:  # the board's bootstrap draws replicates x n: a padded view would hang or exhaust it
                    return f"{at} holds {n} items, more than its budget draws for any view ({cap})"
                if not all(isinstance(u, str) for u in items["uid"]):
                    return f"{at}.items.uid holds a non-string"
                if len(set(items["uid"])) != n:
                    return f"{at}.items.uid names an item twice"
                for name, column in items.items():
                    if not isinstance(column, list) or len(column) != n:
                        return f"{at}.items.{name} is not a list of {n} values"
                    if name != "uid" and not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 and math.isfinite(v) for v in column):
                        return f"{at}.items.{name} holds a non-number (or NaN, or an infinity)"
                if record.get("n", n) != n:
                    return f"{at}: n is {record.get('n')!r} but {n} items are recorded"
                for field, column in MEANS.items():  # what the metrics read: the mean of what the items say
                    if (field in record) != (column in items):
                        return (f"{at} has items.{column} but no {field} (the mean the reports read)"
                                if column in items else f"{at} has {field} but no items.{column}")
                    value = record.get(field)
                    if field in record and n and not (
                            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                            and math.isclose(value, sum(items[column]) / n, rel_tol=MEAN_TOLERANCE, abs_tol=1e-5)):
                        return (f"{at}.{field} is {value!r}, not the mean of its items' {column} "
                                f"({sum(items[column]) / n!r})")
                outcome = next((items[k] for k in ("correct", "passed") if k in items), None)
                score = record.get("score")
                if outcome is not None and n and isinstance(score, (int, float)) and abs(sum(outcome) / n - score) > 1e-9:
                    return f"{at}: score {score!r} is not the mean of its per-item outcomes ({sum(outcome) / n!r})"
    return None


def uids_problem(stage: dict, first: dict, where: str) -> str | None:
    """A view whose items differ from the same view's at stage 0: every stage answers the same items (the
    bootstrap pairs them; one changed uid dropped every interval of the board's section, unsaid)."""
    for group in ("scores", "probes"):
        for task, views in stage.get(group, {}).items():
            for view, record in views.items():
                other = ((first.get(group) or {}).get(task) or {}).get(view)
                if isinstance(record, dict) and isinstance(other, dict) and "items" in record and "items" in other \
                        and record["items"]["uid"] != other["items"].get("uid"):
                    return f"{where}.{group}.{task}.{view}: its items are not stage 0's (items.uid differs)"
    return None


def compute_problem(c) -> str | None:
    """What is wrong with a run's `compute` totals (files written before compute accounting have none)."""
    if not isinstance(c, dict):
        return f"compute is a {type(c).__name__}, not an object"
    if not c:
        return None  # no trained stage yet
    for key in ("train_seconds", "eval_seconds", "peak_memory_mb", "train_tokens", "device_count", "stages"):
        value = c.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e15:
            return f"compute.{key} is {value!r}, not a positive number"
    hours = [k for k in ("gpu_hours", "cpu_hours") if c.get(k) is not None]
    if len(hours) != 1 or not isinstance(c[hours[0]], (int, float)) or not 0 < c[hours[0]] < 1e15:
        return f"compute needs exactly one positive gpu_hours or cpu_hours, has {hours}"
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def validate_dir(results_dir) -> tuple[list[tuple[Path, str]], int]:
    """(each run file that fails a check, with why; how many run files there are)."""
    files = run_files(results_dir)
    return [(p, why) for p, named in files for why in [named or problem(p)[1]] if why], len(files)
