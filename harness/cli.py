"""The `clbench` command."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .core.errors import ClbenchError, ConfigError
from .core.suggest import closest


def _run(args) -> int:
    from .integrations import tracking
    from .report import cost, leaderboard
    from .spec import config
    from .sweep.sweep import run_sweep

    if args.allow_unlisted_data:
        from tasks.data import ALLOW_UNLISTED

        os.environ[ALLOW_UNLISTED] = "1"  # read by every DataSource, the workers' included
    cfg = config.load(args.config or args.preset or "quick", args.set or ())
    if args.limit is not None:
        cfg = config.limited(cfg, args.limit)
    changes = dict(data_dir=args.data, model=args.model, device=args.device,
                   methods=config.methods_named(cfg, args.methods) if args.methods else None)
    if any(v is not None for v in changes.values()) or args.seeds:
        cfg = config.with_overrides(cfg, **changes)
        cfg = config.with_run_seeds(cfg, args.seeds) if args.seeds else cfg
        config.check(cfg, "command line")
    results = run_sweep(cfg, args.results, address=args.address, cost_sources=cost.default_sources())
    failed = [r for r in results if r["status"] != "finished"]
    path = leaderboard.write(args.results)
    print(f"\n{len(results) - len(failed)} run(s) finished, {len(failed)} failed; results in {args.results}/runs")
    print(path.read_text())
    print(f"leaderboard: {path}")
    if cfg.tracking == "tensorboard":
        print(f"tracking: tensorboard --logdir {Path(args.results) / tracking.FOLDER}")
    return 1 if failed else 0


def _tune(args) -> int:
    from .report import cost
    from .spec import config
    from .sweep.tune import progress, tune

    source = str(config.card_path(args.config or args.preset or "quick"))
    cfg = config.with_overrides(config.load(source), data_dir=args.data)
    results = args.results or f"results/tune/{cfg.name}"
    if args.progress:
        path, line = progress(cfg, results, args.methods, cost_sources=cost.default_sources(), source=source)
        print(f"{path.read_text()}\n{line}\nwritten: {path}")
        return 0
    paths = tune(cfg, results, args.methods, address=args.address, cost_sources=cost.default_sources(), source=source)
    print(paths["grid"].read_text())
    print(f"written: {paths['grid']} (and {paths['csv'].name}); the card with the chosen configs: {paths['tuned']}\n"
          f"run it with: clbench run --config {paths['tuned']}")
    return 0


def _existing(results: str) -> str:
    """A results folder the command reads (a typo would read as an empty board)."""
    from .store.store import results_folder

    results_folder(results)
    return results


def _out_folder(out: str | None) -> str | None:
    """An --out folder the command writes into, refused before any work where a file (not a folder) has its name."""
    if out is None:
        return None
    if not out or os.path.islink(out) or (os.path.lexists(out) and not os.path.isdir(out)):
        what = "empty" if not out else "a link" if os.path.islink(out) else "a file"
        raise ConfigError(f"--out {out or repr(out)}: {what}, not a folder; give a folder to write into (it is created "
                          "if missing)")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot make this folder: {e.strerror}; give another") from None
    return out


def _leaderboard(args) -> int:
    from .report import leaderboard

    path = leaderboard.write(_existing(args.results), _out_folder(args.out))
    print(path.read_text())
    print(f"written: {path} (and .csv, .tex, .html beside it)")
    return 0


def _figures(args) -> int:
    from .report import figures

    paths, notes = figures.write(_existing(args.results), _out_folder(args.out))
    for note in notes:
        print(f"note: {note}")
    for path in paths:
        print(f"written: {path}")
    return 0


def _power(args) -> int:
    from .report.power import report

    print(report(_existing(args.results), args.items, args.seeds, args.measure))
    return 0


def _reproduce(args) -> int:
    from .run.reproduce import reproduce

    return reproduce(args.run_id, _existing(args.results), args.data)


def _validate(args) -> int:
    from .store.validate import validate_dir

    results = _existing(args.folder or args.results)
    bad, total = validate_dir(results)
    for path, why in bad:
        print(f"{path}: {why}")
    print(f"{total - len(bad)} of {total} run files valid")
    return 1 if bad else 0


def _export_lm_eval(args) -> int:
    from .integrations.lmeval_bridge import export
    from .spec import config

    cfg = config.with_overrides(config.load(args.config or args.preset or "quick"), data_dir=args.data)
    names = export(cfg, Path(_out_folder(args.out)))
    print(f"wrote {len(names)} lm-eval tasks to {Path(args.out).resolve()}: {', '.join(names)}")
    print(f"score a stage's model (saved by `clbench run --set save_models=true` under "
          f"<results>/models/<run_id>/stage<k>): lm_eval --model hf --model_args pretrained=<results>/models/<run_id>/"
          f"stage<k> --include_path {Path(args.out).resolve()} --tasks {','.join(names)}\n"
          f"the prompts carry {cfg.model}'s chat template already: do not add --apply_chat_template")
    metric = {"cloze_char": "acc_norm", "cloze_raw": "acc", "letter": "acc"}.get(cfg.scorer)
    print(f"the board's scorer is {cfg.scorer}: " + (f"compare lm-eval's {metric}" if metric else
                                                      "lm-eval computes no equivalent (use cloze_char or cloze_raw)"))
    return 0


PLUGIN_TIMEOUT = 60.0  # seconds for `clbench methods` to have an installed plugin described (its import alone)


def _methods(args) -> int:
    from methods.registry import available, resolve_method

    from .core.typed import describe
    from .spec import sandbox

    for name in sorted(available()):
        if sandbox.trusted(name):
            cls = resolve_method(name)
            print(f"{name}: {cls.description}")
            for field, default, help in describe(cls.Config):
                print(f"    {field} = {default!r}  # {help}")
        else:  # an installed plugin: described by a confined child, never imported here; one that fails is named
            try:
                info = sandbox.info(name, timeout=PLUGIN_TIMEOUT)
            except ConfigError as e:
                print(_printable(f"{name}: (plugin) cannot be described: {' '.join(str(e).split())[:300]}"))
                continue
            print(_printable(f"{name}: {info['description']} (plugin)"))
            for field, default in info["config"].items():
                print(_printable(f"    {field} = {default!r}"))
    return 0


def _submit(args) -> int:
    from .submit.submission import submit

    record = submit(args.method, name=args.name, author=args.author, description=args.description,
                    config_path=args.config, preset=args.preset or "quick", results=args.results, replace=args.replace,
                    address=args.address)
    print(Path(record["leaderboard"]).read_text())
    rank = f"rank {record['rank']} of {record['ranked_rows']}" if record["rank"] else "not ranked (no finished run)"
    print(f"submission '{record['name']}': {record['status']}, {rank} under protocol {record['protocol']['name']} "
          f"version {record['protocol']['version']}; record: {args.results}/submissions/{record['name']}/record.json")
    return 0 if record["status"] == "finished" else 1


def _protocol_show(args) -> int:
    from .report import cost
    from .spec import config, protocol

    if args.card and (args.preset or args.config):
        raise ConfigError(f"give the card once: `protocol show {args.card}` or --preset/--config, not both")
    cfg = config.load(args.config or args.preset or args.card or "quick")
    for source in args.calibrate or ():  # a typo would read as a folder without runs, and be passed over
        if not os.path.exists(source):
            raise ConfigError(f"--calibrate {source}: no such results folder or gpu check report")
    print(protocol.show(cfg), end="")
    print(cost.describe(cfg, args.calibrate or cost.default_sources()), end="")
    return 0


def _count(text: str) -> int:
    """A count given on the command line: a whole number of at least 1 (0 items or runs divides by zero)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return n


