"""Evaluation's linear layers on a CPU in fp32: oneDNN's inner product on weights packed once.

torch runs `nn.Linear` on a CPU through MKL's sgemm, which packs the weight matrix again on every call. A
greedy decoding step multiplies a few rows by every weight of the model: on a 2-core AMD EPYC (Zen 4) sgemm
streamed SmolLM2-135M's weights at 6.8 GB/s at batch 8, oneDNN on weights packed once at 16.5 GB/s, where a
plain read reaches 55 GB/s (results/bench/eval-packed-smollm2-cpu.json). Inside `packed_linears`, every plain
`nn.Linear` computes with `torch.ops.mkldnn._linear_pointwise` on a copy of its weight that oneDNN reordered
once into its blocked layout (what torch's inductor does for a frozen fp32 model): the same products summed in
another order, so values agree to float32 rounding, not bit for bit (docs/performance.md, issue #20).

Only an `nn.Linear` itself is swapped (a subclass such as bitsandbytes' quantized layers, or a method's own
module, keeps its forward), and only where its weight and bias are fp32 tensors on a CPU that keep a version
count (not inference tensors). A layer whose weight or bias is replaced or changed in place after packing
computes as before with `F.linear` (an edit through `.data`, which keeps no version count, is not seen: no
code of clbench's edits weights during an evaluation). So does a call that autograd records (the packed op has
no backward), one on another dtype, and an empty batch. On exit every layer has its own forward back. The
packed copies are a second copy of the linear weights while an evaluation runs (538 MB for SmolLM2-135M), which
a CPU run's peak memory includes.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

ROWS_HINT = 8  # the row count oneDNN picks its blocking for: a decoding step's batch


def available(device: str, precision: str) -> bool:
    """Whether `packed_linears` packs anything for this device and precision."""
    return device == "cpu" and precision == "fp32" and torch.backends.mkldnn.is_available()


class _Packed:
    """One layer's forward on its packed weight, while the weight and bias it was packed from are unchanged."""

    def __init__(self, layer: nn.Linear):
        self.layer = layer
        self.source = (layer.weight, layer.bias)  # held: a new tensor at a freed one's address is still new
        self.weight = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), ROWS_HINT)
        self.bias = None if layer.bias is None else layer.bias.detach()
        self.seen = self._state()

    def _state(self) -> tuple:
        return tuple((t.data_ptr(), t._version) if t is not None else None for t in self.source)

    def _unchanged(self) -> bool:
        return self.layer.weight is self.source[0] and self.layer.bias is self.source[1] and self._state() == self.seen

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *self.source))
        if grad or x.dtype != torch.float32 or not x.numel() or not self._unchanged():
            return F.linear(x, self.layer.weight, self.layer.bias)
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        out = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.layer.out_features)


def _packable(m: nn.Module) -> bool:
    return type(m) is nn.Linear and "forward" not in vars(m) and all(
        t.device.type == "cpu" and t.dtype == torch.float32 and not t.is_inference()
        for t in (m.weight, m.bias) if t is not None)


@contextlib.contextmanager
def packed_linears(model: nn.Module, device: str, precision: str):
    """Within the block, `model`'s plain fp32 CPU linear layers compute on packed weights (see the module)."""
    layers = [m for m in model.modules() if _packable(m)] if available(device, precision) else []
    try:
        for layer in layers:
            layer.forward = _Packed(layer)
        yield
    finally:
        for layer in layers:
            vars(layer).pop("forward", None)
