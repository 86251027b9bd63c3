"""Uncertainty that includes the items: bootstrap intervals, paired comparisons and rank bands.

A run of result schema 2 stores every view's per-item outcomes (harness.run.evaluation). One bootstrap
replicate draws, for every task view and every probe with per-item records (general, instruct, stop), its
items with replacement, the same draw for every method of a leaderboard section (the methods answered the
same items, so they are compared on the same resampled items: a paired bootstrap), and recomputes each
run's metrics from the redrawn outcomes by the same functions as the point estimate (harness.metrics.metrics):
the task-view measures (BOOTSTRAPPED), each task's forgetting on the log-probability matrix (TASK_FORGETTING
+ task) and the probes' measures (PROBE_MEASURES). Then each method of n runs (seeds and task orders) gets
its `Part`s: the mean of its runs' values, the items' main effect (the deviation of the runs' mean on the
replicate's items, scaled so that its variance leaves out each run's own item noise) and a seed term s / sqrt(n)
* T, s the runs' standard deviation (seeds, and with them each run's own item noise: counted here once) and T a
draw of Student's t with n - 1 degrees of freedom. With items that agree, or items with no effect of their own,
the interval is then the Student-t interval over the runs, t(0.975, n - 1) s / sqrt(n). Resampling 2 or 3 runs
instead (as this did at first) is bounded by the runs seen, and covered a seed-only mean 61% and 80% of the time
at a nominal 95%; counting the runs' own item noise in the item bootstrap as well (as it did next) made
accuracy intervals 1.2-1.5 times as wide as needed. A bounded measure is clipped to what it can be (BOUNDS: a
share stays in [0, 1]). A single-seed row's seed term takes the seed variance and own item noise pooled over
the section's methods of several runs, with their degrees of freedom (the assumption that methods' seed
variances are alike, as `clbench power` makes it); in a section of single runs only, a row's interval is the
one its items give, a lower bound. Runs of one seed are not paired across methods: a difference's seed term is
Welch's (`difference`).

- interval: the 2.5th and 97.5th percentiles of the replicates (percentile bootstrap). A general retention
  ratio whose redrawn baseline accuracy is 0 is unbounded (inf) where the final accuracy is not 0, so an upper
  end can be inf; where both are 0 it is undefined, and such replicates are left out (of p-values too).
- paired difference of a method and a reference (`full`): the difference of their Parts, on the same redrawn
  items, its seed term with Welch's degrees of freedom (`difference`: paired on the items, not on seeds); two-sided
  p = min(1, 2 min(P(d <= 0), P(d >= 0))), counted with +1 so that it is never 0; Holm's step-down
  correction over the methods compared with the reference.
- rank band: 1 + the number of methods significantly better (pairwise paired tests, Holm-corrected
  over all pairs): methods that cannot be told apart share a rank. A section of many methods draws enough
  replicates of the measures it tests that p's floor cannot decide this (replicates_for, `bootstrap`'s tested).

Runs without per-item records (schema 1) get none of this; the leaderboard then falls back to
intervals over seeds and rank bands by Welch's t over runs (welch_bands).
"""
from __future__ import annotations

import math
import zlib

import numpy as np

from . import metrics
from .run_metrics import NOT_ACCURACY

REPLICATES = 10_000  # at least (a p near 0.01 to about +-0.002); a section of many methods draws more (replicates_for)
FLOOR_SHARE = 0.2  # the smallest p a pair can get, times the pairs Holm corrects over, is at most this share of ALPHA
ALPHA = 0.05
SEED = 0  # the bootstrap's draws are fixed: a board rebuilt from the same runs gives the same intervals
BOOTSTRAPPED = ("headline", "lp_gain", "instruct_change", "overall", "bwt", "fwt", "plasticity", "transfer", "general",
                "lp_bwt", "lp_plasticity", "lp_forgetting")  # the task views' measures (what `clbench power` projects)