def build_parser() -> argparse.ArgumentParser:
    from .metrics.stats import BOOTSTRAPPED

    p = argparse.ArgumentParser(prog="clbench", description="Continual-learning benchmark for LLMs: fine-tune on one "
                                "domain after another, measure what is kept and lost, rank the methods.")
    from clbench import __version__

    p.add_argument("--version", action="version", version=f"clbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a sweep (default: the quick preset on SmolLM2)")
    r.add_argument("--preset", help="preset name: quick (default), standard, standard-gpu, tiny")
    r.add_argument("--config", help="a sweep YAML file (instead of --preset)")
    r.add_argument("--results", default="results", help="results folder (default: results)")
    r.add_argument("--data", help="dataset folder (default: $CLBENCH_DATA)")
    r.add_argument("--model", help="override the config's model")
    r.add_argument("--methods", nargs="+", help="run only these methods (labels or names; one the card lacks runs "
                   "at its defaults)")
    r.add_argument("--seeds", nargs="+", type=int, help="run every method on these seeds (its own seeds: the card's "
                   "protocol version, and so its board, stays the same, so seeds added later join the stored ones)")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the config's device")
    r.add_argument("--limit", type=int, metavar="N", help="a quick check: at most N items per view and probe; the "
                   "sweep is named <card>-limitN and ranks in a section of its own")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field, e.g. "
                   "--set budget.epochs=2 --set precision=fp32 (repeatable; the value is read as YAML)")
    r.add_argument("--address", help="join a running Ray cluster (HOST:PORT); default: start a local Ray instance")
    r.add_argument("--allow-unlisted-data", action="store_true", help="read data files that the data folder's "
                   "SHA256SUMS.json does not list (each is named in the runs' provenance)")
    r.set_defaults(func=_run)
    t = sub.add_parser("tune", help="choose each method's learning rate and strength on a validation stream of "
                                    "other items, and write the card with the chosen configs (harness/sweep/tune.py)")
    t.add_argument("--preset", help="the protocol card to tune for: quick (default), standard, standard-gpu, tiny")
    t.add_argument("--config", help="a sweep YAML file (instead of --preset)")
    t.add_argument("--methods", nargs="+", help="tune only these methods (default: the card's)")
    t.add_argument("--results", help="folder of the grid's runs and outputs (default: results/tune/<card name>)")
    t.add_argument("--data", help="dataset folder (default: $CLBENCH_DATA)")
    t.add_argument("--address", help="join a running Ray cluster (HOST:PORT); default: start a local Ray instance")
    t.add_argument("--progress", action="store_true", help="run nothing: write progress.md in the results folder, "
                   "the grid so far (which points have run, each finished method's choice) and the time left")
    t.set_defaults(func=_tune)
    lb = sub.add_parser("leaderboard", help="rebuild the leaderboard (Markdown, CSV, LaTeX, HTML) from stored results")
    lb.add_argument("--results", default="results")
    lb.add_argument("--out", help="output folder (default: the results folder)")
    lb.set_defaults(func=_leaderboard)
    fg = sub.add_parser("figures", help="draw the paper figures (PDF and PNG) from stored results")
    fg.add_argument("--results", default="results")
    fg.add_argument("--out", help="output folder (default: <results>/figures)")
    fg.set_defaults(func=_figures)
    pw = sub.add_parser("power", help="interval widths and minimum detectable differences for other item and seed "
                                      "counts, from the stored per-item results")
    pw.add_argument("--results", default="results")
    pw.add_argument("--items", type=_count, nargs="+", default=[8, 32, 128], help="items per view to project to "
                    "(what n counts depends on --measure; the report's first line says)")
    pw.add_argument("--seeds", type=_count, nargs="+", default=[1, 3, 5], help="runs per method to project to")
    pw.add_argument("--measure", choices=BOOTSTRAPPED, help="the metric to analyse (default: the ranked score); "
                    "lp_forgetting for the forgetting measure")
    pw.set_defaults(func=_power)
    rp = sub.add_parser("reproduce", help="run a stored run's spec again and report, cell by cell, where the "
                                          "scores differ from the stored ones (how a row from elsewhere is checked)")
    rp.add_argument("run_id", help="the run id (the name of results/runs/<run_id>.json)")
    rp.add_argument("--results", default="results")
    rp.add_argument("--data", help="dataset folder (default: $CLBENCH_DATA)")
    rp.set_defaults(func=_reproduce)
    v = sub.add_parser("validate", help="check every stored run file and name the bad ones")
    v.add_argument("--results", default="results", help="results folder (default: results)")
    v.add_argument("folder", nargs="?", help=argparse.SUPPRESS)  # the positional form of earlier versions
    v.set_defaults(func=_validate)
    e = sub.add_parser("export-lm-eval", help="write the domain tasks' multiple-choice views as lm-eval task YAMLs")
    e.add_argument("--out", required=True, help="output folder (data paths in the YAMLs are absolute)")
    e.add_argument("--preset", help="preset whose stream, budget, scorer and model to export (default quick)")
    e.add_argument("--config", help="a sweep YAML file (instead of --preset)")
    e.add_argument("--data", help="dataset folder (default: $CLBENCH_DATA)")
    e.set_defaults(func=_export_lm_eval)
    m = sub.add_parser("methods", help="list every registered method with its config defaults")
    m.set_defaults(func=_methods)
    s = sub.add_parser("submit", help="preflight one method file, run it under a protocol card, record and rank it "
                       "(docs/submitting-a-method.md)")
    s.add_argument("method", help="path/to/file.py:ClassName, or an installed clbench.methods entry-point name")
    s.add_argument("--name", help="leaderboard label and folder name (default: the class's `name`)")
    s.add_argument("--author", help="who submits (default: the login name)")
    s.add_argument("--description", help="one line shown with the row (default: the class's `description`)")
    s.add_argument("--config", help="YAML mapping of overrides of the method's config fields")
    s.add_argument("--preset", help="protocol card to run under: quick (default), standard, standard-gpu, tiny")
    s.add_argument("--results", default="results", help="results folder (default: results)")
    s.add_argument("--replace", action="store_true", help="replace your own earlier submission of this name")
    s.add_argument("--address", help="join a running Ray cluster (HOST:PORT); default: a local Ray instance")
    s.set_defaults(func=_submit)
    pr = sub.add_parser("protocol", help="the benchmark protocol cards")
    show = pr.add_subparsers(dest="action", required=True).add_parser(
        "show", help="print a protocol card with its version, items digest and data checksums, and what it costs "
                     "(harness/report/cost.py)")
    show.add_argument("card", nargs="?", help="the card's name, as --preset takes it (`clbench protocol show standard`)")
    show.add_argument("--preset", help="preset (protocol card) name: quick (default), standard, standard-gpu, tiny")
    show.add_argument("--config", help="a sweep YAML file (instead of --preset)")
    show.add_argument("--calibrate", nargs="+", metavar="SOURCE",
                      help="results folders or gpu check reports whose finished runs measure the seconds per unit of "
                           "work on their device (default: results/reference/standard, its tune/, and "
                           "results/bench/gpu-check-*.json)")
    show.set_defaults(func=_protocol_show)
    return p


