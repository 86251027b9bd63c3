"""sdft: a rewrite replaces the original only where it agrees with the item's answer (decided
with a stub generator), and the real generation path runs on the tiny model."""
import copy

import pytest

from methods.base import StageContext
from methods.sdft import SDFT, TEMPLATE, agrees
from tasks.items import CodeItem, MCItem
from tasks.registry import Task

MC = MCItem(uid="m1", question="What is the capital of France?", options=("Paris", "Lyon", "Nice", "Paris, Texas"),
            answer=0, source="test")
CODE = CodeItem(uid="c1", prompt="Write add(a, b) returning the sum.", reference="def add(a, b):\n    return a + b",
                tests="assert add(2, 3) == 5", source="test")


def ctx_for(task, tok=None):
    return StageContext(stage=1, task=task, seen=[], device="cpu", seed=0, tokenizer=tok)


def run_with(replies, items):
    """train_examples with a stub generator answering `replies` in order; (pairs out, method, prompts seen)."""
    method = SDFT()
    seen = []

    def stub(prompts):
        seen.extend(prompts)
        return [{"text": r, "stopped": True} for r in replies[: len(prompts)]]

    method.generator = stub
    pairs = [i.training_pair() for i in items]
    return method.train_examples(pairs, ctx_for(Task("t", "mc", items, {"recall": items}))), method, seen


def test_mc_rewrite_with_the_answer_is_kept():
    out, method, prompts = run_with(["The capital of France is Paris."], [MC])
    assert out == [{"user": MC.cloze_prompt(), "reply": "The capital of France is Paris."}]
    assert prompts == [TEMPLATE.format(user=MC.cloze_prompt(), reply="Paris")]
    assert method.stats(None) == {"rewrites": 1, "rewrites_kept": 1}


@pytest.mark.parametrize("reply", ["The capital of France is Lyon.", "It is a city in Europe.",
                                   "Paris or Nice, hard to say.", ""])
def test_mc_rewrite_without_the_answer_or_with_another_is_rejected(reply):
    out, method, _ = run_with([reply], [MC])
    assert out == [MC.training_pair()]
    assert method.stats(None) == {"rewrites": 1, "rewrites_kept": 0}


@pytest.mark.parametrize("reply", ["As the reference answer says, Paris.", "Paris. That is my response.",
                                   "Here is Your Response: Paris", "Now it's your turn: Paris",
                                   "Your turn! Paris."])
def test_a_rewrite_that_talks_about_the_prompt_is_rejected_as_the_reference_does(reply):
    """sail-sg/sdft eval/gen_distilled_data.py `verify`: these rewrites name the right answer yet echo the
    distillation prompt, and the reference keeps the original."""
    out, method, _ = run_with([reply], [MC])
    assert out == [MC.training_pair()] and method.stats(None)["rewrites_kept"] == 0


def test_cut_off_rewrite_is_rejected():
    method = SDFT()
    method.generator = lambda prompts: [{"text": "The answer is Paris", "stopped": False}]
    assert method.train_examples([MC.training_pair()], ctx_for(Task("t", "mc", [MC], {}))) == [MC.training_pair()]


def test_code_rewrite_kept_only_when_its_code_passes_the_tests():
    good = "Sure:\n```python\ndef add(x, y):\n    return y + x\n```"
    bad = "```python\ndef add(a, b):\n    return a * b\n```"
    out, method, _ = run_with([good, bad], [CODE, CODE])
    assert out == [{"user": CODE.prompt, "reply": good}, CODE.training_pair()]
    assert method.stats(None) == {"rewrites": 2, "rewrites_kept": 1}


def test_option_inside_the_correct_one_does_not_count_against_it():
    item = MCItem(uid="m2", question="q", options=("not 4", "4", "5", "6"), answer=0, source="t")
    assert agrees(item, "The answer is not 4.")
    assert not agrees(item, "The answer is 4.")
    assert not agrees(MC, "Parisian")  # whole words only


def test_real_generation_on_tiny(tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    method = SDFT(SDFT.Config(max_new_tokens=8))
    ctx = ctx_for(Task("t", "mc", [MC], {}), tok)
    method.prepare(model, StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    replies = method.rewrite([TEMPLATE.format(**MC.training_pair())], ctx)
    assert len(replies) == 1 and replies[0]["tokens"] > 0
    assert method.rewrite([TEMPLATE.format(**MC.training_pair())], ctx) == replies  # greedy: deterministic
    out = method.train_examples([MC.training_pair()], ctx)
    kept = replies[0]["stopped"] and agrees(MC, replies[0]["text"].strip())
    assert out == [dict(MC.training_pair(), reply=replies[0]["text"].strip()) if kept else MC.training_pair()]
    assert method.stats(ctx) == {"rewrites": 1, "rewrites_kept": int(kept)}
    with pytest.raises(RuntimeError, match="tokenizer"):
        method.train_examples([MC.training_pair()], ctx_for(Task("t", "mc", [MC], {})))


def test_generation_rewrite_kept_only_when_it_gives_the_final_answer():
    """The reference code keeps a GSM8K rewrite only when its final number is the original's."""
    from tasks.items import GenItem

    item = GenItem(uid="math/learn/0", prompt="2 + 2 * 3?", reference="2 * 3 = 6, 2 + 6 = 8\n#### 8", answer="8",
                   scorer="last_number", source="t")
    assert agrees(item, "First 2 * 3 = 6; then 2 + 6 = 8.")
    assert not agrees(item, "2 + 2 = 4 and 4 * 3 = 12.")
