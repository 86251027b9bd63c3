"""Continual-learning metrics as pure functions of the accuracy matrix.

R[s][i] is the score on task i after training stage s; row 0 is the base model before any
training (b_i = R[0][i]), row i is after training task i (1-based tasks, T tasks).
    overall performance  OP  = mean_i R[T][i]
    backward transfer    BWT = mean_{i<T} (R[T][i] - R[i][i])
    forward transfer     FWT = mean_{i>1} (R[i-1][i] - b_i)
    plasticity               = mean_i (R[i][i] - b_i)
    forgetting of task i     = max_{i<=s<T} R[s][i] - R[T][i]   (for i < T); mean forgetting: its mean
The same functions apply to L[s][i], the gold answers' mean log-probability per token (logprob_matrix):
a continuous view that moves where accuracy on a few items cannot.
Indices in code are 0-based over tasks: task k (0-based) is trained at stage k+1.
"""
from __future__ import annotations

import functools

import numpy as np


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def _check(R):
    if len(R) < 2 or any(len(row) != len(R[0]) for row in R) or len(R) != len(R[0]) + 1:
        raise ValueError(f"R must have T+1 rows of T scores (base row first); got {[len(r) for r in R]}")


def overall(R) -> float:
    _check(R)
    return _mean(R[-1])


def bwt(R):
    """None for a one-task stream (no earlier task to look back at)."""
    _check(R)
    T = len(R[0])
    return _mean(R[T][k] - R[k + 1][k] for k in range(T - 1))


def fwt(R):
    """None for a one-task stream."""
    _check(R)
    T = len(R[0])
    return _mean(R[k][k] - R[0][k] for k in range(1, T))


def plasticity(R) -> float:
    _check(R)
    T = len(R[0])
    return _mean(R[k + 1][k] - R[0][k] for k in range(T))


def forgetting(R) -> list:
    """Per task except the last: best score seen after learning it minus the final score. Entries may be
    floats or arrays of bootstrap replicates (harness.metrics.stats)."""
    _check(R)
    T = len(R[0])
    return [functools.reduce(np.maximum, (R[s][k] for s in range(k + 1, T))) - R[T][k] for k in range(T - 1)]


def matrix(stages: list[dict], tasks: list[str], view: str = "recall") -> list[list[float]]:
    """R from a stored run's stage records (each with scores[task][view]['score'])."""
    return [[st["scores"][t][view]["score"] for t in tasks] for st in stages]


def logprob_matrix(stages: list[dict], tasks: list[str], view: str = "recall") -> list[list[float]] | None:
    """L[s][i]: the mean log-probability per token of task i's gold answers after stage s (multiple choice:
    the gold option's, `gold_logprob`; code: the reference solution's), or None where a view lacks it
    (result schema 1)."""
    L = []
    for st in stages:
        row = []
        for t in tasks:
            record = st["scores"][t][view]
            value = record.get("gold_logprob", record.get("reference_logprob"))
            if value is None:
                return None
            row.append(value)
        L.append(row)
    return L


def mean_forgetting(R):
    """Mean over the tasks before the last of forgetting(R); None for a one-task stream."""
    return _mean(forgetting(R))


def headline(L, G=None) -> dict:
    """The headline score, in nats per token (higher is better): what the stream taught and the model kept,
    plus what it did to general instruction following. Row 0 of L and G is the unprepared base model's
    (run_metrics passes it), so a method gains nothing by repairing what its own initialisation did.
        lp_gain          = mean_i (L[T][i] - L[0][i])   the gold answers' log-probability gained on every
                           domain by the end of the stream: learning a domain raises it, forgetting it
                           later takes it back (= plasticity + the later change, per domain)
        instruct_change  = G[T] - G[0]                 G: the instruct probe's mean log-probability per
                           token of held-out reference replies, never trained on
        headline         = lp_gain + instruct_change    (lp_gain alone without an instruct probe)
    Both terms are mean log-probabilities per token of reference text, so they add on one scale."""
    _check(L)
    gain = _mean(L[-1][k] - L[0][k] for k in range(len(L[0])))
    change = None if G is None else G[-1] - G[0]
    return {"lp_gain": gain, "instruct_change": change, "headline": gain if change is None else gain + change}


def logprob_summary(L) -> dict:
    """BWT, plasticity and mean forgetting of the log-probability matrix L (nats per token)."""
    return {"lp_bwt": bwt(L), "lp_plasticity": plasticity(L), "lp_forgetting": mean_forgetting(L)}


def summary(stages: list[dict], tasks: list[str], view: str = "recall") -> dict:
    R = matrix(stages, tasks, view)
    return {"overall": overall(R), "bwt": bwt(R), "fwt": fwt(R), "plasticity": plasticity(R),
            "forgetting": forgetting(R)}
