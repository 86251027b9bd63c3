"""`clbench tune`: each method's hyper-parameters chosen on a validation stream, then frozen.

Continual-learning benchmarks tune without looking at the stream they report (Chaudhry et al. 2019,
A-GEM, arXiv:1812.00420, Sec. 5: cross-validate on a few held-out tasks, then freeze). Here:

- The validation stream has the card's shape, with other tasks: each multiple-choice domain of the card
  becomes the next of MMLU dev-split domains (stem_dev, social_dev, other_dev, humanities_dev) and the
  code domain MBPP's validation problems (code_dev); no benchmark domain or probe draws from either. The
  instruct probe, which the headline needs, is drawn with the first data seed after the card's whose
  items are disjoint from the card's own draw. Learned items, epochs, batch size, lengths and the
  card's first seed are kept, so a learning rate is tuned for the number of steps it will take; the
  transfer views are cut to what the dev pools hold. Code answers are decoded for one token only
  (DECODED): the criterion reads log-probabilities, never pass@1, and decoding 160 tokens was 30% of
  an evaluation's time on the standard card's validation stream (179 s against 127 s, measured with
  SmolLM2 on 2 cores); every log-probability is the same either way.
- The grid: every method's learning rate at 0.3x, 1x and 3x its default, crossed with its strength knob
  at the factors in STRENGTH (EWC's lambda, L2-SP's alpha, O-LoRA's lambda1, distillation's alpha,
  replay's ratio); others only the learning rate. Where a method's choice sits at the grid's highest or
  lowest learning rate, the grid is widened from the chosen point, 3x further at a time, up to two more
  points (`widen`; a learning rate set for thousands of steps may be far from the best at this budget).
- The criterion: the highest headline score (harness.metrics.metrics.headline) on the validation stream, a
  tie going to the point nearer the defaults. The grid says how firm each choice is: every point's headline
  with its 95% interval over the validation items, and the chosen point's paired difference with the next
  best and with the method's defaults (the same items resampled for both, harness.metrics.stats; descriptive,
  since the pair was picked by its point estimates); a choice at the edge of the grid is named as such, since
  a better point may lie beyond it.

Written to the results folder: grid.md and grid.csv (every point's headline and its terms, forgetting
and plasticity, the chosen one marked) and tuned.yaml, the card with each method's chosen config, for
`clbench run --config`: the methods the card names run its seeds, the others its first seed only (their own
`seeds`), so one command runs the all-methods board. The grid's runs are stored like any sweep's, so an
interrupted tune resumes. While it runs, `progress` (`clbench tune --progress`) writes progress.md there from
the stored points, running nothing.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import math
import os
from pathlib import Path

import yaml

from tasks.data import DataSource
from tasks.registry import VALIDATION, _probe, builtin, domain, mmlu_domain_pool

from ..core.errors import ConfigError
from ..metrics import stats
from ..report.tables import csv_cell, md_escape
from ..spec.config import MethodEntry, SweepConfig, check, methods_named
from ..store.files import run_files, write_text_atomic

LR_FACTORS = (0.3, 1.0, 3.0)
LR_STEP, WIDEN_STEPS = 3.0, 2  # a choice at the grid's learning-rate edge: up to 2 more points, 3x apart
STRENGTH = {"ewc": ("ewc_lambda", (0.1, 1.0, 10.0)), "l2sp": ("alpha", (0.1, 1.0, 10.0)),
            "olora": ("lambda1", (0.1, 1.0, 10.0)), "distill": ("alpha", (0.3, 1.0, 3.0)),
            "replay": ("ratio", (0.5, 1.0, 2.0))}
DECODED = 1  # budget.max_new_tokens of the validation stream: its code views' pass@1 is not read (see above)
MC_VALIDATION = ("stem_dev", "social_dev", "other_dev", "humanities_dev")  # the order they replace domains in
METRICS = ("headline", "lp_gain", "instruct_change", "lp_plasticity", "lp_forgetting")
COLUMNS = ("method", "label", "lr", "knob", "value", *METRICS, "headline_lo", "headline_hi", "chosen")


def validation_stream(card: SweepConfig, source: str | None = None) -> list[str]:
    """The card's stream with each domain replaced by a validation domain of its kind; a stream that has none is
    named with `source` (the card's file; default: its name)."""
    where = source or card.name
    if used := [n for n in card.stream if n in VALIDATION]:
        raise ConfigError(f"{where}: stream: {used} are validation domains; tune a card whose stream is benchmark "
                          "domains")
    kinds = {n: domain(n, card.domains).kind for n in card.stream}
    if other := [n for n in card.stream if n != "code" and kinds[n] != "multiple_choice"]:
        raise ConfigError(f"{where}: stream: {other} have no validation domain (there is one per multiple-choice "
                          "domain, and code_dev for code); tune on a card without them")
    mc = [n for n in card.stream if n != "code"]
    if len(mc) > len(MC_VALIDATION):
        raise ConfigError(f"{where}: stream: {len(mc)} multiple-choice domains, but the dev split makes only "
                          f"{len(MC_VALIDATION)} validation domains; tune on a card with at most that many")
    replaced = dict(zip(mc, MC_VALIDATION), code="code_dev")
    return [replaced[n] for n in card.stream]


def _smallest_pool(stream: list[str], budget, source: DataSource) -> int:
    """Items the smallest multiple-choice validation pool of the stream holds (after max_item_chars); 0: none."""
    sizes = [len(mmlu_domain_pool(builtin(n), source, budget.max_item_chars)) for n in stream if n in MC_VALIDATION]
    return min(sizes, default=0)


def _disjoint_seed(card: SweepConfig, budget, source: DataSource) -> int:
    """The first data seed after the card's whose instruct probe shares no item with the card's."""
    if "instruct" not in card.probes:
        return card.data_seed + 1
    taken = {i.uid for i in _probe("instruct", source, card.budget, card.data_seed).views["reference"]}
    for seed in range(card.data_seed + 1, card.data_seed + 1000):
        if not taken & {i.uid for i in _probe("instruct", source, budget, seed).views["reference"]}:
            return seed
    raise ConfigError("no data seed gives an instruct probe disjoint from the card's; lower budget.instruct_items")


def validation_config(card: SweepConfig, methods: list[MethodEntry], widened: dict[str, tuple] | None = None,
                      source: str | None = None) -> SweepConfig:
    """The sweep that runs every grid point of `methods` (and the `widened` ones, see `widen`) on the card's
    validation stream; what the card cannot tune with is named with `source` (its file; default: its name)."""
    where = source or card.name
    data = DataSource(card.data_dir)
    stream = validation_stream(card, where)
    smallest = _smallest_pool(stream, card.budget, data)
    budget = card.budget
    if smallest:
        if budget.learn_items >= smallest:
            raise ConfigError(f"{where}: budget.learn_items: {budget.learn_items}, but the smallest "
                              f"validation pool holds {smallest} items (after max_item_chars); tune with at most "
                              f"{smallest - 1}")
        budget = dataclasses.replace(budget, transfer_items=min(budget.transfer_items, smallest - budget.learn_items))
    budget = dataclasses.replace(budget, max_new_tokens=DECODED)
    entries = [point for entry in methods
               for point, _ in grid(entry, card, (widened or {}).get(entry.label or entry.method, ()))]
    cfg = dataclasses.replace(card, name=f"{card.name}-validation", stream=stream, task_orders=[],
                              probes=[p for p in card.probes if p == "instruct"], methods=entries,
                              seeds=card.seeds[:1], budget=budget,
                              data_seed=_disjoint_seed(card, budget, data))
    check(cfg, f"validation stream of {where}")
    return cfg


def grid(entry: MethodEntry, card: SweepConfig, widened: tuple = ()) -> list[tuple[MethodEntry, dict]]:
    """(sweep entry, {lr, knob, value, factors, distance}) of every grid point of one method variant of the card:
    the stated grid, then the `widened` (learning-rate factor, knob factor) points that `widen` added."""
    from ..spec import sandbox

    defaults = sandbox.info(entry.method, entry.config, where=f"{card.name}: method {entry.method}")["config"]
    if "lr" not in defaults:
        raise ConfigError(f"method {entry.method} has no `lr` in its config; clbench tune varies the learning rate")
    knob, factors = STRENGTH.get(entry.method, (None, (1.0,)))
    label = entry.label or entry.method
    for name in ("lr", knob):  # the grid multiplies each around its default
        if name and not (isinstance(defaults[name], (int, float)) and 0 < defaults[name] < 1e30):
            raise ConfigError(f"{card.name}: method '{label}': config.{name} is {defaults[name]!r}; clbench tune "
                              f"scales it by {', '.join(f'{f:g}' for f in (LR_FACTORS if name == 'lr' else factors))}, "
                              "so it needs a positive, finite value to start from")
    out = []
    for lr_f, k_f in [*itertools.product(LR_FACTORS, factors), *widened]:
        config = dict(entry.config, lr=defaults["lr"] * lr_f)
        name = f"{label} lr={config['lr']:.3g}"
        point = {"lr": config["lr"], "knob": knob, "value": None, "distance": abs(lr_f - 1) + abs(k_f - 1),
                 "factors": (lr_f, k_f)}
        if knob:
            config[knob] = defaults[knob] * k_f
            point["value"] = config[knob]
            name += f" {knob}={config[knob]:.3g}"
        out.append((MethodEntry(method=entry.method, label=name, config=config), point))
    return out


def _edges(point: dict, scored: list[dict]) -> list[str]:
    """The edges of the scored grid a point sits on: ['highest learning rate', 'lowest ratio'], or []. A point
    that failed is no part of the grid here, so a choice below a failed higher rate is still at the edge."""
    out = []
    for axis, name in ((0, "learning rate"), (1, point["knob"])):
        factors = {p["factors"][axis] for p in scored}
        if name and len(factors) > 1 and point["factors"][axis] in (min(factors), max(factors)):
            out.append(f"{'highest' if point['factors'][axis] == max(factors) else 'lowest'} {name}")
    return out


def widen(rows: list[dict], widened: dict[str, tuple]) -> dict[str, tuple]:
    """`widened` (by variant label) with one more point for each variant whose choice sits at the grid's highest
    (lowest) learning rate: the chosen point's learning rate times (divided by) LR_STEP, its knob kept (a line
    search from the choice, so an edge costs one run, not a row of the grid), at most WIDEN_STEPS beyond the
    stated grid, and never a point the grid already holds (a failed one is not run again for this)."""
    out = dict(widened)
    for r in rows:
        variant, (lr_f, k_f) = r["variant"], r["factors"]
        if not r["chosen"] or len(widened.get(variant, ())) >= WIDEN_STEPS:
            continue
        step = LR_STEP if "highest learning rate" in r["edges"] else 1 / LR_STEP if "lowest learning rate" in \
            r["edges"] else None
        held = {q["factors"] for q in rows if q["variant"] == variant}
        if step and not any(math.isclose(lr_f * step, f[0]) and f[1] == k_f for f in held):
            out[variant] = (*widened.get(variant, ()), (lr_f * step, k_f))
    return out


def choose(card: SweepConfig, methods: list[MethodEntry], runs_by_label: dict,
           widened: dict[str, tuple] | None = None) -> list[dict]:
    """Every grid point's row, the best of each method variant (highest validation headline; ties to the
    defaults) chosen, with its headline's interval over the validation items; the chosen row holds `margin`, its
    paired difference with the next best (None with fewer than two scored points or runs without per-item
    records), `over_defaults`, its paired difference with the method's defaults (None where it is the defaults or
    they were not scored), and `edges`, the edges of the scored grid it sits on."""
    from ..metrics.run_metrics import run_row

    rows = []
    for entry in methods:
        variant = entry.label or entry.method
        points = []
        for sweep_entry, point in grid(entry, card, (widened or {}).get(variant, ())):
            run = runs_by_label.get(sweep_entry.label)
            finished = run if run and run.get("status") == "finished" else None
            metrics = run_row(finished) if finished else {}
            points.append({"method": entry.method, "variant": variant, "label": sweep_entry.label, **point,
                           "config": sweep_entry.config, "run": finished, "chosen": False, "margin": None,
                           "over_defaults": None, "edges": [],
                           "headline_lo": None, "headline_hi": None, **{k: metrics.get(k) for k in METRICS}})
        scored = sorted((p for p in points if p["headline"] is not None),
                        key=lambda p: (p["headline"], -p["distance"]), reverse=True)
        # REPLICATES: the paired differences reported here are two per method, not a Holm family over all pairs
        reps = stats.bootstrap({p["label"]: [p["run"]] for p in scored}, stats.REPLICATES) if scored else None
        for p in scored:
            p["edges"] = _edges(p, scored)
            if reps and "headline" in reps[p["label"]]:
                p["headline_lo"], p["headline_hi"] = stats.interval(reps[p["label"]]["headline"])
        if scored:
            best = scored[0]
            best["chosen"] = True
            if len(scored) > 1:
                best["margin"] = _paired(best, scored[1], reps)
            default = next((p for p in scored if p["factors"] == (1.0, 1.0)), None)
            if default is not None and default is not best:
                best["over_defaults"] = _paired(best, default, reps)
        rows += [{k: v for k, v in p.items() if k != "run"} for p in points]
    return rows


def _paired(a: dict, b: dict, reps: dict | None) -> dict | None:
    """Point a's headline minus point b's, with its interval and p over the same validation items resampled for
    both (None for runs without per-item records)."""
    if not reps or a["headline_lo"] is None or b["headline_lo"] is None:
        return None
    diff = stats.difference(reps, a["label"], b["label"], "headline")
    lo, hi = stats.interval(diff)
    return {"over": b["label"], "diff": a["headline"] - b["headline"], "lo": lo, "hi": hi, "p": stats.p_value(diff)}


def _choice(r: dict) -> str:
    """One line on how firm a chosen point is: against the next best, and against the method's defaults."""
    where = f" (at the grid's {' and '.join(r['edges'])}: a better point may lie beyond)" if r["edges"] else ""
    line = f"- **{md_escape(r['variant'])}**: {md_escape(r['label'])}{where}"
    if r["factors"] == (1.0, 1.0):
        line += ", the method's defaults"
    m, d = r["margin"], r["over_defaults"]
    if m is None and d is None:
        return line + "; no paired difference (a single scored point, or runs without per-item records)."
    if m is not None:
        line += f"; ahead of {md_escape(m['over'])}{' (the defaults)' if d and d['over'] == m['over'] else ''} by " + \
            f"{_diff(m)}, " + ("separated from it" if m["p"] < stats.ALPHA else
                               "not separated from it: the choice is within the items' noise")
    if d is not None and (m is None or d["over"] != m["over"]):
        line += f"; ahead of the defaults ({md_escape(d['over'])}) by {_diff(d)}, " + (
            "separated from them" if d["p"] < stats.ALPHA else "not separated from them")
    return line + "."


def _diff(m: dict) -> str:
    return (f"{m['diff']:+.3f} [{m['lo']:+.3f}, {m['hi']:+.3f}] nats per token (paired bootstrap over the validation "
            f"items, p = {m['p']:.3g})")


def _table(rows: list[dict], state: dict[str, str] | None = None) -> list[str]:
    """The grid as a Markdown table, each point's headline with its interval; `state` (by label): a column saying
    which points have run."""
    columns = [c for c in COLUMNS[1:] if c not in ("headline_lo", "headline_hi")] + (["state"] if state else [])

    def cell(v):
        return "–" if v is None else (f"{v:+.3f}" if isinstance(v, float) else str(v))

    def shown(r, c):
        if c == "state":
            return md_escape(state[r["label"]])
        if c == "chosen":
            return "**yes**" if r[c] else ""
        if c == "headline" and r["headline_lo"] is not None:
            return f"{cell(r[c])} [{cell(r['headline_lo'])}, {cell(r['headline_hi'])}]"
        if c in ("label", "knob") and r[c] is not None:
            return md_escape(r[c])  # from the card, a file like any other
        return f"{r[c]:.3g}" if c in ("lr", "value") and r[c] is not None else cell(r[c])

    return ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns),
            *("| " + " | ".join(shown(r, c) for c in columns) + " |" for r in rows)]


