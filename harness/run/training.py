"""The training loop for one task: shuffled padded batches (a mixed-in share spread evenly), the method's optimiser
(AdamW by default), the label loss from logits computed only where a label is predicted, the method's extra loss."""
from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from tasks.chat import IGNORE

from ..core.errors import TrainingDiverged
from ..model.padding import padded
from ..model.precision import autocast


def collate(examples: list[dict], pad_id: int, device: str) -> dict:
    """Right-pad a list of encoded examples into tensors."""
    ids, mask = padded([e["input_ids"] for e in examples], pad_id, device)
    labels, _ = padded([e["labels"] for e in examples], IGNORE, device)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def epoch_order(examples: list[dict], generator) -> list[int]:
    """One epoch's order of the examples: a random permutation; when some carry a `mix` name (the share a
    method mixed in, such as replay's), each named share is spread evenly over the epoch instead, so every
    batch holds about its share. Each group is shuffled and its j-th of n members placed at (j + u) / n
    for a random offset u per group; the order sorts those places."""
    if not any(e.get("mix") for e in examples):
        return torch.randperm(len(examples), generator=generator).tolist()
    groups: dict = {}
    for i, e in enumerate(examples):
        groups.setdefault(e.get("mix"), []).append(i)
    places = []
    for members in groups.values():
        offset = torch.rand(1, generator=generator).item()
        shuffled = torch.randperm(len(members), generator=generator).tolist()
        places += [((j + offset) / len(members), members[k]) for j, k in enumerate(shuffled)]
    return [i for _, i in sorted(places)]


class LabelOutputs:
    """The forward of one training batch as a method's hooks see it: `loss`, the mean cross-entropy of the
    labelled positions (what transformers' causal-LM loss is); `label_logits` [N, V], the logits that predict
    each label, in the order of `labels[:, 1:] != IGNORE` (row by row); `logits` [B, T, V], every position's,
    only for a method that declares `Needs(full_logits=True)`: otherwise the LM head runs only where a label is
    predicted (on the quick card about a tenth of the positions; results/bench/)."""

    def __init__(self, label_logits, targets, at, full_logits=None):
        self.label_logits, self._at, self._full = label_logits, at, full_logits
        self._ce = torch.nn.functional.cross_entropy(label_logits.float(), targets, reduction="none")
        self.loss = self._ce.mean()

    @property
    def logits(self):
        if self._full is None:
            raise AttributeError("outputs.logits: the training forward computes logits only at labelled positions "
                                 "(outputs.label_logits); a method that reads every position's logits declares "
                                 "needs = Needs(full_logits=True)")
        return self._full

    def weighted_loss(self, weights):
        """sum(w * ce) / sum(w) over the labelled positions; weights [B, T], weights[b, t] scales predicting
        labels[b, t] (the shape of batch['labels'])."""
        w = weights[:, 1:][self._at].float()
        return (self._ce * w).sum() / w.sum().clamp_min(1e-8)


def forward(model, method, batch: dict) -> LabelOutputs:
    """The model on a batch, with the LM head applied only to the positions that predict a label unless the method
    needs every position's logits. A forward pre-hook on the output embeddings selects those positions' hidden
    states, counted from the end, so that a prompt-learning wrapper's virtual tokens in front change nothing. A
    model without output embeddings to hook (a method's own wrapper module) gives every position's logits."""
    labels = batch["labels"]
    at = labels[:, 1:] != IGNORE
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    head = getattr(model, "get_output_embeddings", lambda: None)()
    if method.needs.full_logits or head is None:
        logits = model(**inputs).logits
        return LabelOutputs(logits[:, :-1][at], labels[:, 1:][at], at, logits)

    def labelled_only(module, args):
        hidden, length = args[0], labels.shape[1]
        return (hidden[:, hidden.shape[1] - length:hidden.shape[1] - 1][at],) + args[1:]

    handle = head.register_forward_pre_hook(labelled_only)
    try:
        label_logits = model(**inputs).logits
    finally:
        handle.remove()
    return LabelOutputs(label_logits, labels[:, 1:][at], at)


def batch_loss(model, method, batch: dict, ctx):
    """The training loss of one batch: the label loss (reweighted per token when the method's
    token_weights says so) plus the method's extra loss."""
    outputs = forward(model, method, batch)
    weights = method.token_weights(model, batch, outputs, ctx)
    loss = outputs.loss if weights is None else outputs.weighted_loss(weights)
    extra = method.extra_loss(model, batch, outputs, ctx)
    return loss if extra is None else loss + extra


def train_task(model, method, examples: list[dict], ctx, *, epochs: int, batch_size: int, pad_id: int,
               device: str, precision: str, seed: int, desc: str) -> dict:
    """Train in place; return measured statistics of the stage, and under `losses` the loss of every step (the
    training curve: the runner hands it to the tracker, harness.integrations.tracking, and does not store it).
    A step's loss is the one optimised, the method's extra term included (ewc's penalty, distill's KL, olora's
    penalty): it compares within a method, not with another method's label loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError(f"method '{method.name}' left no trainable parameters")
    optimiser = method.optimiser(params, device)  # AdamW unless the method's source says otherwise
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(examples) / batch_size)
    losses, tokens = [], 0
    model.train()
    start = time.perf_counter()
    # disable=None: no bar off a terminal (a log file, CI), where \r-redrawn bars are noise
    with tqdm(total=epochs * steps_per_epoch, desc=desc, unit="step", leave=False, disable=None) as bar:
        for _ in range(epochs):
            order = epoch_order(examples, generator)
            for s in range(steps_per_epoch):
                batch = collate([examples[i] for i in order[s * batch_size:(s + 1) * batch_size]], pad_id, device)
                with autocast(device, precision):
                    loss = batch_loss(model, method, batch, ctx)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"{desc}: loss became {loss.item()} at step {len(losses) + 1}")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimiser.step()
                optimiser.zero_grad(set_to_none=True)
                losses.append(loss.item())
                tokens += int(batch["attention_mask"].sum())
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                bar.update()
    model.eval()
    seconds = time.perf_counter() - start
    return {"steps": len(losses), "examples": len(examples), "tokens": tokens, "seconds": seconds,
            "tokens_per_second": tokens / seconds if seconds else None,
            "loss_first": losses[0], "loss_last": losses[-1], "loss_mean_last_epoch": sum(losses[-steps_per_epoch:]) / steps_per_epoch,
            "losses": losses}
