"""The `clbench` command."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ClbenchError


def _run(args) -> int:
    from . import config, leaderboard
    from .sweep import run_sweep

    cfg = config.load(args.config or args.preset)
    cfg = config.with_overrides(cfg, data_dir=args.data, model=args.model)
    if args.model or args.data:
        config.check(cfg, "command line")
    results = run_sweep(cfg, args.results, address=args.address)
    failed = [r for r in results if r["status"] != "finished"]
    path = leaderboard.write(args.results)
    print(f"\n{len(results) - len(failed)} run(s) finished, {len(failed)} failed; results in {args.results}/runs")
    print(path.read_text())
    print(f"leaderboard: {path}")
    return 1 if failed else 0


def _leaderboard(args) -> int:
    from . import leaderboard

    path = leaderboard.write(args.results, args.out)
    print(path.read_text())
    print(f"written: {path}")
    return 0


def _validate(args) -> int:
    from .validate import validate_dir

    bad = validate_dir(args.results)
    for path, why in bad:
        print(f"{path}: {why}")
    total = len(list((Path(args.results) / "runs").glob("*.json")))
    print(f"{total - len(bad)} of {total} run files valid")
    return 1 if bad else 0


def _methods(args) -> int:
    from methods.registry import available, resolve_method

    from .typed import describe

    for name in sorted(available()):
        cls = resolve_method(name)
        print(f"{name}: {cls.description}")
        for field, default, help in describe(cls.Config):
            print(f"    {field} = {default!r}  # {help}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clbench", description="Continual-learning benchmark for LLMs: fine-tune on one "
                                "domain after another, measure what is kept and lost, rank the methods.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a sweep (default: the quick preset on SmolLM2)")
    r.add_argument("--preset", default="quick", help="preset name: quick (default), tiny")
    r.add_argument("--config", help="a sweep YAML file (overrides --preset)")
    r.add_argument("--results", default="results", help="results folder (default: results)")
    r.add_argument("--data", help="dataset folder (default: $CLBENCH_DATA)")
    r.add_argument("--model", help="override the config's model")
    r.add_argument("--address", help="join a running Ray cluster (HOST:PORT); default: start a local Ray instance")
    r.set_defaults(func=_run)
    lb = sub.add_parser("leaderboard", help="rebuild the leaderboard from stored results")
    lb.add_argument("--results", default="results")
    lb.add_argument("--out", help="output folder (default: the results folder)")
    lb.set_defaults(func=_leaderboard)
    v = sub.add_parser("validate", help="check every stored run file and name the bad ones")
    v.add_argument("results", nargs="?", default="results")
    v.set_defaults(func=_validate)
    m = sub.add_parser("methods", help="list every registered method with its config defaults")
    m.set_defaults(func=_methods)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ClbenchError as e:
        print(f"clbench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
