"""LoRAMoE: a mixture of LoRA experts in the feed-forward layers, mixed by a learned router, with the
localized balancing constraint that splits the experts into a task group and a world-knowledge group.

Each adapted FFN projection (gate_proj, up_proj and down_proj, as in the reference code's
`lora_trainable`) becomes y = W x + sum_e g_e(x) B_e A_e dropout(x) * alpha / r, where
g(x) = softmax(router x) is a dense per-token softmax over the experts from a bias-free linear
router of its own (Dou et al. 2024, arXiv:2312.09979; github.com/Ablustrund/LoRAMoE). B starts
at zero, so the wrapped model equals the base model until it trains. The base weights are frozen;
experts and routers train, and are saved in stage checkpoints (the method is resumable).

Localized balancing constraint, as the reference computes it (peft/tuners/lora.py, Linear.forward
and cv_squared; summed over layers in transformers/models/llama/modeling_llama.py):
    L = beta * sum over adapted projections of Var(Z) / (Mean(Z)^2 + 1e-10),   Z[m, e] = I[m, e] * Q[m, e]
over the batch's samples m and experts e (Var unbiased, as torch's default). Q[m, e] is expert e's
router weight over sample m's tokens. The experts are split in two halves; a sample of the
world-knowledge type (the reference's task_type 1) has I = 1 + delta on experts [0, E/2) and
1 - delta on [E/2, E), a sample of the task type (task_type 0) the reverse. The term is 0 when Z is
uniform, so each sample's Q is pushed towards 1/I: a task sample towards experts [0, E/2) and a
world-knowledge sample towards [E/2, E), with the experts of a half kept balanced among themselves.
At delta 0.1 the term's own minimum puts (1/0.9) / (1/0.9 + 1/1.1) = 55% of a sample's weight on
the half it is pushed to. Here experts [0, E/2) are called the task group and [E/2, E) the general
(world-knowledge) group, after what the term does to each type's samples. Named by the coefficient
instead (the paper describes I = 1 + delta as marking the experts of the sample's own type), the
halves' names would be swapped: the same formula, and the halves are symmetric, so nothing else
depends on the names.

Sample types. The reference reads a per-sample `task_type` from its data (1: closed-book QA,
world knowledge; 0: downstream tasks). In this continual stream every training sample of a task
is of the task type, so the constraint pulls the task's data onto the task group and away from
the general group. With general_ratio > 0, a share of each stage's training examples is drawn from
general-domain data (GSM8K train, through the run's DataSource, as replay's general share) and is
of the world-knowledge type, as the paper's training mix held both types. The training batch
carries only tensors, so the method keeps the type itself: in train_examples it encodes its
general examples through ctx.batches (the training data's own encoding and length budget) and
keeps each one's token ids; in the loss a batch row whose unpadded ids are one of those is of the
world-knowledge type, every other row of the task type. That holds whatever order the training
loop draws examples in.

Defaults: 8 experts, rank 4, alpha 32, dropout 0.05, lr 2e-4 from the reference's run_loramoe.sh;
beta 0.1 and delta 0.1, our choice (the reference script sets blc_weight and blc_alpha to 0, i.e. no
constraint, and the paper's own values could not be checked against its text here: a setting to
confirm; `clbench tune` tunes moe_lora's learning rate only, so beta and delta stay at these); the group
split is the reference's: half the experts each. Deviations from the reference:
  - Q is the mean of the router weight over a sample's real tokens; the reference sums it over
    every position, padding included (its collator pads a batch to its longest row, so every row sums over
    the same length and a shorter sample's Q takes in the router's weights at its pad positions; at its
    script's batch of 1 there is no padding and the two agree).
  - one dropout mask for all experts of a projection; the reference draws one per expert (p 0.05).
  - general_ratio is 0 by default, so that moe_lora trains on the stream's examples only, like the
    other methods; the constraint then acts through the task type alone (the paper's SFT mix held
    world-knowledge samples as well: general_ratio > 0 comes closest to it).
  - the paper fine-tunes once on one mixed data set; here the same experts and routers go on from
    task to task, every task's samples being of the task type.
method_stats records, over the stage's training steps and all adapted layers, the share of the
router weight that task samples (and general samples, where any) put on each group, and the
mean of the constraint term (sum over layers, before beta).
"""
from __future__ import annotations

import dataclasses
import math
import random

import torch
from torch import nn

from harness.core.errors import ConfigError
from harness.core.typed import field

from .adapters import wrap_linears
from .base import Method
from .replay import draw, general_pairs

