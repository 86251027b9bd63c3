"""Continual-learning metrics as pure functions of the accuracy matrix.

R[s][i] is the score on task i after training stage s; row 0 is the base model before any
training (b_i = R[0][i]), row i is after training task i (1-based tasks, T tasks).
    overall performance  OP  = mean_i R[T][i]
    backward transfer    BWT = mean_{i<T} (R[T][i] - R[i][i])
    forward transfer     FWT = mean_{i>1} (R[i-1][i] - b_i)
    plasticity               = mean_i (R[i][i] - b_i)
    forgetting of task i     = max_{i<=s<T} R[s][i] - R[T][i]   (for i < T)
Indices in code are 0-based over tasks: task k (0-based) is trained at stage k+1.
"""
from __future__ import annotations


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


def forgetting(R) -> list[float]:
    """Per task except the last: best score seen after learning it minus the final score."""
    _check(R)
    T = len(R[0])
    return [max(R[s][k] for s in range(k + 1, T)) - R[T][k] for k in range(T - 1)]


def matrix(stages: list[dict], tasks: list[str], view: str = "recall") -> list[list[float]]:
    """R from a stored run's stage records (each with scores[task][view]['score'])."""
    return [[st["scores"][t][view]["score"] for t in tasks] for st in stages]


def summary(stages: list[dict], tasks: list[str], view: str = "recall") -> dict:
    R = matrix(stages, tasks, view)
    return {"overall": overall(R), "bwt": bwt(R), "fwt": fwt(R), "plasticity": plasticity(R),
            "forgetting": forgetting(R)}
