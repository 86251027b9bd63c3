"""Paper figures from the stored runs of the ranked protocol (the leaderboard's first section).

Each figure is written as <name>.pdf (vector) and <name>.png with stable names (FIGURES), in one
style: column width 3.3 in or full width 7 in, 8 pt fonts, the Okabe-Ito colour-blind-safe palette.
A figure whose metric no run measured is skipped with a note, never silently. Labels are drawn as
plain text (no mathtext), so a label is never interpreted.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import metrics  # noqa: E402
from .leaderboard import COSTS, cost_key, mean_ci, sections  # noqa: E402
from .store import Store  # noqa: E402

COLUMN, FULL, DPI = 3.3, 7.0, 200
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#F0E442", "#000000"]
MARKERS = "osD^vP*X"
# name -> (width, height) in inches; a PNG is width*DPI x height*DPI pixels
FIGURES = {"accuracy_matrices": (FULL, 4.2), "forgetting_curves": (FULL, 2.4), "stability_plasticity": (COLUMN, 2.8),
           "retention_repetition": (FULL, 2.4), "cost_vs_score": (COLUMN, 2.8)}
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
         "legend.fontsize": 6.5, "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO), "text.parse_math": False,
         "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42, "savefig.dpi": DPI}
COST_NAME = {key: name[0].upper() + name[1:] for key, name in COSTS.items()}


def _look(i: int) -> dict:
    return {"color": OKABE_ITO[i % len(OKABE_ITO)], "marker": MARKERS[(i // len(OKABE_ITO)) % len(MARKERS)]}


LEGEND_ROW, LEGEND_ROWS_STATED = 0.15, 2  # inches per legend row; rows the stated sizes already hold


def _legend_columns(name: str) -> int:
    return 6 if FIGURES[name][0] == FULL else 3


def _new(name: str, ncols: int = 1, nrows: int = 1, min_height: float = 0.0, legend_entries: int = 0):
    """A figure at its stated size; taller where `min_height` (inches) asks, so many panels keep their size,
    and by a row height for each legend row beyond the LEGEND_ROWS_STATED its size already holds."""
    width, height = FIGURES[name]
    rows = -(-legend_entries // _legend_columns(name))
    height += LEGEND_ROW * max(0, rows - LEGEND_ROWS_STATED)
    return plt.subplots(nrows, ncols, figsize=(width, max(height, min_height)), layout="constrained", squeeze=False)


def _legend_below(fig, ax, name: str, **kw):
    """The axes' legend under the panels, in columns: inside a panel, 18 methods' entries covered the data."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=_legend_columns(name), frameon=False, **kw)


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.pdf", out / f"{name}.png"]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths


def _matrices(runs: list[dict], tasks: list[str]) -> dict[str, list]:
    """label -> recall accuracy matrices (rows: stages, columns: `tasks` in this order) of its finished runs."""
    out = defaultdict(list)
    for r in runs:
        if r["status"] == "finished":
            R = metrics.matrix(r["stages"], list(r["spec"]["stream"]), "recall")
            order = [list(r["spec"]["stream"]).index(t) for t in tasks]
            out[r["spec"]["label"]].append([[row[k] for k in order] for row in R])
    return out


