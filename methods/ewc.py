"""Elastic Weight Consolidation with the diagonal Fisher of the model's own predictive distribution,
accumulated online over tasks.

Penalty (Kirkpatrick et al. 2017, arXiv:1612.00796, eq. 3; online form of Schwarz et al. 2018,
arXiv:1805.06370): after task k the Fisher becomes F = gamma * F + F_k and the anchor
w* the weights after task k; while later tasks are trained the loss gains
lambda/2 * sum_i F_i (w_i - w*_i)^2.

F_k, as the paper defines it: the "true" Fisher E_x E_{y ~ p_w(.|x)} [(d log p_w(y|x) / dw)^2]
at the weights after task k, with the targets y drawn from the model itself, one example at a
time (van de Ven 2025, arXiv:2502.11756, calls this the "sample" variant; GMvandeVen/continual-
learning `fisher_labels='sample'` with `fisher_batch=1`; ariseff/overcoming-catastrophic draws
one class per input from the softmax). Not the empirical Fisher: the squared gradient of the
loss at the *training* labels goes to zero once the task is memorised (and the square of a
batch's *mean* gradient is smaller still, the mean of gradients that cancel at a minimum), which
made the earlier version of this method, with lambda 100, a copy of `full` (the same accuracy
matrix, final losses within 2e-4). The sampled Fisher keeps the curvature of the model's own
distribution: about p(1 - p) at a token the model predicts with probability p, where the
empirical one is about (1 - p)^2.

How it is estimated here, for a causal LM (the choices and deviations):
- inputs x: the stage's training examples (ctx.task.learn, the only data a method may read;
  the task's held-out views are evaluation data), each encoded exactly as for training;
- targets: at every reply position (where the training labels are not IGNORE; the prompt
  positions stay out, as in the loss), `fisher_draws` tokens drawn with replacement from the
  model's next-token distribution given the true prefix (teacher forcing), not whole replies
  sampled autoregressively: one forward and one backward pass per example instead of a
  generation. Draws at different positions and the several draws at one position are
  independent and each has a zero-mean score, so the square of the gradient of their summed
  log-probabilities has expectation fisher_draws x the sum over positions of each position's
  Fisher (the cross terms vanish). Several draws per position cost nothing (one gather) and
  keep the estimate from being mostly zero where the model is confident (a single draw then
  nearly always returns the argmax token, whose score is ~0);
- per example: one backward pass per example (a batch from ctx.batches is split into its rows,
  padding stripped), never the square of a batch's summed gradient;
- scale: the sum of the per-example squares divided by the number of draws (reply tokens x
  fisher_draws), i.e. the mean Fisher of one reply token, the Gauss-Newton curvature of the
  mean per-token label loss the harness trains on. lambda = 1 therefore weighs the penalty like
  a second-order estimate of the earlier tasks' per-token loss increase against the new task's
  per-token loss (the Bayesian reading of eq. 3 with equally sized tasks). No normalisation by
  the Fisher's mean or max (some LLM implementations do; it would hide the scale that lambda was
  measured against);
- when: at the end of each task, on the weights the penalty anchors to (Kirkpatrick; Schwarz),
  in eval mode, with a generator seeded by (seed, stage), so a run is reproducible and the draws
  do not disturb the training RNG;
- online sum with gamma (Schwarz et al.) instead of one penalty per task (Kirkpatrick); gamma 1
  is the plain sum, which equals Kirkpatrick's sum of per-task penalties except that every
  term is anchored to the latest weights. Deviation at gamma < 1: the penalty uses the stored sum
  F = gamma * F + F_k as it is; van de Ven's code (GMvandeVen/continual-learning,
  models/cl/continual_learner.py) multiplies the running sum by gamma once more in the penalty, so there
  the penalty is gamma times ours. Equal at the default gamma 1.

Defaults and why:
- ewc_lambda 1e3, chosen by measurement so that the penalty matters without freezing the model:
  the target is a penalty gradient, lambda * F * (w - w*), whose norm is 0.1 to 10 times that of
  the new task's label-loss gradient once the weights have drifted from the anchor for a stage.
  SmolLM2-135M-Instruct, fp32 CPU, 16 MMLU high-school-geography val items trained 12 AdamW steps
  (batch 4, lr 5e-5, max_length 128; label loss 0.75 after), then 16 philosophy items for 12 steps:
  ratio after 3 / 7 / 11 steps = 0.44 / 0.88 / 0.72 with lambda 1e3 in the loss (penalty 0.018 /
  0.040 / 0.059); along full fine-tuning's path the ratio is 0.003 per unit lambda after 11 steps.
  The replaced estimator (empirical batch Fisher, lambda 100) gave 0.023 there; its Fisher's mean
  was 30x smaller (1.3e-6 against 3.8e-5) and the pull |F (w - w*)| 13x smaller. The same
  protocol on the tiny test model (memorised first task, lr 1e-3) gives 0.34
  (tests/test_method_ewc.py asserts 0.1-10). Effect on that two-task probe: the first task's loss
  rose 0.746 -> 1.177 under full fine-tuning and -> 1.161 with lambda 1e3 (second task 0.678 and
  0.707): a real but small pull; larger lambdas are a sweep's job.
- gamma 1 (plain accumulation; Schwarz et al. let gamma < 1 fade old tasks in long streams, the
  benchmark's streams are 4 tasks).
- fisher_draws 8: on the tiny memorised task one draw per position gives a one-seed estimate with
  a relative spread of 107% (some near 0), 8 draws 47%, near the floor of squaring one gradient
  per example (sqrt(2 / 8 examples) = 50%). Cost: one forward and backward pass per training
  example per stage (SmolLM2, 16 MC examples: 30 s on one CPU thread, a third of the stage's
  12 training steps).

stats() (the stage's method_stats): fisher_mean, fisher_max (the accumulated F), task_fisher_mean
(this task's F_k), fisher_examples, fisher_tokens; from stage 2 on, for the penalty of the earlier
tasks during this stage: penalty_mean and penalty_last (its value over the training steps and at
the last one), and at the end of the stage, before re-anchoring, penalty_grad_norm
(||lambda F (w - w*)||) and drift_norm (||w - w*||).
"""
from __future__ import annotations

