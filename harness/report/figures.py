"""Paper figures from the stored runs of the ranked protocol (the leaderboard's first section).

Each figure is written as <name>.pdf (vector) and <name>.png with stable names (FIGURES), in one
style: column width 3.3 in or full width 7 in, 8 pt fonts, the Okabe-Ito colour-blind-safe palette (grey for its faint yellow).
Every method has its own colour + marker + line style (`_look`), so methods stay apart in greyscale and
past eight methods. A figure whose metric no run measured is skipped with a note, never silently; so is
any text that overlaps other text once drawn (checked on the rendered bounding boxes). Labels are drawn
as plain text (no mathtext), so a label is never interpreted. `figures/README.md` gets a one-line caption
per figure, naming the runs it was drawn from.
"""
from __future__ import annotations

import io
import math
import re
import textwrap
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..metrics import metrics  # noqa: E402
from ..core.errors import StoreError  # noqa: E402
from ..store.files import write_bytes_atomic, write_text_atomic  # noqa: E402
from ..store.store import Store  # noqa: E402
from .leaderboard import mean_ci, sections  # noqa: E402
from .tables import COSTS, cost_key  # noqa: E402

COLUMN, FULL, DPI = 3.3, 7.0, 200
# Okabe-Ito, with its yellow (#F0E442, hard to see as a thin line on white) replaced by a mid grey
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#777777", "#000000"]
MARKERS = "osD^vP*X"
LINESTYLES = ["-", "--", ":", "-."]
# name -> (width, height) in inches; a PNG is width*DPI x height*DPI pixels
FIGURES = {"accuracy_matrices": (FULL, 4.2), "forgetting_curves": (FULL, 2.4), "stability_plasticity": (COLUMN, 2.8),
           "retention_repetition": (FULL, 2.4), "cost_vs_score": (COLUMN, 2.8), "versus_full": (FULL, 2.4)}
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
         "legend.fontsize": 6.5, "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO), "text.parse_math": False,
         "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42, "savefig.dpi": DPI}
COST_NAME = {key: name[0].upper() + name[1:] for key, name in COSTS.items()}


def _look(i: int) -> dict:
    """Method i's colour, marker and line style: methods that share a colour (i and i + 8) differ in both
    marker and line style, so every method of up to 32 is told apart without colour."""
    cycle = i // len(OKABE_ITO)
    return {"color": OKABE_ITO[i % len(OKABE_ITO)], "marker": MARKERS[(i + cycle) % len(MARKERS)],
            "linestyle": LINESTYLES[cycle % len(LINESTYLES)]}


def _point(i: int) -> dict:
    """_look for a marker without a line."""
    look = _look(i)
    return {"color": look["color"], "marker": look["marker"]}


LEGEND_ROW, LEGEND_ROWS_STATED = 0.15, 2  # inches per legend row; rows the stated sizes already hold


def _legend_columns(name: str, labels=()) -> int:
    """Legend columns that fit the figure's width: about 11 characters of 6.5 pt text per inch, plus the key."""
    width = FIGURES[name][0]
    longest = max((len(str(x)) for x in labels), default=10)
    return max(1, min(6 if width == FULL else 3, int(width / (0.35 + longest / 15))))


