"""Token rows to padded tensors: right padding for training and scoring, left for generation."""
from __future__ import annotations

import torch


def padded(rows: list[list[int]], value: int, device: str, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of shape [len(rows), longest row (at least 1)]: each row at the right end when `left`
    (padding before it, as generation needs: every prompt ends at the same column), else at the left."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, cols] = torch.tensor(r, dtype=torch.long)
        mask[i, cols] = 1
    return ids.to(device), mask.to(device)
