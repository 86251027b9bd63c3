"""Evaluation speed on SmolLM2: the harness's multiple-choice scorers against lm-eval's
`multiple_choice` on the cross-check's 50 MMLU questions (same accuracy asserted, speed ratio recorded),
batched greedy generation of the stop probe at batch 1, 8 and 32 (on evaluation's packed linear layers), one
decoding step and one evaluation of the standard card with those layers and with torch's own side by side.
Run with: python -m tox -e bench -- tests/bench/test_bench_eval.py"""
import contextlib
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.integrations import lmeval_bridge
from harness.model.packed import packed_linears
from harness.model.precision import matmul_gflops
from harness.model.scoring import MC_BATCH, _length_batches, _shared_length, cloze_choices, generate, letter_choices
from tasks.chat import prompt_ids

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/evaluation_leaves.py
from evaluation_leaves import leaves  # noqa: E402

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

    with packed_linears(model, "cpu", "fp32"):  # as evaluation decodes (packed once, outside the timing)
        run()  # warm-up
        benchmark.pedantic(run, rounds=2, iterations=1)
    benchmark.extra_info.update({"batch": batch, "prompts": len(prompts), "max_new_tokens": NEW_TOKENS,
                                 "generated_tokens": tokens[-1], "tokens_per_s": tokens[-1] / benchmark.stats.stats.min,
                                 "threads": torch.get_num_threads()})


def test_decoding_step_against_the_machines_bounds(benchmark, smollm2, source):
    """One greedy decoding step at batch 8 (the prompts' prefill excluded), with evaluation's packed linear
    layers (harness.model.packed) and, side by side in alternate rounds, with torch's own nn.Linear (MKL), against
    what this machine allows for it: reading every weight once (bandwidth from a 1 GiB read and a 1 GiB copy,
    measured here) and the step's matmul FLOPs at the measured fp32 matmul peak; beside them, the step's matmuls
    alone (every linear layer once at batch 8, both ways), which shows how fast the kernels stream weights for so
    few rows. The two ways' tokens are asserted equal."""
    from harness.model.decoding import greedy_rows
    from harness.model.scoring import _pad_id, _prompt_batches

    model, tok = smollm2
    batch = 8
    prompts = [prompt_ids(tok, p.prompt) for p in source.stop_prompts()[:batch]]
    steps = {True: [], False: []}
    rows = {}

    def decode(packed: bool):
        with torch.inference_mode(), (packed_linears(model, "cpu", "fp32") if packed else contextlib.nullcontext()):
            (_, logits, cache, mask, _), = list(_prompt_batches(model, tok, prompts, "cpu", batch))
            start = time.perf_counter()
            rows[packed] = greedy_rows(model, logits, cache, mask, tok.eos_token_id, _pad_id(tok), NEW_TOKENS)
            steps[packed].append((time.perf_counter() - start) / (max(len(r) for r in rows[packed]) - 1))

    decode(True)  # warm-up
    decode(False)
    benchmark.pedantic(decode, args=(True,), setup=lambda: decode(False), rounds=3, iterations=1)
    assert rows[True] == rows[False]
    big = torch.ones(2 ** 28)  # 1 GiB of fp32
    read_gbs = read_gb_per_s(big)
    copy = torch.empty_like(big)
    copied = min(_seconds(lambda: copy.copy_(big)) for _ in range(3))
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # every matmul weight (the tied head once)
    flops = 2.0 * batch * sum(p.numel() for p in model.parameters() if p.dim() == 2)
    peak = matmul_gflops([torch.float32], n=2048, reps=5)[0]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    xs = {m.in_features: torch.randn(batch, m.in_features) for m in linears}
    matmuls = {}
    for packed in (False, True):  # the step's matmuls alone, weights in order: what the kernels stream at batch 8
        with torch.inference_mode(), (packed_linears(model, "cpu", "fp32") if packed else contextlib.nullcontext()):
            matmuls[packed] = min(_seconds(lambda: [m(xs[m.in_features]) for m in linears]) for _ in range(3))
    step, unpacked = min(steps[True][1:]), min(steps[False][1:])
    copy_gbs = 2 * big.numel() * 4 / copied / 1e9
    bandwidth_bound, compute_bound = weight_bytes / (read_gbs * 1e9), flops / (peak * 1e9)
    linear_bytes = sum(m.weight.numel() * 4 for m in linears)
    benchmark.extra_info.update({
        "batch": batch, "step_ms": step * 1e3, "tokens_per_s": batch / step, "weight_mb": weight_bytes / 1e6,
        "step_ms_torch_linear": unpacked * 1e3, "packed_speedup": unpacked / step,
        "read_gb_per_s": read_gbs, "copy_gb_per_s_read_plus_write": copy_gbs,
        "bandwidth_bound_ms": bandwidth_bound * 1e3, "share_of_bandwidth_bound": bandwidth_bound / step,
        "matmul_peak_gflops": peak, "compute_bound_ms": compute_bound * 1e3,
        "share_of_compute_bound": compute_bound / step, "matmuls_alone_ms": matmuls[True] * 1e3,
        "matmuls_alone_gb_per_s": linear_bytes / matmuls[True] / 1e9,
        "matmuls_alone_ms_torch_linear": matmuls[False] * 1e3,
        "matmuls_alone_gb_per_s_torch_linear": linear_bytes / matmuls[False] / 1e9,
        "threads": torch.get_num_threads()})


