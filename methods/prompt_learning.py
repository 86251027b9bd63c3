"""Prompt learning through peft: trained virtual tokens in front of every input, the model frozen.

- `prompt_tuning` (Lester et al. 2021, arXiv:2104.08691): `num_virtual_tokens` trained input
  embeddings prepended to the input (peft PromptTuningConfig). Defaults from the paper: 100
  tokens (its default length; shorter ones are an ablation), initialised from embeddings of
  sampled vocabulary tokens (the paper samples its 5,000 most common tokens, peft the whole
  vocabulary; class-label init needs labels our generative tasks lack), and the paper's optimiser:
  t5x's Adafactor at a constant lr 0.3 as an absolute step size (no parameter scaling), weight decay
  1e-5, second-moment decay 0.8 (methods/adafactor.py, after the reference's gin; torch.optim.Adafactor
  cannot do this: it always scales the step by the parameter's RMS and decays it as 1/sqrt(t)). The
  paper's rate was set for T5's embeddings; on SmolLM2 (embedding RMS 0.14) `clbench tune` picks it.
  Deviation: the harness clips the global gradient norm at 1.0 first (t5x does not; Adafactor's update
  is nearly invariant to the gradient's scale).
- `prefix_tuning` (Li & Liang 2021, arXiv:2101.00190): a trained key/value prefix at every layer,
  produced by an MLP reparameterisation from a small embedding (Sec. 4.3), which the paper found
  more stable than training the prefix directly: peft PrefixTuningConfig with
  prefix_projection=True, encoder_hidden_size 512 (the MLP width of the reference code,
  XiangLi1999/PrefixTuning `--mid_dim 512`). Prefix length 10 and lr 5e-5 are the paper's
  table-to-text defaults.
- `p_tuning_v2` (Liu et al. 2022, arXiv:2110.07602): deep prompt tuning, i.e. the same per-layer
  prefixes trained directly: peft PrefixTuningConfig with prefix_projection=False, because the
  paper finds the reparameterisation encoder's use task-dependent (Sec. 3.3) and its reference code
  (THUDM/P-tuning-v2, `prefix_projection` default False) trains the prefix embedding itself.
  Prefix length 16 and lr 5e-3 come from that code's question-answering script
  (run_script/run_squad_roberta.sh), the closest of its tasks to ours. The prefix starts as in that
  code: N(0, initializer_range) (0.02 on SmolLM2), used directly as keys and values. Its nn.Embedding
  draws N(0, 1), but the reference loads models with transformers 4.11's `from_pretrained`, which
  re-initialises every module missing from the checkpoint, the prefix included, with the model's
  `_init_weights` (N(0, 0.02) for RoBERTa). peft keeps the N(0, 1) draw, whose keys and values moved
  SmolLM2's cloze scores of a sample question from about -4 to -16 nats before any training; this port
  redraws it. Deviations: the reference's QA script applies dropout 0.2 to the prefix's keys and values
  (peft has no prefix dropout), and its --hidden_dropout_prob 0.2 raises the backbone's dropout too; it
  trains a task head (qa_outputs) beside the prefix, where here the LM head stays frozen.

peft puts the virtual tokens in front of every call's input, also one that continues from a
cache; harness.model.scoring therefore continues the cloze scorer's cached question on the model
underneath. The trained parameters are all in peft's prompt encoder, which is what the
checkpoints save and restore.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from harness.core.typed import field

from .base import Method, peft_wrap


class _PromptLearning(Method):
    """prepare() wraps the model with the subclass's peft_config()."""

    def prepare(self, model, ctx):
        return peft_wrap(model, self.peft_config())


@dataclasses.dataclass(frozen=True)
class PromptTuningConfig:
    lr: float = field(0.3, "Adafactor learning rate for the prompt embeddings", min=0.0)
    num_virtual_tokens: int = field(100, "length of the trained prompt", min=1)
    init: Literal["sample_vocab", "random"] = field(
        "sample_vocab", "sample_vocab: embeddings of random vocabulary tokens; random: peft's random init")


class PromptTuning(_PromptLearning):
    name = "prompt_tuning"
    description = "peft prompt tuning: trained input embeddings prepended to every input (100 tokens)."
    citation = "Lester et al. 2021, The Power of Scale for Parameter-Efficient Prompt Tuning, arXiv:2104.08691"
    Config = PromptTuningConfig

    def peft_config(self):
        from peft import PromptTuningConfig as PeftPromptTuning, PromptTuningInit

        init = PromptTuningInit.SAMPLE_VOCAB if self.config.init == "sample_vocab" else PromptTuningInit.RANDOM
        return PeftPromptTuning(task_type="CAUSAL_LM", num_virtual_tokens=self.config.num_virtual_tokens,
                                prompt_tuning_init=init)

    def optimiser(self, params, device):
        from .adafactor import Adafactor

        return Adafactor(params, lr=self.config.lr, decay_rate=0.8, weight_decay_rate=1e-5)


@dataclasses.dataclass(frozen=True)
class PrefixTuningConfig:
    lr: float = field(5e-5, "AdamW learning rate for the prefix encoder", min=0.0)
    num_virtual_tokens: int = field(10, "prefix length (key/value positions per layer)", min=1)
    hidden: int = field(512, "width of the MLP that produces the prefix", min=1)


class PrefixTuning(_PromptLearning):
    name = "prefix_tuning"
    description = "peft prefix tuning: per-layer key/value prefix from a trained MLP (10 positions)."
    citation = "Li & Liang 2021, Prefix-Tuning: Optimizing Continuous Prompts for Generation, arXiv:2101.00190"
    Config = PrefixTuningConfig

    def peft_config(self):
        from peft import PrefixTuningConfig as PeftPrefixTuning

        return PeftPrefixTuning(task_type="CAUSAL_LM", num_virtual_tokens=self.config.num_virtual_tokens,
                                prefix_projection=True, encoder_hidden_size=self.config.hidden)


@dataclasses.dataclass(frozen=True)
class PTuningV2Config:
    lr: float = field(5e-3, "AdamW learning rate for the prefix", min=0.0)
    num_virtual_tokens: int = field(16, "prefix length (key/value positions per layer)", min=1)


class PTuningV2(_PromptLearning):
    name = "p_tuning_v2"
    description = "P-tuning v2 (deep prompt tuning): per-layer key/value prefix trained directly (16 positions)."
    citation = ("Liu et al. 2022, P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning Universally "
                "Across Scales and Tasks, arXiv:2110.07602")
    Config = PTuningV2Config

    def peft_config(self):
        from peft import PrefixTuningConfig as PeftPrefixTuning

        return PeftPrefixTuning(task_type="CAUSAL_LM", num_virtual_tokens=self.config.num_virtual_tokens,
                                prefix_projection=False)

    def prepare(self, model, ctx):
        import torch

        model = super().prepare(model, ctx)
        std = getattr(model.config, "initializer_range", 0.02)
        with torch.no_grad():  # the reference's start (see the module docstring), not peft's N(0, 1)
            for encoder in model.prompt_encoder.values():
                encoder.embedding.weight.normal_(0.0, std)
        return model
