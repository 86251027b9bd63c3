"""LLaMA-Pro block expansion: insert copies of decoder blocks whose output projections
(`o_proj`, `down_proj`) are zeroed, so each new block is an identity map at first, then train
only the new blocks (Wu et al. 2024, arXiv:2401.02415: a copy after every 4th of LLaMA-2-7B's
32 blocks, 8 new blocks, the original blocks frozen).

Deviations from the reference code (TencentARC/LLaMA-Pro and its training fork hills-code/open-instruct,
branch llama-pro): the paper trains only the new blocks in its post-pretraining; the reference's
fine-tuning script (scripts/finetune_codealpaca.sh) trains every weight (training only listed layers is the
opt-in `--extend_layers`). Here only the new blocks train, at every task, and the same blocks go on from
task to task. The learning rate 1e-4 is ours: the reference scripts use 1e-5 (post-pretraining,
finetune_cosmopedia.sh) and 2e-5 (fine-tuning), with a linear schedule and warm-up where the harness keeps
the rate constant; `clbench tune` picks it on the validation stream.

Where the copies go: the reference (TencentARC/LLaMA-Pro scripts/block_expansion.py) copies every
`split`-th block, split = int(layers / new blocks), which places the last copy on the top block only when
split divides the layer count; it then asserts that the expanded model has the requested number of layers,
which other counts can pass (30 -> 37 layers: split 4, 7 copies, none above the top two blocks) or fail
(30 -> 38: split 3 makes 10 copies). LLaMA-Factory's port refuses counts that do not divide. Here `every` sets the share, about
one new block per `every` original ones (round(layers / every) new blocks), and the copies close groups of
the stack that are as even as whole blocks allow, the top block's included: the reference's placement
when `every` divides the layer count, and on SmolLM2's 30 blocks with every 4, 8 copies (after blocks 4,
8, 11, 15, 19, 23, 26, 30) where every 4th block would give 7 and leave the top two blocks without one.

Two bookkeeping steps make the expanded model exact: every attention module's `layer_idx` is
renumbered (the KV cache is indexed by it), and `config.num_hidden_layers` is updated
(transformers runs only the first num_hidden_layers layers and sizes the cache from it).
"""
from __future__ import annotations

import copy
import dataclasses

import torch

from harness.core.typed import field

from .base import Method


@dataclasses.dataclass(frozen=True)
class LlamaProConfig:
    lr: float = field(1e-4, "AdamW learning rate for the new blocks", min=0.0)
    every: int = field(4, "about one zero-output copy per this many original blocks, the top block's included", min=1)


def copied_blocks(layers: int, every: int) -> set[int]:
    """The 0-based original blocks that get a copy after them: the last of each of round(layers / every)
    groups of as even a size as whole blocks allow, so the top block always gets one."""
    count = max(1, int(layers / every + 0.5))
    return {int((k + 1) * layers / count + 0.5) - 1 for k in range(count)}


def expand_blocks(model, every: int) -> list[int]:
    """Expand in place; return the indices of the new blocks in the expanded stack."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    layers, new_index = [], []
    copied = copied_blocks(len(decoder.layers), every)
    for i, layer in enumerate(decoder.layers):
        layers.append(layer)
        if i in copied:
            block = copy.deepcopy(layer)
            with torch.no_grad():
                for linear in (block.self_attn.o_proj, block.mlp.down_proj):
                    linear.weight.zero_()
                    if linear.bias is not None:
                        linear.bias.zero_()
            new_index.append(len(layers))
            layers.append(block)
    decoder.layers = torch.nn.ModuleList(layers)
    for idx, layer in enumerate(decoder.layers):
        layer.self_attn.layer_idx = idx
    model.config.num_hidden_layers = len(layers)
    if getattr(model.config, "layer_types", None):
        types = list(model.config.layer_types)
        model.config.layer_types = [types[min(i - sum(1 for n in new_index if n <= i), len(types) - 1)]
                                    for i in range(len(layers))]
    return new_index


class LlamaPro(Method):
    name = "llama_pro"
    description = "LLaMA-Pro: insert identity-initialised copies of decoder blocks, train only those."
    citation = "Wu et al. 2024, LLaMA Pro: Progressive LLaMA with Block Expansion, arXiv:2401.02415"
    Config = LlamaProConfig
    shardable = True

    def prepare(self, model, ctx):
        new = set(expand_blocks(model, self.config.every))  # at least one: the top block's copy
        for p in model.parameters():
            p.requires_grad_(False)
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        for i in new:
            for p in decoder.layers[i].parameters():
                p.requires_grad_(True)
        return model
