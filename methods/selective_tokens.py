"""Selective token training: full fine-tuning whose label loss counts only some of the reply tokens,
chosen by comparison with the frozen base model (a copy taken in prepare).

mode "excess" (default): Rho-1's selective language modelling (Lin et al. 2024, arXiv:2404.07965): each
reply token's excess loss, the current model's loss minus the reference model's loss, ranks the tokens
of the batch and the top `keep_ratio` of them are trained on (0.6: Rho-1's token selection ratio for its
1B math runs). Deviation: Rho-1's reference model is trained on high-quality data of the target
distribution; a task stream has no such model, so the reference here is the base model. Excess loss is
then high where training has improved the model least over the base model (or made it worse), and the
loss concentrates there. At the first step of the first task the model is the base model and every excess
is 0, so that step keeps the first 60% of the batch's reply tokens (topk's order on ties).
mode "confidence": a reply token gets no loss when the base model already predicts it with probability
>= `threshold` (0.9, our choice: a token the base model gets right with at least 9:1 confidence); the
label loss is the mean over the kept tokens. This is not Rho-1 and has no paper of its own: a
heuristic kept as an option.

Each stage's `method_stats` records how many reply tokens (summed over epochs) were seen and how
many trained on.

The base model's logits are computed per batch under no_grad; nothing is held across batches. The
teacher is rebuilt from the base model by `prepare`, so a resumed run has the same teacher and the
method is resumable.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Literal

import torch

from harness.core.typed import field
from tasks.chat import IGNORE

from .base import Needs
from .full import FullFineTune


@dataclasses.dataclass(frozen=True)
class SelectiveTokensConfig:
    lr: float = field(5e-5, "AdamW learning rate for all weights", min=0.0)
    mode: Literal["confidence", "excess"] = field(
        "excess", "excess: keep the top keep_ratio tokens by current loss - base loss (Rho-1, the base model as "
        "reference); confidence: drop tokens the base model predicts with p >= threshold")
    threshold: float = field(0.9, "confidence mode: drop a token when the base model's probability of it is >= this",
                             min=0.0, max=1.0)
    keep_ratio: float = field(0.6, "excess mode: share of each batch's reply tokens trained on", min=0.0, max=1.0)


def token_logprobs(logits, labels):
    """log p(labels[b, t] | prefix) for every position (0 where labels is IGNORE), shape of labels."""
    out = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    targets = labels[:, 1:]
    lp = logits[:, :-1].float().log_softmax(-1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    out[:, 1:] = torch.where(targets != IGNORE, lp, torch.zeros_like(lp))
    return out


def confident_mask(base_logprobs, labels, threshold: float):
    """1 for the reply tokens the base model predicts with probability < threshold, else 0."""
    return ((labels != IGNORE) & (base_logprobs.exp() < threshold)).float()


def excess_mask(current_logprobs, base_logprobs, labels, keep_ratio: float):
    """1 for the top keep_ratio of the reply tokens by excess loss (current - base), else 0."""
    is_reply = labels != IGNORE
    excess = torch.where(is_reply, base_logprobs - current_logprobs, torch.full_like(base_logprobs, -torch.inf))
    k = round(keep_ratio * int(is_reply.sum()))
    mask = torch.zeros_like(base_logprobs)
    if k:
        mask.view(-1)[excess.view(-1).topk(k).indices] = 1.0
    return mask


class SelectiveTokens(FullFineTune):
    name = "selective_tokens"
    description = "Rho-1 selective language modelling: loss only on the reply tokens of highest excess loss over the base model."
    citation = "Lin et al. 2024, Rho-1: Not All Tokens Are What You Need, arXiv:2404.07965"
    Config = SelectiveTokensConfig
    shardable = False  # an extra loss or token weights: harness.run.sharded
    needs = Needs(teacher=True, full_logits=True)  # reads outputs.logits

    def prepare(self, model, ctx):
        self.teacher = copy.deepcopy(model).eval()  # the base model, before any training
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.kept, self.seen = 0, 0  # reply tokens trained on / seen this stage (every epoch counts)
        return super().prepare(model, ctx)

    def token_weights(self, model, batch, outputs, ctx):
        labels = batch["labels"]
        with torch.no_grad():
            base_logits = self.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            base = token_logprobs(base_logits, labels)
            if self.config.mode == "confidence":
                weights = confident_mask(base, labels, self.config.threshold)
            else:
                weights = excess_mask(token_logprobs(outputs.logits.detach(), labels), base, labels, self.config.keep_ratio)
        self.kept += weights.sum()
        self.seen += (labels != IGNORE).sum()
        return weights

    def stats(self, ctx) -> dict:
        kept, seen = int(self.kept), int(self.seen)
        self.kept, self.seen = 0, 0
        return {"reply_tokens": seen, "reply_tokens_trained": kept, "trained_share": kept / seen if seen else None}