EPS = 1e-10  # the reference's cv_squared epsilon


@dataclasses.dataclass(frozen=True)
class MoELoRAConfig:
    lr: float = field(2e-4, "AdamW learning rate for the experts and routers", min=0.0)
    experts: int = field(8, "LoRA experts per adapted projection (even: half task group, half general group)", min=1)
    r: int = field(4, "rank of each expert", min=1)
    alpha: int = field(32, "scaling numerator: each expert's update is scaled by alpha / r", min=1)
    dropout: float = field(0.05, "dropout on the expert input", min=0.0, max=1.0)
    balance_weight: float = field(0.1, "beta: weight of the localized balancing constraint (0 turns it off)", min=0.0)
    balance_delta: float = field(0.1, "delta: importance coefficients 1 +/- delta that split the experts into "
                                 "a task group and a general group (0: the plain balancing term)", min=0.0, max=0.99)
    general_ratio: float = field(0.0, "share of each stage's training examples drawn from general-domain data "
                                 "(GSM8K train), of the world-knowledge type; 0: every example is the task's",
                                 min=0.0, max=0.9)
    target_modules: list[str] = field(["gate_proj", "up_proj", "down_proj"], "FFN projections that get experts")

    def __post_init__(self):
        if self.balance_delta > 0 and self.experts % 2:
            raise ConfigError(f"moe_lora config: balance_delta > 0 splits the experts into two equal groups, so "
                              f"experts must be even (got {self.experts}); set an even number or balance_delta: 0")
        if self.general_ratio > 0 and not (self.balance_delta > 0 and self.balance_weight > 0):
            raise ConfigError("moe_lora config: general_ratio > 0 mixes in world-knowledge samples for the localized "
                              "constraint, which balance_weight 0 or balance_delta 0 turns off; set both above 0")


class MoELoRALinear(nn.Module):
    """A frozen linear layer plus router-weighted LoRA experts. The experts' A matrices are stacked
    into one (experts*r x in) matrix and the B matrices into one (out x experts*r): two matmuls."""

    def __init__(self, base: nn.Linear, experts: int, r: int, alpha: int, dropout: float):
        super().__init__()
        w = base.weight
        self.base, self.experts, self.r, self.scaling = base, experts, r, alpha / r
        self.dropout = nn.Dropout(dropout)
        self.router = nn.Linear(base.in_features, experts, bias=False, device=w.device, dtype=w.dtype)
        a = torch.empty(experts * r, base.in_features, device=w.device, dtype=w.dtype)
        for e in range(experts):  # each expert initialised like a peft LoRA A
            nn.init.kaiming_uniform_(a[e * r:(e + 1) * r], a=math.sqrt(5))
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, experts * r, device=w.device, dtype=w.dtype))
        self.last_weights = None  # router weights of the last training forward, for the balancing term

    def route(self, x):
        """Per-token softmax over the experts (computed in float32)."""
        return torch.softmax(self.router(x).float(), dim=-1)

    def forward(self, x):
        y = self.base(x)
        g = self.route(x)
        if self.training:
            self.last_weights = g
        h = (self.dropout(x) @ self.lora_A.t()).unflatten(-1, (self.experts, self.r))
        h = (h * g.unsqueeze(-1).to(h.dtype)).flatten(-2)
        return y + (h @ self.lora_B.t()) * self.scaling


def importance(general, experts: int, delta: float):
    """I[m, e] of the reference: for a world-knowledge sample (general[m] true; task_type 1) 1 + delta
    on experts [0, E/2) and 1 - delta on [E/2, E); for a task sample (task_type 0) the reverse."""
    general = general.view(-1, 1).bool()
    half = experts // 2
    first = torch.cat((general.expand(-1, half), ~general.expand(-1, half)), dim=-1)
    return torch.where(first, 1.0 + delta, 1.0 - delta)


def expert_importance(weights, attention_mask):
    """Q[m, e]: the mean over sample m's real tokens of expert e's router weight (rows sum to 1)."""
    mask = attention_mask.unsqueeze(-1).to(weights.dtype)
    return (weights * mask).sum(1) / mask.sum(1).clamp_min(1)


