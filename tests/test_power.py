"""`clbench power`: variance components from per-item results, projected to other item and seed counts (#14)."""
import math

import numpy as np
import pytest
from scipy.stats import t as student_t
from synthetic_runs import coin_flip_runs, synthetic_run

from harness.metrics import stats
from harness.report import power
from harness.store.store import Store

N = 40


def _R(final):
    return [[0.25, 0.25], [0.75, 0.25], list(final)]


def _store(tmp_path, runs):
    store = Store(tmp_path)
    for run in runs:
        store.save_run(run)
    return tmp_path


def test_components_and_their_projection_by_hand(tmp_path):
    runs = [synthetic_run("full", s, _R([f, 0.75]), items=N) for s, f in enumerate((0.25, 0.5, 0.75))]
    runs.append(synthetic_run("keeps", 0, _R([0.75, 0.75]), items=N, method="replay"))
    c = power.components(runs, "headline")
    full, keeps = c["methods"]["full"], c["methods"]["keeps"]
    assert c["reference"] == "full" and full["runs"] == 3 and full["n0"] == N
    # synthetic headline = mean over the two tasks of (final - base) log-probability; a right answer -0.5,
    # a wrong one -2.0: task 0 ends at 0.25/0.5/0.75 right across the seeds -> sample variance by hand
    finals = [(-0.5 * f - 2.0 * (1 - f)) for f in (0.25, 0.5, 0.75)]
    mean = sum(finals) / 3
    assert full["v_seed"] == pytest.approx(sum((x - mean) ** 2 for x in finals) / 2 / 4)  # /2 tasks, squared
    assert keeps["v_seed"] is None and keeps["v_seed_used"] == pytest.approx(full["v_seed"])  # pooled
    more = power.project(full, None, 4 * N, 3)
    now = power.project(full, None, N, 3)
    assert more["half_width"] < now["half_width"]
    # second source: the 97.5th percentile of normal item noise plus Student's t (2 df) seed noise, sampled; at 4
    # times the items the runs' own item noise (part of V_seed) is a quarter
    assert 0 < full["v_own"] < full["v_seed"]
    noise = np.random.default_rng(0)
    draws = (noise.normal(size=400_000) * math.sqrt(full["v_item"] / 4) +
             noise.standard_t(2, size=400_000) * math.sqrt((full["v_seed"] - 0.75 * full["v_own"]) / 3))
    assert more["half_width"] == pytest.approx(np.percentile(draws, 97.5), rel=0.02)
    # one run each: the board gives single runs the pooled seed variance of the 3-seed rows, with their 2 degrees of
    # freedom, and so does the projection (it took normal quantiles, 1.96 + 0.84 standard errors, before)
    versus = power.project(keeps, full, N, 1)
    draws = (noise.normal(size=400_000) * math.sqrt(keeps["diff_v_item"]) +
             noise.standard_t(2, size=400_000) * math.sqrt(2 * full["v_seed"]))
    assert versus["mdd"] == pytest.approx(np.percentile(draws, 97.5) + np.percentile(draws, 80), rel=0.02)


def test_the_item_variance_agrees_with_the_bootstrap_interval(tmp_path):
    run = synthetic_run("full", 0, _R([0.5, 0.75]), items=N)
    c = power.components([run], "overall")["methods"]["full"]
    lo, hi = stats.interval(stats.bootstrap({"full": [run]})["full"]["overall"])
    assert 2 * 1.959964 * math.sqrt(c["v_item"]) == pytest.approx(hi - lo, rel=0.1)


def test_the_projected_half_width_at_the_stored_counts_is_the_boards():
    """Three runs whose items agree, so the seeds are the only noise: the board's interval is Student's t over the
    runs, and the projection at the stored counts says the same (with the normal 1.96 it said 46% of it)."""
    runs = [synthetic_run("full", s, [[0.0, 0.0], [1.0, 0.0], [1.0, op]], items=N) for s, op in enumerate((1.0, 0.0, 1.0))]
    c = power.components(runs, "lp_plasticity")["methods"]["full"]
    lo, hi = stats.interval(stats.bootstrap({"full": runs})["full"]["lp_plasticity"])
    assert power.project(c, None, c["n0"], 3)["half_width"] == pytest.approx((hi - lo) / 2, rel=0.15)


