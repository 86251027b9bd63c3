"""O-LoRA: orthogonal subspace learning. Each task gets a new LoRA on every adapted projection;
the LoRAs of earlier tasks are frozen and kept (their updates are summed into the output), and
the new task's A is pushed out of the earlier tasks' row spaces by

    lambda1 * sum_layers sum_{i < t} sum |A_t A_i^T|   +   lambda2 * sum_layers (||A_t|| + ||B_t||)

(Wang et al. 2023, arXiv:2310.14152). Defaults follow the reference code
(github.com/cmnfriend/O-LoRA): r 8, alpha 32, dropout 0.1 (src/run_uie_lora.py), q and v
projections, lambda1 0.5, lambda2 0 and lr 1e-3 (scripts_llama/order_*.sh). As there, lambda2
uses the (unsquared) Frobenius norm of each new LoRA matrix, and A is initialised like peft's
LoRA (Kaiming-uniform A, zero B, so a new LoRA starts as an identity change).

The earlier LoRAs are frozen and not trained, so a stage checkpoint (trainable parameters only)
cannot restore them: the method is not resumable.
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
class OLoRAConfig:
    lr: float = field(1e-3, "AdamW learning rate for the current task's LoRA", min=0.0)
    r: int = field(8, "rank of each task's LoRA", min=1)
    alpha: int = field(32, "scaling numerator: each LoRA's update is scaled by alpha / r", min=1)
    dropout: float = field(0.1, "dropout on the LoRA input", min=0.0, max=1.0)
    lambda1: float = field(0.5, "weight of the orthogonality penalty sum |A_t A_i^T|", min=0.0)
    lambda2: float = field(0.0, "weight of the L2 (Frobenius norm) penalty on the current task's LoRA", min=0.0)
    target_modules: list[str] = field(["q_proj", "v_proj"], "names of the linear projections that get LoRAs")


class TaskLoRALinear(nn.Module):
    """A frozen linear layer plus one LoRA per task: y = W x + sum_t B_t A_t dropout(x) * alpha / r."""

    def __init__(self, base: nn.Linear, r: int, alpha: int, dropout: float):
        super().__init__()
        self.base = base
        self.r, self.scaling = r, alpha / r
        self.dropout = nn.Dropout(dropout)
        self.lora_A = nn.ParameterList()
        self.lora_B = nn.ParameterList()

    def add_task(self) -> None:
        """Freeze the existing LoRAs and add a trainable one for the next task."""
        for p in [*self.lora_A, *self.lora_B]:
            p.requires_grad_(False)
        w = self.base.weight
        a = torch.empty(self.r, self.base.in_features, device=w.device, dtype=w.dtype)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.lora_A.append(nn.Parameter(a))
        self.lora_B.append(nn.Parameter(torch.zeros(self.base.out_features, self.r, device=w.device, dtype=w.dtype)))

    def forward(self, x):
        y = self.base(x)
        h = self.dropout(x)
        for a, b in zip(self.lora_A, self.lora_B):
            y = y + (h @ a.t()) @ b.t() * self.scaling
        return y

    def orthogonality(self):
        """sum over earlier tasks i of sum |A_current A_i^T|."""
        current = self.lora_A[-1]
        return sum((current @ a.t()).abs().sum() for a in self.lora_A[:-1])


class OLoRA(Method):
    name = "olora"
    description = "O-LoRA: a new LoRA per task, earlier ones frozen, orthogonality penalty against their subspaces."
    citation = "Wang et al. 2023, Orthogonal Subspace Learning for Language Model Continual Learning, arXiv:2310.14152"
    Config = OLoRAConfig
    resumable = False  # earlier tasks' LoRAs are frozen, so checkpoints of trainable parameters miss them

    def prepare(self, model, ctx):
        c = self.config
        for p in model.parameters():
            p.requires_grad_(False)
        self.layers = wrap_linears(model, list(c.target_modules), lambda lin: TaskLoRALinear(lin, c.r, c.alpha, c.dropout))
        for layer in self.layers:
            layer.add_task()  # the first task's LoRA, so that the trainable parameters exist from the start
        return model

    def train_examples(self, pairs, ctx):
        # one LoRA per task: from the second task on, freeze the last one and add a new one (the
        # harness builds its optimiser after this hook, over the parameters that train now)
        while len(self.layers[0].lora_A) < ctx.stage:
            for layer in self.layers:
                layer.add_task()
        return pairs

    def penalty(self):
        c = self.config
        total = None
        if c.lambda1 and len(self.layers[0].lora_A) > 1:
            total = c.lambda1 * sum(layer.orthogonality() for layer in self.layers)
        if c.lambda2:
            l2 = c.lambda2 * sum(layer.lora_A[-1].norm() + layer.lora_B[-1].norm() for layer in self.layers)
            total = l2 if total is None else total + l2
        return total

    def extra_loss(self, model, batch, outputs, ctx):
        return self.penalty()
