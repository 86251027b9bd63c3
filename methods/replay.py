"""Experience replay: a reservoir buffer of earlier tasks' training examples, mixed into each new
task so that a share `ratio` of what is trained on comes from the buffer.

Reservoir sampling (Vitter 1985) keeps a uniform sample of everything seen within a fixed
buffer. Rehearsal of a small share of earlier data is the strongest simple baseline for LLM
continual learning (Scialom et al. 2022, arXiv:2205.12393, used 1% of earlier data; de Masson
d'Autume et al. 2019, arXiv:1906.01076). Defaults: ratio 0.2, buffer 1000 examples.
"""
from __future__ import annotations

import dataclasses
import random

from harness.typed import field

from .full import FullFineTune


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    lr: float = field(5e-5, "AdamW learning rate for all weights", min=0.0)
    ratio: float = field(0.2, "share of each task's training examples drawn from the buffer", min=0.0, max=0.9)
    buffer_size: int = field(1000, "examples kept from earlier tasks (reservoir sampling)", min=1)


class Replay(FullFineTune):
    name = "replay"
    description = "Full fine-tuning with a reservoir buffer of earlier tasks' examples mixed in."
    citation = "Scialom et al. 2022, arXiv:2205.12393; de Masson d'Autume et al. 2019, arXiv:1906.01076"
    Config = ReplayConfig
    resumable = False  # its state lives outside the model

    def __init__(self, config=None):
        super().__init__(config)
        self.buffer: list[dict] = []
        self.seen = 0

    def prepare(self, model, ctx):
        self.rng = random.Random(ctx.seed)
        model = super().prepare(model, ctx)
        return model

    def train_examples(self, pairs, ctx):
        if not self.buffer or self.config.ratio == 0:
            return pairs
        # n_replay / (n_new + n_replay) = ratio
        n = round(len(pairs) * self.config.ratio / (1 - self.config.ratio))
        replayed = [self.rng.choice(self.buffer) for _ in range(n)]
        return pairs + [dict(p, replayed=True) for p in replayed]

    def after_task(self, model, ctx):
        for pair in (item.training_pair() for item in ctx.task.learn):
            self.seen += 1
            if len(self.buffer) < self.config.buffer_size:
                self.buffer.append(pair)
            else:
                j = self.rng.randrange(self.seen)
                if j < self.config.buffer_size:
                    self.buffer[j] = pair
        return model
