"""Ray scheduling: every RunSpec is one Ray task. This module and harness.run.sharded (a run's training over
several Ray Train workers) are the only ones that import Ray.

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

from ..core.errors import ConfigError
from ..run.runner import failed_result
from ..spec.spec import RunSpec
from ..store.store import Store

MAX_RETRIES = 2  # Ray re-runs a task whose worker process or node died this many times


def _stage0_task(spec_dict: dict, store_root: str, data_dir):
    from ..run.runner import ensure_stage0  # imported on the worker

    return ensure_stage0(RunSpec.from_dict(spec_dict), Store(store_root), data_dir)


def _run_task(spec_dict: dict, store_root: str, data_dir, sweep: str, protocol: dict | None, save_models: bool,
              tracking: str = "none", sharding: dict | None = None, stage_seconds: float | None = None):
    import ray

    from ..run.runner import execute  # imported on the worker

    node = ray.get_runtime_context().get_node_id()
    return execute(RunSpec.from_dict(spec_dict), Store(store_root), data_dir=data_dir, sweep=sweep, node=node,
                   protocol=protocol, save_models=save_models, tracking=tracking, sharding=sharding,
                   stage_seconds=stage_seconds)


def _resources(spec: RunSpec, num_cpus: int, num_gpus: float, memory_gb: float, cluster_gpus: float) -> dict:
    """What a run asks Ray for. `device: auto` asks for a GPU where the cluster has any: Ray leaves every GPU of a
    node visible to a task that asked for none, where the run's `auto` would pick one that no request holds
    (each run of a sweep on cuda:0 at once)."""
    from ..spec import sandbox

    needs_gpu = sandbox.info(spec.method, spec.method_config)["needs"]["gpu"]
    on_gpu = spec.device == "cuda" or (spec.device == "auto" and cluster_gpus > 0)
    gpus = num_gpus or (1 if on_gpu or needs_gpu else 0)
    request = {"num_cpus": num_cpus, "num_gpus": gpus}
    if memory_gb:
        request["memory"] = int(memory_gb * 2**30)
    return request


def _with_workers(request: dict, workers: int) -> dict:
    """All that a run holds at once when its training is sharded over `workers` Ray Train workers, each asking
    for the run's num_cpus and, on a GPU run, one GPU (harness.run.sharded)."""
    if workers == 1:
        return request
    return {**request, "num_cpus": request["num_cpus"] * (1 + workers),
            "num_gpus": request["num_gpus"] + (workers if request["num_gpus"] else 0)}


def local_cpus(num_cpus: int, workers: int, cores: int) -> int:
    """The CPUs a local Ray instance is started with: the machine's cores, or more where one run (and, when it is
    sharded, its workers: harness.run.sharded) asks for more, so that it can start at all."""
    return max(_with_workers({"num_cpus": num_cpus, "num_gpus": 0}, workers)["num_cpus"], cores)


