"""Expand a sweep into RunSpecs, check everything that needs no model, skip finished runs, schedule the rest."""
from __future__ import annotations

from tasks.data import DataSource
from tasks.registry import load_stream

from .config import SweepConfig
from .spec import RunSpec, expand
from .store import Store


def preflight(cfg: SweepConfig) -> list[RunSpec]:
    """Everything that can fail without a model: specs, methods, and every dataset row."""
    specs = expand(cfg)
    load_stream(DataSource(cfg.data_dir), list(cfg.stream), list(cfg.probes), specs[0].budget_config(), cfg.data_seed)
    return specs


def pending(specs: list[RunSpec], store: Store, log=print) -> list[RunSpec]:
    todo = []
    for spec in specs:
        done = store.load_run(spec.run_id)
        if done is not None and done.get("status") == "finished":
            log(f"skip {spec.label} seed {spec.seed}: finished in {store.run_path(spec.run_id)}")
        else:
            todo.append(spec)
    return todo


def run_sweep(cfg: SweepConfig, results_dir, address: str | None = None, log=print) -> list[dict]:
    from .scheduler import run_specs

    store = Store(results_dir)
    todo = pending(preflight(cfg), store, log)
    if not todo:
        return []
    return run_specs(todo, store, data_dir=cfg.data_dir, sweep=cfg.name, address=address,
                     num_cpus=cfg.resources.num_cpus, num_gpus=cfg.resources.num_gpus,
                     memory_gb=cfg.resources.memory_gb)
