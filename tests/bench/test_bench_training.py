"""The harness's training loop against a bare PyTorch loop, side by side in one run, and the model
FLOPs utilisation it reaches against this machine's measured matmul peak.

Same SmolLM2 copy, same 4 x 128-token batches (loss on the last 32 tokens), same fused AdamW, same
precision (what `precision: auto` picks here). A round trains one task: each loop builds its AdamW
at the start, as any per-task loop does (the optimiser state is allocated on the first step). The
bare loop is then forward, backward, step, zero_grad on pre-collated batches; the harness adds
collation, the method hooks, the finiteness check, gradient clipping and the progress bar. The
rounds alternate (bare timed in the benchmark's setup, harness timed by the benchmark) so that both
see the same machine state; on a shared 2-core machine single rounds vary by +-10%, hence 6 rounds
and medians.
Run with: python -m tox -e bench -- tests/bench/test_bench_training.py"""
import copy
import statistics
import time

import torch

from harness.model.precision import autocast, matmul_gflops, pick_precision
from harness.run.compute import training_flops_per_token
from harness.run.training import collate, train_task
from methods.base import StageContext
from methods.full import FullFineTune
from tasks.chat import IGNORE

BATCH, SEQ, REPLY, STEPS, ROUNDS = 4, 128, 32, 4, 6


def _examples():
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(BATCH * STEPS):
        ids = torch.randint(100, 40000, (SEQ,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE] * (SEQ - REPLY) + ids[SEQ - REPLY:]})
    return out


def test_training_loop_against_bare_loop(benchmark, smollm2):
    base, tok = smollm2
    precision, evidence = pick_precision("auto", "cpu")
    examples = _examples()
    tokens = BATCH * SEQ * STEPS
    bare_model, harness_model = copy.deepcopy(base), copy.deepcopy(base)
    batches = [collate(examples[i:i + BATCH], tok.pad_token_id, "cpu") for i in range(0, len(examples), BATCH)]
    method = FullFineTune()
    harness_model = method.prepare(harness_model, StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    ctx = StageContext(stage=1, task=None, seen=[], device="cpu", seed=0)
    bare_seconds = []

    def bare():
        bare_model.train()
        start = time.perf_counter()
        bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=method.config.lr, weight_decay=0.0, fused=True)
        for batch in batches:
            with autocast("cpu", precision):
                loss = bare_model(**batch).loss
            loss.backward()
            bare_opt.step()
            bare_opt.zero_grad(set_to_none=True)
        bare_seconds.append(time.perf_counter() - start)

    def harness():
        stats = train_task(harness_model, method, examples, ctx, epochs=1, batch_size=BATCH, pad_id=tok.pad_token_id,
                           device="cpu", precision=precision, seed=0, desc="bench")
        assert stats["tokens"] == tokens

    bare()  # warm-up of both
    harness()
    benchmark.pedantic(harness, setup=bare, rounds=ROUNDS, iterations=1)
    harness_tps = tokens / benchmark.stats.stats.median
    bare_tps = tokens / statistics.median(bare_seconds[1:])
    flops = training_flops_per_token(base, SEQ)
    peak = matmul_gflops([{"fp32": torch.float32, "bf16": torch.bfloat16}[precision]], n=2048, reps=5)[0]
    benchmark.extra_info.update({
        "precision": precision, "precision_evidence": evidence, "tokens_per_step": BATCH * SEQ,
        "harness_tokens_per_s": harness_tps, "bare_tokens_per_s": bare_tps, "harness_over_bare": harness_tps / bare_tps,
        "model_gflop_per_token": flops / 1e9, "model_gflops": harness_tps * flops / 1e9,
        "matmul_peak_gflops": peak, "mfu": harness_tps * flops / 1e9 / peak,
        "threads": torch.get_num_threads()})


def _quick_card_batches(tok, data_dir) -> list[dict]:
    """Every training batch of the quick card's four stages (full fine-tuning's data), in a seeded epoch order."""
    from harness.run.training import epoch_order
    from harness.spec import config
    from harness.spec.spec import expand
    from tasks.chat import encode_pairs
    from tasks.data import DataSource
    from tasks.registry import load_stream

    spec = expand(config.load("quick"))[0]
    budget = spec.budget_config()
    tasks, _ = load_stream(DataSource(str(data_dir)), list(spec.stream), list(spec.probes), budget, spec.data_seed,
                           spec.domains)
    batches = []
    for task in tasks:
        encoded = encode_pairs(tok, [i.training_pair() for i in task.learn], budget.max_length)
        order = epoch_order(encoded, torch.Generator().manual_seed(0))
        batches += [collate([encoded[i] for i in order[s:s + budget.batch_size]], tok.pad_token_id, "cpu")
                    for s in range(0, len(order), budget.batch_size)]
    return batches


def test_labelled_logits_against_full_logits(benchmark, smollm2, data_dir):
    """The training forward with the LM head only where a label is predicted (harness.run.training.forward)
    against the full-logits forward that transformers' loss takes, on the quick card's training batches in
    fp32: FLOPs of forward + backward counted by torch's FlopCounterMode, seconds per pass over the batches
    (rounds alternate as above), and the losses, which must agree."""
    from torch.utils.flop_counter import FlopCounterMode

    from harness.run.training import forward

    base, tok = smollm2
    model, method = copy.deepcopy(base), FullFineTune()
    model.train()
    batches = _quick_card_batches(tok, data_dir)
    losses = {"full": [], "labelled": []}
    full_seconds = []

    def step(kind, batch):
        loss = model(**batch).loss if kind == "full" else forward(model, method, batch).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss.item()

    def full():
        start = time.perf_counter()
        losses["full"] = [step("full", b) for b in batches]
        full_seconds.append(time.perf_counter() - start)

    def labelled():
        losses["labelled"] = [step("labelled", b) for b in batches]

    flops = {}
    for kind in ("full", "labelled"):
        with FlopCounterMode(display=False) as counter:
            for b in batches:
                step(kind, b)
        flops[kind] = counter.get_total_flops()
    benchmark.pedantic(labelled, setup=full, rounds=3, iterations=1)
    worst = max(abs(a - b) / abs(a) for a, b in zip(losses["full"], losses["labelled"]))
    assert worst < 1e-5, worst
    labelled_share = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches) / \
        sum(b["input_ids"].numel() for b in batches)
    benchmark.extra_info.update({
        "batches": len(batches), "labelled_position_share": labelled_share,
        "flops_full": flops["full"], "flops_labelled": flops["labelled"],
        "flops_saved": 1 - flops["labelled"] / flops["full"],
        "full_seconds": statistics.median(full_seconds), "labelled_seconds": benchmark.stats.stats.median,
        "speedup": statistics.median(full_seconds) / benchmark.stats.stats.median, "loss_max_rel_diff": worst,
        "threads": torch.get_num_threads()})
    assert flops["labelled"] < 0.85 * flops["full"]  # the target: at least 15% fewer FLOPs per step
