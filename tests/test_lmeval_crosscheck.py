"""Our multiple-choice scorers give lm-eval's accuracy on the same 50 MMLU questions, on SmolLM2."""
import random

import pytest

from harness import lmeval_bridge
from harness.scoring import cloze_choose, letter_choose

N = 50


@pytest.fixture(scope="module")
def questions(source):
    pool = [it for subject in ("high_school_geography", "marketing", "astronomy", "philosophy")
            for it in source.mmlu(subject, "val")]
    random.Random(0).shuffle(pool)
    return sorted(pool, key=lambda it: len(it.question) + sum(len(o) for o in it.options))[:N]


@pytest.fixture(scope="module")
def lmeval_scores(smollm2, questions, tmp_path_factory):
    model, tok = smollm2
    folder = tmp_path_factory.mktemp("lmeval")
    lmeval_bridge.write_task(questions, tok, "cloze", folder, "clbench_cloze")
    lmeval_bridge.write_task(questions, tok, "letter", folder, "clbench_letter")
    return lmeval_bridge.evaluate(model, tok, folder, ["clbench_cloze", "clbench_letter"])


def _acc(model, tok, questions, choose, **kw):
    return sum(choose(model, tok, q, "cpu", "fp32", **kw) == q.answer for q in questions) / len(questions)


def test_cloze_unnormalised_equals_lmeval_acc(smollm2, questions, lmeval_scores):
    assert len(questions) == N
    assert _acc(*smollm2, questions, cloze_choose, norm="none") == pytest.approx(lmeval_scores["clbench_cloze"]["acc"])


def test_cloze_char_normalised_equals_lmeval_acc_norm(smollm2, questions, lmeval_scores):
    assert _acc(*smollm2, questions, cloze_choose, norm="char") == pytest.approx(
        lmeval_scores["clbench_cloze"]["acc_norm"])


def test_letter_equals_lmeval_letter_choices(smollm2, questions, lmeval_scores):
    assert _acc(*smollm2, questions, letter_choose) == pytest.approx(lmeval_scores["clbench_letter"]["acc"])