def test_runs_own_item_noise_is_counted_once_and_shrinks_with_the_items():
    """Runs that differ only by their own item noise (coin flips): by hand, a run's OP then moves with variance
    p(1 - p) / items / 4 (one of two tasks flips), which shrinks with the items; V_item, the items' main effect, is
    about 0 (it held the runs' own noise too, before). The projection at the stored counts is the board's where
    s^2 is not below V_own (`other`'s; a lower s^2 is projected as V_own)."""
    runs, other = coin_flip_runs("full", "full", 3), coin_flip_runs("other", "replay", 3)
    c = power.components([*runs, *other], "overall")
    full, versus = c["methods"]["full"], c["methods"]["other"]
    assert full["v_own"] == pytest.approx(0.25 / 200 / 4, rel=0.15)
    assert full["v_item"] < 0.2 * full["v_own"] / 3  # what the runs' own noise added to it before
    reps = stats.bootstrap({"full": runs, "other": other})
    lo, hi = stats.interval(reps["other"]["overall"])
    assert versus["v_seed"] > versus["v_own"]
    assert power.project(versus, None, versus["n0"], 3)["half_width"] == pytest.approx((hi - lo) / 2, rel=0.15)
    assert full["v_seed"] < full["v_own"] and power._seed_part(full, 0.25) == pytest.approx(full["v_own"] / 4)
    lo, hi = stats.interval(stats.difference(reps, "other", "full", "overall"))
    terms = [full["v_seed"] / 3, versus["v_seed"] / 3]
    welch = sum(terms) ** 2 / sum(v * v / 2 for v in terms)
    half = power._quantile(power.HALF, versus["diff_v_item"], terms, welch)
    assert half == pytest.approx((hi - lo) / 2, rel=0.15)


def test_the_command_prints_the_table_and_names_schema_1(tmp_path):
    from harness.cli import main

    folder = _store(tmp_path / "v2", [synthetic_run("full", 0, _R([0.25, 0.75]), items=N),
                                      synthetic_run("lora", 0, _R([0.5, 0.5]), items=N, method="lora")])
    text = power.report(folder, [40, 160], [1, 3])
    assert text.splitlines()[0].startswith("power analysis of headline (2 runs; reference full)")
    assert "n=160, k=3" in text and text.count("(≥)") >= 4  # one run each: no seed variance known
    assert "pooled" not in text and "no method has several runs" in text  # so no pooled one stands in
    old = _store(tmp_path / "v1", [synthetic_run("full", 0, _R([0.25, 0.75]))])
    assert "no per-item records" in power.report(old, [40], [1])
    assert main(["power", "--results", str(folder), "--items", "80"]) == 0


def test_the_measure_is_chosen_and_the_observed_difference_is_set_beside_the_detectable_one(tmp_path):
    """Sizing a protocol for forgetting needs the power of the forgetting measure, not of the ranked score;
    the observed difference from full beside the MDD says whether more items or seeds would resolve it."""
    from harness.cli import main

    folder = _store(tmp_path, [synthetic_run("full", 0, _R([0.25, 0.75]), items=N),
                               synthetic_run("keeps", 0, _R([0.75, 0.75]), items=N, method="replay")])
    text = power.report(folder, [40], [1], measure="lp_forgetting")
    assert text.splitlines()[0].startswith("power analysis of lp_forgetting")
    keeps = next(line for line in text.splitlines() if line.startswith("keeps |"))
    assert "-0.75" in keeps  # observed: keeps forgets nothing, full 0.75 nats per token
    full = next(line for line in text.splitlines() if line.startswith("full |"))
    assert "+0.75" in full
    with pytest.raises(SystemExit):
        main(["power", "--results", str(folder), "--measure", "nonsense"])


def _fewer_probe_items(run, n):
    """The run with its general probe cut to its first n items in every stage (a card's probes are not its
    learned items' size: standard has 40 learned items per task and 16 general ones)."""
    for stage in run["stages"]:
        view = stage["probes"]["general"]["heldout"]
        view["items"] = {k: v[:n] for k, v in view["items"].items()}
        view.update(n=n, score=sum(view["items"]["correct"]) / n, gold_logprob=sum(view["items"]["gold_logprob"]) / n)
    return run


def test_n_counts_the_items_of_the_view_the_measure_reads(tmp_path):
    runs = [_fewer_probe_items(synthetic_run("full", s, _R([f, 0.75]), items=N), 16) for s, f in enumerate((0.25, 0.5))]
    assert power.components(runs, "general")["methods"]["full"]["n0"] == 16  # the probe's items, not the 40 learned
    assert power.components(runs, "headline")["methods"]["full"]["n0"] == N
    text = power.report(_store(tmp_path, runs), [16, 64], [2], "general")
    assert "n: the general probe's items" in text.splitlines()[0] and "| 16, 2 |" in text


