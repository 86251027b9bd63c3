"""Stop and repetition metrics on hand-built token sequences."""
import pytest

from harness.model.generation_metrics import distinct_n, split_answer, stop_summary, tail_repetition

EOS = 2


def test_looping_tail_scores_high():
    answer = list(range(10, 40)) + [5, 6, 7, 8] * 20  # a fresh start, then a 4-token loop
    assert tail_repetition(answer, n=4, window=64) == pytest.approx(57 / 61)  # 61 4-grams, 4 distinct


def test_clean_answer_scores_zero():
    assert tail_repetition(list(range(100, 180)), n=4, window=64) == 0.0


def test_only_the_tail_window_counts():
    answer = [5, 6, 7, 8] * 20 + list(range(100, 164))  # looped early, clean last 64 tokens
    assert tail_repetition(answer, n=4, window=64) == 0.0
    assert tail_repetition(answer, n=4, window=len(answer)) > 0.4


def test_answer_shorter_than_n_scores_zero():
    assert tail_repetition([1, 2], n=4, window=64) == 0.0


def test_cut_at_the_cap_is_not_stopped_and_eos_stops():
    assert split_answer([9, 9, 9, 9], EOS) == ([9, 9, 9, 9], False)  # ran to the cap: no EOS
    assert split_answer([9, 8, 7, EOS], EOS) == ([9, 8, 7], True)  # EOS as the last allowed token
    assert split_answer([9, EOS, 0, 0], EOS) == ([9], True)  # padding after the EOS is dropped


def test_distinct_n_counts_over_all_answers():
    assert distinct_n([[1, 2, 3], [1, 2, 4]], n=2) == pytest.approx(3 / 4)  # (1,2) twice, (2,3), (2,4)
    assert distinct_n([[1]], n=2) is None


def test_stop_summary():
    clean, looping = list(range(100, 120)), [5, 6] * 40
    out = stop_summary([clean, looping], [True, False], n=4, window=64)
    assert out["stop_rate"] == 0.5
    assert out["mean_length"] == 50
    assert out["tail_repetition"] == pytest.approx((0.0 + 59 / 61) / 2)
    assert out["n"] == 2
    with pytest.raises(ValueError, match="one stop flag per answer"):
        stop_summary([clean], [True, False], n=4, window=64)
