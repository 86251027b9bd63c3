"""LoRAMoE: a mixture of LoRA experts in the feed-forward layers, mixed by a learned router.

Each adapted FFN projection (gate_proj, up_proj and down_proj, as in the reference code's
`lora_trainable`) becomes y = W x + sum_e g_e(x) B_e A_e dropout(x) * alpha / r, where
g(x) = softmax(router x) is a dense per-token softmax over the experts from a bias-free linear
router of its own (Dou et al. 2024, arXiv:2312.09979; github.com/Ablustrund/LoRAMoE). B starts
at zero, so the wrapped model equals the base model until it trains. The base weights are frozen;
experts and routers train, and are saved in stage checkpoints (the method is resumable).

Balancing term: the paper's localized balancing constraint, L = beta * Var(Z) / Mean(Z)^2 of
the importance matrix Z[e, m] = I[e, m] * Q[e, m], with delta = 0: the coefficients I that
tilt one group of experts towards world-knowledge samples and the other towards task samples
need a per-sample type label, which a task stream does not have, so with delta = 0 every I is 1
and the term is the squared coefficient of variation of the experts' importance. Q[e, m] is the
mean (the paper: the sum) of expert e's router weight over sample m's tokens, so that samples of
unequal length do not count as imbalance; the term is 0 exactly when every expert gets the same
weight, e.g. a uniform router. It is averaged over the adapted layers.

Defaults from the reference code's run_loramoe.sh: 8 experts, rank 4, alpha 32, dropout 0.05,
lr 2e-4. That script sets the balancing weight to 0; beta = 0.1 here is our choice, so that the
term acts (balance_weight: 0 gives the script's setting).
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from harness.typed import field

from .adapters import wrap_linears
from .base import Method


@dataclasses.dataclass(frozen=True)
class MoELoRAConfig:
    lr: float = field(2e-4, "AdamW learning rate for the experts and routers", min=0.0)
    experts: int = field(8, "LoRA experts per adapted projection", min=1)
    r: int = field(4, "rank of each expert", min=1)
    alpha: int = field(32, "scaling numerator: each expert's update is scaled by alpha / r", min=1)
    dropout: float = field(0.05, "dropout on the expert input", min=0.0, max=1.0)
    balance_weight: float = field(0.1, "beta: weight of the balancing term Var(Q) / Mean(Q)^2", min=0.0)
    target_modules: list[str] = field(["gate_proj", "up_proj", "down_proj"], "FFN projections that get experts")


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


def balance_term(weights, attention_mask):
    """Var(Q) / Mean(Q)^2 of Q[e, m] = mean over sample m's tokens of expert e's router weight."""
    mask = attention_mask.unsqueeze(-1).to(weights.dtype)
    q = (weights * mask).sum(1) / mask.sum(1).clamp_min(1)
    return q.var(unbiased=False) / q.mean() ** 2


class MoELoRA(Method):
    name = "moe_lora"
    description = "LoRAMoE: router-mixed LoRA experts in the FFN projections, with a balancing term."
    citation = "Dou et al. 2024, LoRAMoE, arXiv:2312.09979"
    Config = MoELoRAConfig

    def prepare(self, model, ctx):
        c = self.config
        for p in model.parameters():
            p.requires_grad_(False)
        self.layers = wrap_linears(model, list(c.target_modules),
                                   lambda lin: MoELoRALinear(lin, c.experts, c.r, c.alpha, c.dropout))
        return model

    def extra_loss(self, model, batch, outputs, ctx):
        weights = [layer.last_weights for layer in self.layers]
        for layer in self.layers:
            layer.last_weights = None
        if not self.config.balance_weight or any(w is None for w in weights):
            return None
        terms = [balance_term(w, batch["attention_mask"]) for w in weights]
        return self.config.balance_weight * sum(terms) / len(terms)