import dataclasses

import torch

from harness.core.typed import field
from harness.model.precision import autocast
from tasks.chat import IGNORE

from .full import FullFineTune


@dataclasses.dataclass(frozen=True)
class EWCConfig:
    lr: float = field(5e-5, "AdamW learning rate for all weights", min=0.0)
    ewc_lambda: float = field(1000.0, "weight of the penalty lambda/2 * sum F (w - w*)^2, F the mean Fisher of one "
                                      "reply token (lambda 1: a second-order estimate of the earlier tasks' per-token "
                                      "loss increase)", min=0.0)
    gamma: float = field(1.0, "decay of earlier tasks' Fisher in the online sum (1: accumulate)", min=0.0, max=1.0)
    fisher_draws: int = field(8, "tokens drawn from the model's own distribution at each reply position for the Fisher",
                              min=1)


def reply_rows(batch: dict):
    """(input_ids [1, n], labels [1, n]) of each example of a collated, right-padded batch, padding stripped."""
    ids, labels, mask = batch["input_ids"], batch["labels"], batch.get("attention_mask")
    for b in range(ids.shape[0]):
        n = int(mask[b].sum()) if mask is not None else ids.shape[1]
        yield ids[b:b + 1, :n], labels[b:b + 1, :n]


def sampled_fisher(model, params: list, batches, device: str, precision: str, draws: int, generator_seed: int):
    """The diagonal Fisher of the model's own next-token distribution at the reply positions, per example,
    as the mean over reply tokens; returns (fisher per parameter, examples, reply tokens). See the module
    docstring for the estimator."""
    fisher = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    generator, examples, tokens = None, 0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for batch in batches:
                for ids, labels in reply_rows(batch):
                    at = labels[0, 1:] != IGNORE  # position t predicts token t + 1
                    if not at.any():
                        continue
                    with autocast(device, precision):
                        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
                    logp = torch.log_softmax(logits[0, :-1][at].float(), dim=-1)
                    if generator is None:
                        generator = torch.Generator(device=logp.device).manual_seed(generator_seed)
                    with torch.no_grad():
                        drawn = torch.multinomial(logp.exp(), draws, replacement=True, generator=generator)
                    score = logp.gather(1, drawn).sum()
                    grads = torch.autograd.grad(score, params, allow_unused=True)
                    for f, g in zip(fisher, grads):
                        if g is not None:
                            g = g.float()
                            f.addcmul_(g, g)
                    examples += 1
                    tokens += int(at.sum())
    finally:
        model.train(was_training)
    return [f / max(1, tokens * draws) for f in fisher], examples, tokens


