"""Evaluation's packed linear layers (harness.model.packed): the same numbers as torch's own nn.Linear to
float32 rounding, never a stale packed weight, and every layer's own forward back afterwards."""
import pytest
import torch
from torch import nn

from harness.model.packed import available, packed_linears

pytestmark = pytest.mark.skipif(not available("cpu", "fp32"), reason="torch built without oneDNN")


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits


def test_a_model_scores_the_same_within_float32_rounding_and_gets_its_layers_back(tiny):
    model, _ = tiny
    ids = torch.randint(0, model.config.vocab_size, (3, 17))
    plain = _logits(model, ids)
    with packed_linears(model, "cpu", "fp32"):
        swapped = [m for m in model.modules() if "forward" in vars(m)]
        packed = _logits(model, ids)
    assert len(swapped) == sum(type(m) is nn.Linear for m in model.modules()) > 0
    assert torch.allclose(packed, plain, rtol=1e-5, atol=1e-5)
    assert not [m for m in model.modules() if "forward" in vars(m)]
    assert torch.equal(_logits(model, ids), plain)


def test_a_weight_changed_inside_the_block_is_used_not_its_packed_copy():
    layer = nn.Linear(16, 8)
    x = torch.randn(4, 16)
    with packed_linears(layer, "cpu", "fp32"), torch.no_grad():
        layer(x)
        layer.weight.mul_(2.0)  # in place: a method that edits its weights between two scorers
        assert torch.allclose(layer(x), nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-6)
        layer.bias = nn.Parameter(torch.ones(8))  # replaced
        assert torch.allclose(layer(x), nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-6)


def test_a_weight_replaced_inside_the_block_is_used_not_its_packed_copy():
    layer = nn.Linear(16, 8)
    x = torch.randn(4, 16)
    with packed_linears(layer, "cpu", "fp32"), torch.no_grad():
        layer(x)
        layer.weight = nn.Parameter(layer.weight * 3.0)  # the packed copy's source is held, its state unchanged
        assert torch.allclose(layer(x), nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-6)


def test_only_plain_fp32_layers_are_packed():
    """In fp32 on a CPU by oneDNN, under bf16 by their bf16 cast (tests/test_bf16_linears.py); a subclass (a
    quantized layer, a method's own) and a layer stored bf16 keep their own forward."""
    class Own(nn.Linear):
        pass

    model = nn.Sequential(nn.Linear(8, 8), Own(8, 8), nn.Linear(8, 8).to(torch.bfloat16))
    for precision in ("fp32", "bf16"):
        with packed_linears(model, "cpu", precision):
            assert ["forward" in vars(m) for m in model] == [True, False, False]


def test_layers_get_their_forward_back_when_the_block_raises():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    with pytest.raises(RuntimeError, match="scorer failed"), packed_linears(model, "cpu", "fp32"):
        raise RuntimeError("scorer failed")
    assert not any("forward" in vars(m) for m in model)


def test_evaluation_scores_within_float32_rounding_of_torchs_own_layers(tiny, data_dir, monkeypatch):
    """The tiny card's evaluation with and without packing: every per-item float within 1e-4 (float32 sums in
    another order; a margin is a difference of two such sums). Decisions (choices, flags, tokens) are asserted
    equal on SmolLM2 by the eval bench; a random tiny model's near-ties could flip on another CPU."""
    import contextlib

    from evaluation_leaves import leaves

    from harness.model import packed as packing
    from harness.run import evaluation
    from harness.run.runner import _Setup
    from harness.spec import config
    from harness.spec.spec import expand

    setup = _Setup(expand(config.load("tiny"))[0], str(data_dir))
    calls, unchanged = [], packing._Packed._unchanged
    monkeypatch.setattr(packing._Packed, "_unchanged", lambda self: calls.append(1) or unchanged(self))
    packed = evaluation.evaluate(setup.model, setup.tok, setup.tasks, setup.probes, desc="packed", **setup.eval_kw)
    assert calls  # the evaluation ran on packed layers
    monkeypatch.setattr(evaluation, "packed_linears", lambda *a: contextlib.nullcontext())
    plain = evaluation.evaluate(setup.model, setup.tok, setup.tasks, setup.probes, desc="plain", **setup.eval_kw)
    a, b = leaves(plain), leaves(packed)
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], float):
            assert b[key] == pytest.approx(a[key], abs=1e-4), key


def test_a_call_autograd_records_keeps_its_gradient():
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with packed_linears(layer, "cpu", "fp32"):
        layer(x).sum().backward()
    assert layer.weight.grad is not None and torch.allclose(layer.weight.grad, x.sum(0).expand(4, 8))


def test_a_trainable_bias_beside_a_frozen_weight_keeps_its_gradient():
    layer = nn.Linear(8, 4)
    layer.weight.requires_grad_(False)
    with packed_linears(layer, "cpu", "fp32"):
        layer(torch.randn(3, 8)).sum().backward()
    assert layer.bias.grad is not None and torch.equal(layer.bias.grad, torch.full((4,), 3.0))
