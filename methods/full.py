"""Sequential full fine-tuning: every weight trained on each task in turn (the forgetting baseline)."""
from __future__ import annotations

import dataclasses

from harness.core.typed import field

from .base import Method


@dataclasses.dataclass(frozen=True)
class FullConfig:
    lr: float = field(5e-5, "AdamW learning rate for all weights", min=0.0)


class FullFineTune(Method):
    name = "full"
    description = "Sequential full fine-tuning of every weight (baseline)."
    citation = "McCloskey & Cohen 1989; Luo et al. 2023, arXiv:2308.08747 (forgetting in LLM fine-tuning)"
    Config = FullConfig
    shardable = True

    def prepare(self, model, ctx):
        for p in model.parameters():
            p.requires_grad_(True)
        return model
