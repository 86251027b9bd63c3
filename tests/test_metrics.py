"""Every metric against matrices worked out by hand."""
import pytest

from harness.metrics import metrics

# rows: base, after task 1, after task 2, after task 3
R = [
    [0.25, 0.30, 0.20],
    [0.90, 0.35, 0.10],
    [0.60, 0.80, 0.00],  # task 3 scored 0 before its own stage: negative transfer
    [0.40, 0.50, 0.70],
]


def test_overall_is_mean_of_last_row():
    assert metrics.overall(R) == pytest.approx((0.40 + 0.50 + 0.70) / 3)


def test_bwt_hand_computed():
    # (R[3][1]-R[1][1]) + (R[3][2]-R[2][2]) over 2 = (0.40-0.90 + 0.50-0.80)/2
    assert metrics.bwt(R) == pytest.approx(-0.40)


def test_fwt_hand_computed_with_negative_transfer():
    # (R[1][2]-b2) + (R[2][3]-b3) over 2 = (0.35-0.30 + 0.00-0.20)/2
    assert metrics.fwt(R) == pytest.approx(-0.075)


def test_plasticity_hand_computed():
    # (0.90-0.25 + 0.80-0.30 + 0.70-0.20)/3
    assert metrics.plasticity(R) == pytest.approx(1.65 / 3)


def test_forgetting_per_task():
    # task 1: best of R[1..2][1] = 0.90, final 0.40; task 2: best R[2][2] = 0.80, final 0.50
    assert metrics.forgetting(R) == pytest.approx([0.50, 0.30])


def test_one_task_stream_has_no_bwt_or_fwt():
    R1 = [[0.2], [0.6]]
    assert metrics.bwt(R1) is None and metrics.fwt(R1) is None
    assert metrics.plasticity(R1) == pytest.approx(0.4)


def test_malformed_matrix_is_refused():
    with pytest.raises(ValueError):
        metrics.overall([[0.1, 0.2], [0.3, 0.4]])


def test_matrix_reads_stored_stage_records():
    stages = [{"scores": {"a": {"recall": {"score": R[s][0]}}, "b": {"recall": {"score": R[s][1]}},
                          "c": {"recall": {"score": R[s][2]}}}} for s in range(4)]
    assert metrics.matrix(stages, ["a", "b", "c"]) == R
    assert metrics.summary(stages, ["a", "b", "c"])["bwt"] == pytest.approx(-0.40)


def test_mean_forgetting_and_the_logprob_summary_by_hand():
    import numpy as np

    from harness.metrics import metrics

    L = [[-3.0, -3.0, -3.0], [-1.0, -3.0, -3.0], [-1.5, -0.5, -3.0], [-2.5, -1.0, -0.4]]
    # task 0: best after learning it -1.0, final -2.5 -> 1.5; task 1: best -0.5, final -1.0 -> 0.5
    assert metrics.mean_forgetting(L) == pytest.approx(1.0)
    assert metrics.logprob_summary(L) == pytest.approx({"lp_bwt": ((-2.5 + 1.0) + (-1.0 + 0.5)) / 2,
                                                        "lp_plasticity": (2.0 + 2.5 + 2.6) / 3, "lp_forgetting": 1.0})
    # the same on arrays of bootstrap replicates, element by element
    arrays = [[np.array([x, x + 1.0]) for x in row] for row in L]
    shifted = [[x + 1.0 for x in row] for row in L]
    assert metrics.mean_forgetting(arrays).tolist() == pytest.approx([metrics.mean_forgetting(L),
                                                                      metrics.mean_forgetting(shifted)])


def test_headline_is_the_domain_gain_kept_plus_the_instruct_change():
    from harness.metrics import metrics

    L = [[-3.0, -3.0], [-1.0, -3.0], [-2.0, -1.0]]  # task 0: learned to -1, fell back to -2; task 1: learned
    assert metrics.headline(L, [-1.2, -1.3, -1.5]) == pytest.approx(
        {"lp_gain": ((-2.0 + 3.0) + (-1.0 + 3.0)) / 2, "instruct_change": -0.3, "headline": 1.5 - 0.3})
    assert metrics.headline(L) == pytest.approx({"lp_gain": 1.5, "instruct_change": None, "headline": 1.5})
    forgot = [[-3.0, -3.0], [-1.0, -3.0], [-3.0, -1.0]]  # the same learning, task 0 forgotten entirely
    assert metrics.headline(forgot)["headline"] < metrics.headline(L)["headline"]
