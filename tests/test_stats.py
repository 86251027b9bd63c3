"""harness.metrics.stats: bootstrap intervals over items and runs, paired comparisons, Holm, rank bands (#14)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
from scipy.stats import t as student_t
from synthetic_runs import coin_flip_runs, synthetic_run

from harness.metrics import stats
from harness.metrics.run_metrics import run_row
from harness.report import leaderboard, tables
from harness.store.store import Store
from harness.store.validate import problem

N = 40  # items per view


def _R(final, base=(0.25, 0.25), after1=(0.75, 0.25)):
    return [list(base), list(after1), list(final)]


def test_synthetic_v2_runs_are_valid(tmp_path):
    run = synthetic_run("full", 0, _R([0.5, 0.75]), items=N)
    Store(tmp_path).save_run(run)
    assert problem(tmp_path / "runs" / f"{run['run_id']}.json") == (run, None)


def test_a_single_run_gets_an_interval_from_its_items_as_wide_as_the_binomial_one():
    """Second source: OP after the last stage is the mean of T independent accuracies over N items, so
    its standard error is sqrt(sum p(1-p)/N) / T; the bootstrap's 95% interval is about +-1.96 of it."""
    final = [0.5, 0.75]
    reps = stats.bootstrap({"full": [synthetic_run("full", 0, _R(final), items=N)]})
    lo, hi = stats.interval(reps["full"]["overall"])
    se = math.sqrt(sum(p * (1 - p) / N for p in final)) / len(final)
    assert lo < 0.625 < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_seeds_widen_the_interval_beyond_the_items():
    same = [synthetic_run("full", s, _R([0.5, 0.75]), items=N) for s in range(3)]
    spread = [synthetic_run("full", s, _R([f, 0.75]), items=N) for s, f in enumerate((0.25, 0.5, 0.75))]
    width = {k: np.subtract(*stats.interval(stats.bootstrap({"full": g})["full"]["overall"])[::-1])
             for k, g in (("same", same), ("spread", spread))}
    assert width["spread"] > 1.3 * width["same"]


def test_paired_comparison_finds_a_real_difference_and_not_a_tie():
    full = synthetic_run("full", 0, _R([0.25, 0.75]), items=N)  # forgot the first task
    keeps = synthetic_run("keeps", 0, _R([0.75, 0.75]), items=N, method="replay")
    twin = synthetic_run("twin", 0, _R([0.25, 0.75]), items=N, method="ewc")
    reps = stats.bootstrap({"full": [full], "keeps": [keeps], "twin": [twin]})
    vs = stats.compare(reps, "overall", "full")
    assert vs["keeps"]["significant"] and vs["keeps"]["diff_lo"] > 0
    assert not vs["twin"]["significant"] and vs["twin"]["p"] == 1.0
    assert stats.rank_bands(reps, "overall") == {"keeps": 1, "full": 2, "twin": 2}


def test_holm_adjusts_step_down_and_stays_monotone():
    assert stats.holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert stats.holm({"a": 0.5, "b": 0.6}) == {"a": 1.0, "b": 1.0}


