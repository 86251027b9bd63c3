"""How many items and seeds a protocol needs: variance components from stored per-item results.

A method's value is the mean over its k runs, which all answer the same n items per view (`data_seed`
fixes them), so its variance has three parts (as the board's intervals take them, harness.metrics.stats.Part):

    Var(n, k) = V_item * n0 / n  +  (max(V_seed, V_own) - V_own + V_own * n0 / n) / k

- V_item: the items' main effect, what the items do to every run alike: the variance of the mean over the
  method's runs when only the items are redrawn (the bootstrap of harness.metrics.stats with the runs fixed),
  less the runs' own item noise, measured at the stored n0 items per view; it shrinks as 1/n when every view
  grows by the same factor.
- V_seed: the sample variance of the metric across the method's runs (seeds, task orders) at n0 items; it
  needs two runs. It holds each run's own item noise V_own (how a run's value moves when the items are redrawn,
  beyond what moves every run's), which shrinks as 1/n too; the rest is the seeds'. s^2 is at least V_own in
  expectation, so a V_seed below it (a low draw: two runs give it one degree of freedom) is taken as V_own.
  Where a method has one run, the pooled V_seed and V_own of the methods that have several stand in for it;
  where none has, the figures are lower bounds from the items alone, and say so.

A paired difference from `full` takes V_item from the bootstrap of the difference itself (the two
methods answered the same items, so their item errors partly cancel) and the seed parts of both methods. The
noise of a value is taken as the board's intervals take it: normal over the items' main effect, plus Student's t
over the seed part (k - 1 degrees of freedom; a difference's with Welch's) times sqrt of it, and q(p) is a
quantile of that sum. The 95% half-width is q(0.975); the minimum detectable difference at alpha 0.05
(two-sided) with power 0.8 is q(0.975) + q(0.8). At k = 1 the seeds' part takes the stored section's pooled
degrees of freedom, as the board gives a single run beside multi-seed rows (normal without them: 1.96 and 0.84
standard errors). With few seeds it is much wider: seed variance alone at 3 seeds gives 2.78 + 0.94
for a difference (Welch's 4 degrees of freedom).
"""
from __future__ import annotations

import math

import numpy as np

from ..metrics import stats
from ..metrics.run_metrics import run_row
from ..store.store import Store
from .leaderboard import REFERENCE, method_groups, protocol_groups, ranking_key

HALF, POWER = 0.975, 0.8  # the quantiles of the half-width and of the power


def components(runs: list[dict], key: str) -> dict | None:
    """{label: {n0, runs, mean, v_item, v_seed, v_own, v_seed_used, v_own_used, pooled_df, diff_v_item,
    observed_diff}} for one section's finished runs (module docstring; v_seed and v_own the method's own, None for
    one run; v_seed_used and v_own_used pooled for it, with the pooled degrees of freedom); None without per-item
    records."""
    groups = {label: [r for r in g if r["status"] == "finished"] for label, g in method_groups(runs).items()}
    groups = {label: g for label, g in groups.items() if g}
    per_run = stats.item_replicates(groups)
    if per_run is None:
        return None
    reps = stats.Replicates({}, per_run, *stats.pooled_seed(per_run))
    reference = next((label for label, g in groups.items() if g[0]["spec"]["method"] == REFERENCE), None)
    parts = {label: reps.part(label, key) for label, m in per_run.items() if key in m}
    out = {}
    for label, part in parts.items():
        group = groups[label]
        several = len(group) > 1
        out[label] = {"n0": _items_per_view(group[0], key), "runs": len(group),
                      "mean": float(np.mean([run_row(r)[key] for r in group])),
                      "v_item": stats.finite_variance(part.items), "v_seed": part.s2 if several else None,
                      "v_own": part.own if several else None,
                      "v_seed_used": part.s2 if part.df else None, "v_own_used": part.own if part.df else 0.0,
                      "pooled_df": reps.pooled_df,
                      "diff_v_item": (stats.finite_variance((part - parts[reference]).items)
                                      if reference in parts and label != reference else None)}
    if reference in out:
        for label, c in out.items():
            c["observed_diff"] = c["mean"] - out[reference]["mean"] if label != reference else None
    return {"reference": reference if reference in out else None, "key": key, "methods": out}