def _printable(text) -> str:
    """Text for the terminal: control characters but newline and tab written as escapes (an error can quote what a
    method or a stored file said; an escape sequence there would move the cursor, retitle or clear the terminal)."""
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in str(text))


def _one_line(message, category, filename, lineno, line=None) -> str:
    """A warning as a command prints it: one line (Python's form adds the warning's class and a second line of the
    source that raised it, which a user cannot act on)."""
    return f"clbench: warning: {_printable(message)}\n"


def main(argv=None) -> int:
    warnings.formatwarning = _one_line
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # a misspelt flag: the command's own usage, and the flag it was probably meant to be
        command = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
        flags = [flag for action in command._actions for flag in action.option_strings]
        flag = next((x.split("=")[0] for x in extra if x.startswith("-")), None)
        near = closest(flag, flags) if flag else None
        command.error(f"unrecognized arguments: {' '.join(extra)}" + (f"; did you mean '{near}'?" if near else ""))
    if args.command != "submit" and getattr(args, "config", None) and getattr(args, "preset", None):
        parser.error("give --config or --preset, not both: the config file would silently win")
    try:
        return args.func(args)
    except ClbenchError as e:
        print(f"clbench: error: {_printable(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what is stored stays; a run, tune or submission resumes where it stopped
        print("clbench: interrupted" + ("; finished stages are stored, and the same command run again resumes from them"
                                        if args.command in ("run", "tune", "submit") else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:  # `clbench methods | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
