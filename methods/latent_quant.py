"""Compression of hidden states for latent replay: product quantization (REMIND's choice) and
per-token 8-bit scalar quantization.

Product quantization (Jégou et al. 2011, doi:10.1109/TPAMI.2010.57) splits each d-dimensional
vector into m subvectors and replaces each by the index of its nearest centroid among k, learned
by k-means per subvector: m bytes per vector when k <= 256. REMIND (Hayes et al. 2020) fits the
codebooks once, on the base-initialisation data, and keeps them fixed; `LatentReplay` fits one set per
task on that task's states (a stated deviation, methods/latent_replay.py).

Every quantizer turns a [n, d] float tensor into a payload (a tuple of tensors) and back.
"""
from __future__ import annotations

import torch


def payload_bytes(payload: tuple) -> int:
    return sum(t.numel() * t.element_size() for t in payload)


def nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """x [m, n, d], centroids [m, k, d] -> [m, n]: the nearest centroid of each subvector in its subspace."""
    c2 = (centroids**2).sum(-1).unsqueeze(1)  # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every c
    return torch.cat([torch.baddbmm(c2, x[:, s:s + chunk], centroids.transpose(1, 2), alpha=-2).argmin(-1)
                      for s in range(0, x.shape[1], chunk)], 1)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """[m, k, d] centroids of each of m subspaces of x [m, n, d] by Lloyd's algorithm, all subspaces
    at once, from k distinct random points (k <= n). A centroid that loses all its points stays."""
    m, n, d = x.shape
    centroids = x[:, torch.randperm(n, generator=generator)[:k]].clone()
    offset = (torch.arange(m) * k).unsqueeze(1)
    for _ in range(iters):
        flat = (nearest(x, centroids) + offset).reshape(-1)
        sums = torch.zeros(m * k, d).index_add_(0, flat, x.reshape(-1, d))
        counts = torch.bincount(flat, minlength=m * k).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids.reshape(-1, d)).view(m, k, d)
    return centroids


class ProductQuantizer:
    """m codebooks of up to 256 centroids each; a vector is stored as m uint8 codes."""

    def __init__(self, dim: int, subvectors: int, codes: int, iters: int, max_fit_vectors: int, seed: int):
        if dim % subvectors:
            raise ValueError(f"hidden size {dim} is not divisible by {subvectors} subvectors")
        if not 1 <= codes <= 256:
            raise ValueError(f"codes must be in [1, 256] to fit a byte, got {codes}")
        self.dim, self.m, self.k, self.iters, self.max_fit = dim, subvectors, codes, iters, max_fit_vectors
        self.generator = torch.Generator().manual_seed(seed)
        self.codebooks: torch.Tensor | None = None  # [m, k, d/m]

    @property
    def fitted(self) -> bool:
        return self.codebooks is not None

    def fit(self, x: torch.Tensor) -> None:
        x = x.detach().float().cpu()
        if len(x) > self.max_fit:
            x = x[torch.randperm(len(x), generator=self.generator)[: self.max_fit]]
        k = min(self.k, len(x))  # fewer vectors than codes: every vector becomes a centroid
        self.codebooks = kmeans(x.view(len(x), self.m, -1).transpose(0, 1).contiguous(), k, self.iters, self.generator)

    def encode(self, x: torch.Tensor) -> tuple:
        parts = x.detach().float().cpu().view(len(x), self.m, -1).transpose(0, 1)
        return (nearest(parts, self.codebooks).T.to(torch.uint8).contiguous(),)

    def decode(self, payload: tuple) -> torch.Tensor:
        (codes,) = payload
        return self.codebooks[torch.arange(self.m), codes.long()].reshape(len(codes), self.dim)

    def nbytes(self) -> int:
        return 0 if self.codebooks is None else self.codebooks.numel() * self.codebooks.element_size()


class ScalarQuantizer:
    """Per token: 8-bit codes between that vector's own min and max (2 floats of range per token).
    Per token, not per channel: an LLM's first token carries massive activations (SmolLM2, block
    15: norm 25070 against a median of 162), and a channel range stretched by it leaves the other
    tokens a coarse grid (measured on 8 MMLU items: 18% mean relative error per token per channel,
    2.6% per token)."""

    fitted = True  # nothing is learned: each vector carries its own range

    def encode(self, x: torch.Tensor) -> tuple:
        x = x.detach().float().cpu()
        lo, hi = x.min(1, keepdim=True).values, x.max(1, keepdim=True).values
        scale = ((hi - lo) / 255).clamp(min=torch.finfo(torch.float32).tiny)
        codes = ((x - lo) / scale).round().clamp(0, 255).to(torch.uint8)
        return codes, lo, scale

    def decode(self, payload: tuple) -> torch.Tensor:
        codes, lo, scale = payload
        return codes.float() * scale + lo

    def nbytes(self) -> int:
        return 0