# the view whose item count n stands for, by measure: a probe's own items, the transfer views', else the learned
# items (recall views); every other view the measure reads scales by the same factor
PROBE_VIEWS = {"general": ("general", "heldout"), "instruct_change": ("instruct", "reference")}


def counted_view(key: str) -> tuple[str, str | None, str]:
    """What `n` counts for `key`: (in words, the probe or None for the stream's first task, the view)."""
    if key in PROBE_VIEWS:
        probe, view = PROBE_VIEWS[key]
        return f"the {probe} probe's items", probe, view
    if key == "transfer":
        return "the transfer items per task", None, "transfer"
    return "the learned items per task (the first task's)", None, "recall"


def _items_per_view(run: dict, key: str) -> int:
    """The stored n0 that item counts scale from for `key` (counted_view)."""
    _, probe, view = counted_view(key)
    stage = run["stages"][0]
    return (stage["probes"][probe] if probe else stage["scores"][run["spec"]["stream"][0]])[view]["n"]


def project(c: dict, reference: dict | None, n: int, k: int) -> dict:
    """Half-width of one method's 95% interval and the minimum detectable difference from the reference at
    n items per view and k runs; seed terms left out where unknown (then `lower_bound` is True). The seed terms'
    degrees of freedom: k - 1 each (Welch's for a difference); at k = 1 the board gives a single run the pooled seed
    variance of its multi-seed rows, so a single run takes the stored section's pooled degrees of freedom (as if
    its multi-seed rows stay as they are; `pooled_df`, and normal quantiles without them)."""
    scale = c["n0"] / n
    df = k - 1 if k > 1 else c["pooled_df"]
    own = [_seed_part(c, scale) / k] if c["v_seed_used"] is not None else []
    out = {"half_width": _quantile(HALF, c["v_item"] * scale, own, df), "mdd": None, "lower_bound": not own}
    if reference is not None and c["diff_v_item"] is not None:
        terms = own + ([_seed_part(reference, scale) / k] if reference["v_seed_used"] is not None else [])
        item = c["diff_v_item"] * scale
        if k > 1 and len(terms) == 2:
            df = sum(terms) ** 2 / sum(v * v / (k - 1) for v in terms)  # Welch-Satterthwaite
        out["mdd"] = _quantile(HALF, item, terms, df) + _quantile(POWER, item, terms, df)
        out["lower_bound"] = len(terms) < 2
    return out


def _seed_part(c: dict, scale: float) -> float:
    """A run's seed part at `scale` = n0 / n: the seeds' variance, V_seed - V_own, and the run's own item noise,
    which shrinks with the items. V_seed is taken as at least V_own: s^2 is at least that in expectation, and a low
    draw of it (two runs give it one degree of freedom) would promise what the board cannot give."""
    return max(0.0, c["v_seed_used"] - c["v_own_used"]) + c["v_own_used"] * scale


def _quantile(q: float, item: float, seed_terms: list[float], df: float) -> float:
    """The q-quantile of N(0, item) + sqrt(sum(seed_terms)) T, T Student's t with df degrees of freedom (normal
    where df is 0). A variance below 1e-12 of the other counts as 0: float rounding of an exact 0 (items that all
    agree) is no variance, and broke the root search."""
    from scipy import integrate, optimize
    from scipy.stats import norm, t

    seed = sum(seed_terms)
    item = 0.0 if item <= 1e-12 * seed else item
    if not df or seed <= 1e-12 * item:
        return float(norm.ppf(q)) * math.sqrt(item + seed)
    if item == 0:
        return float(t.ppf(q, df)) * math.sqrt(seed)
    sd_item, sd_seed = math.sqrt(item), math.sqrt(seed)

    def cdf(x):
        return integrate.quad(lambda u: norm.cdf((x - sd_seed * u) / sd_item) * t.pdf(u, df), -math.inf, math.inf)[0]

    top = float(norm.ppf(q)) * sd_item + float(t.ppf(q, df)) * sd_seed  # the quantiles' sum bounds the sum's
    return float(optimize.brentq(lambda x: cdf(x) - q, 0.0, top))