def write(card: SweepConfig, methods: list[MethodEntry], rows: list[dict], out: Path) -> dict[str, Path]:
    """grid.csv, grid.md and tuned.yaml in `out`: all three made before any is written, each written whole (a
    failure while making them leaves the last tune's three as they were)."""
    table = io.StringIO()
    w = csv.writer(table)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([csv_cell(r[c]) if isinstance(r[c], str) else "" if r[c] is None else r[c] for c in COLUMNS])
    lines = [f"# Tuning grid of `{card.name}` on its validation stream", "",
             "Each method's learning rate (and strength knob) chosen by the highest headline on a stream of other "
             "items (harness/sweep/tune.py says which); the chosen point is marked. The headline's interval: 95%, "
             "the validation items resampled.", "", *_table(rows)]
    choices = [_choice(r) for r in rows if r["chosen"]]
    if choices:
        lines += ["", "How firm each choice is:", "", *choices]
    chosen = {r["variant"]: r for r in rows if r["chosen"]}
    named = {e.label or e.method for e in card.methods}  # the card's variants run its seeds; the others one
    listed = list(card.methods) + [e for e in methods if (e.label or e.method) not in named]
    tuned = []
    for e in listed:
        variant = e.label or e.method
        seeds = list(e.seeds) if variant in named else list(e.seeds or card.seeds[:1])
        tuned.append({"method": e.method, "label": variant,
                      "config": chosen[variant]["config"] if variant in chosen else dict(e.config),
                      **({"seeds": seeds} if seeds and seeds != list(card.seeds) else {})})
    doc = dataclasses.asdict(card)
    doc["methods"] = tuned
    doc = {k: v for k, v in doc.items() if k != "data_dir"}
    untuned = sorted({e.label or e.method for e in listed} - set(chosen))
    header = (f"# {card.name} with the configs `clbench tune` chose on its validation stream for "
              f"{', '.join(sorted(chosen)) or 'no method'} (grid: grid.md beside this file).\n")
    if untuned:
        header += f"# Not tuned (no finished grid point, or not asked for): {', '.join(untuned)}; their configs are the card's.\n"
    texts = {"grid.csv": table.getvalue(), "grid.md": "\n".join(lines) + "\n",
             "tuned.yaml": header + yaml.safe_dump(doc, sort_keys=False, width=120)}
    for name, text in texts.items():
        write_text_atomic(out / name, text)
    return {"grid": out / "grid.md", "csv": out / "grid.csv", "tuned": out / "tuned.yaml"}