class EWC(FullFineTune):
    name = "ewc"
    description = ("Full fine-tuning with an Elastic Weight Consolidation penalty (online diagonal Fisher of the "
                   "model's own distribution).")
    citation = "Kirkpatrick et al. 2017, arXiv:1612.00796; Schwarz et al. 2018, arXiv:1805.06370"
    Config = EWCConfig
    shardable = False  # an extra loss or token weights: harness.run.sharded

    def prepare(self, model, ctx):
        model = super().prepare(model, ctx)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.fisher = None
        self.anchor = None
        self._stats = {}
        self._reset_tracking()
        return model

    def _reset_tracking(self):
        self._penalty_sum, self._penalty_last, self._penalty_steps = 0.0, None, 0

    def penalty(self):
        if self.fisher is None:
            return None
        total = sum((f * (p.float() - a) ** 2).sum() for p, f, a in zip(self.params, self.fisher, self.anchor))
        return self.config.ewc_lambda / 2 * total

    def extra_loss(self, model, batch, outputs, ctx):
        value = self.penalty()
        if value is not None:
            self._penalty_last = value.detach()
            self._penalty_sum = self._penalty_sum + self._penalty_last
            self._penalty_steps += 1
        return value

    def estimate_fisher(self, model, ctx):
        """(this task's Fisher, examples, reply tokens) at the current weights, on the task's training examples."""
        pairs = [i.training_pair() for i in ctx.task.learn]
        return sampled_fisher(model, self.params, ctx.batches(pairs, 1), ctx.device, ctx.precision,
                              self.config.fisher_draws, ctx.seed * 1000 + ctx.stage)

    @torch.no_grad()
    def _pull(self) -> dict:
        """How hard the earlier tasks' penalty pulls at the current weights (before re-anchoring)."""
        lam = self.config.ewc_lambda
        drift2 = sum(((p.float() - a) ** 2).sum() for p, a in zip(self.params, self.anchor))
        grad2 = sum(((lam * f * (p.float() - a)) ** 2).sum() for p, f, a in zip(self.params, self.fisher, self.anchor))
        out = {"penalty_grad_norm": float(grad2.sqrt()), "drift_norm": float(drift2.sqrt())}
        if self._penalty_steps:
            out.update(penalty_mean=float(self._penalty_sum) / self._penalty_steps,
                       penalty_last=float(self._penalty_last))
        return out

    def after_task(self, model, ctx):
        stats = self._pull() if self.fisher is not None else {}
        new, examples, tokens = self.estimate_fisher(model, ctx)
        self.fisher = new if self.fisher is None else [self.config.gamma * f + n for f, n in zip(self.fisher, new)]
        self.anchor = [p.detach().float().clone() for p in self.params]
        numel = sum(f.numel() for f in self.fisher)
        stats.update(fisher_mean=float(sum(f.sum() for f in self.fisher)) / numel,
                     fisher_max=float(max(f.max() for f in self.fisher)),
                     task_fisher_mean=float(sum(f.sum() for f in new)) / numel,
                     fisher_examples=examples, fisher_tokens=tokens)
        self._stats = stats
        self._reset_tracking()
        return model

    def stats(self, ctx) -> dict:
        return dict(self._stats)

    def state(self):
        """The online Fisher and the anchor, one tensor each per trainable parameter, in their order."""
        if self.fisher is None:
            return {}, {}
        return {**{f"fisher.{i}": f for i, f in enumerate(self.fisher)},
                **{f"anchor.{i}": a for i, a in enumerate(self.anchor)}}, {"parameters": len(self.fisher)}

    def load_state(self, model, tensors, info):
        if not info:
            return
        if info["parameters"] != len(self.params):
            raise RuntimeError(f"an EWC checkpoint of {info['parameters']} parameters for a model of {len(self.params)}")
        self.fisher = [tensors[f"fisher.{i}"].to(p.device) for i, p in enumerate(self.params)]
        self.anchor = [tensors[f"anchor.{i}"].to(p.device) for i, p in enumerate(self.params)]
