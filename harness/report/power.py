"""How many items and seeds a protocol needs: variance components from stored per-item results.

A method's value is the mean over its k runs, which all answer the same n items per view (`data_seed`
fixes them), so its variance has two parts:

    Var(n, k) = V_item * n0 / n  +  V_seed / k

- V_item: the variance of the mean over the method's runs when only the items are redrawn (the
  bootstrap of harness.metrics.stats with the runs fixed), measured at the stored n0 items per view; it shrinks
  as 1/n when every view grows by the same factor.
- V_seed: the sample variance of the metric across the method's runs (seeds, task orders); it needs two
  runs. Where a method has one, the pooled V_seed of the methods that have several stands in for it;
  where none has, the figures are lower bounds from the items alone, and say so.

A paired difference from `full` takes V_item from the bootstrap of the difference itself (the two
methods answered the same items, so their item errors partly cancel) and V_seed of both methods. The
noise of a value is taken as the board's intervals take it: normal over the items, plus Student's t over the
seeds (k - 1 degrees of freedom; a difference's with Welch's) times sqrt(V_seed / k), and q(p) is a quantile of
that sum. The 95% half-width is q(0.975); the minimum detectable difference at alpha 0.05 (two-sided) with
power 0.8 is q(0.975) + q(0.8). At k = 1 or without a seed variance the seeds' part is normal: 1.96 and 0.84
standard errors. With few seeds it is much wider: seed variance alone at 3 seeds gives 2.78 + 0.94 for a
difference (Welch's 4 degrees of freedom).
"""
from __future__ import annotations

import math

import numpy as np

from ..metrics import stats
from ..metrics.run_metrics import run_row
from ..store.store import Store
from .leaderboard import REFERENCE, method_groups, ranking_key, sections

HALF, POWER = 0.975, 0.8  # the quantiles of the half-width and of the power


def components(runs: list[dict], key: str) -> dict | None:
    """{label: {n0, runs, v_item, v_seed, diff_v_item}} for one section's finished runs; None without
    per-item records."""
    groups = {label: [r for r in g if r["status"] == "finished"] for label, g in method_groups(runs).items()}
    groups = {label: g for label, g in groups.items() if g}
    per_run = stats.item_replicates(groups)
    if per_run is None:
        return None
    reference = next((label for label, g in groups.items() if g[0]["spec"]["method"] == REFERENCE), None)
    means = {label: m[key].mean(axis=0) for label, m in per_run.items() if key in m}  # [B]: runs fixed
    out = {}
    for label, group in groups.items():
        if label not in means:
            continue
        values = [run_row(r)[key] for r in group]
        out[label] = {"n0": _items_per_view(group[0], key), "runs": len(group), "mean": float(np.mean(values)),
                      "v_item": float(np.var(means[label], ddof=1)),
                      "v_seed": float(np.var(values, ddof=1)) if len(values) > 1 else None,
                      "diff_v_item": (float(np.var(means[label] - means[reference], ddof=1))
                                      if reference in means and label != reference else None)}
    if reference in out:
        for label, c in out.items():
            c["observed_diff"] = c["mean"] - out[reference]["mean"] if label != reference else None
    several = [c for c in out.values() if c["v_seed"] is not None]
    pooled_df = sum(c["runs"] - 1 for c in several)  # as the board pools (stats.pooled_seed): weighted by df
    pooled = sum((c["runs"] - 1) * c["v_seed"] for c in several) / pooled_df if several else None
    for c in out.values():
        c["v_seed_used"] = c["v_seed"] if c["v_seed"] is not None else pooled
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
    n items per view and k runs; seed terms left out where unknown (then `lower_bound` is True). At k = 1 the
    quantiles are normal: optimistic where the board gives a single run beside multi-seed rows the pooled seed
    variance with its few degrees of freedom (docs/metrics.md)."""
    scale = c["n0"] / n
    seed = c["v_seed_used"]
    terms = [seed / k] if seed is not None else []
    item = c["v_item"] * scale
    out = {"half_width": _quantile(HALF, item, terms, k), "mdd": None, "lower_bound": seed is None}
    if reference is not None and c["diff_v_item"] is not None:
        terms = [s / k for s in (seed, reference["v_seed_used"]) if s is not None]
        item = c["diff_v_item"] * scale
        out["mdd"] = _quantile(HALF, item, terms, k) + _quantile(POWER, item, terms, k)
        out["lower_bound"] = out["lower_bound"] or len(terms) < 2
    return out


def _quantile(q: float, item: float, seed_terms: list[float], k: int) -> float:
    """The q-quantile of N(0, item) + sqrt(sum(seed_terms)) T, T Student's t with the Welch-Satterthwaite degrees
    of freedom of the seed terms (each with k - 1); T normal at k = 1. A variance below 1e-12 of the other counts
    as 0: float rounding of an exact 0 (items that all agree) is no variance, and broke the root search."""
    from scipy import integrate, optimize
    from scipy.stats import norm, t

    seed = sum(seed_terms)
    item = 0.0 if item <= 1e-12 * seed else item
    if k < 2 or seed <= 1e-12 * item:
        return float(norm.ppf(q)) * math.sqrt(item + seed)
    df = seed * seed / (sum(v * v for v in seed_terms) / (k - 1))
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
    secs = sections(Store(results_dir).runs())
    if not secs:
        return f"no runs in {results_dir}"
    runs = secs[0]["runs"]
    key = measure or ranking_key(secs[0]["rows"])
    c = components(runs, key)
    if c is None:
        return (f"{results_dir}: the ranked section's runs have no per-item records (result schema 1): "
                "no power analysis; rerun them with this clbench")
    ref = c["methods"].get(c["reference"]) if c["reference"] else None
    lines = [f"power analysis of {key} ({len(runs)} runs; reference {c['reference'] or 'none'}): 95% interval "
             f"half-width and minimum detectable difference from {REFERENCE} (alpha 0.05 two-sided, power 0.8); "
             f"n: {counted_view(key)[0]}, every other view the measure reads scaled alike",
             "method | stored n, runs | mean | observed diff from full | V_item | V_seed | " +
             " | ".join(f"n={n}, k={k}: half-width / MDD" for n in items for k in seeds)]
    for label, m in sorted(c["methods"].items()):
        cells = []
        for n in items:
            for k in seeds:
                p = project(m, ref, n, k)
                mdd = "–" if p["mdd"] is None else f"{p['mdd']:.3g}"
                cells.append(f"{p['half_width']:.3g} / {mdd}{' (≥)' if p['lower_bound'] else ''}")
        v_seed = "–" if m["v_seed"] is None else f"{m['v_seed']:.3g}"
        diff = "–" if m.get("observed_diff") is None else f"{m['observed_diff']:+.3g}"
        lines.append(f"{label} | {m['n0']}, {m['runs']} | {m['mean']:+.3g} | {diff} | {m['v_item']:.3g} | {v_seed} | "
                     + " | ".join(cells))
    if any(m["v_seed"] is None for m in c["methods"].values()):
        pooled = any(m["v_seed"] is not None for m in c["methods"].values())
        lines.append("V_seed – : one run; " + ("the pooled V_seed of the methods with several stands in" if pooled else
                     "(≥): no method has several runs, so no seed variance is known and each figure is a lower "
                     "bound from the items alone"))
    return "\n".join(lines)
