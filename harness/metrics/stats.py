"""Uncertainty that includes the items: bootstrap intervals, paired comparisons and rank bands.

A run of result schema 2 stores every view's per-item outcomes (harness.run.evaluation). One bootstrap
replicate draws, for every task view and the general probe, its items with replacement, the same draw
for every method of a leaderboard section (the methods answered the same items, so they are compared
on the same resampled items: a paired bootstrap), and, for each method, its runs with replacement
(seeds and task orders). Each metric is recomputed from the resampled outcomes by the same functions
as the point estimate (harness.metrics.metrics). A single-seed row therefore still has an interval: the one
its items give.

- interval: the 2.5th and 97.5th percentiles of the replicates (percentile bootstrap).
- paired difference of a method and a reference (`full`): the replicates' differences; two-sided
  p = min(1, 2 min(P(d <= 0), P(d >= 0))), counted with +1 so that it is never 0; Holm's step-down
  correction over the methods compared with the reference.
- rank band: 1 + the number of methods significantly better (pairwise paired tests, Holm-corrected
  over all pairs): methods that cannot be told apart share a rank.

Runs without per-item records (schema 1) get none of this; the leaderboard then falls back to
intervals over seeds and ranks ties equally.
"""
from __future__ import annotations

import numpy as np

from . import metrics

REPLICATES = 2000
ALPHA = 0.05
SEED = 0  # the bootstrap's draws are fixed: a board rebuilt from the same runs gives the same intervals
BOOTSTRAPPED = ("headline", "lp_gain", "instruct_change", "overall", "bwt", "fwt", "plasticity", "transfer", "general",
                "lp_bwt", "lp_plasticity", "lp_forgetting")
CONTINUOUS = ("gold_logprob", "reference_logprob", "logprob")  # per-item log-probability (MC, code, instruct)


def _views(run: dict) -> dict | None:
    """{(task, view): (uids, outcomes [stages + 1, items] of 0/1, log-probabilities [stages + 1, items] or None)}
    of the views the bootstrapped metrics read, the last row the unprepared base model's (`base_model`, else
    stage 0); None when a stage lacks per-item records or a view's items change between stages."""
    tasks, stages = list(run["spec"]["stream"]), run["stages"]
    wanted = [("scores", t, v) for t in tasks for v in ("recall", "transfer")]
    for probe, view in (("general", "heldout"), ("instruct", "reference")):
        if probe in stages[0].get("probes", {}):
            wanted.append(("probes", probe, view))
    base = run.get("base_model") or stages[0]  # the unprepared base model's scores (see metrics.headline)
    out = {}
    for group, task, view in wanted:
        rows, logprobs, uids = [], [], None
        for stage in [*stages, base]:  # the last row: the base model
            items = ((stage.get(group) or {}).get(task) or {}).get(view, {}).get("items")
            if not isinstance(items, dict) or (uids is not None and items.get("uid") != uids):
                return None
            outcome = next((k for k in ("correct", "passed") if k in items), None)
            if outcome is None and task != "instruct":  # the instruct probe has log-probabilities only
                return None
            uids = items["uid"]
            rows.append(items[outcome] if outcome else [0] * len(uids))
            logprobs.append(next((items[k] for k in CONTINUOUS if k in items), None))
        if not uids:
            return None
        continuous = None if any(lp is None for lp in logprobs) else np.asarray(logprobs, dtype=np.float64)
        out[(task, view)] = (tuple(uids), np.asarray(rows, dtype=np.float64), continuous)
    return out


def _run_replicates(run: dict, views: dict, draws: dict) -> dict:
    """{metric: [B] replicates} of one run under the section's item draws."""
    tasks = list(run["spec"]["stream"])

    def resampled(task, view, column=1):  # [stages + base][B]: the view's mean on each replicate's items
        return [row[draws[(task, view)]].mean(axis=1) for row in views[(task, view)][column]]

    def matrix(view, column=1):  # R (outcomes) or L (log-probabilities) [stages + base][task], entries [B]
        return [list(row) for row in zip(*(resampled(t, view, column) for t in tasks))]

    stages = len(run["stages"])
    out = {}
    for view, keys in (("recall", ("overall", "bwt", "fwt", "plasticity")), ("transfer", ("transfer",))):
        R = matrix(view)[:stages]
        summary = {"overall": metrics.overall(R), "bwt": metrics.bwt(R), "fwt": metrics.fwt(R),
                   "plasticity": metrics.plasticity(R)}
        if view == "transfer":
            summary = {"transfer": summary["overall"]}
        out.update({k: summary[k] for k in keys if summary[k] is not None})
    if ("general", "heldout") in views:
        out["general"] = resampled("general", "heldout")[stages - 1]
    if all(views[(t, "recall")][2] is not None for t in tasks):
        L = matrix("recall", column=2)
        out.update({key: value for key, value in metrics.logprob_summary(L[:stages]).items() if value is not None})
        G = resampled("instruct", "reference", column=2) if ("instruct", "reference") in views else None
        out.update(metrics.headline([L[stages], *L[1:stages]], G and [G[stages], *G[1:stages]]))
    return out