def sharded_in_flight(requests: list[dict], workers: int, cluster_gpus: float) -> int | None:
    """How many sharded GPU runs may be submitted at once (None: no limit). A run's own task keeps its GPU while
    it waits for its workers' (Ray lends a blocked task's CPUs, not its GPUs), so with every run submitted at
    once, runs that hold a GPU each could leave too few for any run's workers, and each would wait for ever
    (8 GPUs, 4 workers a run: five runs). As many runs as the cluster's GPUs hold whole, the run and its workers'."""
    if workers == 1 or not any(r["num_gpus"] for r in requests):
        return None
    return max(1, int(cluster_gpus // max(_with_workers(r, workers)["num_gpus"] for r in requests)))


def check_resources(requests: list[dict], cluster: dict) -> None:
    """A ConfigError naming the `resources` field when a run asks for more than the whole Ray cluster has: Ray
    would queue such a task forever (`device: cuda` on a machine without a GPU, `memory_gb: 100000`)."""
    have = {"num_cpus": cluster.get("CPU", 0), "num_gpus": cluster.get("GPU", 0), "memory": cluster.get("memory", 0)}
    fields = {"num_cpus": "resources.num_cpus", "num_gpus": "resources.num_gpus (or device: cuda, or a method that "
              "needs a GPU)", "memory": "resources.memory_gb"}
    for request in requests:
        for key, wanted in request.items():
            if wanted and wanted > have[key]:
                unit = (lambda x: f"{x / 2**30:.1f} GB") if key == "memory" else (lambda x: f"{x:g}")
                raise ConfigError(f"{fields[key]}: a run asks for {unit(wanted)} but the Ray cluster has "
                                  f"{unit(have[key])} in all, so it could never start; lower it (or add nodes)")


def _progress(store: Store, spec: RunSpec) -> dict | None:
    """The stored file of a run a worker has started, None for one still queued."""
    try:
        data = json.loads(store.run_path(spec.run_id).read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("status") == "running" else None


def stage_line(spec: RunSpec, stage: dict) -> str:
    recall = ", ".join(f"{t} {v['recall']['score']:.2f}" for t, v in stage["scores"].items())
    train = stage["train"]
    return (f"[{spec.label} seed {spec.seed}] stage {stage['stage']}/{len(spec.stream)} {stage['trained_on']}: "
            f"train {train['seconds']:.0f}s (loss {train['loss_first']:.2f} -> {train['loss_last']:.2f}), "
            f"eval {stage['seconds']:.0f}s; recall {recall}")


def run_specs(specs: list[RunSpec], store: Store, *, data_dir=None, sweep: str = "", address: str | None = None,
              num_cpus: int = 1, num_gpus: float = 0, memory_gb: float = 0, protocol: dict | None = None,
              save_models: bool = False, tracking: str = "none", workers: int = 1,
              activation_checkpointing: bool = False, stage_seconds: float | None = None) -> list[dict]:
    import ray

    from ..spec import sandbox

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local use: no token auth between driver and workers
    started_here = not ray.is_initialized()
    if started_here:
        # workers print one line per stage instead of progress bars; the driver shows the bar
        from tasks.data import ALLOW_UNLISTED

        runtime_env = {"env_vars": {"TQDM_DISABLE": "1", "RAY_AUTH_MODE": os.environ["RAY_AUTH_MODE"],
                                    **{k: os.environ[k] for k in (ALLOW_UNLISTED,) if k in os.environ}}}
        if address:
            ray.init(address=address, runtime_env=runtime_env)
        else:
            # "local": a new instance of our own, never one that another sweep or `ray start` left running
            ray.init(address="local", num_cpus=local_cpus(num_cpus, workers, os.cpu_count() or 1),
                     include_dashboard=False, runtime_env=runtime_env)
    try:
        # what each run asks Ray for, once (a method clbench did not write is described in a child to know it)
        cluster = ray.cluster_resources()
        requests = {s.run_id: _resources(s, num_cpus, num_gpus, memory_gb, cluster.get("GPU", 0)) for s in specs}
        check_resources([_with_workers(r, workers) for r in requests.values()], cluster)
        sharding = ({"workers": workers, "threads": num_cpus, "activation_checkpointing": activation_checkpointing}
                    if workers > 1 else None)
        stage0 = ray.remote(_stage0_task)
        # a method clbench did not write gets a worker process of its own (max_calls=1), in which it still runs
        # only in a confined child (harness.spec.sandbox)
        run, own_worker = ray.remote(_run_task), ray.remote(max_calls=1)(_run_task)
        root = str(store.root.resolve())
        # stage 0 once per protocol, before the runs that share it
        by_protocol = {}
        for spec in specs:
            by_protocol.setdefault(json.dumps(spec.protocol(), sort_keys=True), spec)
        ray.get([stage0.options(**requests[s.run_id], max_retries=MAX_RETRIES)
                 .remote(s.as_dict(), root, data_dir) for s in by_protocol.values()])

        def submit(s: RunSpec):
            return ((run if sandbox.trusted(s.method) else own_worker)
                    .options(**requests[s.run_id], max_retries=MAX_RETRIES)
                    .remote(s.as_dict(), root, data_dir, sweep, protocol, save_models, tracking, sharding, stage_seconds))

        limit = sharded_in_flight(list(requests.values()), workers, cluster.get("GPU", 0)) or len(specs)
        return _collect({submit(s): s for s in specs[:limit]}, store, ray, specs[limit:], submit)
    finally:
        if started_here:
            ray.shutdown()


def _collect(pending: dict, store: Store, ray, queue: list[RunSpec], submit) -> list[dict]:
    """Store each run's result as it finishes; `queue`: specs not yet submitted, one `submit`ted per finished run."""
    results, failed, shown, queue = [], 0, {}, list(queue)
    # off a terminal (a log file, CI) no bar: the line per stage and per run below is the log
    with tqdm(total=len(pending) + len(queue), desc="runs", unit="run", disable=None) as bar:
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
                _show_stages(spec, result, shown)
                bar.write(f"[{spec.label} seed {spec.seed}] {result['status']}"
                          + (f": {result['error']}" if result["error"] else ""))
                bar.update()
                if queue:
                    queued = queue.pop(0)
                    pending[submit(queued)] = queued
            running = []
            for spec in pending.values():
                data = _progress(store, spec)
                if data is not None:
                    _show_stages(spec, data, shown)
                    running.append(f"{spec.label}/s{spec.seed} stage {len(data['stages']) - 1}/{len(spec.stream)}")
            bar.set_postfix_str(f"done {len(results) - failed}, failed {failed}, running {len(running)}, "
                                f"pending {len(pending) - len(running) + len(queue)}"
                                + (f" | {', '.join(running[:4])}" if running else ""))
    return results


def _show_stages(spec: RunSpec, data: dict, shown: dict) -> None:
    """Print each newly finished stage of a run once; those an earlier attempt stored (a resumed run) say so."""
    for stage in data["stages"][1:]:
        if stage["stage"] > shown.get(spec.run_id, 0):
            stored = stage["stage"] <= (data.get("resumed_from_stage") or 0)
            tqdm.write(stage_line(spec, stage) + (" (stored by an earlier attempt; resumed after it)" if stored else ""))
            shown[spec.run_id] = stage["stage"]
