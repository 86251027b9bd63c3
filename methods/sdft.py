"""Self-Distillation Fine-Tuning (Yang et al. 2024, "Self-Distillation Bridges Distribution Gap in
Language Model Fine-Tuning", arXiv:2402.13669; reference code github.com/sail-sg/sdft).

Before each task the current model rewrites every target reply in its own words, given the
original as a reference, with the reference code's `alpaca_distill_refer` prompt (adapted: it
becomes the chat user turn, and its grammar is fixed), greedily. A rewrite replaces the original
only where it agrees with it, checked per item kind from the item's own data (the reference code
does the same for GSM8K, keeping the original when the final number differs):
  multiple choice: the rewrite names the correct option's text and no other option's (an option
    contained in the correct one is not counted against it);
  code: the rewrite's code (first fenced block, or all of it) passes the item's tests;
  generation: the domain's scorer finds the item's answer in the rewrite (for GSM8K's last_number, the
    reference code's own check).
A rewrite that hit the token cap before its end-of-turn is rejected as cut off, as is one too long to be trained
whole (the training example, cut to the budget's max_length, would end it early: the part the check approved may
be the part cut; counted as `rewrites_too_long`), and, as in the reference
(eval/gen_distilled_data.py, `verify`), so is one that talks about the prompt instead of answering: it
contains "reference answer", "your response", "my response", "your own response" or "now it's your turn"
(case ignored) or starts with "Your turn". How many rewrites were kept is stored per stage (`method_stats`).

Deviations: the rewriter is the model before each task, where the reference rewrites the whole data set once
with the seed model (it fine-tunes once); rejecting a rewrite cut off at the token cap or too long to train
whole is this port's rule (the reference's `verify` has none); rewrites are decoded greedily with at most 256 new tokens (the reference's rewrite step runs
LLaMA-Factory's defaults: sampling at temperature 0.95, top-p 0.7, top-k 50, up to 512 new tokens), and
every domain uses `alpaca_distill_refer` (the reference uses it for its code and function-calling data,
`gsm8k_distill` for GSM8K and `alpaca_distill_using` for general instruction data).

Training is full fine-tuning (lr 5e-5, as `full`), so `sdft` differs from `full` in the data alone;
the paper trained LoRA (q,v, r 8, lr 1e-4). The cap of 256 new tokens fits a rewritten MBPP
solution: the MBPP learn references (tasks 601-974) are, in SmolLM2 tokens, median 53, 90th
percentile 131, 99th 242. Generation is the cost of this method: a rewrite that never stops runs
to the cap (SmolLM2 on this CPU: 8 MMLU STEM items took 422 s under load, 5 of 8 rewrites kept).
"""
from __future__ import annotations

import dataclasses
import re

from harness.core.typed import field
from harness.model.scoring import generate
from tasks.chat import IGNORE, encode_example, reply_ids
from tasks.code_exec import extract_code, passes
from tasks import answers
from tasks.items import CodeItem, GenItem, MCItem

from .full import FullFineTune

TEMPLATE = ("Below is an instruction that describes a task, along with a reference answer. "
            "Refer to the reference answer and write your own response.\n\n"
            "### Instruction:\n{user}\n\n### Reference Answer:\n{reply}\n\n### Response:\n")


@dataclasses.dataclass(frozen=True)
class SDFTConfig:
    lr: float = field(5e-5, "AdamW learning rate for all weights", min=0.0)
    max_new_tokens: int = field(256, "cap on each rewrite's tokens; a rewrite cut off by it is rejected", min=1)
    batch_size: int = field(8, "prompts per generation batch", min=1)


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def mentions(text: str, phrase: str) -> bool:
    """`phrase` occurs in `text` as whole words (case and spacing ignored)."""
    phrase = _norm(phrase)
    return bool(phrase) and re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", _norm(text)) is not None


BANNED = ("reference answer", "your response", "my response", "your own response", "now it's your turn")


def talks_about_the_prompt(rewrite: str) -> bool:
    """The reference's `verify` rejects these rewrites (of the stripped text)."""
    return any(b in rewrite.lower() for b in BANNED) or rewrite.startswith("Your turn")


def agrees(item, rewrite: str) -> bool:
    """Whether a rewrite keeps the original answer of `item`."""
    if isinstance(item, MCItem):
        right = item.options[item.answer]
        others = [o for k, o in enumerate(item.options) if k != item.answer and not mentions(right, o)]
        return mentions(rewrite, right) and not any(mentions(rewrite, o) for o in others)
    if isinstance(item, CodeItem):
        return passes(extract_code(rewrite), item.tests)
    if isinstance(item, GenItem):
        return answers.matches(item.scorer, rewrite, item.answer)
    raise TypeError(f"sdft: no agreement check for {type(item).__name__} items")


def fits(tok, user: str, reply: str, max_length: int) -> bool:
    """The whole of `reply` survives `encode_example`'s cut to `max_length` tokens."""
    labels = encode_example(tok, user, reply, max_length)["labels"]
    return sum(label != IGNORE for label in labels) - 1 == len(reply_ids(tok, reply))  # - 1: the EOS


class SDFT(FullFineTune):
    name = "sdft"
    description = "Self-distillation: train on the model's own rewrites of each reply, kept where they agree."
    citation = "Yang et al. 2024, Self-Distillation Bridges Distribution Gap in LM Fine-Tuning, arXiv:2402.13669"
    Config = SDFTConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.generator = None  # prompts -> [{'text', 'stopped'}]; None: greedy generation by the model
        self.kept = self.total = self.too_long = 0

    def prepare(self, model, ctx):
        self.model = super().prepare(model, ctx)
        return self.model

    def rewrite(self, prompts: list[str], ctx) -> list[dict]:
        if self.generator is not None:
            return self.generator(prompts)
        if ctx.tokenizer is None:
            raise RuntimeError("sdft needs the run's tokenizer in StageContext.tokenizer to generate rewrites")
        return generate(self.model, ctx.tokenizer, prompts, ctx.device, ctx.precision,
                        max_new_tokens=self.config.max_new_tokens, batch_size=self.config.batch_size)

    def train_examples(self, pairs, ctx):
        items = {(p["user"], p["reply"]): i for i in ctx.task.learn for p in [i.training_pair()]}
        known = [k for k, p in enumerate(pairs) if (p["user"], p["reply"]) in items]
        replies = self.rewrite([TEMPLATE.format(user=pairs[k]["user"], reply=pairs[k]["reply"]) for k in known], ctx)
        out = list(pairs)
        self.kept, self.total, self.too_long = 0, len(known), 0
        for k, reply in zip(known, replies):
            text = reply["text"].strip()
            if not (text and reply["stopped"] and not talks_about_the_prompt(text)
                    and agrees(items[(pairs[k]["user"], pairs[k]["reply"])], text)):
                continue
            if ctx.max_length is not None and not fits(ctx.tokenizer, pairs[k]["user"], text, ctx.max_length):
                self.too_long += 1
                continue
            out[k] = dict(pairs[k], reply=text)
            self.kept += 1
        return out

    def stats(self, ctx) -> dict:
        return {"rewrites": self.total, "rewrites_kept": self.kept, "rewrites_too_long": self.too_long}
