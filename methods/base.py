"""The method plugin interface.

A method is a class with a `Config` dataclass (every field has a default and a help
string) and a few optional hooks. Each hook returns a value; the harness owns the
training loop and evaluation.

    prepare(model, ctx) -> model          once, before the first task (wrap, freeze, expand)
    train_examples(pairs, ctx) -> list     the {"user", "reply"} pairs to train on (replay mixes here; a pair
                                           tagged "mix": name is spread evenly over each epoch's batches)
    optimiser(params, device)              the stage's optimiser (default AdamW at config.lr)
    extra_loss(model, batch, outputs, ctx) -> tensor | None   added to the label loss (outputs: .loss,
                                           .label_logits; .logits only with Needs(full_logits=True))
    token_weights(model, batch, outputs, ctx) -> tensor | None   per-token weights of the label loss
                                           (shape of batch['labels']; None: the plain mean loss)
    after_task(model, ctx) -> model        after a task is trained (consolidate, merge)
    stats(ctx) -> dict                     after after_task: stored as the stage's method_stats

Parameters with requires_grad=True after `prepare` are trained; all others must stay
bit-identical (the conformance tests check this).
"""
from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any, Callable, ClassVar, Iterator

import torch

from harness.core.typed import field

# bitsandbytes, imported by peft and by QLoRA, warns on CPUs with AVX512-BF16 that it could not fetch a 4-bit
# kernel from the hub through the `kernels` package, and asks for it to be installed. That package downloads and
# runs code at run time, which clbench does not (its stack is locked and offline): bitsandbytes then uses its
# own kernel, and the warning, printed into every LoRA run's progress, says nothing about the run.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def peft_wrap(model, peft_config):
    """peft's get_peft_model, less the FutureWarning that peft 0.21 raises by reading transformers 5's deprecated
    `is_gradient_checkpointing` (every Ray worker printed it into a run's progress; it says nothing of the run)."""
    import warnings

    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, peft_config)


@dataclasses.dataclass(frozen=True)
class Needs:
    """What a method needs from the machine or the harness, declared as data."""

    gpu: bool = False
    teacher: bool = False
    quantized_base: bool = False
    # every position's logits in the hooks' `outputs.logits`; without it the training forward computes logits
    # only where a label is predicted (`outputs.label_logits`, harness.run.training.LabelOutputs)
    full_logits: bool = False


@dataclasses.dataclass
class StageContext:
    """What a hook may read about the current stage."""

    stage: int  # 1-based index of the task being trained
    task: Any  # tasks.registry.Task
    seen: list  # tasks trained before this one
    device: str
    seed: int
    precision: str = "fp32"
    # batches(pairs, batch_size=None) -> iterator of collated, on-device batches of {"user", "reply"}
    # pairs, encoded like training data: for methods that need forward passes of their own (EWC)
    batches: Callable[..., Iterator[dict]] | None = None
    # the run's tasks.data.DataSource: for methods that read data beyond the stream (general replay)
    data: Any = None
    tokenizer: Any = None  # the run's tokenizer, for methods that generate text (sdft)
    # the length training examples are cut to (the budget's max_length; tasks.chat.encode_example): a method
    # that writes its own replies (sdft) keeps only those that fit whole
    max_length: int | None = None


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """The least a method config has: the learning rate the harness's optimiser uses."""

    lr: float = field(2e-5, "AdamW learning rate", min=0.0)


class Method:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    Config: ClassVar[type] = BaseConfig
    needs: ClassVar[Needs] = Needs()
    # True when training may be sharded over workers (harness.run.sharded): no extra loss and no token
    # weights (a worker sees one shard of the batch and of the parameters); train_examples and after_task
    # run in the run's own process, so state they keep is fine.
    shardable: ClassVar[bool] = False

    @classmethod
    def not_shardable(cls) -> str | None:
        """Why this method's training cannot be sharded over workers, None when it can (a config's error)."""
        if cls.shardable:
            return None
        if cls.extra_loss is not Method.extra_loss or cls.token_weights is not Method.token_weights:
            return "it adds a loss or token weights, which a worker holding one shard of the batch could not compute"
        if cls.needs.quantized_base:
            return "its base is quantized by bitsandbytes, whose 4-bit weights FSDP does not shard"
        return "it does not declare `shardable` (not checked under FSDP)"

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    def prepare(self, model, ctx: StageContext):
        return model

    def train_examples(self, examples: list, ctx: StageContext) -> list:
        return examples

    def optimiser(self, params: list, device: str):
        """The optimiser of a stage's trainable parameters: AdamW at config.lr without weight decay, fused
        on CPU and CUDA (one kernel over all parameters: 0.86 s -> 0.13 s per step for SmolLM2 on CPU).
        A method whose source trains with another optimiser returns that one."""
        return torch.optim.AdamW(params, lr=self.config.lr, weight_decay=0.0, fused=device in ("cpu", "cuda"))

    def extra_loss(self, model, batch, outputs, ctx: StageContext):
        return None

    def token_weights(self, model, batch, outputs, ctx: StageContext):
        """Weights of each label position's loss (weight [b, t] scales the loss of predicting
        labels[b, t]); the label loss becomes sum(w * ce) / sum(w). None keeps outputs.loss."""
        return None

    def after_task(self, model, ctx: StageContext):
        return model

    def stats(self, ctx: StageContext) -> dict:
        """Measured facts about the stage just trained (buffer bytes, rewrites kept); the runner
        stores a non-empty one as the stage's `method_stats`."""
        return {}

    def state(self) -> tuple[dict, dict]:
        """What the method keeps outside the model's trainable parameters after a stage (a buffer, a Fisher, frozen
        earlier adapters, its random generator), as (tensors by name, plain JSON): a stage checkpoint saves it
        beside the trainable parameters, so that an interrupted run resumes after that stage. ({}, {}): nothing."""
        return {}, {}

    def load_state(self, model, tensors: dict, info: dict) -> None:
        """Take back what `state` returned: called on a fresh run's model after `prepare`, before the checkpoint's
        trainable parameters are copied in (a method that adds parameters per task adds them here)."""


def rng_state(rng: random.Random) -> list:
    """A random.Random's state as plain JSON (what `Method.state` may return)."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, saved: list) -> None:
    """Put back a state `rng_state` returned."""
    version, internal, gauss = saved
    rng.setstate((version, tuple(internal), gauss))


def _numel(p) -> int:
    """Weights a parameter holds: a 4-bit bitsandbytes weight packs two into each byte, and its
    quant_state keeps the unpacked shape."""
    shape = getattr(getattr(p, "quant_state", None), "shape", None)
    return shape.numel() if shape is not None else p.numel()


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    total = sum(_numel(p) for p in model.parameters())
    return trainable, total
