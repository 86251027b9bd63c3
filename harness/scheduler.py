"""Ray scheduling: every RunSpec is one Ray task. This is the only module that imports Ray.

Without an address a local Ray instance is started for the sweep and shut down after it;
with one (`clbench run --address HOST:PORT`) the sweep joins that cluster. Each run asks for
`num_cpus` (and `num_gpus` when the device is CUDA or the method declares it needs a GPU).
The base-model evaluation (stage 0) of each protocol runs first, once, and every run reuses
it from the store. Results are collected as they finish (`ray.wait`); a run that raises is
stored as failed by the worker, a worker that dies is retried by Ray, and a run whose
retries are spent is stored as failed here. The results folder must be reachable from every
node (one machine, or a shared filesystem).
"""
from __future__ import annotations

import json
import os

from tqdm.auto import tqdm

from .runner import failed_result
from .spec import RunSpec
from .store import Store

MAX_RETRIES = 2  # Ray re-runs a task whose worker process or node died this many times


def _stage0_task(spec_dict: dict, store_root: str, data_dir):
    from .runner import ensure_stage0  # imported on the worker

    return ensure_stage0(RunSpec.from_dict(spec_dict), Store(store_root), data_dir)


def _run_task(spec_dict: dict, store_root: str, data_dir, sweep: str):
    from .runner import execute  # imported on the worker

    return execute(RunSpec.from_dict(spec_dict), Store(store_root), data_dir=data_dir, sweep=sweep)


def _resources(spec: RunSpec, num_cpus: int, num_gpus: float) -> dict:
    from methods.registry import resolve_method

    gpus = num_gpus or (1 if spec.device == "cuda" or resolve_method(spec.method).needs.gpu else 0)
    return {"num_cpus": num_cpus, "num_gpus": gpus}


def _stage_of(store: Store, spec: RunSpec) -> str:
    try:
        data = json.loads(store.run_path(spec.run_id).read_text())
        return f"stage {len(data['stages']) - 1}/{len(spec.stream)}"
    except (OSError, ValueError, KeyError):
        return "starting"


def run_specs(specs: list[RunSpec], store: Store, *, data_dir=None, sweep: str = "", address: str | None = None,
              num_cpus: int = 1, num_gpus: float = 0) -> list[dict]:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local use: no token auth between driver and workers
    started_here = not ray.is_initialized()
    if started_here:
        # workers print one line per stage instead of progress bars; the driver shows the bar
        runtime_env = {"env_vars": {"TQDM_DISABLE": "1", "RAY_AUTH_MODE": os.environ["RAY_AUTH_MODE"]}}
        if address:
            ray.init(address=address, runtime_env=runtime_env)
        else:
            ray.init(num_cpus=max(num_cpus, os.cpu_count() or 1), include_dashboard=False, runtime_env=runtime_env)
    try:
        stage0 = ray.remote(_stage0_task)
        run = ray.remote(_run_task)
        root = str(store.root.resolve())
        # stage 0 once per protocol, before the runs that share it
        by_protocol = {}
        for spec in specs:
            by_protocol.setdefault(json.dumps(spec.protocol(), sort_keys=True), spec)
        ray.get([stage0.options(**_resources(s, num_cpus, num_gpus), max_retries=MAX_RETRIES)
                 .remote(s.as_dict(), root, data_dir) for s in by_protocol.values()])
        pending = {run.options(**_resources(s, num_cpus, num_gpus), max_retries=MAX_RETRIES)
                   .remote(s.as_dict(), root, data_dir, sweep): s for s in specs}
        return _collect(pending, store, ray)
    finally:
        if started_here:
            ray.shutdown()


def _collect(pending: dict, store: Store, ray) -> list[dict]:
    results, failed = [], 0
    with tqdm(total=len(pending), desc="runs", unit="run") as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
            for ref in done:
                spec = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as e:  # retries spent: the worker or its node kept dying
                    result = failed_result(spec, store, f"worker lost after {MAX_RETRIES} retries: "
                                                        f"{type(e).__name__}: {e}")
                store.save_run(result)
                failed += result["status"] != "finished"
                results.append(result)
                bar.update()
            running = ", ".join(f"{s.label}/s{s.seed} {_stage_of(store, s)}" for s in list(pending.values())[:4])
            bar.set_postfix_str(f"done {len(results) - failed}, failed {failed}, pending {len(pending)}"
                                + (f" | {running}" if running else ""))
    return results