PROBE_MEASURES = ("general_retention", "general_retention_base", "stop_rate_change", "tail_repetition")
TASK_FORGETTING = "lp_forgetting:"  # + a task's name: that task's forgetting on the log-probability matrix
# per-item continuous columns: log-probabilities (MC, code, instruct) and the stop probe's tail repetition
CONTINUOUS = ("gold_logprob", "reference_logprob", "logprob", "tail_repetition")
OUTCOMES = ("correct", "passed", "stopped")
STOP = ("stop", "prompts")
# what a bounded measure can be: a replicate whose scaled seed deviation (see above) leaves it is clipped to it
SHARE, DIFFERENCE = (0.0, 1.0), (-1.0, 1.0)
BOUNDS = {"overall": SHARE, "transfer": SHARE, "general": SHARE, "tail_repetition": SHARE, "bwt": DIFFERENCE,
          "fwt": DIFFERENCE, "plasticity": DIFFERENCE, "stop_rate_change": DIFFERENCE,
          "general_retention": (0.0, None), "general_retention_base": (0.0, None)}


def _views(run: dict) -> dict | None:
    """{(task, view): (uids, outcomes [stages + 1, items] of 0/1, continuous values [stages + 1, items] or None)}
    of the views the bootstrapped metrics read, the last row the unprepared base model's (`base_model`, else
    stage 0); None when a stage lacks per-item records or a view's items change between stages. The stop
    probe, which no ranked measure reads, is left out where its records are incomplete."""
    tasks, stages = list(run["spec"]["stream"]), run["stages"]
    wanted = [("scores", t, v) for t in tasks for v in ("recall", "transfer")]
    for probe, view in (("general", "heldout"), ("instruct", "reference")):
        if probe in stages[0].get("probes", {}):
            wanted.append(("probes", probe, view))
    rows = [*stages, run.get("base_model") or stages[0]]  # the last row: the unprepared base model (metrics.headline)
    out = {}
    for group, task, view in wanted:
        if (found := _view(rows, group, task, view)) is None:
            return None
        out[(task, view)] = found
    stop = _view([*stages, stages[0]], "probes", "stop", "prompts")  # its measures start from stage 0
    if stop is not None:
        out[STOP] = stop
    return out


def _view(rows: list[dict], group: str, task: str, view: str) -> tuple | None:
    """One view's (uids, outcomes, continuous values or None) over `rows` (stage records); None where a row lacks
    its per-item records or holds other items."""
    outcomes, continuous, uids = [], [], None
    for stage in rows:
        items = ((stage.get(group) or {}).get(task) or {}).get(view, {}).get("items")
        if not isinstance(items, dict) or (uids is not None and items.get("uid") != uids):
            return None
        outcome = next((k for k in OUTCOMES if k in items), None)
        if outcome is None and task != "instruct":  # the instruct probe has log-probabilities only
            return None
        uids = items["uid"]
        outcomes.append(items[outcome] if outcome else [0] * len(uids))
        continuous.append(next((items[k] for k in CONTINUOUS if k in items), None))
    if not uids:
        return None
    values = None if any(c is None for c in continuous) else np.asarray(continuous, dtype=np.float64)
    return tuple(uids), np.asarray(outcomes, dtype=np.float64), values


def counts_of(draws: np.ndarray, items: int) -> np.ndarray:
    """[B, items] float: how many times each item is drawn in each replicate of `draws` [B, k] (indices)."""
    flat = (draws + np.arange(len(draws))[:, None] * items).ravel()  # replicate b's item i: b * items + i
    counts = np.bincount(flat, minlength=len(draws) * items)
    del flat  # a [B, k] temporary: at most two such arrays beside `draws` at once
    return counts.reshape(len(draws), items).astype(np.float64)