def report(results_dir, items: list[int], seeds: list[int], measure: str | None = None) -> str:
    """The power table of the ranked section of a results folder, as text, for `measure` (a key of
    stats.BOOTSTRAPPED; default: the ranked score)."""
    groups = protocol_groups(Store(results_dir).runs())  # the ranked section's runs, without drawing its board
    if not groups:
        return f"no runs in {results_dir}"
    runs = groups[0][1]
    finished = [r for r in runs if r["status"] == "finished"]
    if not finished:
        return f"{results_dir}: no run of the ranked section has finished: no power analysis"
    key = measure or ranking_key([run_row(r) for r in finished])
    probe = counted_view(key)[1]
    if probe and not all(probe in r["spec"]["probes"] for r in finished):
        return (f"{results_dir}: {key} is measured on the {probe} probe, which the ranked section's runs do not all "
                f"have (their probes: {', '.join(sorted({p for r in runs for p in r['spec']['probes']})) or 'none'}): "
                "no power analysis; give another --measure")
    c = components(runs, key)
    if c is None:
        return (f"{results_dir}: the ranked section's runs have no per-item records (result schema 1): "
                "no power analysis; rerun them with this clbench")
    ref = c["methods"].get(c["reference"]) if c["reference"] else None
    lines = [f"power analysis of {key} ({len(runs)} runs; reference {c['reference'] or 'none'}): 95% interval "
             f"half-width and minimum detectable difference from {REFERENCE} (alpha 0.05 two-sided, power 0.8); "
             f"n: {counted_view(key)[0]}, every other view the measure reads scaled alike",
             "method | stored n, runs | mean | observed diff from full | V_item | V_seed | V_own | " +
             " | ".join(f"n={n}, k={k}: half-width / MDD" for n in items for k in seeds)]
    for label, m in sorted(c["methods"].items()):
        cells = []
        for n in items:
            for k in seeds:
                p = project(m, ref, n, k)
                mdd = "–" if p["mdd"] is None else f"{p['mdd']:.3g}"
                cells.append(f"{p['half_width']:.3g} / {mdd}{' (≥)' if p['lower_bound'] else ''}")
        v_seed, v_own = ("–" if m[v] is None else f"{m[v]:.3g}" for v in ("v_seed", "v_own"))
        diff = "–" if m.get("observed_diff") is None else f"{m['observed_diff']:+.3g}"
        lines.append(f"{label} | {m['n0']}, {m['runs']} | {m['mean']:+.3g} | {diff} | {m['v_item']:.3g} | {v_seed} | "
                     f"{v_own} | " + " | ".join(cells))
    if any(m["v_seed"] is None for m in c["methods"].values()):
        pooled = any(m["v_seed"] is not None for m in c["methods"].values())
        lines.append("V_seed – : one run; " + (
            "the pooled V_seed and V_own of the methods with several stand in" if pooled else
            "(≥): no method has several runs, so no seed variance is known and each figure is a lower bound from "
            "the items alone"))
    df = next(iter(c["methods"].values()))["pooled_df"]
    if df and 1 in seeds and any(k > 1 for k in seeds):
        lines.append(f"k = 1 takes the seed part with the pooled rows' {df:g} degrees of freedom (as the board gives a "
                     "single run), k > 1 with the method's own k - 1: so k = 1 can show narrower than k = 3, on the "
                     "assumption that the method's seeds vary as the pooled rows' do")
    return "\n".join(lines)