def balance_term(weights, attention_mask, general=None, delta: float = 0.0):
    """The localized balancing constraint of one layer, before beta: Var(Z) / (Mean(Z)^2 + eps) over
    Z = I * Q, flattened over samples and experts; `general` marks the world-knowledge samples (None:
    all are task samples). delta 0 gives every I = 1, the plain squared coefficient of variation."""
    q = expert_importance(weights, attention_mask)
    if delta:
        if general is None:
            general = torch.zeros(q.shape[0], dtype=torch.bool, device=q.device)
        q = q * importance(general.to(q.device), q.shape[-1], delta).to(q)
    z = q.flatten()
    if z.numel() < 2:
        return z.sum() * 0.0
    return z.var() / (z.mean() ** 2 + EPS)


class MoELoRA(Method):
    name = "moe_lora"
    description = ("LoRAMoE: router-mixed LoRA experts in the FFN projections, with the localized balancing "
                   "constraint splitting them into a task group and a world-knowledge group.")
    citation = "Dou et al. 2024, LoRAMoE, arXiv:2312.09979"
    Config = MoELoRAConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.general: list[dict] = []  # the general-domain pool (general_ratio > 0)
        self.general_keys: set = set()  # token ids of this stage's general examples, as the training loop encodes them
        self._reset_usage()

    def prepare(self, model, ctx):
        c = self.config
        if c.general_ratio > 0:
            self.general = general_pairs(ctx)
        for p in model.parameters():
            p.requires_grad_(False)
        self.layers = wrap_linears(model, list(c.target_modules),
                                   lambda lin: MoELoRALinear(lin, c.experts, c.r, c.alpha, c.dropout))
        return model

    def _reset_usage(self):
        # per type: [share of router weight on the task group summed over samples x layers, that count]
        self.usage = {"task": [0.0, 0], "general": [0.0, 0]}
        self.term_sum, self.steps, self.mixed = 0.0, 0, 0

    def train_examples(self, pairs, ctx):
        self._reset_usage()
        self.general_keys = set()
        share = self.config.general_ratio
        if share == 0:
            return pairs
        if ctx.batches is None:
            raise ConfigError("method_config.general_ratio > 0 needs ctx.batches to encode its general examples")
        n = round(len(pairs) * share / (1 - share))  # n / (len(pairs) + n) = share
        rng = random.Random(ctx.seed * 1000 + ctx.stage)  # each stage drawn alone: a resumed run draws the same
        general = draw(rng, self.general, n, "general")
        for batch in ctx.batches(general):
            self.general_keys.update(_row_keys(batch))
        self.mixed = len(general)
        return pairs + general

    def sample_types(self, batch):
        """A bool per batch row: true for a world-knowledge (general) sample, false for a task sample."""
        rows = batch["input_ids"].shape[0]
        if not self.general_keys:
            return torch.zeros(rows, dtype=torch.bool)
        return torch.tensor([key in self.general_keys for key in _row_keys(batch)], dtype=torch.bool)

    def extra_loss(self, model, batch, outputs, ctx):
        weights = [layer.last_weights for layer in self.layers]
        for layer in self.layers:
            layer.last_weights = None
        if any(w is None for w in weights):
            return None
        c = self.config
        general = self.sample_types(batch)
        self.steps += 1
        self._record_usage(weights, batch["attention_mask"], general)
        if not c.balance_weight:
            return None
        term = sum(balance_term(w, batch["attention_mask"], general, c.balance_delta) for w in weights)
        self.term_sum += float(term.detach())
        return c.balance_weight * term

    @torch.no_grad()
    def _record_usage(self, weights, attention_mask, general):
        half = self.config.experts // 2
        if not half:
            return
        # [layers, samples]: each sample's share of router weight on the task group, moved over at once
        on_task_group = torch.stack([expert_importance(w, attention_mask)[:, :half].sum(-1) for w in weights]).cpu()
        for name, rows in (("task", ~general), ("general", general)):
            if rows.any():
                self.usage[name][0] += float(on_task_group[:, rows].sum())
                self.usage[name][1] += int(rows.sum()) * len(weights)

    def stats(self, ctx):
        out = {}
        for name, (total, count) in self.usage.items():
            if count:
                share = total / count
                out[f"{name}_samples_on_task_group"] = share
                out[f"{name}_samples_on_general_group"] = 1.0 - share
        if self.steps and self.config.balance_weight:
            out["balance_term_mean"] = self.term_sum / self.steps
        if self.mixed:
            out["general_examples"] = self.mixed
        return out


def _row_keys(batch) -> list[tuple]:
    """Each batch row's token ids without its padding: what identifies an example in a shuffled batch."""
    ids, mask = batch["input_ids"].cpu(), batch["attention_mask"].cpu().bool()
    return [tuple(ids[i][mask[i]].tolist()) for i in range(ids.shape[0])]
