"""Model loading: the cached safetensors copy of SmolLM2 equals the GGUF it came from; tiny is tiny."""
import pytest
import torch

from harness.model import models


@pytest.mark.slow
def test_smollm2_cache_has_the_gguf_logits(smollm2):
    from transformers import AutoModelForCausalLM

    gguf = models.smollm2_gguf()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model, tok = smollm2
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)
    assert getattr(model, "hf_quantizer", None) is None  # trainable, savable


def test_tiny_model_is_small_and_deterministic():
    a, tok = models.tiny_model()
    b, _ = models.tiny_model()
    n = sum(p.numel() for p in a.parameters())
    assert 50_000 < n < 1_000_000
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert tok.decode(tok("héllo wörld")["input_ids"]) == "héllo wörld"


def test_unknown_model_is_a_clear_error(tmp_path):
    from harness.core.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot load it"):
        models.load(str(tmp_path / "no-such-model"))


@pytest.mark.parametrize("major, picked", [(7, "fp32"), (8, "bf16"), (9, "bf16")])
def test_precision_auto_on_cuda_is_bf16_only_where_the_gpu_has_it_natively(monkeypatch, major, picked):
    """A T4 or V100 (compute capability 7.x) can make bf16 tensors, so torch's default support check says yes,
    but it emulates bf16 arithmetic slowly: `auto` picks fp32 there."""
    from types import SimpleNamespace

    from harness.model.precision import pick_precision

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(major=major))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 5))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)  # emulated
    choice, evidence = pick_precision("auto", "cuda")
    assert choice == picked and evidence["compute_capability"] == f"{major}.5"


def test_precision_auto_is_measured_on_cpu():
    from harness.model.precision import pick_precision

    choice, evidence = pick_precision("auto", "cpu")
    assert choice in ("bf16", "fp32")
    assert evidence["fp32_gflops"] > 0 and evidence["bf16_gflops"] > 0
    assert (choice == "bf16") == (evidence["bf16_gflops"] > 1.2 * evidence["fp32_gflops"])
