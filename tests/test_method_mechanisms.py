"""Tests that prove each method's mechanism, not just that it runs."""
import copy

import pytest
import torch

from harness.run.training import batch_loss, collate, train_task
from methods.base import StageContext
from methods.distill import distill_kl
from methods.ewc import EWC
from methods.freeze import Freeze
from methods.full import FullFineTune
from methods.l2sp import L2SP
from methods.replay import Replay
from tasks.chat import IGNORE, encode_example
from tasks.items import MCItem
from tasks.registry import Task


def _task(name, n):
    items = [MCItem(uid=f"{name}/{i}", question=f"{name} question {i}?", options=("a", "b", "c", "d"), answer=i % 4,
                    source="test") for i in range(n)]
    return Task(name, "mc", items, {"recall": items})


def _ctx(tok, task, stage, seen=()):
    def batches(pairs, batch_size=None):
        enc = [encode_example(tok, p["user"], p["reply"], 128) for p in pairs]
        for i in range(0, len(enc), batch_size or 2):
            yield collate(enc[i:i + (batch_size or 2)], tok.pad_token_id, "cpu")
    return StageContext(stage=stage, task=task, seen=list(seen), device="cpu", seed=0, batches=batches)


def test_replay_mixes_earlier_items_at_the_configured_ratio(tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    method = Replay(Replay.Config(ratio=0.25, buffer_size=50))
    first, second = _task("first", 30), _task("second", 30)
    method.prepare(model, _ctx(tok, first, 0))
    assert method.train_examples([i.training_pair() for i in first.learn], _ctx(tok, first, 1)) == \
        [i.training_pair() for i in first.learn]  # nothing to replay yet
    method.after_task(model, _ctx(tok, first, 1))
    mixed = method.train_examples([i.training_pair() for i in second.learn], _ctx(tok, second, 2, [first]))
    replayed = [p for p in mixed if p.get("mix") == "replay"]
    assert len(replayed) / len(mixed) == pytest.approx(0.25, abs=0.02)
    earlier = {(i.cloze_prompt(), i.target()) for i in first.learn}
    assert all((p["user"], p["reply"]) in earlier for p in replayed)


def test_replay_draws_without_replacement_and_every_step_holds_its_share(tiny):
    """Each stage replays distinct buffer examples (whole passes when it needs more than the buffer holds),
    and the training loop spreads them so that every batch holds floor or ceil of ratio x batch size."""
    from harness.run.training import epoch_order
    from tasks.chat import encode_pairs

    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    method = Replay(Replay.Config(ratio=0.2, buffer_size=100))
    first, second = _task("first", 40), _task("second", 40)
    method.prepare(model, _ctx(tok, first, 0))
    method.after_task(model, _ctx(tok, first, 1))
    mixed = method.train_examples([i.training_pair() for i in second.learn], _ctx(tok, second, 2, [first]))
    replayed = [p["user"] for p in mixed if p.get("mix") == "replay"]
    assert len(replayed) == 10 and len(set(replayed)) == 10
    assert method.stats(None) == {"buffer": 40, "replayed": 10, "replayed_share": 0.2}
    examples = encode_pairs(tok, mixed, 128)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):  # epochs
        order = epoch_order(examples, generator)
        assert sorted(order) == list(range(len(examples)))
        per_batch = [sum(examples[i].get("mix") == "replay" for i in order[s:s + 4]) for s in range(0, 48, 4)]
        assert set(per_batch) <= {0, 1}, per_batch  # 0.2 x 4 = 0.8 per step
    small = Replay(Replay.Config(ratio=0.5, buffer_size=3))
    small.prepare(model, _ctx(tok, first, 0))
    small.after_task(model, _ctx(tok, first, 1))
    drawn = [p["user"] for p in small.train_examples([i.training_pair() for i in second.learn][:9], _ctx(tok, second, 2))
             if p.get("mix")]
    assert len(drawn) == 9 and all(drawn.count(u) == 3 for u in set(drawn))  # three whole passes over 3


def test_untagged_examples_keep_the_plain_permutation():
    from harness.run.training import epoch_order
    examples = [{"input_ids": [i]} for i in range(10)]
    assert epoch_order(examples, torch.Generator().manual_seed(3)) == \
        torch.randperm(10, generator=torch.Generator().manual_seed(3)).tolist()