def _means(counts: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """[rows][B]: each row's mean over each replicate's drawn items, as one product with the draw counts (indexing
    the rows with the draws and averaging took 85% of a board's time: [B, k] copies per row and run). A non-finite
    value enters the replicates that draw it, as it would enter their mean: -inf where drawn, nan with +inf. The
    product's order of sums is BLAS's, so the last bits of a replicate of log-probabilities may differ between
    BLAS builds (the committed boards printed the same digits as with the indexed means)."""
    bad = ~np.isfinite(rows)
    out = counts @ np.where(bad, 0.0, rows).T
    if bad.any():
        for j in np.flatnonzero(bad.any(axis=1)):
            hit = counts[:, bad[j]] > 0
            with np.errstate(invalid="ignore"):
                out[:, j] += np.where(hit, rows[j, bad[j]], 0.0).sum(axis=1)
    return list((out / counts.sum(axis=1, keepdims=True)).T)


def _run_replicates(run: dict, views: dict, counts: dict) -> dict:
    """{metric: [B] replicates} of one run under the section's item draws, given as each view's draw counts
    ({view: [B, items]}, counts_of)."""
    tasks = list(run["spec"]["stream"])

    def resampled(task, view, column=1):  # [stages + base][B]: the view's mean on each replicate's items
        return _means(counts[(task, view)], views[(task, view)][column])

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
        out.update({TASK_FORGETTING + task: value for task, value in zip(tasks, metrics.forgetting(L[:stages]))})
    return {**out, **_probe_measures(run, views, resampled, stages)}


def _probe_measures(run: dict, views: dict, resampled, stages: int) -> dict:
    """General retention (where `general` is the run's only accuracy probe: others, like lm-eval's, store no
    items), the stop-rate change and the tail repetition, as harness.metrics.run_metrics computes them."""
    out, final = {}, stages - 1
    accuracy = [p for p in run["stages"][-1]["probes"] if p not in NOT_ACCURACY]
    if accuracy == ["general"] and ("general", "heldout") in views:
        g = resampled("general", "heldout")
        with np.errstate(divide="ignore", invalid="ignore"):  # x / 0: inf (unbounded), 0 / 0: nan (left out)
            out["general_retention"] = g[final] / g[0]
            out["general_retention_base"] = g[final] / g[stages]
    if STOP in views and views[STOP][2] is not None:
        stopped, tail = resampled(*STOP), resampled(*STOP, column=2)
        out["stop_rate_change"] = stopped[final] - stopped[0]
        out["tail_repetition"] = tail[final]
    return out


class ItemReplicates(dict):
    """{label: {metric: [runs, B]}}: each run's metrics under the section's shared item draws (runs fixed), and
    in `points` {label: {metric: [runs]}} each run's metrics on its items as drawn (its point values)."""

    def __init__(self, replicates: dict, points: dict):
        super().__init__(replicates)
        self.points = points


def item_replicates(groups: dict[str, list[dict]], replicates: int = REPLICATES, keep: set | None = None
                    ) -> ItemReplicates | None:
    """The runs' ItemReplicates under the section's shared item draws (of the metrics in `keep`, or all); None
    when a run lacks per-item records or the runs did not answer the same items."""
    runs = [r for group in groups.values() for r in group]
    if not runs:
        return None
    views = [_views(r) for r in runs]
    if any(v is None for v in views):
        return None
    if len({v[STOP][0] if STOP in v else None for v in views}) > 1:  # the optional stop probe: all runs or none
        for v in views:
            v.pop(STOP, None)
    shared = {key: uids for key, (uids, _, _) in views[0].items()}
    if any({key: uids for key, (uids, _, _) in v.items()} != shared for v in views[1:]):
        return None
    rng = np.random.default_rng(SEED)
    counts = {key: counts_of(rng.integers(0, len(uids), size=(replicates, len(uids))), len(uids))
              for key, uids in sorted(shared.items()) if key != STOP}
    if STOP in shared:  # its own generator: the task views' draws stay those of boards made before it was drawn
        n = len(shared[STOP])
        counts[STOP] = counts_of(np.random.default_rng(SEED + 2).integers(0, n, (replicates, n)), n)
    as_drawn = {key: np.ones((1, len(uids))) for key, uids in shared.items()}

    def kept(metrics: dict) -> dict:
        return metrics if keep is None else {key: value for key, value in metrics.items() if key in keep}

    by_run = {id(r): kept(_run_replicates(r, v, counts)) for r, v in zip(runs, views)}
    points = {id(r): kept(_run_replicates(r, v, as_drawn)) for r, v in zip(runs, views)}
    out, point_out = {}, {}
    for label, group in sorted(groups.items()):
        keys = {key for r in group for key in by_run[id(r)]}
        keys = sorted(key for key in keys if all(by_run[id(r)].get(key) is not None for r in group))
        out[label] = {key: np.stack([by_run[id(r)][key] for r in group]) for key in keys}
        point_out[label] = {key: np.array([float(points[id(r)][key][0]) for r in group]) for key in keys}
    return ItemReplicates(out, point_out)


def replicates_for(labels: int) -> int:
    """B for a section of `labels` methods: REPLICATES, or more where the rank bands' Holm correction over all
    L(L - 1)/2 pairs needs it. A pair's p is at least 2/(B + 1) (module docstring), so with 2,000 replicates
    Holm over the 55 pairs of 11 methods could separate none of them, however far apart; B is raised until
    that floor times the pairs is at most FLOOR_SHARE of ALPHA (30,600 replicates for 18 methods)."""
    pairs = labels * (labels - 1) // 2
    return max(REPLICATES, math.ceil(2 * pairs / (FLOOR_SHARE * ALPHA)))


def finite_variance(values: np.ndarray) -> float:
    """The sample variance of the finite values (0 with fewer than two)."""
    finite = values[np.isfinite(values)]
    return float(np.var(finite, ddof=1)) if len(finite) > 1 else 0.0


class Part:
    """One label's value on a measure, or a difference of two labels', in the parts its interval adds up:

    - mean: the mean over the label's runs' values (each on its items as drawn);
    - deviations: [B] the deviation of the runs' mean on each replicate's items from `mean`; of their variance,
      `noise` is the runs' own item noise (own / n), the rest the items' main effect (`items`);
    - seed: the seed variance of the mean, s^2 / n, s^2 the runs' variance (seeds, and each run's own item noise,
      on these items), with its degrees of freedom df (0 and 0: unknown). s^2 is at least `own` in expectation,
      but it is not floored there: the Student-t interval covers because s^2 is as often low as high, and a floor
      made 2-seed OP intervals cover 100% (simulated); runs that tie by chance get a narrow interval, as a t
      interval over tied values does;
    - own, s2: each run's own item noise and s^2 (what a single run's Part pools; None for a difference).

    The interval's replicates are mean + items + sqrt(seed) T, T a draw of Student's t with df: the runs' own
    item noise is counted once, in s^2. Counting it in the item bootstrap too made accuracy intervals 1.2-1.5
    times as wide as needed at 2-5 seeds (docs/metrics.md)."""

    def __init__(self, mean, deviations, noise, seed, df, own=None, s2=None):
        self.mean, self.deviations, self.noise, self.seed, self.df = mean, deviations, noise, seed, df
        self.own, self.s2 = own, s2

    def __sub__(self, other: "Part") -> "Part":
        """The difference, seed terms with Welch-Satterthwaite's degrees of freedom."""
        v = self.seed + other.seed
        den = sum(x.seed ** 2 / x.df for x in (self, other) if x.df)
        df = v * v / den if v > 0 and den > 0 else 0.0
        return Part(self.mean - other.mean, self.deviations - other.deviations, self.noise + other.noise, v, df)

    @property
    def items(self) -> np.ndarray:
        """[B] the item main effect: the deviations scaled so that their variance is theirs less `noise` (>= 0)."""
        finite = np.isfinite(self.deviations)
        total = finite_variance(self.deviations)
        if total <= 0 or not self.noise > 0:
            return self.deviations
        scale = math.sqrt(max(0.0, total - self.noise) / total)
        return np.where(finite, np.where(finite, self.deviations, 0.0) * scale, self.deviations)  # inf stays inf

    def draw(self, seed_t: np.ndarray) -> np.ndarray:
        """[B] replicates, mean + items + sqrt(seed) T for the given draws of T (an inf or nan replicate stays so)."""
        usable = np.isfinite(self.seed) and self.seed > 0
        with np.errstate(invalid="ignore"):
            return self.mean + self.items + (math.sqrt(self.seed) * seed_t if usable else 0.0)


def _runs(matrix: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, float]:
    """Of a [runs, B] replicate matrix and the runs' point values: the deviation of the runs' mean on each
    replicate from their mean ([B]; inf or nan where a replicate is), and each run's own item noise (the runs'
    variance about their point values on each replicate, averaged over the replicates where all are finite; 0 for
    one run)."""
    with np.errstate(invalid="ignore"):
        about = matrix - values[:, None]
        every = np.isfinite(about).all(axis=0)
    own = float(about[:, every].var(axis=0, ddof=1).mean()) if len(matrix) > 1 and every.any() else 0.0
    return about.mean(axis=0), own


class Replicates(dict):
    """{label: {metric: [B] replicates}}, what `bootstrap` returns, with what `difference` needs: each label's
    per-run item replicates ({metric: [runs, B]}) and the section's pooled seed variance (`pooled_seed`)."""

    def __init__(self, marginal: dict, per_run: ItemReplicates, pooled: dict, pooled_df: int):
        super().__init__(marginal)
        self.per_run, self.pooled, self.pooled_df = per_run, pooled, pooled_df

    def part(self, label: str, key: str) -> Part:
        """The label's Part on `key`: its own runs' s^2 with n - 1 degrees of freedom; for a single run the pooled
        s^2 and own item noise with the pooled df (0 and 0 where the section has no label of several runs). Where a
        run's value is unbounded or undefined (a retention ratio over a baseline of 0), the runs' mean on each
        replicate's items as it is, without a seed term."""
        values, matrix = self.per_run.points[label][key], self.per_run[label][key]
        if not np.isfinite(values).all():
            with np.errstate(invalid="ignore"):
                return Part(0.0, matrix.mean(axis=0), 0.0, 0.0, 0)
        deviations, own = _runs(matrix, values)
        n = len(values)
        if n > 1:
            s2, df = float(np.var(values, ddof=1)), n - 1
        elif key in self.pooled:
            (s2, own), df = self.pooled[key], self.pooled_df
        else:
            s2, own, df = 0.0, 0.0, 0
        return Part(float(np.mean(values)), deviations, own / n, s2 / n, df, own, s2)


def pooled_seed(per_run: ItemReplicates) -> tuple[dict, int]:
    """({metric: (s^2, own item noise)}, df): a section's labels of several runs pooled, sum (n - 1) x / sum (n - 1),
    and its degrees of freedom; what a single-run label's seed term takes (the assumption, as `clbench power` makes
    it: methods' seed variances are alike). ({}, 0) without such labels; a measure some run's value of which is
    unbounded or undefined is not pooled."""
    several = [label for label, m in per_run.items() if m and len(next(iter(m.values()))) > 1]
    df = sum(len(next(iter(per_run[label].values()))) - 1 for label in several)
    keys = set.intersection(*(set(per_run[label]) for label in several)) if several else set()
    keys = {key for key in keys if all(np.isfinite(per_run.points[label][key]).all() for label in several)}
    pooled = {}
    for key in keys:
        s2, own = 0.0, 0.0
        for label in several:
            values = per_run.points[label][key]
            s2 += (len(values) - 1) * float(np.var(values, ddof=1))
            own += (len(values) - 1) * _runs(per_run[label][key], values)[1]
        pooled[key] = (s2 / df, own / df)
    return pooled, df


def bootstrap(groups: dict[str, list[dict]], replicates: int | None = None, tested: tuple = ()) -> Replicates | None:
    """{label: {metric: [B] replicates}} for the finished runs of each label of one section: each label's
    Part (`Replicates.part`), mean + items + sqrt(seed) T, T a draw of Student's t with its df; B = `replicates`,
    else REPLICATES, and for the `tested` metrics (those rank bands and Holm-corrected comparisons read)
    replicates_for(the labels): a section of many labels holds its many replicates of those alone (75 labels held
    555,000 of every metric, 16 GB). None when a run lacks per-item records or the runs did not answer the same
    items."""
    base = replicates or REPLICATES
    many = replicates or replicates_for(len(groups))
    per_run = item_replicates(groups, base)
    if per_run is None:
        return None
    if many > base and tested:  # the same draws as one pass of `many` would make: the tested metrics as they were
        more = item_replicates(groups, many, keep=set(tested))
        for label in per_run:
            per_run[label].update(more[label])
    out = Replicates({}, per_run, *pooled_seed(per_run))
    rng = np.random.default_rng(SEED + 1)
    for label, metrics_of in per_run.items():
        n = len(groups[label])
        df = n - 1 if n > 1 else out.pooled_df
        seed_t = rng.standard_t(df, size=many) if df else np.zeros(many)  # T of the seed term
        out[label] = {}
        for key in metrics_of:
            part = out.part(label, key)
            reps = part.draw(seed_t[:len(part.deviations)])
            out[label][key] = np.clip(reps, *BOUNDS[key]) if key in BOUNDS else reps
    return out


def difference(reps: dict, a: str, b: str, key: str) -> np.ndarray:
    """[B] replicates of label a's `key` minus label b's, on the same redrawn items. From `bootstrap`: the
    difference of their Parts (`Replicates.part`): of their means, plus the item main effect of the difference
    (its item deviations less both labels' own item noise), plus sqrt(seed_a + seed_b) T, T a draw of Student's t
    with the Welch-Satterthwaite degrees of freedom (seeds are not paired across methods; two single runs share
    the pooled estimate, so its own degrees of freedom). From any other {label: {key: [B]}}: the replicates
    subtracted."""
    if not isinstance(reps, Replicates):
        return reps[a][key] - reps[b][key]
    part = reps.part(a, key) - reps.part(b, key)
    if all(len(reps.per_run[x][key]) == 1 for x in (a, b)):  # both seed terms are the one pooled estimate
        part.df = float(reps.pooled_df)
    rng = np.random.default_rng([SEED + 3, zlib.crc32(f"{a}\0{b}\0{key}".encode())])  # fixed per pair and measure
    size = len(part.deviations)
    return part.draw(rng.standard_t(part.df, size) if np.isfinite(part.df) and part.df > 0 else np.zeros(size))


def interval(reps: np.ndarray) -> tuple[float, float] | None:
    """The percentile interval of the replicates where the measure exists (see the module's docstring); None
    where it exists in none."""
    reps = reps[~np.isnan(reps)]
    if not reps.size:
        return None
    big = np.finfo(np.float64).max  # inf stands in as the largest float, so interpolating next to it gives no nan
    ends = np.percentile(np.clip(reps, -big, big), [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    lo, hi = (math.copysign(math.inf, e) if abs(e) > 1e300 else float(e) for e in ends)
    return lo, hi


def p_value(diff: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a paired difference being 0 (replicates where it is undefined left out)."""
    diff = diff[~np.isnan(diff)]
    if not diff.size:
        return 1.0
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
    pvalues, intervals = {}, {}
    for label, r in reps.items():  # one difference's replicates held at a time
        if label != reference and key in r:
            d = difference(reps, label, reference, key)
            pvalues[label], intervals[label] = p_value(d), interval(d) or (math.nan, math.nan)
    adjusted = holm(pvalues)
    return {label: dict(zip(("diff_lo", "diff_hi"), intervals[label]), p=pvalues[label],
                        p_holm=adjusted[label], significant=adjusted[label] < ALPHA) for label in pvalues}


def welch_bands(values: dict[str, list[float]]) -> dict[str, int]:
    """{label: 1 + the number of labels significantly better} from per-run values alone (runs without per-item
    records): Welch's t test of every pair of labels with two runs or more each, Holm-corrected over those
    pairs. A label of one run has no variance to test with, so it is told apart from none: single-run rows
    share rank 1, where ranking their means would rank noise."""
    from scipy.stats import ttest_ind

    def settled(v):  # runs equal but for float rounding are equal: rounding is no variance to test with
        return [float(np.mean(v))] * len(v) if np.ptp(v) <= 1e-9 * max(1.0, abs(float(np.mean(v)))) else list(v)

    values = {label: settled(v) for label, v in values.items() if v}
    labels = sorted(values)
    pvalues = {}
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            if len(values[a]) > 1 and len(values[b]) > 1:
                p = float(ttest_ind(values[a], values[b], equal_var=False).pvalue)
                pvalues[(a, b)] = p if math.isfinite(p) else 1.0  # nan: two constant groups of one value
    better = {label: 0 for label in labels}
    for (a, b), p in holm(pvalues).items():
        if p < ALPHA:
            better[b if np.mean(values[a]) > np.mean(values[b]) else a] += 1
    return {label: 1 + n for label, n in better.items()}


def rank_bands(reps: dict[str, dict], key: str) -> dict[str, int]:
    """{label: 1 + the number of labels significantly better on `key`} (pairwise, Holm over all pairs)."""
    labels = sorted(label for label, r in reps.items() if key in r)
    pvalues, a_ahead = {}, {}
    for i, a in enumerate(labels):  # one pair's replicates held at a time: 75 labels make 2,775 pairs
        for b in labels[i + 1:]:
            d = difference(reps, a, b, key)
            pvalues[(a, b)], a_ahead[(a, b)] = p_value(d), np.nanmean(d) > 0
    better = {label: 0 for label in labels}
    for (a, b), p in holm(pvalues).items():
        if p < ALPHA:
            better[b if a_ahead[(a, b)] else a] += 1
    return {label: 1 + n for label, n in better.items()}
