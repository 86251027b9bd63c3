"""Evaluation's linear layers on weights prepared once: on a CPU in fp32, oneDNN's inner product on weights
packed once; under bf16, the bf16 cast of a weight stored fp32.

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

Under bf16 (any device), the layers packed are those whose weight is stored fp32 (a trained weight: full
fine-tuning's, an adapter's; harness.model.precision.place_weights), and the copy is their bf16 cast. Autocast
casts such a weight at every call it does not cache, and a decoding step replayed as a CUDA graph caches none
(harness.model.decoding: the cache is off while capturing), so each replay read every fp32 weight and wrote its
bf16 copy (6 bytes a weight) before the matmuls read 2. Inside `packed_linears` the layer computes on the cast
made once, used only where autocast to bf16 is on for the call's device: the same cast autocast makes, so the
values are bit for bit the same. The copies are 2 bytes per fp32 linear weight while an evaluation runs.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

ROWS_HINT = 8  # the row count oneDNN picks its blocking for: a decoding step's batch


def available(device: str, precision: str) -> bool:
    """Whether `packed_linears` packs anything for this device and precision."""
    return precision == "bf16" or (device == "cpu" and precision == "fp32" and torch.backends.mkldnn.is_available())


class _Prepared:
    """One layer's forward on a copy of its weight made once, while the weight and bias it was made from are
    unchanged and the call is one the copy serves (`_serves`); any other call is `F.linear` on the layer's own."""

    def __init__(self, layer: nn.Linear):
        self.layer = layer
        self.source = (layer.weight, layer.bias)  # held: a new tensor at a freed one's address is still new
        self.weight = self._prepare(layer.weight.detach())
        self.bias = None if layer.bias is None else self._prepare_bias(layer.bias.detach())
        self.seen = self._state()

    def _state(self) -> tuple:
        return tuple((t.data_ptr(), t._version) if t is not None else None for t in self.source)

    def _unchanged(self) -> bool:
        return self.layer.weight is self.source[0] and self.layer.bias is self.source[1] and self._state() == self.seen

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *self.source))
        if grad or not x.numel() or not self._serves(x) or not self._unchanged():
            return F.linear(x, self.layer.weight, self.layer.bias)
        return self._compute(x)


class _Packed(_Prepared):
    """fp32 on a CPU: oneDNN's inner product on the weight reordered into its blocked layout."""

    def _prepare(self, weight):
        return torch.ops.mkldnn._reorder_linear_weight(weight, ROWS_HINT)

    def _prepare_bias(self, bias):
        return bias

    def _serves(self, x) -> bool:
        return x.dtype == torch.float32

    def _compute(self, x):
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        out = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.layer.out_features)


class _Cast(_Prepared):
    """bf16: the weight's and bias's bf16 casts, where autocast would cast them (autocast to bf16 on for the call's
    device; it leaves the copies, already bf16, as they are)."""

    def _prepare(self, weight):
        return weight.to(torch.bfloat16)

    _prepare_bias = _prepare

    def _serves(self, x) -> bool:
        device = x.device.type
        return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16

    def _compute(self, x):
        return F.linear(x, self.weight, self.bias)


def _own(m: nn.Module) -> bool:
    """A plain nn.Linear with its own forward, whose weight and bias keep a version count."""
    return type(m) is nn.Linear and "forward" not in vars(m) and not any(
        t.is_inference() for t in (m.weight, m.bias) if t is not None)


def _packable(m: nn.Module) -> bool:
    return _own(m) and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (m.weight, m.bias)
                           if t is not None)


def _castable(m: nn.Module) -> bool:
    return _own(m) and m.weight.dtype == torch.float32 and (m.bias is None or m.bias.dtype == torch.float32)


@contextlib.contextmanager
def packed_linears(model: nn.Module, device: str, precision: str):
    """Within the block, `model`'s plain linear layers compute on weights prepared once (see the module): under
    bf16 those stored fp32 on their bf16 cast, in fp32 on a CPU every fp32 one on its oneDNN packing."""
    if precision == "bf16":
        layers, prepared = [m for m in model.modules() if _castable(m)], _Cast
    else:
        layers = [m for m in model.modules() if _packable(m)] if available(device, precision) else []
        prepared = _Packed
    try:
        for layer in layers:
            layer.forward = prepared(layer)
        yield
    finally:
        for layer in layers:
            vars(layer).pop("forward", None)
