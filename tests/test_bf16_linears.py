"""Under bf16, evaluation's linear layers whose weights are stored fp32 (harness.model.packed) compute on their
bf16 cast made once: bit for bit what autocast computes, with no weight cast left in a step that autocast does not
cache (a decoding step replayed as a CUDA graph), and never on a stale or unserved copy."""
import copy

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from harness.model.packed import packed_linears
from harness.model.precision import linear_layers, place_weights
from harness.model.scoring import generate
from methods.base import StageContext
from methods.registry import resolve_method


class _WeightCasts(TorchDispatchMode):
    """Counts the casts of 2-D fp32 tensors to bf16: autocast's casts of linear weights."""

    def __init__(self):
        super().__init__()
        self.casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func is torch.ops.aten._to_copy.default and args[0].dim() == 2 and args[0].dtype == torch.float32
                and kwargs.get("dtype") == torch.bfloat16 and args[0].shape[0] > 8):
            self.casts += 1
        return func(*args, **kwargs)


def _full_under_bf16(tiny):
    """The tiny model as a `full` run holds it under bf16: every weight trainable and stored fp32."""
    model, tok = tiny
    model = copy.deepcopy(model)
    linears = linear_layers(model)
    place_weights(model, "bf16", linears, loading=True)
    model = resolve_method("full")().prepare(model, StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    place_weights(model, "bf16", linears)
    torch.manual_seed(0)
    with torch.no_grad():  # weights wide enough that greedy decoding makes different tokens per prompt and step
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model.eval(), tok


def _logits(model, ids, cache_enabled=True):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=cache_enabled):
        return model(input_ids=ids).logits


def test_a_model_with_fp32_weights_computes_the_same_bits_and_casts_no_weight(tiny):
    model, _ = _full_under_bf16(tiny)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
    ids = torch.randint(0, model.config.vocab_size, (3, 17))
    with _WeightCasts() as before:
        plain = _logits(model, ids, cache_enabled=False)  # as a captured step runs: autocast caches nothing
    with packed_linears(model, "cpu", "bf16"), _WeightCasts() as inside:
        cast = _logits(model, ids, cache_enabled=False)
    assert before.casts == sum(type(m) is nn.Linear for m in model.modules()) > 0
    assert inside.casts == 0
    assert torch.equal(cast, plain)
    assert not [m for m in model.modules() if "forward" in vars(m)]


def test_greedy_tokens_are_the_same(tiny):
    model, tok = _full_under_bf16(tiny)
    prompts = ["short", "a much longer prompt that needs padding on the right", "Name three colours."]
    plain = generate(model, tok, prompts, "cpu", "bf16", 12, batch_size=3)
    with packed_linears(model, "cpu", "bf16"):
        cast = generate(model, tok, prompts, "cpu", "bf16", 12, batch_size=3)
    assert [r["ids"] for r in cast] == [r["ids"] for r in plain] and len({tuple(r["ids"]) for r in plain}) > 1


def test_a_call_the_copy_does_not_serve_computes_on_the_layer_itself():
    """Outside autocast (an fp32 call), with gradients, and after the weight changed in place: the layer's own
    weights. (Compared with an explicit cast: autocast's own cache keeps a weight's cast while its region lasts,
    an in-place change notwithstanding.)"""
    layer = nn.Linear(16, 8)
    x = torch.randn(4, 16)
    with packed_linears(layer, "cpu", "bf16"):
        with torch.no_grad():
            assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))  # fp32, no autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer(x).sum().backward()  # through the fp32 weight itself
        assert layer.weight.grad is not None
        with torch.no_grad():
            layer.weight.mul_(2.0)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = layer(x)
            assert torch.equal(out, nn.functional.linear(x.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16()))


def test_an_evaluation_stores_the_same_numbers(tiny, data_dir, monkeypatch):
    """The tiny card's evaluation under bf16 of a model whose weights are all fp32 (a full run's), with and without
    the casts made once: every stored value equal."""
    import contextlib

    from evaluation_leaves import leaves

    from harness.model import packed
    from harness.run import evaluation
    from harness.run.runner import _Setup
    from harness.spec import config
    from harness.spec.spec import expand

    setup = _Setup(expand(config.with_overrides(config.load("tiny"), precision="bf16"))[0], str(data_dir))
    model, tok = _full_under_bf16(tiny)
    calls, serves = [], packed._Cast._serves
    monkeypatch.setattr(packed._Cast, "_serves", lambda self, x: calls.append(1) or serves(self, x))
    cast = evaluation.evaluate(model, tok, setup.tasks, setup.probes, desc="cast", **setup.eval_kw)
    assert calls and setup.eval_kw["precision"] == "bf16"
    monkeypatch.setattr(evaluation, "packed_linears", lambda *a: contextlib.nullcontext())
    plain = evaluation.evaluate(model, tok, setup.tasks, setup.probes, desc="plain", **setup.eval_kw)
    assert leaves(cast) == leaves(plain)
