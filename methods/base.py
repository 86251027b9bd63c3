"""The method plugin interface.

A method is a class with a `Config` dataclass (every field has a default and a help
string) and a few optional hooks. Each hook returns a value; the harness owns the
training loop, the optimiser and evaluation.

    prepare(model, ctx) -> model          once, before the first task (wrap, freeze, expand)
    train_examples(pairs, ctx) -> list     the {"user", "reply"} pairs to train on (replay mixes here)
    extra_loss(model, batch, outputs, ctx) -> tensor | None   added to the label loss
    after_task(model, ctx) -> model        after a task is trained (consolidate, merge)

Parameters with requires_grad=True after `prepare` are trained; all others must stay
bit-identical (the conformance tests check this).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Iterator

from harness.typed import field


@dataclasses.dataclass(frozen=True)
class Needs:
    """What a method needs from the machine or the harness, declared as data."""

    gpu: bool = False
    teacher: bool = False
    quantized_base: bool = False


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
    # False when the method keeps state outside the model's trainable parameters (a Fisher, a
    # buffer): an interrupted run of it restarts from stage 1 instead of resuming a checkpoint.
    resumable: ClassVar[bool] = True

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    def prepare(self, model, ctx: StageContext):
        return model

    def train_examples(self, examples: list, ctx: StageContext) -> list:
        return examples

    def extra_loss(self, model, batch, outputs, ctx: StageContext):
        return None

    def after_task(self, model, ctx: StageContext):
        return model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