def test_runs_that_did_not_answer_the_same_items_are_not_paired():
    a = synthetic_run("full", 0, _R([0.5, 0.75]), items=N)
    b = synthetic_run("lora", 0, _R([0.5, 0.75]), items=N // 2, method="lora")
    assert stats.bootstrap({"full": [a], "lora": [b]}) is None
    assert stats.bootstrap({"full": [a], "old": [synthetic_run("old", 0, _R([0.5, 0.75]))]}) is None


def test_the_board_shows_intervals_rank_bands_and_the_difference_from_full():
    runs = [synthetic_run("full", 0, _R([0.25, 0.75]), items=N),
            synthetic_run("keeps", 0, _R([0.75, 0.75]), items=N, method="replay"),
            synthetic_run("twin", 0, _R([0.25, 0.75]), items=N, method="ewc")]
    secs = leaderboard.sections(runs)
    by = {r["label"]: r for r in secs[0]["rows"]}
    assert [by[k]["rank"] for k in ("keeps", "full", "twin")] == [1, 2, 2]  # a tie is not ranked by name
    assert by["full"]["vs_reference"] is None and by["keeps"]["vs_reference"]["significant"]
    md = tables.markdown(secs, leaderboard.header(runs))
    keeps = next(line for line in md.splitlines() if line.startswith("| 1 | keeps |"))
    assert "0.750 [" in keeps and ", sig." in keeps and "1 !" in keeps
    twin = next(line for line in md.splitlines() if "| twin |" in line)
    assert twin.startswith("| 2 | twin |") and "p 1" in twin and "sig." not in twin


def test_forgetting_on_the_log_probability_view_gets_an_interval_that_excludes_zero():
    full = synthetic_run("full", 0, _R([0.25, 0.75]), items=N)  # task 0 learned (0.75), then forgotten (0.25)
    reps = stats.bootstrap({"full": [full]})
    lo, hi = stats.interval(reps["full"]["lp_forgetting"])
    assert 0 < lo <= 0.5 * 1.5 <= hi  # the point value: half the items fell from -0.5 to -2.0 nats
    assert leaderboard.rows([full])[0]["lp_forgetting"] == pytest.approx(0.75)


def test_the_board_marks_a_method_that_forgets_significantly_less_than_full():
    """The ranked score rewards learning; whether a method mitigates forgetting is its own paired test on the
    forgetting measure (log-prob forgetting), shown beside it: lower is less forgetful."""
    runs = [synthetic_run("full", 0, _R([0.25, 0.75]), items=N),
            synthetic_run("keeps", 0, _R([0.75, 0.75]), items=N, method="replay"),
            synthetic_run("twin", 0, _R([0.25, 0.75]), items=N, method="ewc")]
    secs = leaderboard.sections(runs)
    by = {r["label"]: r for r in secs[0]["rows"]}
    keeps, twin = by["keeps"]["forgetting_vs_reference"], by["twin"]["forgetting_vs_reference"]
    assert keeps["significant"] and keeps["diff_hi"] < 0 and not twin["significant"]
    assert by["full"]["forgetting_vs_reference"] is None
    md = tables.markdown(secs, leaderboard.header(runs))
    assert "Forgetting vs full ↓" in next(x for x in md.splitlines() if x.startswith("| Rank ↓"))
    line = next(x for x in md.splitlines() if "| keeps |" in x)
    assert line.count(", sig.") == 2
    csv_head = tables.csv_text(secs, leaderboard.header(runs)).splitlines()[0].split(",")
    assert {"forgetting_vs_full_lo", "forgetting_vs_full_hi", "forgetting_vs_full_p_holm"} <= set(csv_head)


def _set_items(view: dict, right: int, n: int = N, **columns):
    """A view's per-item records: the first `right` of `n` items correct, plus `columns` (lists)."""
    view["items"] = {"uid": [f"i{k}" for k in range(n)], "correct": [int(k < right) for k in range(n)], **columns}
    view.update(score=right / n, n=n)


def _with_stop(run: dict, stopped: list[int], tail: list[float], n: int = N) -> dict:
    """The stop probe after every stage: the first stopped[s] of n answers stopped, the first `tail[s] * n`
    of them (at stage s) with a repeated tail (share 1.0, the rest 0.0)."""
    for stage, k, t in zip(run["stages"], stopped, tail):
        flags, reps = [k_ < k for k_ in range(n)], [float(k_ < round(t * n)) for k_ in range(n)]
        stage["probes"]["stop"] = {"prompts": {
            "stop_rate": k / n, "tail_repetition": sum(reps) / n, "n": n,
            "items": {"uid": [f"p{i}" for i in range(n)], "stopped": flags, "length": [8] * n, "tail_repetition": reps}}}
    return run


def test_the_probes_measures_get_intervals_from_their_items():
    """Second source: the stop-rate change is the share of the resampled prompts that stop at the end but not
    at stage 0 (half of them): binomial, standard error sqrt(0.25 / N); tail repetition likewise."""
    run = _with_stop(synthetic_run("full", 0, _R([0.5, 0.75]), items=N), stopped=[N // 2, N // 2, N],
                     tail=[0.0, 0.0, 0.25])
    for stage, right in zip(run["stages"], (N // 2, N // 2, N // 4)):  # general: 0.5 at stage 0, 0.25 at the end
        _set_items(stage["probes"]["general"]["heldout"], right, gold_logprob=[-1.0] * N)
    reps = stats.bootstrap({"full": [run]})["full"]
    se = math.sqrt(0.25 / N)
    lo, hi = stats.interval(reps["stop_rate_change"])
    assert lo < 0.5 < hi and (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)
    lo, hi = stats.interval(reps["tail_repetition"])
    assert lo < 0.25 < hi and (hi - lo) == pytest.approx(2 * 1.96 * math.sqrt(0.25 * 0.75 / N), rel=0.15)
    lo, hi = stats.interval(reps["general_retention"])
    assert lo < 0.5 < hi < 1
    row = leaderboard.rows([run])[0]
    assert row["stop_rate_change"] == 0.5 and row["general_retention"] == 0.5
    assert {"stop_rate_change", "tail_repetition", "general_retention", "general_retention_base"} <= set(row["interval"])
    md = tables.markdown(leaderboard.sections([run]), leaderboard.header([run]))
    assert "+0.500 [" in next(line for line in md.splitlines() if line.startswith("| 1 | full |"))


def test_a_retention_ratio_without_a_baseline_is_unbounded_not_left_out():
    """Replicates whose redrawn stage-0 accuracy is 0 have an unbounded ratio where the final one is not 0: kept as
    inf, so the upper end says so (dropping them cut off exactly the upper tail); 0 / 0 is left out."""
    run = synthetic_run("full", 0, _R([0.5, 0.75]), items=N)
    for stage, right in zip(run["stages"], (1, 1, 2)):  # 1 of 10 general items right at stage 0, 2 at the end
        _set_items(stage["probes"]["general"]["heldout"], right, n=10, gold_logprob=[-1.0] * 10)
    reps = stats.bootstrap({"full": [run]})["full"]["general_retention"]
    assert np.isinf(reps).mean() > 0.2  # (9/10)^10 of the draws hold no right answer at stage 0
    lo, hi = stats.interval(reps)
    assert lo <= 2 and hi == math.inf
    assert not np.isnan(stats.p_value(np.array([np.nan, 1.0, -1.0])))


def test_each_tasks_forgetting_gets_an_interval_on_the_board():
    runs = [synthetic_run("full", 0, _R([0.25, 0.75]), items=N),  # stem forgotten: 0.75 -> 0.25
            synthetic_run("keeps", 0, _R([0.75, 0.75]), items=N, method="replay")]
    by = {r["label"]: r for r in leaderboard.rows(runs)}
    lo, hi = by["full"]["task_forgetting_interval"]["stem"]
    assert by["full"]["task_forgetting"]["stem"] == pytest.approx(0.75) and 0 < lo < 0.75 < hi
    assert by["keeps"]["task_forgetting_interval"]["stem"] == (0.0, 0.0)
    md = tables.markdown(leaderboard.sections(runs), leaderboard.header(runs))
    assert f"| full | +0.750 [{lo:+.3f}, {hi:+.3f}] |" in md


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "results/reference/standard/runs").glob("*.json"))[:3],
                         ids=lambda p: p.stem)
def test_a_replicate_on_the_items_as_drawn_is_the_point_estimate(path):
    """Second source for every bootstrapped measure on a real stored run (the standard board's): resampling
    each view's items as they are, once, recomputes run_metrics.run_row's values (which read the views' stored
    means: equal to the items' within the float32 rounding of stored log-probabilities)."""
    run = json.loads(path.read_text())
    views = stats._views(run)
    same = {key: stats.counts_of(np.arange(len(uids))[None, :], len(uids)) for key, (uids, _, _) in views.items()}
    replicate = stats._run_replicates(run, views, same)
    row = run_row(run)
    expected = {**{k: row[k] for k in (*stats.BOOTSTRAPPED, *stats.PROBE_MEASURES)},
                **{stats.TASK_FORGETTING + t: v for t, v in row["lp_task_forgetting"].items()}}
    assert set(replicate) == set(expected)
    assert {k: float(v[0]) for k, v in replicate.items()} == pytest.approx(expected, rel=0, abs=1e-6)


@pytest.mark.parametrize("n", [2, 3])
def test_the_seed_term_of_an_interval_is_the_student_t_interval_over_the_runs(n):
    """Second source: runs whose items all agree (no item variance) and whose last task is learned or not by
    seed. The interval is then the Student-t interval of the runs' mean, t(0.975, n - 1) s / sqrt(n), as the board's
    `± h` over runs. Resampling the runs (before) gave about 0.7 s at two seeds, where t gives 9 s."""
    runs = [synthetic_run("full", s, _R([1.0, op], base=(0.0, 0.0), after1=(1.0, 0.0)), items=N)
            for s, op in enumerate((1.0, 0.0, 1.0)[:n])]
    values = [run_row(r)["lp_plasticity"] for r in runs]  # 1.5 or 0.75 nats: unbounded, never clipped
    lo, hi = stats.interval(stats.bootstrap({"full": runs})["full"]["lp_plasticity"])
    half = student_t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert (hi + lo) / 2 == pytest.approx(np.mean(values), abs=0.1 * half)


def test_an_interval_stays_within_what_its_measure_can_be():
    """Scaling the seeds' deviations (above) must not carry a share below 0 or above 1: three runs, one of
    whose final recall is perfect and two near it."""
    runs = [synthetic_run("full", s, _R([op, op], base=(0.0, 0.0), after1=(1.0, 0.0)), items=N)
            for s, op in enumerate((1.0, 0.975, 0.95))]
    lo, hi = stats.interval(stats.bootstrap({"full": runs})["full"]["overall"])
    assert lo < 0.975 and hi == 1.0


def test_rank_bands_separate_a_dozen_methods_far_apart():
    """With 2,000 replicates a pair's p is at least 2/2001, and Holm over the 66 pairs of 12 methods multiplies it
    past 0.05: every method shared rank 1 however far apart (an 18-method board would have been unranked)."""
    items, step = 200, 16  # each method gets 16 more of the first task's 200 items right than the one before
    groups = {f"m{j:02d}": [synthetic_run(f"m{j:02d}", 0, _R([step * j / items, 0.75]), items=items)]
              for j in range(12)}
    reps = stats.bootstrap(groups, tested=("overall",))
    assert len(reps["m00"]["overall"]) == stats.replicates_for(12) > stats.REPLICATES
    assert stats.rank_bands(reps, "overall") == {f"m{j:02d}": 12 - j for j in range(12)}


def test_a_section_of_many_labels_holds_its_many_replicates_of_the_tested_metrics_alone():
    """Every metric was drawn replicates_for(labels) times: the standard tune's 75 labels held 555,000 replicates of
    each of about 25 metrics per run (16 GB; Ray's memory monitor killed the tune's worker beside it). The tested
    metric's replicates are those one pass of that many gives, so rank bands and comparisons are as they were."""
    groups = {f"m{j:02d}": [synthetic_run(f"m{j:02d}", 0, _R([j / 20, 0.75]), items=20)] for j in range(16)}
    many = stats.replicates_for(16)
    reps = stats.bootstrap(groups, tested=("overall",))
    assert {len(reps["m03"][k]) for k in reps["m03"]} == {stats.REPLICATES, many}
    assert len(reps["m03"]["overall"]) == many and len(reps["m03"]["bwt"]) == stats.REPLICATES
    one_pass = stats.bootstrap(groups, replicates=many)
    assert np.array_equal(reps["m03"]["overall"], one_pass["m03"]["overall"])
    assert stats.rank_bands(reps, "overall") == stats.rank_bands(one_pass, "overall")
    assert stats.compare(reps, "overall", "m00") == stats.compare(one_pass, "overall", "m00")


def test_a_difference_between_methods_of_few_seeds_is_welchs_t_interval():
    """Second source: scipy's Welch t interval. Runs whose items all agree, so the seeds are the only noise: 3 runs
    of one method against 2 of another. Drawing each method's seed term on its own summed two heavy t tails and
    gave an interval 2.4 times as wide as Welch's here."""
    def runs(label, method, ops):
        return [synthetic_run(label, s, _R([1.0, op], base=(0.0, 0.0), after1=(1.0, 0.0)), items=N, method=method)
                for s, op in enumerate(ops)]
    a, b = runs("a", "full", (1.0, 0.0, 1.0)), runs("b", "replay", (1.0, 0.0))
    reps = stats.bootstrap({"a": a, "b": b})
    lo, hi = stats.interval(stats.difference(reps, "a", "b", "lp_plasticity"))
    va, vb = ([run_row(r)["lp_plasticity"] for r in g] for g in (a, b))
    welch = scipy_stats.ttest_ind(va, vb, equal_var=False).confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((welch.low, welch.high), rel=0.15)
    assert stats.compare(reps, "lp_plasticity", "b")["a"]["p"] == pytest.approx(
        scipy_stats.ttest_ind(va, vb, equal_var=False).pvalue, abs=0.02)


def test_a_single_run_beside_methods_of_several_takes_their_pooled_seed_variance():
    """A single-seed row beside rows of three seeds: its seed term is their pooled variance with their 4 degrees of
    freedom (the 18-method board runs most methods once). Before, it had none: its interval and its differences
    were the items' alone, however large the seeds' noise, and the bands ranked that noise."""
    def runs(label, ops, method="full"):
        return [synthetic_run(label, s, _R([1.0, op], base=(0.0, 0.0), after1=(1.0, 0.0)), items=N, method=method)
                for s, op in enumerate(ops)]
    groups = {"a": runs("a", (1.0, 0.0, 1.0)), "b": runs("b", (0.0, 1.0, 0.0), "replay"),
              "one": runs("one", (1.0,), "lora")}
    reps = stats.bootstrap(groups)
    per_seed = {label: [run_row(r)["lp_plasticity"] for r in g] for label, g in groups.items()}
    pooled = (np.var(per_seed["a"], ddof=1) + np.var(per_seed["b"], ddof=1)) / 2
    lo, hi = stats.interval(reps["one"]["lp_plasticity"])
    assert (hi - lo) / 2 == pytest.approx(student_t.ppf(0.975, 4) * math.sqrt(pooled), rel=0.15)
    lo, hi = stats.interval(stats.difference(reps, "one", "a", "lp_plasticity"))
    v_one, v_a = pooled, np.var(per_seed["a"], ddof=1) / 3
    df = (v_one + v_a) ** 2 / (v_one ** 2 / 4 + v_a ** 2 / 2)
    assert (hi - lo) / 2 == pytest.approx(student_t.ppf(0.975, df) * math.sqrt(v_one + v_a), rel=0.15)
    groups["two"] = runs("two", (0.0,), "ewc")  # two single runs: one pooled estimate, so its 4 degrees of freedom
    reps = stats.bootstrap(groups)
    lo, hi = stats.interval(stats.difference(reps, "one", "two", "lp_plasticity"))
    assert (hi - lo) / 2 == pytest.approx(student_t.ppf(0.975, 4) * math.sqrt(2 * pooled), rel=0.15)


def test_a_runs_own_item_noise_is_counted_once():
    """Second source: where the items have no effect of their own, the runs' values vary only by each run's own
    item noise, and the interval is the Student-t interval over those values (the board's `± h` over runs). The
    seed term's s^2 already holds that noise; the item bootstrap counted it again and s^2 recomputed on redrawn
    items a third time: 2.2 times as wide here (coverage 0.99-1.00 in the simulations, docs/metrics.md)."""
    runs, other = coin_flip_runs("full", "full", 3), coin_flip_runs("other", "replay", 3)
    values, others = ([run_row(r)["overall"] for r in g] for g in (runs, other))
    lo, hi = stats.interval(stats.bootstrap({"full": runs})["full"]["overall"])
    half = student_t.ppf(0.975, 2) * math.sqrt(np.var(values, ddof=1) / 3)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    reps = stats.bootstrap({"full": runs, "other": other})
    lo, hi = stats.interval(stats.difference(reps, "other", "full", "overall"))
    va, vb = (np.var(v, ddof=1) / 3 for v in (others, values))  # Welch's interval, by hand
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    centre, half = np.mean(others) - np.mean(values), student_t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=0.15 * half)


