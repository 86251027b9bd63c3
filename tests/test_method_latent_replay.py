"""latent_replay: quantization error, the upper-block path equals the model's own loss, the buffer
holds earlier tasks only, and the prepared model scores like the base model."""
import copy

import pytest
import torch

from harness.model.scoring import cloze_scores
from harness.run.runner import _batcher
from harness.spec.config import Budget
from methods.base import StageContext
from methods.latent_quant import ProductQuantizer, ScalarQuantizer
from methods.latent_replay import LatentReplay, upper_loss
from tasks.items import MCItem
from tasks.registry import Task

BUDGET = Budget(batch_size=3, max_length=96)


def item(i, task):
    return MCItem(uid=f"{task}{i}", question=f"{task} question {i}: what is {i} + {i}?",
                  options=(str(2 * i), str(2 * i + 1), "none", "all"), answer=0, source="test")


def make_task(name, n=5):
    items = [item(i, name) for i in range(n)]
    return Task(name, "mc", items, {"recall": items})


def ctx_for(stage, task, tok, seen=()):
    return StageContext(stage=stage, task=task, seen=list(seen), device="cpu", seed=0,
                        batches=_batcher(tok, BUDGET, "cpu"))


@pytest.fixture()
def model_tok(tiny):
    return copy.deepcopy(tiny[0]), tiny[1]


