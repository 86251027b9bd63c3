"""O-LoRA: orthogonal subspace learning. Each task gets a new LoRA on every adapted projection;
the LoRAs of earlier tasks are frozen and kept (their updates are summed into the output), and
the new task's A is pushed out of the earlier tasks' row spaces by

    lambda1 * mean_modules sum_{i < t} sum |A_t A_i^T|   +   lambda2 * mean_modules (||A_t|| + ||B_t||)

(Wang et al. 2023, arXiv:2310.14152). A here is peft's lora_A, the down-projection [r, in], as in the
reference code; the paper writes the constraint on its own A, the up-projection [out, r] (peft's lora_B):
the code keeps the new update's row space apart, the paper its column space (cmnfriend/O-LoRA issues #9 and
#39, where the authors call lora_A the basis of the update). This port follows the code.

What the reference code does (github.com/cmnfriend/O-LoRA, read for this port):
- Initialisation (src/peft/tuners/lora.py, LoraLayer.reset_lora_parameters): the new task's
  loranew_A is nn.init.kaiming_uniform_(a=sqrt(5)) and loranew_B zero, so a new LoRA starts as an
  identity change; the earlier tasks' LoRAs are stored concatenated (lora_A [r_sum, in], lora_B
  [out, r_sum], src/peft/utils/save_and_load.py), frozen (src/run_uie_lora.py) and summed into the
  output with the same dropout and scaling. This port does the same (one frozen (A, B) per earlier
  task; the same init).
- Penalty (src/uie_trainer_lora.py, training_step): orthogonal_loss = the SUM over adapted modules
  of |lora_A @ loranew_A^T|.sum() (raw matrices, no normalisation), l2_loss = the sum over the new
  LoRA's matrices of their Frobenius norms; loss + lamda_1 * orthogonal_loss + lamda_2 * l2_loss.
- Settings: r 8, alpha 32, dropout 0.1, q and v projections (peft's defaults; src/run_uie_lora.py),
  lamda_1 0.5, lamda_2 0, lr 1e-3 constant, one epoch of about 5000 examples at a global batch of 64,
  i.e. 79 steps per task (219 for dbpedia) (scripts/order_*.sh, T5-large); scripts_llama/order_*.sh
  use lr 1e-3 for the first task and 1e-4 for the later ones, and scripts/long.sh (the 15-task run) raises
  lamda_1 to 5 for tasks 10-15 and lamda_2 up to 0.3. The reference's own logs
  (logs_and_outputs/long_olora/outputs/*/trainer_state.json, T5-large) imply that its penalty
  dominates there too: the logged loss (task + penalty) of stage 2 (amazon) is 24.5 over the first
  10 steps and still 5.0 at step 70, where stage 1 (yelp, the same kind of task) logs 0.56 at step 20
  and 0.38 at step 70.

Deviations: the learning rate is 1e-3 at every task (the reference's LLaMA scripts drop it to 1e-4 after
the first task; `clbench tune` picks it on the validation stream), and the penalty is averaged over the
adapted modules instead of summed (`reduction`; "sum" gives the reference's scale). Why: at a fresh Kaiming-uniform init an entry of A_t A_i^T has a mean
absolute value of about 0.27 / sqrt(in_features), so one module adds about 0.27 r^2 / sqrt(in) per
earlier task: 0.71 on SmolLM2 (in 576), times 60 modules times lambda1 0.5 = 21 per earlier task
against a task loss of 2-5. The reference pays that off over 79-219 steps a task; this benchmark
trains tens of steps a task. Measured on SmolLM2-135M (16 MMLU items a task, batch 4, max_length
128, 8 steps a stage, the same stage-1 state and stage-2 init for each setting):

                                     sum (reference)   mean (default)   lambda1 0
    penalty / task loss, first step        5.7              0.095            0
    penalty / task loss, stage mean        3.1              0.052            0
    task loss, stage mean (last step)   3.25 (2.31)      3.20 (2.19)      3.16 (2.12)
    share of A_2 in A_1's row space     0.0141 -> 0.0011  0.0141 -> 0.0008  0.0141 -> 0.0151

AdamW normalises each parameter's step, and while B_t is near zero the penalty alone drives A_t, so
the 60x smaller penalty still pushes A_t out of the earlier row space as far as the sum does, while
the task loss follows lambda1 0 more closely. lambda2 is averaged the same way (the reference's
default, 0, is unaffected).

stats() records per stage: the task (label) loss and the penalty at the first step, their means over
the stage and the ratios penalty / task loss (first step, last step, over the stage); and the
overlap of the new A with the earlier ones at the stage's start and end, both the reference's raw
quantity (sum |A_t A_i^T| over earlier tasks, mean over modules) and the scale-free share of A_t's
squared Frobenius norm lying in the earlier tasks' row space (a random A_t has about r (t-1) / in).

The earlier LoRAs are frozen, so a stage checkpoint's trainable parameters miss them: `state` returns them,
and `load_state` adds a resumed run's LoRAs up to the checkpoint's task before they are copied in.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
from torch import nn

from harness.core.typed import field

from .adapters import wrap_linears
from .base import Method


@dataclasses.dataclass(frozen=True)
class OLoRAConfig:
    lr: float = field(1e-3, "AdamW learning rate for the current task's LoRA", min=0.0)
    r: int = field(8, "rank of each task's LoRA", min=1)
    alpha: int = field(32, "scaling numerator: each LoRA's update is scaled by alpha / r", min=1)
    dropout: float = field(0.1, "dropout on the LoRA input", min=0.0, max=1.0)
    lambda1: float = field(0.5, "weight of the orthogonality penalty sum_{i<t} sum |A_t A_i^T| (per module, "
                                "reduced over modules by `reduction`)", min=0.0)
    lambda2: float = field(0.0, "weight of the L2 (Frobenius norm) penalty on the current task's LoRA "
                                "(per module, reduced over modules by `reduction`)", min=0.0)
    reduction: Literal["mean", "sum"] = field(
        "mean", "how the per-module penalties combine: mean (this benchmark's default, so that the penalty "
                "does not swamp the task loss at tens of steps a task) or sum (the reference code's scale)")
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
        """Freeze the existing LoRAs and add a trainable one for the next task, initialised like the
        reference's loranew_A / loranew_B: Kaiming-uniform (a = sqrt(5)) A, zero B."""
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

    @torch.no_grad()
    def overlap_share(self) -> float | None:
        """The share of the current A's squared Frobenius norm that lies in the earlier tasks' row
        space (0: orthogonal to all of them; a random A has about r (t-1) / in_features); None on the
        first task."""
        if len(self.lora_A) < 2:
            return None
        earlier = torch.cat([a.detach().float() for a in self.lora_A[:-1]])
        basis = torch.linalg.qr(earlier.t()).Q  # [in, r (t-1)], orthonormal columns spanning the rows
        current = self.lora_A[-1].detach().float()
        return ((current @ basis).pow(2).sum() / current.pow(2).sum().clamp_min(1e-30)).item()


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def _ratio(num, den):
    return num / den if num is not None and den else None


