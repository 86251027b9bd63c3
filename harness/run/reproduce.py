"""`clbench reproduce RUN_ID`: run a stored run's spec again and say, cell by cell, where the scores differ.

This is how a row someone else produced (a submission, a results folder from another lab) is checked: the
run file's digest only shows accidental edits, since whoever edits a file can recompute it. The spec (model,
stream, budgets, method and its config, seed) is executed afresh in a temporary folder (stage 0 included,
with the stored run's CPU thread count), through the same path as `clbench run`, and every score of every
stage is compared with the stored one. On the same machine and thread count every cell is expected to agree:
bit-equal, or, for log-probabilities, within float32 rounding (a relative 1e-5: CPU kernels may sum in
another order from one process to the next); elsewhere a greedy decode can also flip a token, so each
difference is shown beside the cell's item standard error (sd of its per-item values / sqrt(n)).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import tempfile
from pathlib import Path

from ..core.errors import ConfigError
from ..core.json_file import read_json
from ..spec.spec import RunSpec, check_method_file
from ..store.store import Store
from ..store.submissions import moved_copy
from ..store.validate import spec_problem

SAME = "same machine and thread count: every cell should agree"
ROUNDING = 1e-5  # relative: float32 sums in another order
NOISE_SE = 2.0  # a difference beyond this many item standard errors is more than floating-point noise
ITEM_COLUMN = {"score": ("correct", "passed", "stopped"), "gold_logprob": ("gold_logprob",),
               "reference_logprob": ("reference_logprob",), "logprob": ("logprob",)}


def cells(stage: dict) -> dict[str, tuple[float, float | None]]:
    """{'scores.stem.recall.score': (value, item standard error or None)} of every numeric score of a stage
    (timings left out)."""
    out = {}
    for group in ("scores", "probes"):
        for task, views in (stage.get(group) or {}).items():
            for view, record in (views or {}).items():
                if not isinstance(record, dict):
                    continue
                items = record.get("items") if isinstance(record.get("items"), dict) else {}
                for key, value in record.items():
                    if isinstance(value, bool) or not isinstance(value, (int, float)) or "seconds" in key:
                        continue
                    column = next((items[c] for c in ITEM_COLUMN.get(key, ()) if c in items), None)
                    out[f"{group}.{task}.{view}.{key}"] = (float(value), _se(column))
    return out


def _se(column) -> float | None:
    if not column or len(column) < 2:
        return None
    mean = sum(column) / len(column)
    return math.sqrt(sum((x - mean) ** 2 for x in column) / (len(column) - 1) / len(column))


def compare(stored: dict, fresh: dict) -> list[dict]:
    """One entry per cell of every stage (and of the unprepared base model's scores): where, stored, now, se."""
    rows = []
    pairs = list(zip(stored["stages"], fresh["stages"]))
    if "base_model" in stored or "base_model" in fresh:
        pairs.append((stored.get("base_model") or {}, fresh.get("base_model") or {}))
    for i, (a, b) in enumerate(pairs):
        where = f"stage {i}" if i < len(stored["stages"]) else "base model"
        old, new = cells(a), cells(b)
        for key in sorted(old.keys() | new.keys()):
            (x, se), y = old.get(key, (None, None)), new.get(key, (None, None))[0]
            rows.append({"where": f"{where} {key}", "stored": x, "now": y, "se": se})
    return rows


def _rounding(row: dict) -> bool:
    x, y = row["stored"], row["now"]
    return x is not None and y is not None and abs(x - y) <= ROUNDING * max(1.0, abs(x))


def _shape_problem(stored) -> str | None:
    """Why a stored record cannot be reproduced and compared whatever its scores say, or None."""
    if not isinstance(stored, dict) or not isinstance(stored.get("spec"), dict):
        return "not a run file with a spec"
    if not isinstance(stored.get("stages"), list) or not all(isinstance(s, dict) for s in stored["stages"]):
        return "its stages are not a list of objects"
    return None


def _threads(run: dict) -> int | None:
    machine = (run.get("provenance") or {}).get("machine") or {}
    threads = machine.get("torch_threads")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        return None
    return min(threads, os.cpu_count() or 1)  # a stored file cannot oversubscribe this machine


def located(spec: RunSpec, results, path) -> RunSpec:
    """The spec with its method file found, before any compute: where the run read it, or, for a submission's
    copy (<results>/submissions/<name>/<sha12>/<file>.py, an absolute path in the spec) in a results folder that
    has moved since, the same copy under `results`, its SHA-256 checked against the folder's name and, for a
    run that records it, the file's against the run's `method_sha256`."""
    if ".py:" not in spec.method:
        return spec
    file, _, cls = spec.method.rpartition(":")
    if Path(file).is_file():
        check_method_file(spec, str(path))
        return spec
    moved, sha12 = moved_copy(file, results) or (None, None)
    if moved is not None and moved.is_file():
        if hashlib.sha256(moved.read_bytes()).hexdigest()[:12] != sha12:
            raise ConfigError(f"{path}: {moved} is not the file the run read (its SHA-256 does not begin with "
                              f"{sha12}); restore that submission's copy")
        found = dataclasses.replace(spec, method=f"{moved.resolve()}:{cls}")
        check_method_file(found, str(path))
        return found
    raise ConfigError(f"{path}: the run's method file {file} is not there" + (f", nor at {moved}" if moved else "")
                      + "; give the results folder that holds it (--results) or put the file back")


def reproduce(run_id: str, results="results", data_dir=None, log=print) -> int:
    """Execute the stored run's spec again and print the cells that differ; 0 when the run reproduces (every
    cell equal, or, on another machine, within NOISE_SE item standard errors), 1 otherwise."""
    import torch

    from ..store.provenance import cpu_label, machine
    from .runner import execute

    if not re.fullmatch(r"[0-9a-f]{16}", run_id):  # a path would be read as <results>/runs/<path>.json
        given = Path(run_id)
        hint = (f"; for that file: clbench reproduce {given.stem} --results {given.parent.parent}"
                if given.suffix == ".json" and given.parent.name == "runs" else "")
        raise ConfigError(f"reproduce {run_id}: not a run id (16 hex digits, the name of <results>/runs/<run_id>.json)"
                          f"{hint}")
    store = Store(results)
    path = store.run_path(run_id)
    stored, why = read_json(path)  # its scores may have been edited (that is what reproduce shows), not its shape
    why = why or _shape_problem(stored)
    spec, why = (None, why) if why else spec_problem(stored)
    if why:
        raise ConfigError(f"{path}: cannot reproduce: {why}")
    if stored.get("status") != "finished":
        raise ConfigError(f"{path}: the run is {stored.get('status')!r}, not finished; nothing to compare")
    spec = located(spec, results, path)
    if threads := _threads(stored):
        torch.set_num_threads(threads)
    log(f"reproducing {spec.label} seed {spec.seed} ({run_id}) with {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory(prefix="clbench-reproduce-") as tmp:
        fresh = execute(spec, Store(tmp), data_dir=data_dir, sweep=stored.get("sweep", ""),
                        protocol=stored.get("protocol"))
    if fresh["status"] != "finished":
        log(f"the run failed this time: {fresh['error']}")
        return 1
    was, now = (stored.get("provenance") or {}).get("machine") or {}, machine(fresh.get("device", "cpu"))
    # the CPU's features too: a virtual machine names CPUs of other generations (other float kernels) alike; a run
    # stored before they were recorded is checked as from another machine
    same = all(was.get(k) == now.get(k) for k in ("cpu", "cpu_features", "gpu", "torch_threads")) and \
        stored.get("precision") == fresh.get("precision")
    rows = compare(stored, fresh)
    equal = [r for r in rows if r["stored"] == r["now"]]
    differ = [r for r in rows if r["stored"] != r["now"] and not _rounding(r)]
    beyond = [r for r in differ if r["stored"] is None or r["now"] is None or r["se"] is None
              or abs(r["now"] - r["stored"]) > NOISE_SE * max(r["se"], 1e-12)]
    for r in differ:
        se = "–" if r["se"] is None else f"{r['se']:.4g}"
        log(f"  {r['where']}: stored {r['stored']!r}, now {r['now']!r} (item SE {se})")
    log(f"{len(rows)} cells: {len(equal)} bit-equal, {len(rows) - len(equal) - len(differ)} within float32 rounding, "
        f"{len(differ)} differ, {len(beyond)} by more than "
        f"{NOISE_SE:g} item standard errors (or without one); "
        + (SAME if same else f"another machine or thread count ({cpu_label(was)}, {was.get('torch_threads')} "
                              f"threads then; {cpu_label(now)}, {now.get('torch_threads')} now)"))
    return 0 if not differ or (not same and not beyond) else 1