def _seconds(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def read_gb_per_s(big: torch.Tensor) -> float:
    """The read bandwidth of summing a large fp32 tensor, best of 3: what a decoding step's weights stream at."""
    return big.numel() * big.element_size() / min(_seconds(lambda: big.sum()) for _ in range(3)) / 1e9


class ForwardWork:
    """Every forward of a causal LM through `forward`, sorted into decoding steps (one new token a row) and the
    rest (prompts, cloze options, replies scored: prefill): calls, tokens, seconds and model FLOPs: 2 per matmul
    weight per token (the LM head only on the rows whose logits are kept) and 4·L·d per attended position. What
    each would take at least on this machine: the rest at the measured matmul peak, each decoding step the longer
    of its FLOPs at that peak and one read of every weight at the measured read bandwidth."""

    def __init__(self, model):
        from harness.run.compute import training_flops_per_token

        cfg = model.config
        self.head = model.get_input_embeddings().weight.numel() if cfg.tie_word_embeddings else 0
        self.head += sum(p.numel() for n, p in model.named_parameters() if n.startswith("lm_head"))
        self.body = (training_flops_per_token(model, 0) / 6) - self.head  # matmul weights below the head
        self.attention = 4 * cfg.num_hidden_layers * cfg.hidden_size
        self.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        self.reset()

    def reset(self) -> None:
        self.phases = {p: {"calls": 0, "tokens": 0, "seconds": 0.0, "flops": 0.0} for p in ("decode", "prefill")}
        self.step_flops: list[float] = []  # each decoding step's, for its own floor

    def wrap(self, forward):
        from harness.model.scoring import _CACHE_ARG

        def counted(model, *args, **kwargs):
            b, s = (kwargs["input_ids"] if "input_ids" in kwargs else args[0]).shape
            cache = kwargs.get(_CACHE_ARG)
            past = cache.get_seq_length() if cache is not None else 0
            keep = kwargs.get("logits_to_keep", 0)
            if torch.is_tensor(keep):  # positions per row ([b, k], as the harness gives them) or for every row ([k])
                rows = keep.numel() if keep.dim() == 2 else b * keep.numel()
            else:
                rows = b * (keep or s)  # 0: every position
            start = time.perf_counter()
            out = forward(model, *args, **kwargs)
            flops = 2 * self.body * b * s + 2 * self.head * rows + self.attention * b * s * (past + (s + 1) / 2)
            phase = self.phases["decode" if s == 1 else "prefill"]
            phase["calls"] += 1
            phase["tokens"] += b * s
            phase["seconds"] += time.perf_counter() - start
            phase["flops"] += flops
            if s == 1:
                self.step_flops.append(flops)
            return out
        return counted

    def bounds(self, peak_gflops: float, read_gbs: float) -> dict:
        read = self.weight_bytes / (read_gbs * 1e9)
        out = {name: {**p, "tflop": p["flops"] / 1e12,
                      "achieved_gflops": p["flops"] / p["seconds"] / 1e9 if p["seconds"] else None}
               for name, p in self.phases.items()}
        out["prefill"]["at_least_seconds"] = self.phases["prefill"]["flops"] / (peak_gflops * 1e9)
        out["decode"]["at_least_seconds"] = sum(max(read, f / (peak_gflops * 1e9)) for f in self.step_flops)
        return out


def test_one_evaluation_of_the_standard_card(benchmark, data_dir, monkeypatch):
    """One evaluation of the `standard` card's views and probes on SmolLM2 in fp32 (what every stage of a
    standard run pays), with its seconds by scorer; side by side in alternate rounds, the same evaluation with
    torch's own nn.Linear in place of the packed layers (harness.model.packed): the speedup, every decision
    (choice, correct, passed, stopped, generated token) equal, and the largest difference of each stored float.
    Then what limits it (ForwardWork, on the last packed round): its prefill's FLOPs at this machine's measured
    matmul peak and its decoding steps at the bandwidth bound, the fastest this evaluation could run in fp32 here."""
    from harness.run import evaluation
    from harness.run.runner import _Setup
    from harness.spec import config
    from harness.spec.spec import expand

    setup = _Setup(expand(config.load("standard"))[0], str(data_dir))
    work = ForwardWork(setup.model)
    monkeypatch.setattr(type(setup.model), "forward", work.wrap(type(setup.model).forward))
    seconds: dict = {}

    def timed(name, f):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        return call

    for name in ("cloze_outcomes", "letter_outcomes", "generate", "reply_logprob", "passes"):
        monkeypatch.setattr(evaluation, name, timed(name, getattr(evaluation, name)))
    packing = evaluation.packed_linears
    outputs, unpacked, last_packed = {}, [], {}

    def run(packed: bool = True):
        seconds.clear()
        work.reset()
        monkeypatch.setattr(evaluation, "packed_linears", packing if packed else lambda *a: contextlib.nullcontext())
        start = time.perf_counter()
        outputs[packed] = evaluation.evaluate(setup.model, setup.tok, setup.tasks, setup.probes, desc="bench",
                                              **setup.eval_kw)
        if not packed:
            unpacked.append((time.perf_counter() - start, dict(seconds)))
        else:
            last_packed.update(seconds=time.perf_counter() - start, phases=work.phases, step_flops=work.step_flops)

    def machine() -> tuple[float, float]:  # (matmul peak GFLOP/s, read GB/s): the floors' rates
        return matmul_gflops([torch.float32], n=2048, reps=5)[0], read_gb_per_s(torch.ones(2 ** 28))  # 1 GiB

    before = machine()
    benchmark.pedantic(run, setup=lambda: run(False), rounds=2, iterations=1)
    differences: dict = {}
    old, new = leaves(outputs[False]), leaves(outputs[True])
    assert old.keys() == new.keys()
    for path, value in old.items():
        if isinstance(value, float):
            field = path[-2] if isinstance(path[-1], int) else path[-1]
            differences[field] = max(differences.get(field, 0.0), abs(value - new[path]))
        else:
            assert new[path] == value, path
    fastest_unpacked = min(unpacked, key=lambda u: u[0])
    # the best rates seen before and after: load from other work in between lowers a floor's rate, never raises it
    peak, read_gbs = map(max, zip(before, machine()))
    work.phases, work.step_flops = last_packed["phases"], last_packed["step_flops"]
    phases = work.bounds(peak, read_gbs)
    assert phases["decode"]["calls"] and phases["prefill"]["calls"]
    outside = last_packed["seconds"] - sum(p["seconds"] for p in phases.values())  # tokenizing, code tests, scoring
    at_least = sum(p["at_least_seconds"] for p in phases.values()) + outside  # what faster forwards cannot remove
    benchmark.extra_info.update({
        "limits": {"phases_last_packed_round": phases, "matmul_peak_gflops": peak, "read_gb_per_s": read_gbs,
                   "seconds_last_packed_round": last_packed["seconds"], "outside_forwards_seconds": outside,
                   "at_least_seconds": at_least, "max_speedup_in_fp32": last_packed["seconds"] / at_least},
        "items": sum(len(v) for t in [*setup.tasks, *setup.probes] for v in t.views.values()),
        "seconds_by_scorer_last_round": seconds, "seconds_torch_linear": fastest_unpacked[0],
        "seconds_by_scorer_torch_linear": fastest_unpacked[1],
        "packed_speedup": fastest_unpacked[0] / benchmark.stats.stats.min,
        "largest_difference_by_field": differences, "threads": torch.get_num_threads()})


def test_decoding_against_llama_cpp(benchmark, smollm2, source):
    """What a user would pick instead for fast CPU decoding: llama.cpp (llama-cpp-python) on the same GGUF file
    the harness converts its fp32 weights from, greedy, one prompt at a time, 8 stop prompts x 32 new tokens,
    beside the harness at batch 1 and 8. llama.cpp computes on the file's 4-bit blocks, the harness on their
    fp32 expansion, so the replies may differ: the share of prompts with identical tokens is recorded. Skipped
    where llama-cpp-python is not installed (it builds from source here: pip install llama-cpp-python)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from harness.model import models

    model, tok = smollm2
    prompts = [p.prompt for p in source.stop_prompts()[:8]]
    llm = llama_cpp.Llama(model_path=str(models.smollm2_gguf()), n_ctx=1024, n_threads=torch.get_num_threads(),
                          verbose=False)
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    replies = []

    def llama():
        replies.clear()
        for text in texts:
            ids = llm.tokenize(text.encode(), add_bos=False, special=True)
            out = []
            for t in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
                out.append(t)
                if t == tok.eos_token_id or len(out) == NEW_TOKENS:
                    break
            replies.append(out[:-1] if out[-1] == tok.eos_token_id else out)  # the answer, as split_answer gives it

    llama()  # warm-up
    benchmark.pedantic(llama, rounds=2, iterations=1)
    llama_tps = sum(map(len, replies)) / benchmark.stats.stats.min
    harness_tps = {}
    for batch in (1, 8):
        generate(model, tok, prompts, "cpu", "fp32", NEW_TOKENS, batch_size=batch)  # warm-up
        start = time.perf_counter()
        ours = generate(model, tok, prompts, "cpu", "fp32", NEW_TOKENS, batch_size=batch)
        harness_tps[batch] = sum(r["tokens"] for r in ours) / (time.perf_counter() - start)
    same = sum(r["ids"] == ids for r, ids in zip(ours, replies)) / len(prompts)
    benchmark.extra_info.update({
        "llama_cpp_version": llama_cpp.__version__, "llama_cpp_tokens_per_s_batch_1": llama_tps,
        "harness_fp32_tokens_per_s_batch_1": harness_tps[1], "harness_fp32_tokens_per_s_batch_8": harness_tps[8],
        "llama_cpp_over_harness_batch_8": llama_tps / harness_tps[8], "prompts_with_identical_tokens": same,
        "threads": torch.get_num_threads()})