class OLoRA(Method):
    name = "olora"
    description = "O-LoRA: a new LoRA per task, earlier ones frozen, orthogonality penalty against their subspaces."
    citation = "Wang et al. 2023, Orthogonal Subspace Learning for Language Model Continual Learning, arXiv:2310.14152"
    Config = OLoRAConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._stage = None  # the stage the records below belong to
        self._task_losses, self._penalties = [], []
        self._overlap_start = None

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

    def state(self):
        """The earlier tasks' frozen LoRAs (the current one is a trainable parameter, in the checkpoint anyway)."""
        tensors = {f"{i}.{name}.{t}": p for i, layer in enumerate(self.layers)
                   for name, params in (("A", layer.lora_A), ("B", layer.lora_B)) for t, p in enumerate(params[:-1])}
        return tensors, {"tasks": len(self.layers[0].lora_A)}

    def load_state(self, model, tensors, info):
        while len(self.layers[0].lora_A) < info["tasks"]:
            for layer in self.layers:
                layer.add_task()
        for i, layer in enumerate(self.layers):  # in the dtype they were trained in (fp32 master weights under bf16)
            for name, params in (("A", layer.lora_A), ("B", layer.lora_B)):
                for t, p in enumerate(params[:-1]):
                    p.data = tensors[f"{i}.{name}.{t}"].to(p.device)

    def penalty(self):
        c = self.config
        n = len(self.layers) if c.reduction == "mean" else 1
        total = None
        if c.lambda1 and len(self.layers[0].lora_A) > 1:
            total = c.lambda1 * sum(layer.orthogonality() for layer in self.layers) / n
        if c.lambda2:
            l2 = c.lambda2 * sum(layer.lora_A[-1].norm() + layer.lora_B[-1].norm() for layer in self.layers) / n
            total = l2 if total is None else total + l2
        return total

    def overlap(self) -> dict:
        """The current A's overlap with the earlier tasks' A, averaged over modules: the reference's raw
        sum |A_t A_i^T| (summed over earlier tasks) and the scale-free share of A_t in their row space."""
        if len(self.layers[0].lora_A) < 2:
            return {"raw": None, "share": None}
        # in full precision even when called from inside the training step's autocast
        with torch.no_grad(), torch.autocast(self.layers[0].lora_A[-1].device.type, enabled=False):
            raw = _mean([float(layer.orthogonality().float()) for layer in self.layers])
            share = _mean([layer.overlap_share() for layer in self.layers])
        return {"raw": raw, "share": share}

    def extra_loss(self, model, batch, outputs, ctx):
        extra = self.penalty()
        if model.training:  # record the two terms of each training step for stats()
            if ctx.stage != self._stage:
                self._stage, self._task_losses, self._penalties = ctx.stage, [], []
                self._overlap_start = self.overlap()  # before the stage's first update
            self._task_losses.append(float(outputs.loss.detach()))
            self._penalties.append(0.0 if extra is None else float(extra.detach()))
        return extra

    def stats(self, ctx) -> dict:
        mine = self._stage == ctx.stage
        losses, penalties = (self._task_losses, self._penalties) if mine else ([], [])
        start = self._overlap_start if mine else {"raw": None, "share": None}
        end = self.overlap()
        earlier_rank = sum(a.shape[0] for a in self.layers[0].lora_A[:-1])
        random_share = _mean([min(1.0, earlier_rank / layer.base.in_features) for layer in self.layers])
        return {
            "steps_recorded": len(losses),
            "task_loss_first": losses[0] if losses else None,
            "penalty_first": penalties[0] if penalties else None,
            "penalty_ratio_first": _ratio(penalties[0], losses[0]) if losses else None,
            "penalty_ratio_last": _ratio(penalties[-1], losses[-1]) if losses else None,
            "task_loss_mean": _mean(losses),
            "penalty_mean": _mean(penalties),
            "penalty_ratio_mean": _ratio(_mean(penalties), _mean(losses)),
            "overlap_raw_start": start["raw"],
            "overlap_raw_final": end["raw"],
            "overlap_share_start": start["share"],
            "overlap_share_final": end["share"],
            "overlap_share_random": random_share if earlier_rank else None,
        }
