"""QLoRA: a frozen 4-bit NF4 base with LoRA adapters on every linear layer (Dettmers et al. 2023).

The base is quantized in `prepare`, on the model the harness already loaded and moved to its
device: every nn.Linear except the output projection (tied to the embeddings in SmolLM2; the
paper and transformers keep it unquantized too) becomes a bitsandbytes Linear4bit holding the
same weights as NF4, then peft puts LoRA on those layers. That keeps one model loader for every
method and needs no loader hook; quantizing is deterministic, so a resumed run rebuilds the same
base before its adapter checkpoint is restored.

Defaults (paper, Sec. 4 and Appendix B): NF4 with double quantization (the block constants
quantized again), the compute dtype of the run's precision on CUDA (bf16 in a bf16 run: the reference's
follows its --bf16/--fp16 flags), LoRA r 64, alpha 16, dropout 0.1 (the paper's for models up to 13B) on all
linear layers, lr 2e-4 (its 7B/13B rate). On a CPU the compute dtype is fp32 (bf16 there is the harness's
autocast decision, measured). No gradient checkpointing: the
paper used it to fit 65B models in memory, ours fit without. Deviations: the harness clips the gradient
norm at 1.0 with no warm-up, where the reference (artidoro/qlora, qlora.py) clips at 0.3 with a 3% warm-up
(both at a constant rate), and plain AdamW where it uses paged AdamW (the same update, paged memory); in a
bf16 run the adapters are fp32 master weights (harness.model.precision.place_weights), where the reference
casts them to bf16 and updates them there.

CPU pitfall: on a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a Linear4bit's weight into an
inference-only layout the first time it runs a no-grad forward in eval mode
(`support_avx512bf16_for_cpu`), and keeps that layout: later training passes run through it
and the gradients reaching the adapters are wrong, without any error (we measured the adapter
gradients of one step changing after one evaluation; layers whose width is not a multiple of 64
crash instead). `prepare` turns the flag off on every
Linear4bit before the first forward; tests/test_method_qlora.py checks gradients after an
evaluation equal those before it.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from harness.core.typed import field

from .base import Method, Needs, peft_wrap


@dataclasses.dataclass(frozen=True)
class QLoRAConfig:
    lr: float = field(2e-4, "AdamW learning rate for the adapter weights", min=0.0)
    r: int = field(64, "adapter rank", min=1)
    alpha: int = field(16, "scaling numerator: the update is scaled by alpha / r", min=1)
    dropout: float = field(0.1, "dropout on the adapter input", min=0.0, max=1.0)
    double_quant: bool = field(True, "quantize the NF4 block constants again (the paper's double quantization)")
    compute_dtype: Literal["auto", "bf16", "fp32"] = field(
        "auto", "dtype of the 4-bit matmuls; auto: the run's precision on CUDA (bf16 in a bf16 run), fp32 on a CPU")


def matmul_dtype(setting: str, device: str, precision: str) -> torch.dtype:
    """The 4-bit matmuls' compute dtype: `setting`, or for 'auto' bf16 on CUDA in a bf16 run (the reference sets it
    from its --bf16 flag), else fp32 (on a CPU, and in an fp32 run on CUDA, where every other method computes
    in fp32 too)."""
    if setting == "auto":
        return torch.bfloat16 if device.startswith("cuda") and precision == "bf16" else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[setting]


def quantize_linear_layers(model, device: str, compute_dtype: torch.dtype, double_quant: bool) -> list[str]:
    """Replace every nn.Linear but the output projection by an NF4 bnb Linear4bit, in place,
    with CPU repacking off; the names of the replaced modules."""
    import bitsandbytes as bnb

    output = model.get_output_embeddings()
    replaced = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or child is output:
                continue
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=compute_dtype, compress_statistics=double_quant, quant_type="nf4",
                                  device="meta")
            q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=double_quant,
                                         quant_type="nf4", module=q)
            q.bias = child.bias
            q.support_avx512bf16_for_cpu = False  # see the module docstring
            setattr(parent, name, q.to(device))  # .to() quantizes
            replaced.append(f"{parent_name}.{name}" if parent_name else name)
    model.is_loaded_in_4bit = True  # peft then wraps Linear4bit with its 4-bit LoRA layer
    return replaced


class QLoRA(Method):
    name = "qlora"
    description = "LoRA (r 64, alpha 16, all linear layers) on a frozen 4-bit NF4 base (bitsandbytes)."
    citation = "Dettmers et al. 2023, QLoRA: Efficient Finetuning of Quantized LLMs, arXiv:2305.14314"
    Config = QLoRAConfig
    needs = Needs(quantized_base=True)

    def prepare(self, model, ctx):
        from peft import LoraConfig

        c = self.config
        quantize_linear_layers(model, ctx.device, matmul_dtype(c.compute_dtype, ctx.device, ctx.precision),
                               c.double_quant)
        return peft_wrap(model, LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout,
                                      target_modules="all-linear", task_type="CAUSAL_LM"))
