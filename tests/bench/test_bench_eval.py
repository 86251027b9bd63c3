"""Evaluation speed on SmolLM2: the harness's multiple-choice scorers against lm-eval's
`multiple_choice` on the cross-check's 50 MMLU questions (same accuracy asserted, speed ratio recorded),
and batched greedy generation of the stop probe at batch 1, 8 and 32.
Run with: python -m tox -e bench -- tests/bench/test_bench_eval.py"""
import time

import pytest
import torch

from harness.integrations import lmeval_bridge
from harness.model.precision import matmul_gflops
from harness.model.scoring import MC_BATCH, _length_batches, _shared_length, cloze_choices, generate, letter_choices
from tasks.chat import prompt_ids

N = 50
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def questions(mmlu_short):
    return mmlu_short(N)  # the cross-check's questions (tests/test_lmeval_crosscheck.py)


def letter_forward_flops(model, tok, questions) -> tuple[int, float]:
    """(prompt tokens the letter scorer runs, their forward FLOPs): each batch's shared prefix once plus
    every prompt's rest, through every matmul weight but the LM head (computed at one position each)."""
    prompts = [prompt_ids(tok, q.letter_prompt()) for q in questions]
    tokens = 0
    for batch in _length_batches(prompts, MC_BATCH):
        rows = [prompts[i] for i in batch]
        shared = _shared_length(rows)
        tokens += shared + sum(len(r) - shared for r in rows)
    weights = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in name)
    return tokens, 2.0 * weights * tokens


@pytest.mark.parametrize("scorer", ["cloze", "letter"])
def test_multiple_choice_against_lm_eval(benchmark, smollm2, questions, scorer, tmp_path):
    model, tok = smollm2
    choose = (lambda qs: cloze_choices(model, tok, qs, "cpu", "fp32", norm="none")) if scorer == "cloze" else \
        (lambda qs: letter_choices(model, tok, qs, "cpu", "fp32"))
    lmeval_bridge.write_task(questions, tok, scorer, tmp_path, f"bench_{scorer}")
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)  # built once, outside the timing
    ours = []

    def harness():
        ours.append(sum(c == q.answer for c, q in zip(choose(questions), questions)) / N)

    lmeval_seconds, lmeval_acc = [], []

    def lm_eval():
        start = time.perf_counter()
        scores = lmeval_bridge.evaluate(model, tok, None, [f"bench_{scorer}"], manager=manager)
        lmeval_seconds.append(time.perf_counter() - start)
        lmeval_acc.append(scores[f"bench_{scorer}"]["acc"])

    benchmark.pedantic(harness, setup=lm_eval, rounds=2, iterations=1)
    assert ours[0] == pytest.approx(lmeval_acc[0])  # the same questions scored the same
    ratio = min(lmeval_seconds) / benchmark.stats.stats.min
    benchmark.extra_info.update({"questions": N, "accuracy": ours[0], "lm_eval_accuracy": lmeval_acc[0],
                                 "lm_eval_seconds": min(lmeval_seconds), "harness_seconds": benchmark.stats.stats.min,
                                 "speedup_over_lm_eval": ratio, "threads": torch.get_num_threads()})
    if scorer == "letter":  # lm-eval also runs one forward per letter question: how far compute lets us go
        tokens, flops = letter_forward_flops(model, tok, questions)
        peak = matmul_gflops([torch.float32], n=2048, reps=5)[0]
        benchmark.extra_info.update({
            "prompt_tokens_run": tokens, "forward_tflop": flops / 1e12,
            "achieved_gflops": flops / 1e9 / benchmark.stats.stats.min, "matmul_peak_gflops": peak,
            "max_speedup_at_peak": min(lmeval_seconds) / (flops / 1e9 / peak)})


@pytest.mark.parametrize("batch", [1, 8, 32])
def test_generation_throughput(benchmark, smollm2, source, batch):
    model, tok = smollm2
    prompts = [p.prompt for p in source.stop_prompts()[:max(batch, 8)]]
    tokens = []

    def run():
        out = generate(model, tok, prompts, "cpu", "fp32", NEW_TOKENS, batch_size=batch)
        tokens.append(sum(r["tokens"] for r in out))

    run()  # warm-up
    benchmark.pedantic(run, rounds=2, iterations=1)
    benchmark.extra_info.update({"batch": batch, "prompts": len(prompts), "max_new_tokens": NEW_TOKENS,
                                 "generated_tokens": tokens[-1], "tokens_per_s": tokens[-1] / benchmark.stats.stats.min,
                                 "threads": torch.get_num_threads()})
