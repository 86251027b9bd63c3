"""qlora: every linear layer but the output becomes NF4, the fresh adapter is an identity on the
quantized base, and on a CPU gradients after an evaluation equal those before it (bitsandbytes'
inference repacking stays off)."""
import copy

import bitsandbytes as bnb
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.model.scoring import cloze_scores
from methods.base import StageContext, count_parameters
from methods.qlora import QLoRA, matmul_dtype
from tasks.chat import prompt_ids
from tasks.items import MCItem

CTX = StageContext(stage=0, task=None, seen=[], device="cpu", seed=0)
ITEM = MCItem(uid="x", question="Which planet is the largest?", options=("Mars", "Jupiter", "a moon", "Venus"),
              answer=1, source="test")


def test_every_linear_but_the_output_is_nf4_and_the_fresh_adapter_is_an_identity(tiny):
    base, tok = tiny
    model = QLoRA().prepare(copy.deepcopy(base), CTX)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 7 * base.config.num_hidden_layers  # q k v o gate up down per block
    assert all(m.weight.quant_type == "nf4" and m.weight.compress_statistics for m in layers)
    assert not isinstance(model.get_output_embeddings(), bnb.nn.Linear4bit)
    assert {n.split(".")[-3] for n, p in model.named_parameters() if p.requires_grad} == {"lora_A", "lora_B"}
    trainable, total = count_parameters(model)  # a packed 4-bit weight still counts all its weights
    assert total == count_parameters(base)[1] + trainable
    model.eval()
    ids = torch.tensor([prompt_ids(tok, ITEM.cloze_prompt())])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        with model.disable_adapter():
            quantized = model(input_ids=ids).logits
        full = base(input_ids=ids).logits
    assert torch.equal(logits, quantized)  # LoRA's B starts at zero
    assert 0 < (logits - full).abs().max() < 0.2 * full.abs().max()  # NF4 error: present, bounded
    scored = cloze_scores(model, tok, [ITEM], "cpu", "fp32")[0]
    with model.disable_adapter():
        assert cloze_scores(model, tok, [ITEM], "cpu", "fp32")[0] == scored


def _grads(model, batch):
    model.train()
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_gradients_after_an_evaluation_equal_those_before_it_on_cpu(tiny):
    """Widths that are multiples of 64 (bitsandbytes' block), where the CPU repacking path is live."""
    tok = tiny[1]
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = QLoRA(QLoRA.Config(r=8, dropout=0.0)).prepare(LlamaForCausalLM(config), CTX)
    with torch.no_grad():  # a trained-looking adapter, so that both A and B get gradients
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    ids = torch.tensor([prompt_ids(tok, ITEM.cloze_prompt())])
    batch = {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}
    before = _grads(model, batch)
    model.eval()
    cloze_scores(model, tok, [ITEM], "cpu", "fp32")[0]  # the evaluation: no-grad forwards in eval mode
    after = _grads(model, batch)
    assert all(before[n].abs().sum() > 0 for n in before)
    for n in before:
        torch.testing.assert_close(after[n], before[n], msg=f"gradient of {n} changed after an evaluation")


def test_the_4bit_matmuls_compute_in_the_runs_precision_on_cuda_and_fp32_on_a_cpu():
    """auto was bf16 on any CUDA device: in an fp32 card's run qlora alone computed its base in bf16."""
    assert matmul_dtype("auto", "cuda", "bf16") == torch.bfloat16
    assert matmul_dtype("auto", "cuda:1", "fp32") == torch.float32
    assert matmul_dtype("auto", "cpu", "bf16") == torch.float32
    assert matmul_dtype("bf16", "cpu", "fp32") == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_in_a_bf16_run_the_4bit_matmuls_compute_in_bf16(tiny):
    model = QLoRA().prepare(copy.deepcopy(tiny[0]).to("cuda"),
                            StageContext(stage=0, task=None, seen=[], device="cuda", seed=0, precision="bf16"))
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.compute_dtype == torch.bfloat16 and m.weight.device.type == "cuda" for m in layers)
    ids = torch.tensor([prompt_ids(tiny[1], ITEM.cloze_prompt())], device="cuda")
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_the_defaults_are_the_papers():
    """QLoRA's settings for models up to 13B (Dettmers et al. 2023, Sec. 4 and Appendix B, as methods/qlora.py says):
    r 64, alpha 16, dropout 0.1, lr 2e-4, NF4 with double quantization. No other test reads these."""
    c = QLoRA.Config()
    assert (c.r, c.alpha, c.dropout, c.lr, c.double_quant) == (64, 16, 0.1, 2e-4, True)


def test_bitsandbytes_does_not_ask_for_a_kernel_from_the_hub():
    """On a CPU with AVX512-BF16 bitsandbytes warned, in every LoRA run's progress, that it could not fetch a
    4-bit kernel from the hub and asked for the `kernels` package (which downloads code at run time). Importing
    the methods quiets it. (On other CPUs it never warns, and this passes either way.)"""
    import subprocess
    import sys

    code = "import methods.base, bitsandbytes, peft"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gemm_4bit_forward" not in done.stderr
