"""Elastic Weight Consolidation with a diagonal Fisher, accumulated online over tasks.

After each task the diagonal empirical Fisher F_t is estimated from squared gradients of the
label loss on that task's training data (one batch at a time, averaged over batches) and
folded into F = gamma * F + F_t; the anchor becomes the weights after the task. While training
later tasks the loss gains lambda/2 * sum_i F_i (w_i - w*_i)^2 (Kirkpatrick et al. 2017,
arXiv:1612.00796; the online form with gamma is Schwarz et al. 2018, arXiv:1805.06370).
Defaults: lambda 100 (the per-parameter Fisher of an LLM's loss is small, so lambda is larger
than in the vision papers), gamma 1 (plain accumulation).
"""
from __future__ import annotations

import dataclasses

import torch

from harness.precision import autocast
from harness.typed import field

from .full import FullFineTune


@dataclasses.dataclass(frozen=True)
class EWCConfig:
    lr: float = field(5e-5, "AdamW learning rate for all weights", min=0.0)
    ewc_lambda: float = field(100.0, "weight of the penalty lambda/2 * sum F (w - w*)^2", min=0.0)
    gamma: float = field(1.0, "decay of earlier tasks' Fisher in the online sum (1: accumulate)", min=0.0, max=1.0)


class EWC(FullFineTune):
    name = "ewc"
    description = "Full fine-tuning with an Elastic Weight Consolidation penalty (online diagonal Fisher)."
    citation = "Kirkpatrick et al. 2017, arXiv:1612.00796; Schwarz et al. 2018, arXiv:1805.06370"
    Config = EWCConfig
    resumable = False  # its state lives outside the model

    def prepare(self, model, ctx):
        model = super().prepare(model, ctx)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.fisher = None
        self.anchor = None
        return model

    def penalty(self):
        if self.fisher is None:
            return None
        total = sum((f * (p.float() - a) ** 2).sum() for p, f, a in zip(self.params, self.fisher, self.anchor))
        return self.config.ewc_lambda / 2 * total

    def extra_loss(self, model, batch, outputs, ctx):
        return self.penalty()

    def estimate_fisher(self, model, ctx):
        fisher = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
        batches = 0
        model.train()
        for batch in ctx.batches([i.training_pair() for i in ctx.task.learn]):
            with autocast(ctx.device, ctx.precision):
                loss = model(**batch).loss
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
            for f, g in zip(fisher, grads):
                if g is not None:
                    f += g.float() ** 2
            batches += 1
        model.eval()
        return [f / max(1, batches) for f in fisher]

    def after_task(self, model, ctx):
        new = self.estimate_fisher(model, ctx)
        self.fisher = new if self.fisher is None else [self.config.gamma * f + n for f, n in zip(self.fisher, new)]
        self.anchor = [p.detach().float().clone() for p in self.params]
        return model