@pytest.mark.parametrize("flag", ["--items", "--seeds"])
def test_a_count_of_zero_is_refused_in_one_line(tmp_path, flag, capsys):
    from harness.cli import main

    folder = _store(tmp_path, [synthetic_run("full", 0, _R([0.25, 0.75]), items=N)])
    with pytest.raises(SystemExit) as end:
        main(["power", "--results", str(folder), flag, "0"])
    assert end.value.code == 2 and "'0' is not a whole number of at least 1" in capsys.readouterr().err


def test_items_that_agree_up_to_rounding_project_without_a_crash():
    """A measure whose items all agree has a paired item variance of float rounding (3e-33 in a review's case),
    and the root search of the quantile raised ValueError: such a variance counts as 0."""
    c = {"n0": N, "v_item": 0.0, "v_seed_used": 0.01, "v_own_used": 0.0, "diff_v_item": 3e-33}
    out = power.project(c, {"v_seed_used": 0.01, "v_own_used": 0.0}, N, 3)
    seeds = 0.02 / 3  # two seed terms of 0.01 / 3, Welch's df 4: the t quantiles alone
    assert out["mdd"] == pytest.approx((student_t.ppf(0.975, 4) + student_t.ppf(0.8, 4)) * math.sqrt(seeds))


def test_a_section_without_a_finished_run_says_so_not_that_its_runs_are_schema_1(tmp_path):
    store = Store(tmp_path)
    failed = synthetic_run("full", 0, [[0.5, 0.5]] * 3, status="failed")
    failed["stages"] = failed["stages"][:1]
    store.save_run(failed)
    assert power.report(tmp_path, [8], [3]) == f"{tmp_path}: no run of the ranked section has finished: no power analysis"


def _without_general(run):
    from harness.spec.spec import RunSpec

    run["spec"]["probes"] = []
    for stage in run["stages"]:
        stage["probes"] = {}
    run["run_id"] = RunSpec.from_dict(run["spec"]).run_id
    return run


def test_a_probe_measure_on_runs_without_that_probe_says_so_not_an_empty_table(tmp_path):
    """`--measure general` on runs without the general probe printed a header and no row (after the bootstrap:
    6 minutes on the standard tune's 75 runs)."""
    folder = _store(tmp_path, [_without_general(synthetic_run("full", s, _R([0.25, 0.75]), items=N)) for s in (0, 1)])
    assert power.report(folder, [16], [2], "general") == (
        f"{folder}: general is measured on the general probe, which the ranked section's runs do not all have "
        "(their probes: none): no power analysis; give another --measure")
    assert power.report(folder, [16], [2], "headline").startswith("power analysis of headline")


def test_the_power_table_does_not_draw_the_board(tmp_path, monkeypatch):
    """It drew the whole board to find the ranked section: on the standard tune's 75 labels that was 555,000
    replicates of the ranked score per pair test, 5 minutes, before the power analysis began."""
    from harness.report import leaderboard

    folder = _store(tmp_path, [synthetic_run("full", 0, _R([0.25, 0.75]), items=N),
                               synthetic_run("lora", 0, _R([0.5, 0.5]), items=N, method="lora")])

    def board(runs):
        raise AssertionError("the board was drawn")

    monkeypatch.setattr(leaderboard, "rows", board)
    assert power.report(folder, [40], [1]).startswith("power analysis of headline (2 runs; reference full)")


def test_the_table_says_why_one_run_can_project_narrower_than_three(tmp_path):
    """At k = 1 the seed part takes the pooled rows' degrees of freedom (as the board gives a single run), at k > 1
    the method's own k - 1 (t(2) at 3 seeds): a reader comparing the columns is told so."""
    folder = _store(tmp_path, [synthetic_run("full", 0, _R([0.25, 0.75]), items=N),
                               synthetic_run("full", 1, _R([0.5, 0.75]), items=N),
                               synthetic_run("full", 2, _R([0.25, 0.5]), items=N),
                               synthetic_run("lora", 0, _R([0.5, 0.5]), items=N, method="lora")])
    text = power.report(folder, [40], [1, 3])
    assert "k = 1 takes the seed part with the pooled rows' 2 degrees of freedom" in text.splitlines()[-1]
    assert "k = 1 takes" not in power.report(folder, [40], [3, 5])  # no k = 1 column to compare