def item_replicates(groups: dict[str, list[dict]], replicates: int = REPLICATES) -> dict[str, dict] | None:
    """{label: {metric: [runs, B]}}: each run's metrics under the section's shared item draws (runs fixed);
    None when a run lacks per-item records or the runs did not answer the same items."""
    runs = [r for group in groups.values() for r in group]
    if not runs:
        return None
    views = [_views(r) for r in runs]
    if any(v is None for v in views):
        return None
    shared = {key: uids for key, (uids, _, _) in views[0].items()}
    if any({key: uids for key, (uids, _, _) in v.items()} != shared for v in views[1:]):
        return None
    rng = np.random.default_rng(SEED)
    draws = {key: rng.integers(0, len(uids), size=(replicates, len(uids))) for key, uids in sorted(shared.items())}
    by_run = {id(r): _run_replicates(r, v, draws) for r, v in zip(runs, views)}
    out = {}
    for label, group in sorted(groups.items()):
        per_key = {key: [by_run[id(r)].get(key) for r in group] for key in BOOTSTRAPPED}
        out[label] = {key: np.stack(v) for key, v in per_key.items() if all(x is not None for x in v)}
    return out


def bootstrap(groups: dict[str, list[dict]], replicates: int = REPLICATES) -> dict[str, dict] | None:
    """{label: {metric: [B] replicates}} for the finished runs of each label of one section, the items and
    each label's runs redrawn; None when a run lacks per-item records or the runs did not answer the same
    items."""
    per_run = item_replicates(groups, replicates)
    if per_run is None:
        return None
    rng = np.random.default_rng(SEED + 1)
    out = {}
    for label, metrics_of in per_run.items():
        picks = rng.integers(0, len(groups[label]), size=(replicates, len(groups[label])))  # runs drawn per replicate
        out[label] = {key: matrix[picks.T, np.arange(replicates)].mean(axis=0) for key, matrix in metrics_of.items()}
    return out


def interval(reps: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(reps, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(lo), float(hi)


def p_value(diff: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a paired difference being 0."""
    below, above = (np.sum(diff <= 0) + 1) / (len(diff) + 1), (np.sum(diff >= 0) + 1) / (len(diff) + 1)
    return float(min(1.0, 2 * min(below, above)))


def holm(pvalues: dict) -> dict:
    """Holm's step-down adjusted p-values (monotone, at most 1), by the same keys."""
    order = sorted(pvalues, key=pvalues.get)
    adjusted, running = {}, 0.0
    for i, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * pvalues[key]))
        adjusted[key] = running
    return adjusted


def compare(reps: dict[str, dict], key: str, reference: str) -> dict[str, dict]:
    """Each label against `reference` on metric `key`: {label: {diff_lo, diff_hi, p, p_holm, significant}}."""
    if reference not in reps or key not in reps[reference]:
        return {}
    diffs = {label: r[key] - reps[reference][key] for label, r in reps.items() if label != reference and key in r}
    pvalues = {label: p_value(d) for label, d in diffs.items()}
    adjusted = holm(pvalues)
    return {label: dict(zip(("diff_lo", "diff_hi"), interval(d)), p=pvalues[label], p_holm=adjusted[label],
                        significant=adjusted[label] < ALPHA) for label, d in diffs.items()}


def rank_bands(reps: dict[str, dict], key: str) -> dict[str, int]:
    """{label: 1 + the number of labels significantly better on `key`} (pairwise, Holm over all pairs)."""
    labels = sorted(label for label, r in reps.items() if key in r)
    pairs = {(a, b): p_value(reps[a][key] - reps[b][key]) for i, a in enumerate(labels) for b in labels[i + 1:]}
    adjusted = holm(pairs)
    better = {label: 0 for label in labels}
    for (a, b), p in adjusted.items():
        if p < ALPHA:
            better[b if np.mean(reps[a][key] - reps[b][key]) > 0 else a] += 1
    return {label: 1 + n for label, n in better.items()}
