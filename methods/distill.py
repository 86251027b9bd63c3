"""Distillation from the pre-task model (Learning without Forgetting).

Before each task, the first included, the current model is copied and frozen as the teacher:
at stage 1 that is the prepared base model, whose behaviour is exactly the general ability to
keep; at stage k the model as stage k-1 left it. Training loss = label loss +
alpha * KL(p_teacher^T || p_student^T) on the reply tokens of the new task's data, with
both distributions softened by temperature T (Li & Hoiem 2017, arXiv:1606.09282: T = 2,
weight 1). No T^2 factor: the authors' code (lizhitwo/LearningWithoutForgetting, vl_nnsoftmaxdiff.m,
mode 'MI') gives the logits the gradient (softmax(x/T) - softmax(teacher/T)) / T, which is this KL's;
Hinton et al.'s T^2 scaling (arXiv:1503.02531) would pull 4x as hard at T = 2.
LwF's teacher is the model before the new task, at every task; the term is 0 at a stage's
first step (student = teacher) and grows as the student moves.

KL direction: forward, teacher || student. It is mass-covering: the student is pushed to keep
probability wherever the pre-task model put it, which is what "do not forget" asks; the reverse
KL would let the student drop modes of the old distribution. Teacher logits are computed per
batch, on the fly: nothing is held for the whole dataset. method_stats records the stage's
mean and last distillation term (before alpha).

Deviation: LwF keeps one output head per task and distils the old heads' outputs on the new task's
images; a language model has one head, the vocabulary, so the KL and the label loss act on the same
softmax, at the new task's reply tokens (the usual adaptation of LwF to LLMs).
"""
from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F

from harness.core.typed import field
from tasks.chat import IGNORE

from .base import Needs
from .full import FullFineTune


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    lr: float = field(5e-5, "AdamW learning rate for all weights", min=0.0)
    alpha: float = field(1.0, "weight of the distillation term", min=0.0)
    temperature: float = field(2.0, "softmax temperature for both teacher and student", min=0.01)


def distill_kl(student_logits, teacher_logits, labels, temperature: float):
    """Mean over reply positions of KL(teacher^T || student^T) (LwF's term: no T^2 factor)."""
    mask = labels[:, 1:] != IGNORE
    s = student_logits[:, :-1][mask].float() / temperature
    t = teacher_logits[:, :-1][mask].float() / temperature
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
    return kl


class Distill(FullFineTune):
    name = "distill"
    description = "LwF: label loss + KL to the frozen pre-task model on the new task's replies."
    citation = "Li & Hoiem 2017, Learning without Forgetting, arXiv:1606.09282"
    Config = DistillConfig
    shardable = False  # an extra loss or token weights: harness.run.sharded
    needs = Needs(teacher=True, full_logits=True)  # reads outputs.logits

    def prepare(self, model, ctx):
        model = super().prepare(model, ctx)
        self.model = model
        self.teacher = None
        self.kl = []
        return model

    def train_examples(self, pairs, ctx):
        # the pre-task model, at every stage: at stage 1 the prepared base model
        self.teacher = copy.deepcopy(self.model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.kl = []
        return pairs

    def extra_loss(self, model, batch, outputs, ctx):
        if self.teacher is None:
            raise RuntimeError("distill: no teacher; train_examples copies the pre-task model before each stage")
        with torch.no_grad():
            teacher_logits = self.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        kl = distill_kl(outputs.logits, teacher_logits, batch["labels"], self.config.temperature)
        self.kl.append(kl.detach())
        return self.config.alpha * kl

    def after_task(self, model, ctx):
        self.teacher = None  # free the copy between tasks
        return model

    def stats(self, ctx):
        if not self.kl:
            return {}
        kl = torch.stack(self.kl).float().cpu()
        return {"kl_mean": float(kl.mean()), "kl_last": float(kl[-1])}
