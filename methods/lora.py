"""LoRA through peft: low-rank adapters on chosen projections, base weights frozen.

Defaults: rank 8 on q_proj and v_proj (Hu et al. 2021, arXiv:2106.09685, Sec. 7.1 found
q,v the best use of a fixed budget); alpha 32, dropout 0.05 and lr 3e-4 are ours (microsoft/LoRA's
configurations: RoBERTa-large r 8, alpha 16, lr 3e-4, weight decay 0.1, linear schedule with 6% warm-up;
GPT-2 r 4, alpha 32, dropout 0.1, lr 2e-4, weight decay 0.01). One adapter is trained across the whole
stream, at the harness's constant rate without weight decay.

`lora_all_r64` puts rank 64 on every linear layer, as QLoRA does (Dettmers et al. 2023); its alpha 128
(alpha = 2r) and lr 3e-4 are ours: QLoRA uses alpha 16 and lr 2e-4 (artidoro/qlora, qlora.py), so its
adapter scale alpha/r is 8x QLoRA's and `lora_all_r64` against `qlora` is not quantization on/off alone.
"""
from __future__ import annotations

import dataclasses

from harness.core.typed import field

from .base import Method, peft_wrap


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    lr: float = field(3e-4, "AdamW learning rate for the adapter weights", min=0.0)
    r: int = field(8, "adapter rank", min=1)
    alpha: int = field(32, "scaling numerator: the update is scaled by alpha / r", min=1)
    dropout: float = field(0.05, "dropout on the adapter input", min=0.0, max=1.0)
    target_modules: list[str] = field(["q_proj", "v_proj"], "module names to adapt, or ['all-linear']")


class LoRA(Method):
    name = "lora"
    description = "peft LoRA adapters (q,v rank 8 by default) on a frozen base."
    citation = "Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models, arXiv:2106.09685"
    Config = LoRAConfig
    shardable = True

    def prepare(self, model, ctx):
        from peft import LoraConfig

        c = self.config
        targets = "all-linear" if c.target_modules == ["all-linear"] else list(c.target_modules)
        peft_config = LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=targets,
                                 task_type="CAUSAL_LM")
        return peft_wrap(model, peft_config)


@dataclasses.dataclass(frozen=True)
class LoRAAllR64Config(LoRAConfig):
    r: int = field(64, "adapter rank", min=1)
    alpha: int = field(128, "scaling numerator: the update is scaled by alpha / r (alpha = 2r)", min=1)
    target_modules: list[str] = field(["all-linear"], "module names to adapt, or ['all-linear']")


class LoRAAllR64(LoRA):
    """Every linear layer at r 64, as QLoRA (Dettmers et al. 2023, arXiv:2305.14314); alpha 128 is ours."""

    name = "lora_all_r64"
    description = "peft LoRA on every linear layer, rank 64 (QLoRA's placement and rank), alpha 128."
    citation = "Dettmers et al. 2023, QLoRA, arXiv:2305.14314; Hu et al. 2021, arXiv:2106.09685"
    Config = LoRAAllR64Config
