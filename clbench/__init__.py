"""clbench's Python API: run a sweep, read its runs, build its leaderboard, compute the metrics.

    import clbench

    cfg = clbench.load_config("tiny", sets=["budget.epochs=1"])   # a preset or a YAML path, validated
    clbench.run(cfg, "results/tiny")                               # the sweep, through Ray, resumable
    runs = clbench.load_runs("results/tiny")                       # every valid run file, as dicts
    rows = clbench.leaderboard("results/tiny")                     # one dict per ranked row
    clbench.metrics.bwt(clbench.metrics.matrix(runs[0]["stages"], runs[0]["spec"]["stream"]))

The command line (`clbench run`, `clbench leaderboard`, ...) is built on these same functions; the
implementation lives in the packages `harness`, `methods` and `tasks` (docs/architecture.md).
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from harness.metrics import metrics
from harness.spec.config import SweepConfig

try:
    __version__ = _version("clbench")
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "unknown"

__all__ = ["SweepConfig", "leaderboard", "load_config", "load_runs", "metrics", "run", "run_metrics", "__version__"]


def load_config(preset_or_path: str = "quick", sets: list[str] = ()) -> SweepConfig:
    """A preset by name or a sweep YAML file, with `key=value` overrides, validated (ConfigError naming the field)."""
    from harness.core.errors import ConfigError
    from harness.spec import config

    if not isinstance(preset_or_path, str):
        raise ConfigError(f"load_config: {preset_or_path!r} is not a preset name or a path; give a string")
    if isinstance(sets, str) or not all(isinstance(s, str) for s in sets):
        raise ConfigError(f"load_config: sets={sets!r}; give a list of 'KEY=VALUE' strings, e.g. ['budget.epochs=1']")
    return config.load(preset_or_path, list(sets))


def run(cfg: SweepConfig | str, results: str = "results", address: str | None = None) -> list[dict]:
    """Run (or resume) a sweep; returns the run results it produced now (finished and failed) and writes the
    leaderboard beside them, as `clbench run` does."""
    from harness.report import leaderboard as board
    from harness.sweep.sweep import run_sweep

    out = run_sweep(load_config(cfg) if isinstance(cfg, str) else cfg, results, address=address)
    board.write(results)
    return out


def load_runs(results: str = "results") -> list[dict]:
    """Every valid stored run file of a results folder (a bad one is skipped with a warning naming it); a path that
    is no results folder raises ConfigError saying what it is."""
    from harness.store.store import Store, results_folder

    return Store(results_folder(results)).runs()


def leaderboard(results: str = "results") -> list[dict]:
    """The board's rows for the stored runs: label, method, the headline and every metric with its interval,
    rank band and significance against full, section by section: `protocol` is the section's key (the
    protocol card's version, the stage-0 key and the package stack's hash), `ranked` False for the sections
    the board shows unranked (another protocol than the main one)."""
    from harness.report import leaderboard as board

    return [{**row, "protocol": section["key"], "ranked": section["reason"] is None}
            for section in board.sections(load_runs(results)) for row in section["rows"]]


def run_metrics(run: dict) -> dict:
    """One finished run's metrics (headline, accuracy and log-probability matrices' summaries, probes, costs); a
    run that is not finished (load_runs returns failed and running ones too) raises ConfigError."""
    from harness.core.errors import ConfigError
    from harness.metrics.run_metrics import run_row

    if not isinstance(run, dict) or run.get("status") != "finished":
        status = run.get("status") if isinstance(run, dict) else type(run).__name__
        raise ConfigError(f"run_metrics: the run is {status!r}, not finished; its metrics need every stage")
    return run_row(run)