def _new(name: str, ncols: int = 1, nrows: int = 1, min_height: float = 0.0, legend_entries=()):
    """A figure at its stated size; taller where `min_height` (inches) asks, so many panels keep their size,
    and by a row height for each legend row beyond the LEGEND_ROWS_STATED its size already holds."""
    width, height = FIGURES[name]
    rows = -(-len(legend_entries) // _legend_columns(name, legend_entries))
    height += LEGEND_ROW * max(0, rows - LEGEND_ROWS_STATED)
    return plt.subplots(nrows, ncols, figsize=(width, max(height, min_height)), layout="constrained", squeeze=False)


def _legend_below(fig, ax, name: str, **kw):
    """The axes' legend under the panels, in columns: inside a panel, 18 methods' entries covered the data."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=_legend_columns(name, labels), frameon=False, **kw)


def text_overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty texts of a drawn figure whose rendered boxes intersect, and (text, 'the
    figure's edge') for a text cut off by the edge."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    drawn, ticks = [], set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                labels = (tick.label1, tick.label2)
                ticks.update(map(id, labels))
                if lo - 1e-9 <= tick.get_loc() <= hi + 1e-9:  # matplotlib draws only the ticks inside the view
                    drawn += [t for t in labels if t.get_visible()]
    drawn += [t for t in fig.findobj(Text) if id(t) not in ticks and t.get_visible()]
    texts = [t for t in drawn if t.get_text().strip()]
    # the glyphs, not the padding: 90% of a text's length and 70% of its line height, about its centre (Bbox.shrunk
    # keeps the lower-left corner, which hid a label cut off at the top or right by up to 30%)
    boxes = [(t.get_text(), t.get_window_extent(renderer).expanded(*(0.7, 0.9) if t.get_rotation() % 180 == 90
                                                                     else (0.9, 0.7))) for t in texts]
    edge = fig.bbox
    cut = [(a, "the figure's edge") for a, box in boxes
           if box.x0 < edge.x0 - 1 or box.x1 > edge.x1 + 1 or box.y0 < edge.y0 - 1 or box.y1 > edge.y1 + 1]
    return cut + [(a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1:] if box.overlaps(other)]


def _save(fig, out: Path, name: str, notes: list[str]) -> list[Path]:
    if overlaps := text_overlaps(fig):
        notes.append(f"{name}: {len(overlaps)} overlapping text pair(s), e.g. {overlaps[0][0]!r} / {overlaps[0][1]!r}")
    paths = [out / f"{name}.pdf", out / f"{name}.png"]
    for p in paths:  # no creation date in a PDF: the same runs draw the same bytes, so a redraw changes no file
        drawn = io.BytesIO()
        fig.savefig(drawn, format=p.suffix[1:], metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
        write_bytes_atomic(p, drawn.getvalue())  # a reader never sees half a figure
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


class _NameWrapper(textwrap.TextWrapper):
    """Breaks at spaces and after an underscore, so a method name splits between its words."""

    def _split(self, text):
        return [c for c in re.split(r"(\s+|(?<=_))", text) if c]


def wrap_name(text: str, width: int) -> str:
    """`text` in lines of about `width` characters: "selective_\ntokens (n=3)", never "selective_token\ns"."""
    return _NameWrapper(width, break_long_words=False).fill(text)


def accuracy_matrices(table, mats, tasks, out, notes):
    labels = [r["label"] for r in table if r["label"] in mats]
    ncols = min(4, len(labels))
    nrows = -(-len(labels) // ncols)
    fig, axes = _new("accuracy_matrices", ncols, nrows, min_height=2.1 * nrows)  # 2 rows fit the stated 4.2 in
    for ax in axes.flat[len(labels):]:
        ax.axis("off")
    stages = ["base", *[f"after {t}" for t in tasks]]
    for k, (ax, label) in enumerate(zip(axes.flat, labels)):
        group = mats[label]
        M = [[sum(m[s][t] for m in group) / len(group) for t in range(len(tasks))] for s in range(len(group[0]))]
        im = ax.imshow(M, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        # a long name wraps (about 11 characters of 8 pt text per inch of panel), not into the next panel
        ax.set_title(wrap_name(f"{label} (n={len(group)})", max(8, int((FULL - 1.4) / ncols * 11))))
        ax.set_xticks(range(len(tasks)), tasks, rotation=90 if ncols * len(tasks) > 8 else 45,
                      ha="center" if ncols * len(tasks) > 8 else "right")
        # stage names on the first panel of each row only: beside every panel they ran into the next one
        ax.set_yticks(range(len(M)), stages if k % ncols == 0 else [])
        if len(tasks) <= 6:
            for s, row in enumerate(M):
                for t, v in enumerate(row):
                    ax.text(t, s, f"{v:.1f}" if ncols * len(tasks) > 16 else f"{v:.2f}", ha="center", va="center",
                            fontsize=5.5, color="w" if v < 0.6 else "k")
    fig.colorbar(im, ax=axes, shrink=0.8, label="recall accuracy (mean over runs)")
    return _save(fig, out, "accuracy_matrices", notes)


def forgetting_curves(table, mats, tasks, out, notes):
    labels = [r["label"] for r in table if r["label"] in mats]
    fig, axes = _new("forgetting_curves", len(tasks), legend_entries=labels)
    stages = ["base", *tasks]
    dodge = 0.2 / max(1, len(labels) - 1)  # methods side by side within ±0.1 of a stage: equal runs stay visible
    for t, (ax, task) in enumerate(zip(axes.flat, tasks)):
        for i, label in enumerate(labels):
            group = mats[label]
            stats = [mean_ci(m[s][t] for m in group) for s in range(len(group[0]))]
            xs, ys = [s - 0.1 + i * dodge for s in range(len(stats))], [m for m, _, _ in stats]
            ax.plot(xs, ys, label=label, lw=1.1, ms=3, **_look(i))
            lo = [max(0.0, m - (h or 0)) for m, h, _ in stats]  # an accuracy's t-interval clipped to what it can be
            hi = [min(1.0, m + (h or 0)) for m, h, _ in stats]
            ax.fill_between(xs, lo, hi, color=_look(i)["color"], alpha=0.15, lw=0)
        ax.set_title(task)
        ax.set_ylim(-0.03, 1.03)  # one scale for every task
        narrow = len(tasks) * len(stages) > 12  # many stages in narrow panels: upright names would collide
        ax.set_xticks(range(len(stages)), stages, rotation=90 if narrow else 45, ha="center" if narrow else "right")
        ax.axvline(t + 1, color="0.7", lw=0.6, ls=":")  # the stage that trained on this task
    axes.flat[0].set_xlabel("after training on")
    axes.flat[0].set_ylabel("recall accuracy")
    _legend_below(fig, axes.flat[0], "forgetting_curves")
    return _save(fig, out, "forgetting_curves", notes)


# the Pareto front: a dashed line through rings around its points (a front of one point drew no line at all, with
# its key in the legend)
FRONT = {"color": "0.4", "lw": 0.8, "ls": "--", "marker": "o", "ms": 10, "mfc": "none", "mec": "0.4", "mew": 0.8}


def _front(points):
    """Points not dominated when both coordinates are better higher, sorted by x."""
    return sorted(p for p in points if not any(o[0] >= p[0] and o[1] >= p[1] and o != p for o in points))


def _coincident(rows, x, y, remarks: list[str]) -> dict:
    """{label: offset} for rows whose points coincide, so each stays visible; the figure's caption says which."""
    seen, shift = defaultdict(list), {}
    for r in rows:
        seen[(round(r[x], 6), round(r[y], 6))].append(r["label"])
    for labels in seen.values():
        if len(labels) > 1:
            remarks.append(f"{', '.join(labels)} coincide and are drawn with small offsets.")
            for k, label in enumerate(labels):
                shift[label] = (k - (len(labels) - 1) / 2) * 0.012
    return shift


BWT_FRONT = "BWT-plasticity front"  # not the board's Pareto front (ranked score against cost): named apart


def stability_plasticity(table, out, notes, remarks):
    rows = [r for r in table if r["bwt"] is not None and r["plasticity"] is not None]
    if not rows:
        notes.append("stability_plasticity: skipped, no run has BWT and plasticity (streams of one task?)")
        return []
    cost = cost_key(table)
    top = max((r[cost] for r in rows if r[cost] is not None), default=None)
    if top is None:
        notes.append("stability_plasticity: no run measured GPU-hours or CPU-hours; markers drawn at one size")
    fig, axes = _new("stability_plasticity", legend_entries=[r["label"] for r in rows] + [BWT_FRONT] * 3)
    ax = axes[0, 0]
    shift = _coincident(rows, "plasticity", "bwt", remarks)
    size = (lambda v: 12 + 100 * v / top) if top else (lambda v: 30)
    for i, r in enumerate(table):
        if r in rows:
            d = shift.get(r["label"], 0.0)
            ax.scatter(r["plasticity"] + d, r["bwt"] + d, s=size(r[cost]) if r[cost] is not None else 30,
                       label=r["label"], alpha=0.85, **_point(i))
    front = _front([(r["plasticity"], r["bwt"]) for r in rows])
    ax.plot(*zip(*front), label=BWT_FRONT, **FRONT)
    ax.axhline(0, color="0.6", lw=0.6)  # BWT 0: nothing forgotten
    if top:  # a size key: what a marker's area stands for, as short as a method's name so the legend keeps two columns
        for v in (top / 4, top):
            ax.scatter([], [], s=size(v), color="0.5", label=f"{v:.3g} {COSTS[cost].removeprefix('training ')}")
    ax.set_xlabel("plasticity (higher: learns more)")
    ax.set_ylabel("BWT (higher: forgets less)")
    _legend_below(fig, ax, "stability_plasticity")
    return _save(fig, out, "stability_plasticity", notes)


def _labelled_axis(ax, rows):
    """Method names on the x axis; more than 8 go vertical so they never collide."""
    vertical = len(rows) > 8
    ax.set_xticks(range(len(rows)), [r["label"] for _, r in rows], rotation=90 if vertical else 30,
                  ha="center" if vertical else "right")


def retention_repetition(table, out, notes, remarks):
    keys = [("general_retention", "general retention (final / base)", 1.0), ("tail_repetition", "tail repetition", None)]
    if all(r[k] is None for r in table for k, _, _ in keys):
        notes.append("retention_repetition: skipped, no run measured general retention or tail repetition")
        return []
    fig, axes = _new("retention_repetition", 2, min_height=2.4 + 0.045 * max(0, len(table) - 8) * 7)
    for ax, (key, name, neutral) in zip(axes.flat, keys):
        rows = [(i, r) for i, r in enumerate(table) if r[key] is not None]
        if not rows:
            notes.append(f"retention_repetition: {key} measured in no run; its panel says so")
            ax.text(0.5, 0.5, f"{name}: not measured", ha="center", va="center", transform=ax.transAxes)
        unbounded = []
        for x, (i, r) in enumerate(rows):
            ax.errorbar(x, r[key], yerr=_err(r, key), fmt=_look(i)["marker"], color=_look(i)["color"], capsize=2)
            ends = r["interval"].get(key, ())
            if not all(math.isfinite(v) for v in ends):
                unbounded.append((x, i, r, ends))
        if neutral is not None:
            ax.axhline(neutral, color="0.6", lw=0.6)  # 1: the probe's accuracy kept
        _labelled_axis(ax, rows)
        _readable_range(ax)
        ax.set_ylabel(name)
        for x, i, r, ends in unbounded:  # no end that way: an arrow from the point to the panel's edge
            for end, edge in zip(ends, ax.get_ylim()):
                if not math.isfinite(end):
                    ax.annotate("", xy=(x, edge), xytext=(x, r[key]), arrowprops={
                        "arrowstyle": "->", "color": _look(i)["color"], "lw": 0.8, "shrinkA": 0, "shrinkB": 0})
            remarks.append(f"{r['label']}'s {name} interval has no {'upper' if ends[1] == math.inf else 'lower'} end "
                           "(a redrawn baseline accuracy of 0): its bar is an arrow to the panel's edge.")
    return _save(fig, out, "retention_repetition", notes)


def _readable_range(ax) -> None:
    """A value axis whose points all coincide (equal values, zero-width intervals) gets a visible range, and no
    axis gets offset notation (autoscaling labelled such an axis '1e-8+9.23077e-1')."""
    lo, hi = ax.get_ylim()
    if hi - lo < 1e-6 * max(1.0, abs(hi)):
        pad = 0.05 * max(1.0, abs(hi))
        ax.set_ylim(lo - pad, hi + pad)
    ax.ticklabel_format(axis="y", useOffset=False)


def _err(row: dict, key: str):
    """Error-bar extents of a row's value: its bootstrap interval (asymmetric) where it has one, else the
    Student-t half-width over runs, else none."""
    if key in row["interval"] and row[key] is not None:
        lo, hi = row["interval"][key]  # an end can be inf (a ratio without a baseline): no bar that way
        return [[max(0.0, row[key] - lo) if math.isfinite(lo) else 0.0],
                [max(0.0, hi - row[key]) if math.isfinite(hi) else 0.0]]
    return row["ci"][key] or 0


SCORE_NAME = {"headline": "headline (nats per token)", "overall": "overall performance (OP)"}
REPORTED = " (cost as reported)"


def cost_vs_score(table, out, notes):
    cost, key = cost_key(table), table[0]["ranked_by"]
    rows = [(i, r) for i, r in enumerate(table) if r[cost] is not None and r[key] is not None]
    if not rows:
        notes.append("cost_vs_score: skipped, no run has both the ranked score and a cost (training FLOPs or hours)")
        return []
    # a submitted method's training FLOPs are its own report (leaderboard.rows): drawn where it puts them, named so
    names = {i: r["label"] + (REPORTED if cost == "train_tflops" and r["costs_reported"] else "") for i, r in rows}
    front = sorted((r[cost], r[key]) for _, r in rows if r["pareto"])  # empty where no row may take it
    fig, axes = _new("cost_vs_score", legend_entries=list(names.values()) + ["Pareto front"] * bool(front))
    ax = axes[0, 0]
    for i, r in rows:
        ax.errorbar(r[cost], r[key], xerr=_err(r, cost), yerr=_err(r, key), fmt=_look(i)["marker"],
                    color=_look(i)["color"], capsize=2, ms=4)
        ax.plot([], [], ls="", ms=4, label=names[i], **_point(i))  # its legend key: the marker, no error-bar cross
    if front:
        ax.plot(*zip(*front), label="Pareto front", drawstyle="steps-post", **FRONT)
    ax.set_xlabel(COST_NAME[cost])
    ax.set_ylabel(SCORE_NAME[key])
    _legend_below(fig, ax, "cost_vs_score")
    return _save(fig, out, "cost_vs_score", notes)


VERSUS = [("vs_reference", "ranked score − full's (higher: better)"),
          ("forgetting_vs_reference", "forgetting − full's (lower: forgets less)")]


def versus_full(table, out, notes):
    """A forest plot: each method's paired difference from full fine-tuning, with its 95% interval (paired bootstrap
    on the same items) and Holm-corrected significance, on the ranked score and on the forgetting measure."""
    rows = [(i, r) for i, r in enumerate(table) if r.get("vs_reference") or r.get("forgetting_vs_reference")]
    if not rows:
        notes.append("versus_full: skipped, no paired comparison with full (no full row, or no per-item records)")
        return []
    reference = next(v["reference"] for _, r in rows for v in (r.get(f) for f, _ in VERSUS) if v)
    full = next((r for r in table if r["label"] == reference), None)
    measure = {"vs_reference": table[0]["ranked_by"], "forgetting_vs_reference": "lp_forgetting"}
    fig, axes = _new("versus_full", 2, min_height=0.9 + 0.16 * len(rows))
    for k, (ax, (field, name)) in enumerate(zip(axes.flat, VERSUS)):
        for y, (i, r) in enumerate(reversed(rows)):
            v = r.get(field)
            if not v:
                continue
            key = measure[field]  # the marker: the observed difference of the means; the bar: the paired interval
            mid = r[key] - full[key] if full and r[key] is not None and full[key] is not None else \
                (v["diff_lo"] + v["diff_hi"]) / 2
            mid = min(max(mid, v["diff_lo"]), v["diff_hi"])
            ax.errorbar(mid, y, xerr=[[mid - v["diff_lo"]], [v["diff_hi"] - mid]], capsize=2, ms=4,
                        fmt=_look(i)["marker"], color=_look(i)["color"], mfc=_look(i)["color"] if v["significant"]
                        else "white")
        ax.axvline(0, color="0.5", lw=0.7)  # no difference from full
        ax.set_yticks(range(len(rows)), [r["label"] for _, r in reversed(rows)] if k == 0 else [])  # shared rows
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlabel(name)
    axes.flat[0].set_title("filled: Holm-corrected p < 0.05", loc="left")
    return _save(fig, out, "versus_full", notes)


CAPTIONS = {
    "accuracy_matrices": "Recall accuracy R[stage][task] per method (mean over its runs): rows the model after each "
                         "stage, columns the tasks.",
    "forgetting_curves": "Each task's recall accuracy after every stage, one line per method (band: 95% t-interval over "
                         "runs, clipped to [0, 1]; none for a single run); the dotted line marks the stage that trained "
                         "on the task.",
    "stability_plasticity": "Plasticity (accuracy gained by training on a task) against BWT (accuracy kept after "
                            "later tasks); marker area: training cost, with its key; dashed: the methods no other "
                            "beats on both (not the board's Pareto front, which sets the ranked score against cost).",
    "retention_repetition": "General retention (final / baseline accuracy of the accuracy probes; 1 = kept) and tail "
                            "repetition of open answers, with 95% intervals.",
    "cost_vs_score": "Estimated training cost against the ranked score, with 95% intervals; dashed: the board's "
                     "Pareto front.",
    "versus_full": "Each method's paired difference from full fine-tuning on the ranked score and on forgetting "
                   "(log-prob), with its 95% paired-bootstrap interval; filled markers: Holm-corrected p < 0.05.",
}


def _captions(out: Path, written: list[Path], section: dict, remarks: dict[str, list[str]]) -> Path:
    facts = dict(section.get("facts", []))
    runs = sum(r["seeds"] for r in section["rows"])
    source = (f"{runs} finished runs of {len(section['rows'])} methods, {facts.get('Model', '')} on "
              f"{facts.get('Stream', '')}, protocol {facts.get('Protocol card', section['key'][:16])}")
    names = [n for n in FIGURES if out / f"{n}.png" in written]
    text = "# Figures\n\n" + f"Drawn by `clbench figures` from {source}.\n\n" + "".join(
        f"- `{n}.pdf` / `{n}.png`: {' '.join([CAPTIONS[n], *remarks.get(n, [])])}\n" for n in names)
    path = out / "README.md"
    write_text_atomic(path, text)
    return path


def write(results_dir, out_dir=None) -> tuple[list[Path], list[str]]:
    """Draw every figure for the ranked protocol; returns (files written, notes on skipped figures)."""
    out = Path(out_dir or Path(results_dir) / "figures")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise StoreError(f"{out}: not a folder of the results' own (a file or a link); remove it or pass --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"{out}: cannot make the figures' folder: {e.strerror}; pass another --out") from None
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
        paths += accuracy_matrices(table, mats, tasks, out, notes)
        paths += forgetting_curves(table, mats, tasks, out, notes)
        remarks = {"stability_plasticity": [], "retention_repetition": []}
        paths += stability_plasticity(table, out, notes, remarks["stability_plasticity"])
        paths += retention_repetition(table, out, notes, remarks["retention_repetition"])
        paths += cost_vs_score(table, out, notes)
        paths += versus_full(table, out, notes)
    paths.append(_captions(out, paths, section, remarks))
    return paths, notes