FINISHED = "finished"


def _stored(results: str, cfg: SweepConfig) -> tuple[dict, dict]:
    """({label: finished run}, {label: its state}) of every point of `cfg`, as the tune's resume sees them (a point
    is done when its run finished under the card's protocol version; anything else runs again), read without
    changing the folder (the tune moves a bad file aside; here it is only named)."""
    from ..spec.protocol import stamp, version_of
    from ..spec.spec import expand
    from ..store.store import Store
    from ..store.validate import problem

    version, store = stamp(cfg)["version"], Store(results)
    runs, state = {}, {}
    for spec in expand(cfg):
        path = store.run_path(spec.run_id)
        if not os.path.lexists(path):
            state[spec.label] = "not run"
            continue
        data, why = problem(path)
        if why is not None:
            state[spec.label] = f"unreadable ({why}): the tune moves it aside and runs the point again"
        elif version_of(data) != version:
            state[spec.label] = f"stored under protocol version {version_of(data)}: the tune runs it again"
        elif data["status"] != FINISHED:
            state[spec.label] = data["status"] + (": the tune runs it again" if data["status"] == "failed" else "")
        else:
            runs[spec.label], state[spec.label] = data, FINISHED
    return runs, state


def standing(card: SweepConfig, results: str, names: list[str] | None = None, source: str | None = None):
    """(rows, state, cfg) of a tune that runs or was stopped, running nothing: every grid point (the widened ones
    it will add, as far as the finished points decide them) with its state, a variant chosen only where all its
    points have finished (else its leading point's state says so), and the validation config they make."""
    methods = methods_named(card, names) if names else list(card.methods)
    widened: dict[str, tuple] = {}
    while True:  # the widening the tune makes once the stated grid has run, as far as the stored points decide it
        cfg = validation_config(card, methods, widened, source)
        runs, state = _stored(results, cfg)
        rows = choose(card, methods, runs, widened)
        open_ = {r["variant"] for r in rows if state[r["label"]] != FINISHED}
        more = widen([r for r in rows if r["variant"] not in open_], widened)
        if more == widened:
            break
        widened = more
    for r in rows:
        if r["variant"] in open_ and r["chosen"]:
            r["chosen"], state[r["label"]] = False, "finished: leading so far"
    return rows, state, cfg


