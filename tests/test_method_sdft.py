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
    assert method.stats(None) == {"rewrites": 1, "rewrites_kept": 1, "rewrites_too_long": 0}


@pytest.mark.parametrize("reply", ["The capital of France is Lyon.", "It is a city in Europe.",
                                   "Paris or Nice, hard to say.", ""])
def test_mc_rewrite_without_the_answer_or_with_another_is_rejected(reply):
    out, method, _ = run_with([reply], [MC])
    assert out == [MC.training_pair()]
    assert method.stats(None) == {"rewrites": 1, "rewrites_kept": 0, "rewrites_too_long": 0}


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
    assert method.stats(None) == {"rewrites": 2, "rewrites_kept": 1, "rewrites_too_long": 0}


def test_option_inside_the_correct_one_does_not_count_against_it():
    item = MCItem(uid="m2", question="q", options=("not 4", "4", "5", "6"), answer=0, source="t")
    assert agrees(item, "The answer is not 4.")
    assert not agrees(item, "The answer is 4.")
    assert not agrees(MC, "Parisian")  # whole words only
    # an option is inside the correct one as whole words only: '15' is not inside '150' (it was dropped from the
    # check, so a rewrite naming both was kept)
    numbers = MCItem(uid="m3", question="q", options=("150", "15", "1.5", "1500"), answer=0, source="t")
    assert agrees(numbers, "It is 150.")
    assert not agrees(numbers, "It is 15, not 150.")


def test_a_rewrite_too_long_to_be_trained_whole_keeps_the_original(tiny):
    """Training cuts an example to the budget's max_length from the reply's end: a rewrite checked whole (its
    answer, its code) was trained cut short, ending early on the EOS, where the checked part may be the part cut."""
    tok = tiny[1]
    long = "The capital of France is Paris. " + "It has many museums and a long history. " * 40
    method = SDFT()
    method.generator = lambda prompts: [{"text": long, "stopped": True}]
    task = Task("t", "mc", [MC], {})
    for max_length, kept in ((2048, True), (128, False)):
        ctx = StageContext(stage=1, task=task, seen=[], device="cpu", seed=0, tokenizer=tok, max_length=max_length)
        out = method.train_examples([MC.training_pair()], ctx)
        assert out == [dict(MC.training_pair(), reply=long.strip()) if kept else MC.training_pair()]
        assert method.stats(ctx) == {"rewrites": 1, "rewrites_kept": int(kept), "rewrites_too_long": int(not kept)}


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
    assert method.stats(ctx) == {"rewrites": 1, "rewrites_kept": int(kept), "rewrites_too_long": 0}
    with pytest.raises(RuntimeError, match="tokenizer"):
        method.train_examples([MC.training_pair()], ctx_for(Task("t", "mc", [MC], {})))


def test_generation_rewrite_kept_only_when_it_gives_the_final_answer():
    """The reference code keeps a GSM8K rewrite only when its final number is the original's."""
    from tasks.items import GenItem

    item = GenItem(uid="math/learn/0", prompt="2 + 2 * 3?", reference="2 * 3 = 6, 2 + 6 = 8\n#### 8", answer="8",
                   scorer="last_number", source="t")
    assert agrees(item, "First 2 * 3 = 6; then 2 + 6 = 8.")
    assert not agrees(item, "2 + 2 = 4 and 4 * 3 = 12.")
