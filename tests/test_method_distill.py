"""Distillation (LwF): a teacher, the frozen model as it was before the stage, exists at every stage,
the first included, where it is the prepared base model; the KL to it is part of the loss from stage 1
on and is recorded in method_stats."""
import copy

import pytest
import torch

from harness.run.training import collate, train_task
from methods.base import StageContext
from methods.distill import Distill
from tasks.chat import encode_pairs


def _ctx(tok, stage):
    def batches(pairs, batch_size=None):
        enc = encode_pairs(tok, pairs, 96)
        for i in range(0, len(enc), batch_size or 4):
            yield collate(enc[i:i + (batch_size or 4)], tok.pad_token_id, "cpu")
    return StageContext(stage=stage, task=None, seen=[], device="cpu", seed=0, batches=batches, tokenizer=tok)


def _pairs(n, word):
    return [{"user": f"Say the {word} number {i}.", "reply": f"The {word} number is {i}."} for i in range(n)]


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_distill_kl_is_nonzero_at_stage_1(tiny):
    base, tok = tiny
    method = Distill()
    model = method.prepare(copy.deepcopy(base), StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    ctx = _ctx(tok, 1)
    pairs = method.train_examples(_pairs(4, "first"), ctx)
    batch = collate(encode_pairs(tok, pairs, 96), tok.pad_token_id, "cpu")
    # the stage-1 teacher is the prepared base model, frozen
    assert torch.equal(_logits(method.teacher, batch), _logits(base, batch))
    assert not any(p.requires_grad for p in method.teacher.parameters())
    model.train()
    outputs = model(**batch)
    term = method.extra_loss(model, batch, outputs, ctx)
    assert term is not None and term.item() == pytest.approx(0.0, abs=1e-6)  # student = teacher at the first step
    with torch.no_grad():  # the student moves away from the base model, as training moves it
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    outputs = model(**batch)
    term = method.extra_loss(model, batch, outputs, ctx)
    assert term.item() > 1e-4
    term.backward()  # the term trains the student
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_each_stage_distils_from_the_model_before_it_and_records_the_kl(tiny):
    base, tok = tiny
    method = Distill(Distill.Config(lr=1e-3))
    model = method.prepare(copy.deepcopy(base), StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    probe = collate(encode_pairs(tok, _pairs(2, "probe"), 96), tok.pad_token_id, "cpu")
    before = {}
    for stage, word in ((1, "first"), (2, "second")):
        ctx = _ctx(tok, stage)
        before[stage] = _logits(model, probe)
        examples = encode_pairs(tok, method.train_examples(_pairs(8, word), ctx), 96)
        assert torch.equal(_logits(method.teacher, probe), before[stage])  # the teacher: the model before the stage
        train_task(model, method, examples, ctx, epochs=1, batch_size=4, pad_id=tok.pad_token_id, device="cpu",
                   precision="fp32", seed=stage, desc="distill")
        assert torch.equal(_logits(method.teacher, probe), before[stage])  # and it stays frozen while training
        stats = method.stats(ctx)
        assert stats["kl_last"] > 0 and stats["kl_mean"] > 0  # the KL acts at stage 1 as at stage 2
        method.after_task(model, ctx)
        assert method.teacher is None  # the copy is freed between stages
    assert torch.equal(before[1], _logits(base, probe))  # stage 1's teacher was the base model
    assert not torch.equal(before[2], before[1])  # stage 2's, the model stage 1 trained
