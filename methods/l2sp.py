"""L2-SP: full fine-tuning with an L2 penalty pulling the weights towards the pre-trained ones,
alpha/2 * ||w - w0||^2 (Li, Grandvalet & Davoine 2018, arXiv:1802.01483; alpha 0.1 there).

Deviations from the authors' code (holyseven/TransferLearningClassification, model/network_base.py): the
penalty goes into the harness's AdamW at a constant 5e-5 with the gradient clipped at norm 1.0 (penalty
included), where the reference uses SGD with momentum 0.9 at lr 0.01 stepped down 10x: Adam normalises
each coordinate, so an alpha set for SGD pulls differently (`clbench tune` picks alpha with the rate);
and every parameter is anchored, norm gains included, where the reference's default penalises only
variables named 'weights' (no biases or batch-norm parameters).

stats() (the stage's method_stats): over the stage's training steps, the penalty and the label loss it is
added to (first, last and mean, and the ratio of the means: how hard the pull is against the task), and
drift_norm, ||w - w0|| at the end of the stage."""
from __future__ import annotations

import dataclasses

import torch

from harness.core.typed import field

from .full import FullFineTune


@dataclasses.dataclass(frozen=True)
class L2SPConfig:
    lr: float = field(5e-5, "AdamW learning rate for all weights", min=0.0)
    alpha: float = field(0.1, "weight of the penalty alpha/2 * ||w - w0||^2", min=0.0)


class L2SP(FullFineTune):
    name = "l2sp"
    description = "Full fine-tuning with an L2 pull towards the pre-trained weights."
    citation = "Li, Grandvalet & Davoine 2018, Explicit Inductive Bias for Transfer Learning, arXiv:1802.01483"
    Config = L2SPConfig
    shardable = False  # an extra loss or token weights: harness.run.sharded

    def prepare(self, model, ctx):
        model = super().prepare(model, ctx)
        self.anchor = [(p, p.detach().clone()) for p in model.parameters()]
        self._stage, self._terms = None, []
        return model

    def penalty(self):
        return self.config.alpha / 2 * sum(((p.float() - a.float()) ** 2).sum() for p, a in self.anchor)

    def extra_loss(self, model, batch, outputs, ctx):
        value = self.penalty()
        if model.training:  # each training step's (label loss, penalty), for stats()
            if ctx.stage != self._stage:
                self._stage, self._terms = ctx.stage, []
            self._terms.append((float(outputs.loss.detach()), float(value.detach())))
        return value

    @torch.no_grad()
    def stats(self, ctx) -> dict:
        terms = self._terms if self._stage == ctx.stage else []
        losses, penalties = [t[0] for t in terms], [t[1] for t in terms]
        loss_mean, penalty_mean = (sum(losses) / len(terms), sum(penalties) / len(terms)) if terms else (None, None)
        drift = sum(((p.float() - a.float()) ** 2).sum() for p, a in self.anchor)
        return {"steps_recorded": len(terms), "penalty_first": penalties[0] if terms else None,
                "penalty_last": penalties[-1] if terms else None, "penalty_mean": penalty_mean,
                "task_loss_first": losses[0] if terms else None, "task_loss_last": losses[-1] if terms else None,
                "task_loss_mean": loss_mean,
                "penalty_ratio_mean": penalty_mean / loss_mean if terms and loss_mean else None,
                "drift_norm": float(drift.sqrt())}
