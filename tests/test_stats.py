"""harness.metrics.stats: bootstrap intervals over items and runs, paired comparisons, Holm, rank bands (#14)."""
import math

import numpy as np
import pytest
from synthetic_runs import synthetic_run

from harness.metrics import stats
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