def test_replay_reservoir_keeps_a_uniform_sample_within_its_size(tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    method = Replay(Replay.Config(buffer_size=10))
    method.prepare(model, _ctx(tok, None, 0))
    tasks = [_task(f"t{k}", 20) for k in range(3)]
    for k, t in enumerate(tasks):
        method.after_task(model, _ctx(tok, t, k + 1))
    assert len(method.buffer) == 10 and method.seen == 60
    assert len({p["user"].split()[0] for p in method.buffer}) >= 2  # not only the first task's items


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_with_distance(tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    method = EWC(EWC.Config(ewc_lambda=10.0))
    method.prepare(model, _ctx(tok, None, 0))
    assert method.penalty() is None  # nothing consolidated yet
    task = _task("t", 4)
    method.after_task(model, _ctx(tok, task, 1))
    assert all(f.min() >= 0 for f in method.fisher) and any(f.sum() > 0 for f in method.fisher)
    assert method.penalty().item() == 0.0
    values = []
    for step in (1e-3, 1e-2, 1e-1):
        with torch.no_grad():
            for p, a in zip(method.params, method.anchor):
                p.copy_(a + step)
        values.append(method.penalty().item())
    assert 0 < values[0] < values[1] < values[2]


def test_l2sp_penalty_zero_at_start_and_quadratic(tiny):
    model = copy.deepcopy(tiny[0])
    method = L2SP(L2SP.Config(alpha=2.0))
    method.prepare(model, None)
    assert method.penalty().item() == 0.0
    n = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    assert method.penalty().item() == pytest.approx(2.0 / 2 * n * 0.25, rel=1e-4)


def test_l2sp_penalty_is_in_the_loss_that_training_optimises(tiny):
    """The penalty test above calls penalty() itself: an extra_loss that returned None passed it, and l2sp trained
    as full fine-tuning. Here the training loss of a batch is the label loss plus alpha/2 ||w - w0||^2."""
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    method = L2SP(L2SP.Config(alpha=2.0))
    method.prepare(model, None)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    batch = collate([encode_example(tok, "Q?", "an answer", 64)], tok.pad_token_id, "cpu")
    ctx = _ctx(tok, None, 1)
    label_loss = batch_loss(model, FullFineTune(), batch, ctx)
    assert batch_loss(model, method, batch, ctx).item() == pytest.approx(
        label_loss.item() + method.penalty().item(), rel=1e-5)
    assert method.penalty().item() > 0.1 * label_loss.item()


def test_l2sp_stats_show_the_pull_against_the_task_loss(tiny):
    """method_stats carry what a board's reader needs to see that the penalty acted: its size against the label
    loss over the stage, measured here outside stats() from the training curve (loss = label loss + penalty)."""
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    method = L2SP(L2SP.Config(alpha=2.0, lr=1e-3))
    model = method.prepare(model, _ctx(tok, None, 0))
    pairs = [{"user": f"question {i}?", "reply": f"answer {i}"} for i in range(8)]
    kw = dict(epochs=1, batch_size=2, pad_id=tok.pad_token_id, device="cpu", precision="fp32", seed=0, desc="t")
    for stage in (1, 2):
        ctx = _ctx(tok, None, stage)
        train = train_task(model, method, [encode_example(tok, p["user"], p["reply"], 64) for p in pairs], ctx, **kw)
        stats = method.stats(ctx)
        assert stats["steps_recorded"] == train["steps"] == 4
        assert stats["task_loss_first"] + stats["penalty_first"] == pytest.approx(train["loss_first"], rel=1e-5)
        assert stats["task_loss_last"] + stats["penalty_last"] == pytest.approx(train["loss_last"], rel=1e-5)
        assert stats["penalty_ratio_mean"] == pytest.approx(stats["penalty_mean"] / stats["task_loss_mean"])
        assert stats["drift_norm"] ** 2 * 2.0 / 2 == pytest.approx(method.penalty().item(), rel=1e-4)
    assert stats["penalty_first"] > 0 and stats["penalty_ratio_mean"] > 0  # stage 2 starts away from w0
    assert method.stats(_ctx(tok, None, 3))["steps_recorded"] == 0  # a stage's stats are its own


def test_distillation_is_zero_when_student_equals_teacher_and_positive_otherwise(tiny):
    model, tok = tiny
    batch = collate([encode_example(tok, "Q?", "an answer", 64)], tok.pad_token_id, "cpu")
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits
    assert distill_kl(logits, logits, batch["labels"], 2.0).item() == pytest.approx(0.0, abs=1e-6)
    noisy = logits + torch.randn_like(logits)
    assert distill_kl(noisy, logits, batch["labels"], 2.0).item() > 0.01


def test_distillations_gradient_is_lwfs():
    """Li & Hoiem's code (lizhitwo/LearningWithoutForgetting, vl_nnsoftmaxdiff.m, mode 'MI') gives the logits the
    gradient (softmax(x / T) - softmax(teacher / T)) / T per position: no T^2 factor (Hinton's scaling is not
    LwF's; with it the term pulled 4x as hard at T = 2)."""
    torch.manual_seed(0)
    student, teacher = torch.randn(1, 4, 11, requires_grad=True), torch.randn(1, 4, 11)
    labels = torch.tensor([[IGNORE, IGNORE, 5, 7]])  # positions 1 and 2 predict labels
    T = 2.0
    distill_kl(student, teacher, labels, T).backward()
    rows = [1, 2]
    expected = (torch.softmax(student[0, rows] / T, -1) - torch.softmax(teacher[0, rows] / T, -1)) / T / len(rows)
    assert torch.allclose(student.grad[0, rows], expected.detach(), atol=1e-6)
    assert student.grad[0, [0, 3]].abs().sum() == 0


def test_freeze_trains_only_the_last_blocks(tiny):
    model = copy.deepcopy(tiny[0])
    Freeze(Freeze.Config(last_k=1)).prepare(model, None)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(".layers.1." in n for n in trained)
    Freeze(Freeze.Config(patterns=[r"norm"])).prepare(model, None)
    assert all("norm" in n for n, p in model.named_parameters() if p.requires_grad)


def test_llama_pro_expanded_smollm2_keeps_logits_and_cached_generation(smollm2):
    from harness.model.scoring import generate
    from methods.llama_pro import LlamaPro

    base, tok = smollm2
    expanded = LlamaPro(LlamaPro.Config(every=10)).prepare(copy.deepcopy(base), None)
    assert expanded.config.num_hidden_layers == base.config.num_hidden_layers + 3
    assert [layer.self_attn.layer_idx for layer in expanded.model.layers] == list(range(33))
    trained = {n.split(".")[2] for n, p in expanded.named_parameters() if p.requires_grad}
    assert trained == {"10", "21", "32"}  # the copies after blocks 10, 20, 30 (0-based 9, 19, 29)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(expanded(ids).logits, base(ids).logits, atol=1e-5, rtol=0)
    prompts = ["Name three primary colours.", "Write a haiku about rain."]
    assert [r["text"] for r in generate(expanded, tok, prompts, "cpu", "fp32", 24, batch_size=2)] == \
        [r["text"] for r in generate(base, tok, prompts, "cpu", "fp32", 24, batch_size=2)]


def test_llama_pro_copies_reach_the_top_block_at_the_papers_share():
    """LLaMA-Pro adds one block per 4 (8 to LLaMA-2's 32, after blocks 4, 8, ..., 32); on a 30-block model
    every 4th block would give 7 copies and leave the top two blocks without one."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from methods.llama_pro import expand_blocks

    for layers, after in ((32, [4, 8, 12, 16, 20, 24, 28, 32]), (30, [4, 8, 11, 15, 19, 23, 26, 30])):
        model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16,
                                             num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2))
        new = expand_blocks(model, 4)
        assert [n - k for k, n in enumerate(new)] == after  # original blocks before each copy


def test_replay_mixes_general_domain_data_at_its_ratio(tiny, source):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    method = Replay(Replay.Config(ratio=0.25, general_ratio=0.25, buffer_size=50))
    first, second = _task("first", 30), _task("second", 30)
    ctx0 = _ctx(tok, first, 0)
    ctx0.data = source
    method.prepare(model, ctx0)
    gsm8k = {(i.prompt, i.reference) for i in source.gsm8k("train")}
    mixed = method.train_examples([i.training_pair() for i in first.learn], _ctx(tok, first, 1))
    general = [p for p in mixed if p.get("mix") == "general"]
    assert len(general) / len(mixed) == pytest.approx(0.25, abs=0.02)  # from the first task on
    assert all((p["user"], p["reply"]) in gsm8k for p in general)
    method.after_task(model, _ctx(tok, first, 1))
    mixed = method.train_examples([i.training_pair() for i in second.learn], _ctx(tok, second, 2, [first]))
    assert sum(p.get("mix") == "general" for p in mixed) / len(mixed) == pytest.approx(0.25, abs=0.02)
    assert sum(p.get("mix") == "replay" for p in mixed) / len(mixed) == pytest.approx(0.25, abs=0.02)
    assert sum("mix" not in p for p in mixed) == 30


def test_replay_ratios_must_leave_room_for_the_task():
    from harness.core.errors import ConfigError
    from harness.core.typed import build

    with pytest.raises(ConfigError, match="ratio .* general_ratio"):
        build(Replay.Config, {"ratio": 0.6, "general_ratio": 0.5}, "methods[0].config")
