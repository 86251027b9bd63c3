"""Token rows to right-padded tensors, for training and scoring."""
from __future__ import annotations

import torch


def padded(rows: list[list[int]], value: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of shape [len(rows), longest row (at least 1)], each row from the left edge."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids.to(device), mask.to(device)
