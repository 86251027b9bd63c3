"""One training step per method on SmolLM2, batch 4 x 128 tokens, on this machine: the timing
row of the README's method table. ewc, whose penalty needs an earlier task, and distill are timed at
stage 2 (distill's term acts from stage 1 on; its cost is the same at every stage).
Run with: python -m tox -- tests/bench/test_bench_method_step.py --benchmark-only"""
import copy

import pytest
import torch

from harness.run.training import batch_loss
from methods.base import StageContext
from methods.registry import available, resolve_method
from tasks.chat import IGNORE
from tasks.items import MCItem
from tasks.registry import Task


@pytest.fixture(scope="module")
def base(smollm2):
    return smollm2


@pytest.mark.parametrize("name", sorted(available()))
def test_one_training_step(benchmark, name, base):
    model = copy.deepcopy(base[0])
    method = resolve_method(name)()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40000, (4, 128), generator=g)
    labels = ids.clone()
    labels[:, :96] = IGNORE  # loss on the last 32 tokens, like a reply
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
    item = MCItem(uid="x", question="2+2?", options=("3", "4", "5", "6"), answer=1, source="bench")
    task = Task("t", "mc", [item] * 4, {"recall": [item]})

    def batches(pairs, batch_size=None):
        yield batch

    ctx0 = StageContext(stage=0, task=None, seen=[], device="cpu", seed=0)
    model = method.prepare(model, ctx0)
    ctx = StageContext(stage=2, task=task, seen=[task], device="cpu", seed=0, batches=batches, tokenizer=base[1])
    method.after_task(model, ctx)  # consolidate a first task (EWC Fisher, replay buffer, latent buffer)
    method.train_examples([item.training_pair()], ctx)  # distill: copy the teacher; sdft: rewrite
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    model.train()

    def step():
        loss = batch_loss(model, method, batch, ctx)  # the training loop's loss: token weights, extra loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    benchmark.pedantic(step, rounds=3, iterations=1)
    benchmark.extra_info["trainable_params"] = sum(p.numel() for p in params)
