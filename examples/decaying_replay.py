"""Replay with a decaying ratio: a complete clbench method in one file.

Plain replay (methods/replay.py) mixes a fixed share of earlier tasks' examples into every task.
This variant starts with a large share at the first task that has a buffer (stage 2) and
multiplies it by `decay` at every later stage: rehearsal is spent where the earlier tasks are
few and freshly learned, and each new task gets more of its own budget as the stream grows.

Try it on the tiny protocol card (a random 2-layer model: it checks the method runs, the scores mean
nothing); docs/submitting-a-method.md explains the interface and what gets recorded:

    clbench submit examples/decaying_replay.py:DecayingReplay --preset tiny --results /tmp/my_results
"""
from __future__ import annotations

import dataclasses

from harness.core.typed import field
from methods.replay import Replay, ReplayConfig


@dataclasses.dataclass(frozen=True)
class DecayingReplayConfig(ReplayConfig):
    ratio: float = field(0.5, "share of replayed examples at stage 2, the first stage with a buffer", min=0.0, max=0.9)
    decay: float = field(0.5, "the share is multiplied by this at every later stage", min=0.0, max=1.0)


class DecayingReplay(Replay):
    """Replay (reservoir buffer, full fine-tuning) whose replay share decays geometrically over stages."""

    name = "decaying_replay"
    description = "Full fine-tuning with replay whose share starts at `ratio` and shrinks by `decay` per stage."
    Config = DecayingReplayConfig

    def ratio_at(self, stage: int) -> float:
        """The replayed share of stage `stage` (1-based; stage 1 has no buffer yet)."""
        return self.config.ratio * self.config.decay ** max(stage - 2, 0)