def progress(card: SweepConfig, results: str, names: list[str] | None = None,
             cost_sources: list[str] | None = None, source: str | None = None) -> tuple[Path, str]:
    """progress.md in `results`, running nothing (`standing`): every grid point, whether it has run, and each
    variant's choice where all its points have finished (else the point leading so far); with one line to print
    that counts them."""
    from ..model.precision import pick_device
    from ..report import cost
    from ..spec.spec import expand

    if not Path(results).is_dir():  # a typo would read as a tune with nothing run, and write a folder for it
        raise ConfigError(f"tune --progress: results folder {results} does not exist; give the folder the tune "
                          "writes (--results)")
    rows, state, cfg = standing(card, results, names, source)
    points = {spec.run_id for spec in expand(cfg)}
    others = sum(p.stem not in points for p, _ in run_files(results))
    done = sum(s.startswith(FINISHED) for s in state.values())
    again = sum(s.endswith("runs it again") or s.startswith("unreadable") for s in state.values())
    variants = {r["variant"] for r in rows}
    line = (f"{done} of {len(state)} grid points finished" + (f" ({again} to run again)" if again else "") +
            f"; {sum(r['chosen'] for r in rows)} of {len(variants)} variants chosen" +
            (f"; {others} stored run file(s) are no point of this grid (other methods or settings: name their "
             "methods in --methods to count them)" if others else "") +
            (f"; {cost.expected(cfg, pick_device(cfg.device), [results, *cost_sources], left=len(state) - done)}"
             if done < len(state) and cost_sources is not None else ""))
    lines = [f"# Tuning grid of {md_escape(card.name)} so far", "",
             f"Written by `clbench tune --progress`, which runs nothing: {md_escape(line)}. A variant's choice is "
             "marked once all its points have finished, the grid widened where the choice sat at a learning-rate "
             "edge (the widened points appear as the finished ones decide them); until then the point leading so "
             "far is named. The headline's interval: 95%, the validation items resampled.", "", *_table(rows, state)]
    if choices := [_choice(r) for r in rows if r["chosen"]]:
        lines += ["", "How firm each choice is:", "", *choices]
    path = Path(results) / "progress.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path, line