def accuracy_matrices(table, mats, tasks, out):
    labels = [r["label"] for r in table if r["label"] in mats]
    ncols = min(4, len(labels))
    nrows = -(-len(labels) // ncols)
    fig, axes = _new("accuracy_matrices", ncols, nrows, min_height=2.1 * nrows)  # 2 rows fit the stated 4.2 in
    for ax in axes.flat[len(labels):]:
        ax.axis("off")
    for ax, label in zip(axes.flat, labels):
        group = mats[label]
        M = [[sum(m[s][t] for m in group) / len(group) for t in range(len(tasks))] for s in range(len(group[0]))]
        im = ax.imshow(M, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(f"{label} (n={len(group)})")
        ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
        ax.set_yticks(range(len(M)), ["base", *[f"after {t}" for t in tasks]])
        if len(tasks) <= 6:
            for s, row in enumerate(M):
                for t, v in enumerate(row):
                    ax.text(t, s, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k")
    fig.colorbar(im, ax=axes, shrink=0.8, label="recall accuracy (mean over runs)")
    return _save(fig, out, "accuracy_matrices")


def forgetting_curves(table, mats, tasks, out):
    labels = [r["label"] for r in table if r["label"] in mats]
    fig, axes = _new("forgetting_curves", len(tasks), legend_entries=len(labels))
    for t, (ax, task) in enumerate(zip(axes.flat, tasks)):
        for i, label in enumerate(labels):
            group = mats[label]
            stats = [mean_ci(m[s][t] for m in group) for s in range(len(group[0]))]
            xs, ys = range(len(stats)), [m for m, _, _ in stats]
            ax.plot(xs, ys, label=label, lw=1.2, ms=3, **_look(i))
            lo = [m - (h or 0) for m, h, _ in stats]
            hi = [m + (h or 0) for m, h, _ in stats]
            ax.fill_between(xs, lo, hi, color=_look(i)["color"], alpha=0.2, lw=0)
        ax.set_title(task)
        ax.set_ylim(-0.03, 1.03)  # one scale for every task
        ax.set_xlabel("stage")
        ax.set_xticks(range(len(tasks) + 1))
    axes.flat[0].set_ylabel("recall accuracy")
    _legend_below(fig, axes.flat[0], "forgetting_curves")
    return _save(fig, out, "forgetting_curves")


def _front(points):
    """Points not dominated when both coordinates are better higher, sorted by x."""
    return sorted(p for p in points if not any(o[0] >= p[0] and o[1] >= p[1] and o != p for o in points))


def stability_plasticity(table, out, notes):
    rows = [r for r in table if r["bwt"] is not None and r["plasticity"] is not None]
    if not rows:
        notes.append("stability_plasticity: skipped, no run has BWT and plasticity (streams of one task?)")
        return []
    cost = cost_key(table)
    top = max((r[cost] for r in rows if r[cost] is not None), default=None)
    if top is None:
        notes.append("stability_plasticity: no run measured GPU-hours or CPU-hours; markers drawn at one size")
    fig, axes = _new("stability_plasticity", legend_entries=len(rows) + 1)
    ax = axes[0, 0]
    for i, r in enumerate(table):
        if r in rows:
            size = 20 + 180 * r[cost] / top if top and r[cost] is not None else 40
            ax.scatter(r["plasticity"], r["bwt"], s=size, label=r["label"], alpha=0.85, **_look(i))
    front = _front([(r["plasticity"], r["bwt"]) for r in rows])
    ax.plot(*zip(*front), color="0.4", lw=0.8, ls="--", label="Pareto front")
    ax.set_xlabel("plasticity (higher: learns more)")
    ax.set_ylabel("BWT (higher: forgets less)")
    _legend_below(fig, ax, "stability_plasticity", markerscale=0.6)
    if top:
        ax.set_title(f"marker area ∝ {COST_NAME[cost]}")
    return _save(fig, out, "stability_plasticity")


def retention_repetition(table, out, notes):
    keys = [("general_retention", "general retention (final / base)"), ("tail_repetition", "tail repetition")]
    if all(r[k] is None for r in table for k, _ in keys):
        notes.append("retention_repetition: skipped, no run measured general retention or tail repetition")
        return []
    fig, axes = _new("retention_repetition", 2)
    for ax, (key, name) in zip(axes.flat, keys):
        rows = [(i, r) for i, r in enumerate(table) if r[key] is not None]
        if not rows:
            notes.append(f"retention_repetition: {key} measured in no run; its panel says so")
            ax.text(0.5, 0.5, f"{name}: not measured", ha="center", va="center", transform=ax.transAxes)
        for x, (i, r) in enumerate(rows):
            ax.errorbar(x, r[key], yerr=_err(r, key), fmt=_look(i)["marker"], color=_look(i)["color"], capsize=2)
        ax.set_xticks(range(len(rows)), [r["label"] for _, r in rows], rotation=30, ha="right")
        ax.set_ylabel(name)
    return _save(fig, out, "retention_repetition")


def _err(row: dict, key: str):
    """Error-bar extents of a row's value: its bootstrap interval (asymmetric) where it has one, else the
    Student-t half-width over runs, else none."""
    if key in row["interval"] and row[key] is not None:
        lo, hi = row["interval"][key]
        return [[max(0.0, row[key] - lo)], [max(0.0, hi - row[key])]]
    return row["ci"][key] or 0


SCORE_NAME = {"headline": "headline (nats per token)", "overall": "overall performance (OP)"}


def cost_vs_score(table, out, notes):
    cost, key = cost_key(table), table[0]["ranked_by"]
    rows = [(i, r) for i, r in enumerate(table) if r[cost] is not None and r[key] is not None]
    if not rows:
        notes.append("cost_vs_score: skipped, no run has both the ranked score and a cost (training FLOPs or hours)")
        return []
    fig, axes = _new("cost_vs_score", legend_entries=len(rows) + 1)
    ax = axes[0, 0]
    for i, r in rows:
        ax.errorbar(r[cost], r[key], xerr=_err(r, cost), yerr=_err(r, key), label=r["label"],
                    fmt=_look(i)["marker"], color=_look(i)["color"], capsize=2, ms=4)
    front = sorted((r[cost], r[key]) for _, r in rows if r["pareto"])
    ax.plot(*zip(*front), color="0.4", lw=0.8, ls="--", label="Pareto front", drawstyle="steps-post")
    ax.set_xlabel(COST_NAME[cost])
    ax.set_ylabel(SCORE_NAME[key])
    _legend_below(fig, ax, "cost_vs_score")
    return _save(fig, out, "cost_vs_score")


def write(results_dir, out_dir=None) -> tuple[list[Path], list[str]]:
    """Draw every figure for the ranked protocol; returns (files written, notes on skipped figures)."""
    out = Path(out_dir or Path(results_dir) / "figures")
    out.mkdir(parents=True, exist_ok=True)
    secs = sections(Store(results_dir).runs())
    if not secs or not any(r["seeds"] for r in secs[0]["rows"]):
        return [], [f"no finished runs in {results_dir}: no figures"]
    section = secs[0]
    table = [r for r in section["rows"] if r["seeds"]]
    runs = section["runs"]
    tasks = list(next(r for r in runs if r["status"] == "finished")["spec"]["stream"])
    mats = _matrices(runs, tasks)
    notes = [] if len(secs) == 1 else [f"figures show the ranked protocol {section['key'][:16]} only; "
                                       f"{len(secs) - 1} other protocol(s) are in the leaderboard"]
    paths = []
    with plt.rc_context(STYLE):
        paths += accuracy_matrices(table, mats, tasks, out)
        paths += forgetting_curves(table, mats, tasks, out)
        paths += stability_plasticity(table, out, notes)
        paths += retention_repetition(table, out, notes)
        paths += cost_vs_score(table, out, notes)
    return paths, notes