def test_an_unbounded_run_value_keeps_the_rows_unbounded_interval():
    """Two runs whose general probe had no right answer at stage 0: their retention ratio is unbounded (inf) on
    the items as drawn and on every replicate. The interval says so, as a single run's does; subtracting inf
    from inf had made every replicate nan, and the interval none."""
    runs = [synthetic_run("full", s, _R([0.5, 0.75]), items=N) for s in range(2)]
    for run in runs:
        for stage, right in zip(run["stages"], (0, 1, 2)):
            _set_items(stage["probes"]["general"]["heldout"], right, n=10, gold_logprob=[-1.0] * 10)
    assert stats.interval(stats.bootstrap({"full": runs})["full"]["general_retention"]) == (math.inf, math.inf)
    part = stats.Part(0.0, np.array([1.0, -1.0, math.inf, 0.5]), noise=10.0, seed=0.0, df=0)
    assert part.items[2] == math.inf  # scaled by 0, not made nan


def test_a_replicates_mean_from_draw_counts_is_the_mean_of_the_drawn_items():
    """Second source for `_means` (one product with the draw counts): indexing each row with the draws and averaging,
    as the bootstrap did before, on values with -inf, +inf and nan, which enter exactly the replicates that draw them."""
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(5, 13))
    rows[1, 3], rows[2, [0, 5]], rows[3, 7] = -np.inf, (np.inf, -np.inf), np.nan
    draws = rng.integers(0, 13, size=(4000, 13))
    with np.errstate(invalid="ignore"):
        expected = [row[draws].mean(axis=1) for row in rows]
    got = stats._means(stats.counts_of(draws, 13), rows)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)  # equal nan and inf positions too
    assert np.isneginf(got[1]).any() and np.isfinite(got[1]).any() and np.isnan(got[2]).any()