def tune(card: SweepConfig, results: str, names: list[str] | None = None, address: str | None = None,
         log=print, cost_sources: list[str] | None = None, source: str | None = None) -> dict[str, Path]:
    """Run the grid on the validation stream (resuming what is stored) and write grid.md/csv and tuned.yaml.
    cost_sources: stored runs to measure rates on (after `results`' own) for the expected time of the points
    left, logged before each round of runs (None: no estimate). source: the card's file, named in its errors."""
    from ..spec.spec import expand
    from ..store.store import Store
    from .sweep import run_sweep

    methods = methods_named(card, names) if names else list(card.methods)
    cfg = validation_config(card, methods, source=source)
    log(f"tuning {len(methods)} method(s) over {len(cfg.methods)} grid points on {', '.join(cfg.stream)}"
        f" (data seed {cfg.data_seed}, seed {cfg.seeds[0]}), and up to {WIDEN_STEPS} more for each method whose "
        f"choice sits at the grid's learning-rate edge")
    widened: dict[str, tuple] = {}
    while True:
        run_sweep(cfg, results, address=address, log=log, cost_sources=cost_sources)
        store = Store(results)
        stored = {spec.label: store.load_run(spec.run_id) for spec in expand(cfg)}
        rows = choose(card, methods, stored, widened)
        more = widen(rows, widened)
        if more == widened:
            return write(card, methods, rows, Path(results))
        log("the choice sits at the grid's learning-rate edge for " + ", ".join(
            f"{v} (next: lr x{more[v][-1][0]:.3g})" for v in more if more[v] != widened.get(v)) + "; widening")
        widened = more
        cfg = validation_config(card, methods, widened, source)
