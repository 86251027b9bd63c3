"""One run, top to bottom: load data, load the model, score stage 0, then train and score each task."""
from __future__ import annotations

import random
import resource
import time
import traceback
from datetime import datetime, timezone

import torch
from tqdm.auto import tqdm

from methods.base import StageContext, count_parameters
from methods.registry import resolve_method
from tasks.chat import encode_example
from tasks.data import DataSource
from tasks.registry import load_stream

from . import models
from .evaluation import evaluate
from .precision import pick_device, pick_precision
from .provenance import git_commit, machine, package_versions
from .spec import RunSpec, content_hash
from .store import SCHEMA_VERSION, Store
from .training import train_task
from .typed import build


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def stage0_key(spec: RunSpec, precision: str, checksums: dict) -> str:
    """Identity of the base-model evaluation: model, tasks, items, scorer, budget, precision."""
    return content_hash({"protocol": spec.protocol(), "precision": precision, "data": checksums})


def execute(spec: RunSpec, store: Store, data_dir: str | None = None, sweep: str = "") -> dict:
    """Run one spec and store it; a failure is stored as a failed result, never raised."""
    result = {"schema_version": SCHEMA_VERSION, "run_id": spec.run_id, "sweep": sweep, "spec": spec.as_dict(),
              "status": "running", "error": None, "traceback": None, "stages": [], "started_at": _now(),
              "provenance": {"packages": package_versions(), "git": git_commit()}}
    try:
        _execute(spec, store, data_dir, result)
        result["status"] = "finished"
    except Exception as e:  # stored with its traceback; the sweep goes on
        result["status"] = "failed"
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()
        tqdm.write(f"run {spec.label} seed {spec.seed} failed: {result['error']}")
    result["finished_at"] = _now()
    store.save_run(result)
    return result


def _execute(spec: RunSpec, store: Store, data_dir, result: dict) -> None:
    source = DataSource(data_dir)
    budget = spec.budget_config()
    tasks, probes = load_stream(source, list(spec.stream), list(spec.probes), budget, spec.data_seed)
    method_cls = resolve_method(spec.method)
    method = method_cls(build(method_cls.Config, spec.method_config, "method_config"))
    device = pick_device(spec.device)
    precision, evidence = pick_precision(spec.precision, device)
    result["provenance"].update(data_checksums=dict(sorted(source.checksums.items())), machine=machine(device))
    result.update(device=device, precision=precision, precision_evidence=evidence)

    seed_everything(spec.seed)
    t0 = time.perf_counter()
    model, tok = models.load(spec.model)
    model.to(device)
    result["model_load_seconds"] = time.perf_counter() - t0
    eval_kw = dict(scorer=spec.scorer, budget=budget, device=device, precision=precision)

    key = stage0_key(spec, precision, result["provenance"]["data_checksums"])
    base = store.load_stage0(key)
    if base is None:
        base = evaluate(model, tok, tasks, probes, desc=f"{spec.label} s{spec.seed} eval base", **eval_kw)
        store.save_stage0(key, base)
    result["stage0_key"] = key
    result["stages"].append({"stage": 0, "trained_on": None, **base})

    ctx = StageContext(stage=0, task=None, seen=[], device=device, seed=spec.seed)
    model = method.prepare(model, ctx)
    trainable, total = count_parameters(model)
    result.update(trainable_params=trainable, total_params=total)
    store.save_run(result)

    for stage, task in enumerate(tasks, start=1):
        ctx = StageContext(stage=stage, task=task, seen=tasks[: stage - 1], device=device, seed=spec.seed)
        pairs = method.train_examples([i.training_pair() for i in task.learn], ctx)
        encoded = [encode_example(tok, p["user"], p["reply"], budget.max_length) for p in pairs]
        train = train_task(model, method, encoded, ctx, epochs=budget.epochs, batch_size=budget.batch_size,
                           pad_id=tok.pad_token_id, device=device, precision=precision,
                           seed=spec.seed * 1000 + stage, desc=f"{spec.label} s{spec.seed} train {task.name}")
        model = method.after_task(model, ctx)
        scores = evaluate(model, tok, tasks, probes, desc=f"{spec.label} s{spec.seed} eval after {task.name}", **eval_kw)
        result["stages"].append({"stage": stage, "trained_on": task.name, "train": train, **scores,
                                 "peak_memory_mb": _peak_memory_mb(device)})
        store.save_run(result)
