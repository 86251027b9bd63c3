"""Experience replay: a reservoir buffer of earlier tasks' training examples, mixed into each new
task so that a share `ratio` of what is trained on comes from the buffer.

Reservoir sampling (Vitter 1985) keeps a uniform sample of everything seen within a fixed
buffer. Rehearsal of a small share of earlier data is the strongest simple baseline for LLM
continual learning (Scialom et al. 2022, arXiv:2205.12393, used 1% of earlier data; de Masson
d'Autume et al. 2019, arXiv:1906.01076). Defaults, ours: ratio 0.2 (both sources replay about 1%: at this
benchmark's tens of examples a task, 1% is no example at all), buffer 1000 examples. Scialom et al.'s
code (ThomasScialom/T0_continual_learning) draws a fixed count per earlier task with replacement and
always rehearses the T0 training mixture too; de Masson d'Autume et al. add local adaptation, not done here.

Optionally a share `general_ratio` of every task's training examples (from the first task on)
comes from general-domain data, GSM8K train (worked maths solutions, read through the run's
DataSource; no probe uses it), to hold on to general ability as well (Scialom et al. rehearse their
general instruction mixture at every task). Off by default (ours), so that replay trains on the stream's
data alone, like the other methods.

Each stage draws its replayed examples without replacement (whole passes over the shuffled buffer when the
stage needs more than it holds) and tags them `mix`, so that the training loop spreads them evenly over
every epoch's batches: each step trains on about `ratio` of replayed examples, not only the stage as a
whole. `method_stats` records the buffer's size, the examples replayed and their share of the stage.
"""
from __future__ import annotations

import dataclasses
import random

from harness.core.errors import ConfigError
from harness.core.typed import field

from .base import rng_state, set_rng_state
from .full import FullFineTune


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    lr: float = field(5e-5, "AdamW learning rate for all weights", min=0.0)
    ratio: float = field(0.2, "share of each task's training examples drawn from the buffer", min=0.0, max=0.9)
    buffer_size: int = field(1000, "examples kept from earlier tasks (reservoir sampling)", min=1)
    general_ratio: float = field(0.0, "share of each task's training examples drawn from general-domain data "
                                 "(GSM8K train); 0 turns it off", min=0.0, max=0.9)

    def __post_init__(self):
        if self.ratio + self.general_ratio >= 1:
            raise ConfigError(f"replay config: ratio ({self.ratio}) + general_ratio ({self.general_ratio}) must be "
                              "below 1, so that part of each task's training is the task itself; lower one of them")


def general_pairs(ctx) -> list[dict]:
    """The general-domain pool a method mixes in (GSM8K train, through the run's DataSource)."""
    if ctx is None or ctx.data is None:
        raise ConfigError("method_config.general_ratio > 0 needs the run's data folder (ctx.data)")
    return [{"user": i.prompt, "reply": i.reference} for i in ctx.data.gsm8k("train")]


def draw(rng: random.Random, pool: list[dict], n: int, mix: str) -> list[dict]:
    """n examples of `pool` without replacement, in whole shuffled passes when n exceeds it, tagged `mix` (the
    training loop spreads each tagged share over every batch: harness.run.training.epoch_order)."""
    out: list[dict] = []
    while len(out) < n:
        out += rng.sample(pool, min(len(pool), n - len(out)))
    return [dict(p, mix=mix) for p in out]


class Replay(FullFineTune):
    name = "replay"
    description = "Full fine-tuning with a reservoir buffer of earlier tasks' examples mixed in."
    citation = "Scialom et al. 2022, arXiv:2205.12393; de Masson d'Autume et al. 2019, arXiv:1906.01076"
    Config = ReplayConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.buffer: list[dict] = []
        self.general: list[dict] = []
        self.seen = 0
        self.mixed: dict = {}

    def prepare(self, model, ctx):
        self.rng = random.Random(ctx.seed)
        if self.config.general_ratio > 0:
            self.general = general_pairs(ctx)
        model = super().prepare(model, ctx)
        return model

    def ratio_at(self, stage: int) -> float:
        """The share of stage `stage`'s (1-based) training examples drawn from the buffer: a subclass
        can schedule it (examples/decaying_replay.py); stage 1 replays nothing whatever this says."""
        return self.config.ratio

    def train_examples(self, pairs, ctx):
        ratio = self.ratio_at(ctx.stage) if self.buffer else 0.0  # nothing to replay before the second task
        self.mixed = {"buffer": len(self.buffer), "replayed": 0, "replayed_share": 0.0}
        if ratio == 0 and self.config.general_ratio == 0:
            return pairs
        # n_replay / n_all = ratio and n_general / n_all = general_ratio, n_all = n_new + n_replay + n_general
        total = len(pairs) / (1 - ratio - self.config.general_ratio)
        replayed = draw(self.rng, self.buffer, round(total * ratio), "replay")
        general = draw(self.rng, self.general, round(total * self.config.general_ratio), "general")
        out = pairs + replayed + general
        self.mixed.update(replayed=len(replayed), replayed_share=len(replayed) / len(out))
        if general:
            self.mixed["general"] = len(general)
        return out

    def stats(self, ctx):
        return dict(self.mixed)

    def state(self):
        return {}, {"buffer": self.buffer, "seen": self.seen, "rng": rng_state(self.rng)}

    def load_state(self, model, tensors, info):
        self.buffer, self.seen = [dict(pair) for pair in info["buffer"]], info["seen"]
        set_rng_state(self.rng, info["rng"])

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
