"""Greedy decoding on a fixed-width cache (harness.model.decoding): the same tokens as the cache transformers
grows; a step recorded the way a CUDA graph capture records it (its Python once, then its operations alone)
replays the same tokens; a step that reads a value back runs eagerly; a sliding-window cache keeps the growing
mask. Decoding against transformers' own `generate` is in tests/test_scoring.py."""
import copy

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._python_dispatch import TorchDispatchMode

from harness.model import decoding
from harness.model.scoring import _pad_id, _prompt_batches, generate
from tasks.chat import prompt_ids

PROMPTS = ["short", "a much longer prompt that needs padding on the right", "Write a function that adds.",
           "Name three colours."]


def _spread(model):
    """The model with its matrices drawn wider (N(0, 0.3), seed 0): the tiny model's initialisation makes one token
    for every prompt at every step, which any decoding bug would reproduce; these weights make different tokens."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def lively(tiny):
    model, tok = tiny
    return _spread(copy.deepcopy(model)), tok


_HOST_READS = {torch.ops.aten.item.default, torch.ops.aten._local_scalar_dense.default,
               torch.ops.aten.is_nonzero.default, torch.ops.aten.equal.default, torch.ops.aten.nonzero.default}


class _NoHostReads(TorchDispatchMode):
    """Raise on the operations behind .item(), bool(tensor), torch.equal and nonzero: on CUDA each waits for the GPU,
    which a capture refuses. (.tolist() reads the data without dispatching an operation: not seen here.)"""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _HOST_READS:
            raise RuntimeError(f"the step reads a value back to the host ({func})")
        return func(*args, **(kwargs or {}))


def _state(step) -> list[torch.Tensor]:
    return [step.mask, step.column, step.position, step.token,
            *(t for layer in step.cache.layers for t in (layer.keys, layer.values, layer.filled))]


def _record_as_a_capture(recorded: list):
    """A recorder for `_FixedStep` that does on a CPU what `decoding.cuda_graph` does on CUDA: it checks that the
    step reads nothing back, then traces it (make_fx on the real tensors: the step's Python runs once, and the
    trace runs it, so the state is put back as a capture, which runs nothing, leaves it); replay runs the traced
    operations alone, on the same tensors."""
    def record(step):
        saved = [t.clone() for t in _state(step)]
        try:
            with _NoHostReads():
                step.forward()
            graph = make_fx(lambda: step.forward())()
        finally:
            for t, s in zip(_state(step), saved):
                t.copy_(s)
        out = torch.zeros(len(step.token), dtype=torch.long)
        recorded.append(graph)
        return (lambda: out.copy_(graph())), out
    return record


def _rows(model, tok, prompts, n, eos=None):
    ids = [prompt_ids(tok, p) for p in prompts]
    with torch.inference_mode():
        (batch, logits, cache, mask, _), = list(_prompt_batches(model, tok, ids, "cpu", len(ids)))
        rows = decoding.greedy_rows(model, logits, cache, mask, tok.eos_token_id if eos is None else eos,
                                    _pad_id(tok), n)
    return dict(zip(batch, rows))


def test_fixed_width_steps_give_the_tokens_of_the_growing_cache(lively, monkeypatch):
    model, tok = lively
    fixed = _rows(model, tok, PROMPTS, 10)
    eos = fixed[1][3]  # a token one row makes early: rows finish at different steps and go on with padding
    fixed_eos = _rows(model, tok, PROMPTS, 10, eos=eos)
    assert any(len(r) < 10 for r in fixed_eos.values()) and any(len(r) == 10 for r in fixed_eos.values())
    monkeypatch.setattr(decoding, "_fixable", lambda model, cache: False)
    assert _rows(model, tok, PROMPTS, 10) == fixed
    assert _rows(model, tok, PROMPTS, 10, eos=eos) == fixed_eos


def test_under_bf16_autocast_fixed_width_steps_give_the_tokens_of_the_growing_cache(lively, monkeypatch):
    """Under bf16 autocast a step's values come out bf16 where the prefill's cache holds them in fp32 (transformers
    promotes them): the fixed-width cache stores them as that cache does."""
    model, tok = lively
    fixed = generate(model, tok, PROMPTS, "cpu", "bf16", 8, batch_size=4)
    monkeypatch.setattr(decoding, "_fixable", lambda model, cache: False)
    assert generate(model, tok, PROMPTS, "cpu", "bf16", 8, batch_size=4) == fixed


def test_a_recorded_step_replays_the_tokens_of_the_eager_one(lively, monkeypatch):
    model, tok = lively
    eager = generate(model, tok, PROMPTS, "cpu", "fp32", 9, batch_size=4)
    recorded = []
    monkeypatch.setattr(decoding, "_recorder", lambda device, capture: _record_as_a_capture(recorded) if capture else None)
    monkeypatch.setattr(decoding, "COUNTS", {"recorded": 0, "replayed": 0})
    assert generate(model, tok, PROMPTS, "cpu", "fp32", 9, batch_size=4) == eager
    assert len(recorded) == 1  # one batch, recorded after its first step, replayed for the other seven
    assert decoding.COUNTS == {"recorded": 1, "replayed": 7}  # what the GPU check reports


def test_a_step_that_reads_a_value_back_is_not_recorded_and_runs_eagerly(lively, monkeypatch, capsys):
    model, tok = lively
    eager = generate(model, tok, PROMPTS, "cpu", "fp32", 6, batch_size=4)
    forward = model.forward

    def reads_back(*args, **kwargs):  # what a method's forward might do: a Python number from a tensor
        out = forward(*args, **kwargs)
        out.logits.sum().item()
        return out
    monkeypatch.setattr(model, "forward", reads_back)
    recorded = []
    monkeypatch.setattr(decoding, "_recorder", lambda device, capture: _record_as_a_capture(recorded) if capture else None)
    monkeypatch.setattr(decoding, "COUNTS", {"recorded": 0, "replayed": 0})
    assert generate(model, tok, PROMPTS, "cpu", "fp32", 6, batch_size=4) == eager
    assert recorded == [] and decoding.COUNTS == {"recorded": 0, "replayed": 0}
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "could not be recorded" in lines[0] and "reads a value back" in lines[0]


def test_eager_attention_decodes_on_a_growing_mask(lively):
    """Eager attention adds a given 4-D mask to the scores (0 and -inf expected), so a boolean one would mask
    nothing: such a model keeps the growing mask, and its tokens are those of SDPA on the same weights."""
    model, tok = lively
    sdpa = generate(model, tok, PROMPTS, "cpu", "fp32", 8, batch_size=4)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    assert generate(eager, tok, PROMPTS, "cpu", "fp32", 8, batch_size=4) == sdpa


def test_a_sliding_window_cache_decodes_on_a_growing_mask(tiny):
    """A window of 3 positions: a fixed-width cache would let its layers see every earlier key. One prompt at a
    time (no padding), the harness's tokens equal transformers' own greedy `generate`. (In a padded batch the
    two differ: a window counts cache columns, and the harness's right padding puts pad columns inside a decoded
    token's window, where transformers' left padding puts them before the prompt.)"""
    from transformers import MistralConfig, MistralForCausalLM

    from harness.model.generation_metrics import split_answer

    _, tok = tiny
    model = _spread(MistralForCausalLM(MistralConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                     sliding_window=3, pad_token_id=_pad_id(tok))))
    ids = [prompt_ids(tok, p) for p in PROMPTS]
    with torch.inference_mode():
        (_, _, cache, _, _), = list(_prompt_batches(model, tok, ids, "cpu", len(ids)))
    assert not decoding._fixable(model, cache)
    for prompt, row in zip(PROMPTS, ids):
        ours = generate(model, tok, [prompt], "cpu", "fp32", 8, batch_size=1)[0]["ids"]
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor([row]), do_sample=False, max_new_tokens=8,
                                 eos_token_id=tok.eos_token_id, pad_token_id=_pad_id(tok))
        assert ours == split_answer(out[0, len(row):].tolist(), tok.eos_token_id)[0]
