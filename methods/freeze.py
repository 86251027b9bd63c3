"""Partial fine-tuning: only the last k decoder blocks (or parameters matching given patterns)
are trained; embeddings and the rest stay frozen.

Training only the top layers is the classic way to trade plasticity for stability (Yosinski et
al. 2014, arXiv:1411.1792; for LLM continual learning see Luo et al. 2023, arXiv:2308.08747). No
reference code sets its defaults: the last 4 blocks and lr 5e-5 are ours.
"""
from __future__ import annotations

import dataclasses
import re

from harness.core.typed import field

from .base import Method

BLOCK = re.compile(r"\.layers\.(\d+)\.")


@dataclasses.dataclass(frozen=True)
class FreezeConfig:
    lr: float = field(5e-5, "AdamW learning rate for the trained blocks", min=0.0)
    last_k: int = field(4, "number of top decoder blocks to train", min=1)
    patterns: list[str] = field([], "regexes on parameter names to train instead of the last k blocks")


class Freeze(Method):
    name = "freeze"
    description = "Train only the last k decoder blocks (or parameters matching patterns); freeze the rest."
    citation = "Yosinski et al. 2014, arXiv:1411.1792; Luo et al. 2023, arXiv:2308.08747"
    Config = FreezeConfig
    shardable = True

    def prepare(self, model, ctx):
        names = [n for n, _ in model.named_parameters()]
        if self.config.patterns:
            train = {n for n in names if any(re.search(p, n) for p in self.config.patterns)}
        else:
            blocks = sorted({int(m.group(1)) for n in names if (m := BLOCK.search(n))})
            top = set(blocks[-self.config.last_k:])
            train = {n for n in names if (m := BLOCK.search(n)) and int(m.group(1)) in top}
        if not train:
            raise ValueError(f"freeze: no parameter matches {self.config.patterns or 'the last blocks'}")
        for n, p in model.named_parameters():
            p.requires_grad_(n in train)
        return model