def test_quantize_dequantize_error_is_small(model_tok):
    model, tok = model_tok
    method = LatentReplay(LatentReplay.Config(layer=1))
    method.prepare(model, StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    states = torch.cat([h for h, _ in method.latents(model, [i.training_pair() for i in make_task("a", 8).learn],
                                                       ctx_for(1, None, tok))])

    def error(restored):  # mean over tokens of |error| / |hidden state|
        return ((restored - states).norm(dim=1) / states.norm(dim=1)).mean()

    pq = ProductQuantizer(states.shape[1], 32, 256, 25, 65536, seed=0)
    pq.fit(states)
    codes = pq.encode(states)
    assert codes[0].dtype == torch.uint8 and codes[0].shape == (len(states), 32)
    pq_err = error(pq.decode(codes))
    scalar = ScalarQuantizer()
    sc_err = error(scalar.decode(scalar.encode(states)))
    assert pq_err < 0.1, pq_err
    assert sc_err < 0.02, sc_err
    # a coarse codebook (2 codes) is measurably worse: the error measure can fail
    coarse = ProductQuantizer(states.shape[1], 32, 2, 25, 65536, seed=0)
    coarse.fit(states)
    assert error(coarse.decode(coarse.encode(states))) > 2 * pq_err


@pytest.mark.parametrize("layer", [0, 1])
def test_upper_blocks_path_equals_model_loss(model_tok, layer):
    """Unquantized stored states pushed through the upper blocks give the model's own loss
    (rotary positions and the padding mask included: sequences of different lengths)."""
    model, tok = model_tok
    method = LatentReplay(LatentReplay.Config(layer=layer))
    method.prepare(model, StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    pairs = [{"user": "short?", "reply": "yes"}, {"user": "a much longer question " * 3, "reply": "a longer reply"}]
    batch = next(_batcher(tok, BUDGET, "cpu")(pairs))
    assert batch["attention_mask"].sum(1).unique().numel() == 2  # really padded
    with torch.no_grad():
        own = model(**batch).loss
        stored = method.latents(model, pairs, ctx_for(1, None, tok))
        width = max(len(h) for h, _ in stored)
        hidden = torch.zeros(len(stored), width, stored[0][0].shape[1])
        mask = torch.zeros(len(stored), width, dtype=torch.long)
        labels = torch.full((len(stored), width), -100)
        for i, (h, lab) in enumerate(stored):
            hidden[i, : len(h)], mask[i, : len(h)], labels[i, : len(h)] = h, 1, lab
        replayed = upper_loss(model, layer, hidden, mask, labels)
        torch.testing.assert_close(replayed, own, rtol=1e-5, atol=1e-5)
        # the same states sent through one block too many or too few give another loss: the check can fail
        assert not torch.allclose(upper_loss(model, 1 - layer, hidden, mask, labels), own, atol=1e-3)


@pytest.mark.parametrize("quantizer", ["pq", "scalar8"])
def test_buffer_holds_earlier_tasks_only_and_replay_trains_upper_blocks(model_tok, quantizer):
    model, tok = model_tok
    method = LatentReplay(LatentReplay.Config(quantizer=quantizer, per_task=3, buffer_size=4, replay_batch=2))
    method.prepare(model, StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    a, b, c = make_task("a"), make_task("b"), make_task("c")
    assert method.extra_loss(model, None, None, ctx_for(1, a, tok)) is None  # nothing stored during task 1
    method.after_task(model, ctx_for(1, a, tok))
    assert {e["task"] for e in method.buffer} == {"a"} and len(method.buffer) == 3
    loss = method.extra_loss(model, None, None, ctx_for(2, b, tok))  # while training task b: only a's latents
    loss.backward()
    decoder = model.get_decoder()
    assert decoder.layers[1].mlp.down_proj.weight.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in decoder.layers[0].parameters())
    assert not decoder.embed_tokens.weight.requires_grad  # tied LM head: frozen with the embedding
    method.after_task(model, ctx_for(2, b, tok))
    method.after_task(model, ctx_for(3, c, tok))
    assert len(method.buffer) == 4  # bounded: reservoir over 9 stored sequences
    assert {e["task"] for e in method.buffer} <= {"a", "b", "c"}
    stats = method.stats(ctx_for(3, c, tok))
    held = {e["task"] for e in method.buffer}
    codebooks = sum(method.quantizers[t].codebooks.numel() * 4 for t in held) if quantizer == "pq" else 0
    measured = codebooks + sum(sum(t.numel() * t.element_size() for t in e["payload"]) + 4 * e["labels"].numel()
                               for e in method.buffer)
    assert stats["buffer_bytes"] == measured and stats["buffer_sequences"] == 4


def test_each_domain_is_encoded_with_codebooks_fitted_on_it(model_tok):
    """REMIND's one codebook fitted on the first task would encode every later domain with centroids of
    another distribution; each task's stored states get their own, and their error is recorded per domain."""
    model, tok = model_tok
    method = LatentReplay(LatentReplay.Config(per_task=5, subvectors=4, codes=8, buffer_size=100))
    method.prepare(model, StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    a, b = make_task("a"), make_task("b")
    method.after_task(model, ctx_for(1, a, tok))
    method.after_task(model, ctx_for(2, b, tok))
    stats = method.stats(ctx_for(2, b, tok))
    assert set(method.quantizers) == {"a", "b"} and stats["buffer_tasks"] == ["a", "b"]
    states = [h for h, _ in method.latents(model, [i.training_pair() for i in b.learn], ctx_for(2, b, tok))]

    def error(quantizer, x):
        return ((x - quantizer.decode(quantizer.encode(x))).norm(dim=1) / x.norm(dim=1)).mean().item()

    x = torch.cat(states)
    assert stats["reconstruction_error_b"] == pytest.approx(error(method.quantizers["b"], x), rel=1e-4)
    assert error(method.quantizers["b"], x) < error(method.quantizers["a"], x)


def test_prepared_model_scores_like_the_base(model_tok):
    model, tok = model_tok
    base = copy.deepcopy(model)
    LatentReplay().prepare(model, StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    q = item(3, "x")
    assert cloze_scores(model, tok, [q], "cpu", "fp32")[0] == cloze_scores(base, tok, [q], "cpu", "fp32")[0]


def test_bad_layer_and_subvectors_name_the_field(model_tok):
    model, _ = model_tok
    ctx = StageContext(stage=0, task=None, seen=[], device="cpu", seed=0)
    with pytest.raises(Exception, match="method_config.layer"):
        LatentReplay(LatentReplay.Config(layer=2)).prepare(model, ctx)
    with pytest.raises(Exception, match="method_config.subvectors"):
        LatentReplay(LatentReplay.Config(subvectors=7)).prepare(model, ctx)
