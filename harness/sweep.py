"""Expand a sweep into RunSpecs, skip the finished ones, run the rest, collect results."""
from __future__ import annotations

from tqdm.auto import tqdm

from tasks.data import DataSource
from tasks.registry import load_stream

from .config import SweepConfig
from .runner import execute
from .spec import expand
from .store import Store


def preflight(cfg: SweepConfig) -> list:
    """Everything that can fail without a model: specs, methods, and every dataset row."""
    specs = expand(cfg)
    load_stream(DataSource(cfg.data_dir), list(cfg.stream), list(cfg.probes), specs[0].budget_config(), cfg.data_seed)
    return specs


def run_sweep(cfg: SweepConfig, results_dir, log=print) -> list[dict]:
    store = Store(results_dir)
    specs = preflight(cfg)
    todo = []
    for spec in specs:
        done = store.load_run(spec.run_id)
        if done is not None and done.get("status") == "finished":
            log(f"skip {spec.label} seed {spec.seed}: finished in {store.run_path(spec.run_id)}")
        else:
            todo.append(spec)
    results = []
    with tqdm(total=len(todo), desc=f"sweep {cfg.name}", unit="run") as bar:
        for spec in todo:
            bar.set_postfix_str(f"{spec.label} seed {spec.seed}")
            results.append(execute(spec, store, data_dir=cfg.data_dir, sweep=cfg.name))
            bar.update()
    return results
