"""The GPU check: what clbench does on a GPU, measured in one short call (within 8 minutes on one GPU).

    bash scripts/gpu-check.sh                     # a GPU machine with clbench installed (scripts/setup.sh)
    python scripts/gpu_check.py --device cpu --model tiny --preset tiny --methods full   # the same path on a CPU

1. The device: its name, torch and CUDA versions, and its measured peaks: a large bf16 matmul (fp32 where
   the run's precision is fp32) and a large tensor copy (memory bandwidth, bytes read and written).
2. Training throughput: full fine-tuning steps of 4 x 512 tokens in the run's precision (bf16 on CUDA):
   tokens/s, and model FLOPs utilisation (harness.run.compute.training_flops_per_token) against the
   measured matmul peak. Then, under bf16, greedy decoding of the trained model (every weight stored fp32, as a
   full run's) at batch 8 with its weights cast to bf16 once, as an evaluation does (harness.model.packed), and
   cast by autocast in every step: the time per step of each, and whether the tokens are the same.
3. Generation: the harness's greedy decoding (harness.model.scoring.generate) at batch 1, 8, 32: tokens/s,
   model FLOPs utilisation against the measured matmul peak, and the share of the memory-bandwidth bound
   (every weight read once per decoding step at the measured copy bandwidth); on CUDA its steps replayed as
   CUDA graphs (how many batches were recorded and steps replayed: a recording that fails leaves the steps eager,
   with the same tokens), and beside them every step eager: the time per step and whether the tokens are the same.
4. The preset card in bf16 on the device, one run per method in this process (full, lora, and qlora: its
   base quantized by bitsandbytes on CUDA): status, the precision recorded, and the device-hours each run
   reports against the wall time measured here (stage 0 and model loading are outside a run's total).
5. Sharded training on the device: FSDP in a process group of one rank (NCCL on CUDA, gloo on a CPU), what each
   worker of a sharded run does (harness.run.sharded.fit_shard), against the same stage trained by one process,
   for full fine-tuning and LoRA: every step's loss and every trained weight compared. Last, so that a collective
   that hangs costs no other section; Ray Train's plumbing around it is tested on CPUs (tests/test_sharded.py).

Writes <out>/gpu-check-<device>.json after each section and each card run ("complete": false until the last),
so a check stopped by its time limit keeps what it measured. --random-init FOLDER takes the model's architecture
(config.json and tokenizer files, a few MB) with random weights, for a machine that can neither fetch nor carry
the weights: throughput and the code paths are checked, the card's scores then mean nothing, and the file says so.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import platform
import re
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.core.typed import build  # noqa: E402
from harness.model import decoding, models  # noqa: E402
from harness.model.packed import packed_linears  # noqa: E402
from harness.model.precision import linear_layers, pick_precision, place_weights  # noqa: E402
from harness.model.scoring import generate  # noqa: E402
from harness.report.cost import workload  # noqa: E402
from harness.run import sharded  # noqa: E402
from harness.run.compute import training_flops_per_token  # noqa: E402
from harness.run.runner import execute, seed_everything  # noqa: E402
from harness.run.training import train_task  # noqa: E402
from harness.spec import config  # noqa: E402
from harness.spec.spec import expand  # noqa: E402
from harness.store.files import write_text_atomic  # noqa: E402
from harness.store.store import Store  # noqa: E402
from methods.base import StageContext  # noqa: E402
from methods.registry import resolve_method  # noqa: E402
from tasks.chat import IGNORE, encode_pairs, prompt_ids  # noqa: E402


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _best_seconds(fn, device: str, warm: int, reps: int) -> float:
    for _ in range(warm):
        fn()
    _sync(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def peaks(device: str, dtype, small: bool) -> dict:
    """Measured matmul TFLOP/s in `dtype` and copy bandwidth in GB/s (best of several)."""
    n = 1024 if small else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    matmul = _best_seconds(lambda: a @ b, device, 3, 10)
    size = (64 if small else 2048) * 2**20
    src, dst = torch.empty(size, dtype=torch.uint8, device=device), torch.empty(size, dtype=torch.uint8, device=device)
    copy = _best_seconds(lambda: dst.copy_(src), device, 2, 10)
    return {"matmul_n": n, "matmul_dtype": str(dtype).removeprefix("torch."), "matmul_tflops": 2 * n**3 / matmul / 1e12,
            "copy_bytes": size, "copy_gb_per_s": 2 * size / copy / 1e9}


def training(model, linears, device: str, precision: str, seq: int, steps: int, peak_tflops: float) -> dict:
    """Full fine-tuning steps on random tokens (loss on the last quarter of each row), every parameter trained
    from fp32 master weights as a `full` run's are (place_weights after its prepare)."""
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    place_weights(model, precision, linears)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0, fused=True)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, model.config.vocab_size - 1, (4, seq), generator=g).to(device)
    labels = ids.clone()
    labels[:, : seq * 3 // 4] = IGNORE
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        with amp:
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # the optimiser's state is allocated on the first step
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - start
    tps = 4 * seq * steps / seconds
    flops = training_flops_per_token(model, seq)
    model.eval()
    return {"batch": 4, "seq": seq, "steps": steps, "tokens_per_s": tps, "model_tflops": tps * flops / 1e12,
            "mfu_vs_measured_matmul": tps * flops / 1e12 / peak_tflops}


def generation(model, tok, device: str, precision: str, new_tokens: int, peaks: dict) -> dict:
    """Greedy decoding at batch 1, 8 and 32: tokens/s; model FLOPs utilisation (the forward third of
    training_flops_per_token per generated token, at the mean context, prefill in the time but not in the FLOPs:
    a lower bound); and the share of the memory-bandwidth bound, a decoding step's floor: every weight, as stored,
    read once per step at the measured copy bandwidth (bytes read and written per second), over the measured time
    per step (one step per token of the longest reply of a batch; prefill included). On CUDA the steps are replayed
    as CUDA graphs (harness.model.decoding); the same batches decoded with every step eager beside them
    (`eager_`), and whether the two made the same tokens."""
    prompts = [f"Write a short note about the number {i}." for i in range(32)]
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # as stored here
    bound = weight_bytes / (peaks["copy_gb_per_s"] * 1e9)  # seconds a step takes at least
    out = {}
    for batch in (1, 8, 32):
        chosen = prompts[: max(batch, 2)]  # batch 1: two batches of one; else one batch of them all
        timed = {capture: _timed_generate(model, tok, chosen, device, precision, new_tokens, batch, capture=capture)
                 for capture in (True, False)}
        seconds, replies, graphs = timed[True]
        lengths = [r["tokens"] + r["stopped"] for r in replies]  # each row's tokens, its end of turn included
        steps = _steps(replies, batch)
        context = sum(len(prompt_ids(tok, p)) for p in chosen) / len(chosen) + sum(lengths) / len(lengths) / 2
        tps = sum(lengths) / seconds
        flops = training_flops_per_token(model, round(context)) / 3
        eager_seconds, eager_replies, _ = timed[False]
        out[str(batch)] = {"prompts": len(chosen), "tokens": sum(lengths), "tokens_per_s": tps,
                           "model_tflops": tps * flops / 1e12,
                           "mfu_vs_measured_matmul": tps * flops / 1e12 / peaks["matmul_tflops"],
                           "step_ms": seconds / steps * 1e3, **graphs, "weight_bytes": weight_bytes,
                           "bandwidth_bound_ms": bound * 1e3, "share_of_bandwidth_bound": bound / (seconds / steps),
                           "eager_step_ms": eager_seconds / steps * 1e3,
                           "tokens_equal_eager": [r["ids"] for r in replies] == [r["ids"] for r in eager_replies]}
    return out


def trained_generation(model, tok, device: str, new_tokens: int, batch: int = 8) -> dict:
    """Greedy decoding at batch 8 of the trained model (every weight stored fp32, as a full run's; bf16 autocast),
    as an evaluation runs it (harness.model.packed: the weights cast to bf16 once) and with autocast casting them
    in each step (which a step replayed as a CUDA graph cannot cache): the time per step of each, and whether
    the tokens are the same."""
    prompts = [f"Write a short note about the number {i}." for i in range(batch)]
    timed = {}
    for cast_once in (True, False):
        with packed_linears(model, device, "bf16") if cast_once else contextlib.nullcontext():
            timed[cast_once] = _timed_generate(model, tok, prompts, device, "bf16", new_tokens, batch)
    (once, replies, graphs), (each, each_replies, each_graphs) = timed[True], timed[False]
    return {"batch": batch, "fp32_weights": sum(p.numel() for p in model.parameters() if p.dtype == torch.float32),
            "cast_once_step_ms": once / _steps(replies, batch) * 1e3, **graphs,
            "cast_each_step_ms": each / _steps(each_replies, batch) * 1e3,
            **{f"cast_each_{k}": v for k, v in each_graphs.items()},
            "tokens_equal": [r["ids"] for r in replies] == [r["ids"] for r in each_replies]}


def _timed_generate(model, tok, prompts: list[str], device: str, precision: str, new_tokens: int, batch: int, **kw):
    """(seconds, replies, graphs) of greedy decoding of `prompts` in batches of `batch`, after a warm-up of one
    batch; graphs: how many batches' steps were recorded as CUDA graphs and how many steps replayed them."""
    generate(model, tok, prompts[:batch], device, precision, 4, batch_size=batch, **kw)
    _sync(device)
    before = dict(decoding.COUNTS)
    start = time.perf_counter()
    replies = generate(model, tok, prompts, device, precision, new_tokens, batch_size=batch, **kw)
    _sync(device)
    seconds = time.perf_counter() - start
    return seconds, replies, {f"graphs_{k}": decoding.COUNTS[k] - before[k] for k in before}


def _steps(replies: list[dict], batch: int) -> int:
    """Decoding steps the replies took: one per token of the longest reply of a batch (its end of turn included);
    one prompt at a time, one per token of every reply."""
    lengths = [r["tokens"] + r["stopped"] for r in replies]
    return max(sum(lengths) if batch == 1 else max(lengths), 1)


def card_runs(preset: str, model: str, device: str, precision: str, methods: list[str], results: Path):
    """Run the card's runs one by one, yielding each run's record."""
    cfg = config.load(preset, [f"model={model}", f"device={device}", f"precision={precision}",
                               f"methods=[{', '.join(methods)}]"])
    work = workload(cfg)  # what harness.report.cost calibrates its rates with (clbench protocol show --calibrate)
    first_run = True
    for spec in expand(cfg):
        start = time.perf_counter()
        run = execute(spec, Store(results), data_dir=cfg.data_dir)
        wall = time.perf_counter() - start
        cost = run.get("compute", {})
        hours = cost.get("gpu_hours") if device == "cuda" else cost.get("cpu_hours")
        # stage 0 is computed by the card's first run and read from the store by the others, unless a run
        # scored its own prepared model (qlora's quantized base)
        first = run["stages"][0] if run["stages"] else {}
        stage0 = first.get("seconds", 0.0) if first_run or first.get("prepared") else 0.0
        first_run = False
        record = {"method": spec.method, "status": run["status"], "error": run["error"],
                  "precision": run.get("precision"), "device_name": cost.get("device_name"),
                  "device_count": cost.get("device_count"), "device_hours_reported": hours,
                  "train_seconds": cost.get("train_seconds"), "eval_seconds": cost.get("eval_seconds"),
                  "train_tokens": cost.get("train_tokens"), "stages": cost.get("stages"),
                  "model_parameters": work.params, "eval_tokens_per_evaluation": work.eval_tokens,
                  "stage0_seconds": stage0, "model_load_seconds": run.get("model_load_seconds"),
                  "wall_seconds": wall, "peak_memory_mb": cost.get("peak_memory_mb"),
                  # what no record counts: data loading, prepare, storing, the compute records themselves
                  "unaccounted_seconds": wall - sum(cost.get(k) or 0.0 for k in ("train_seconds", "eval_seconds"))
                  - stage0 - (run.get("model_load_seconds") or 0.0),
                  # device-hours over wall hours x devices: below 1 by stage 0 and loading, which no run counts
                  "reported_over_wall": (hours * 3600 / (wall * cost["device_count"]) if hours else None)}
        print(f"  {spec.method}: {run['status']} in {wall:.0f} s" + (f" ({run['error']})" if run["error"] else ""),
              flush=True)
        yield record


SHARDED_METHODS = {"full": {}, "lora": {"dropout": 0.0}}  # without dropout: a worker draws its own masks


def sharded_training(model_name: str, device: str, precision: str, epochs: int = 2) -> dict:
    """Per method, one stage of 16 short chat pairs (batch 4) trained twice from the same prepared model: by one
    process (harness.run.training.train_task) and by fit_shard in a process group of this process alone, FSDP
    sharding and gathering every unit over NCCL on CUDA (gloo on a CPU). Their losses and trained weights as the
    largest differences, and the seconds per step of each (the sharded one's first step sets FSDP up). A method
    that fails records its error and the next one runs."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if device == "cuda":
        torch.cuda.set_device(0)
    out = {"backend": "nccl" if device == "cuda" else "gloo", "world_size": 1}
    try:
        dist.init_process_group(out["backend"], init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                                timeout=datetime.timedelta(seconds=120))
    except Exception as e:
        return {**out, "error": _error(e)}
    try:
        for name, settings in SHARDED_METHODS.items():
            try:
                out[name] = _sharded_pair(model_name, name, settings, device, precision, epochs)
            except Exception as e:  # the check's one call goes on to the next method
                out[name] = {"error": _error(e)}
    finally:
        dist.destroy_process_group()
    return out


def _error(e: Exception) -> str:
    """An exception in one line, with where it was raised: what a one-shot device call has to go on."""
    frame = traceback.extract_tb(e.__traceback__)[-1]
    message = str(e).splitlines()[0][:300] if str(e) else ""
    return f"{type(e).__name__}: {message} (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"


def _sharded_pair(model_name: str, name: str, settings: dict, device: str, precision: str, epochs: int) -> dict:
    model, tok = models.load(model_name, stored_dtype=precision == "bf16")
    linears = linear_layers(model)
    place_weights(model, precision, linears, loading=True)
    cls = resolve_method(name)
    method = cls(build(cls.Config, settings, "method_config"))  # as a run builds it (harness.run.runner)
    ctx = StageContext(stage=1, task=None, seen=[], device=device, seed=0, precision=precision)
    seed_everything(0)
    model = method.prepare(model, ctx)
    place_weights(model, precision, linears)
    pairs = [{"user": f"What is {i} plus {i}?", "reply": f"{i} plus {i} is {2 * i}."} for i in range(16)]
    examples = encode_pairs(tok, pairs, 128)
    kw = dict(epochs=epochs, batch_size=4, pad_id=tok.pad_token_id, precision=precision, seed=7, desc=name)
    one = copy.deepcopy(model).to(device)
    alone = train_task(one, method, examples, ctx, device=device, **kw)
    shards, state = sharded.fit_shard(model, method, ctx, examples, device=torch.device(device), **kw)
    trained = dict(one.named_parameters())
    return {"steps": alone["steps"], "trained_parameters": sum(v.numel() for v in state.values()),
            "losses_one_process": alone["losses"], "losses_sharded": shards["losses"],
            "loss_max_rel_diff": max(abs(a - b) / abs(a) for a, b in zip(alone["losses"], shards["losses"])),
            "weight_max_abs_diff": max((state[n].float() - trained[n].detach().cpu().float()).abs().max().item()
                                       for n in state),
            "step_seconds_one_process": alone["seconds"] / alone["steps"],
            "step_seconds_sharded": shards["seconds"] / shards["steps"]}


def device_slug(name: str) -> str:
    """A device's name as a report's file name takes it: 'NVIDIA H200' -> 'nvidia-h200'."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def random_init(folder: str, into: Path) -> str:
    """A model folder with `folder`'s config and tokenizer and random weights (seed 0)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(into)
    AutoTokenizer.from_pretrained(folder).save_pretrained(into)
    return str(into)


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--model", default=models.SMOLLM2)
    ap.add_argument("--random-init", metavar="FOLDER", help="config.json + tokenizer of the model, weights random")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--methods", nargs="+", default=["full", "lora", "qlora"])
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench"))
    args = ap.parse_args(argv)
    start = time.perf_counter()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: --device cuda but torch sees no CUDA device (torch " + torch.__version__ + ")")
    precision = "bf16" if args.device == "cuda" else pick_precision("auto", "cpu")[0]
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    report = {"device": args.device, "device_name": name, "torch": torch.__version__,
              "cuda": torch.version.cuda if args.device == "cuda" else None, "precision": precision,
              "model": args.model, "random_weights": bool(args.random_init), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    out = Path(args.out) / f"gpu-check-{device_slug(name)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(done: bool) -> None:
        """Write what is measured so far: a check stopped by its time limit keeps the sections it finished."""
        report["seconds"], report["complete"] = time.perf_counter() - start, done
        write_text_atomic(out, json.dumps(report, indent=2) + "\n")  # a kill mid-write keeps the last one

    with tempfile.TemporaryDirectory() as tmp:
        model_name = random_init(args.random_init, Path(tmp) / "model") if args.random_init else args.model
        print(f"gpu_check on {name}: peaks", flush=True)
        small = args.device == "cpu"
        report["peaks"] = peaks(args.device, torch.bfloat16 if precision == "bf16" else torch.float32, small)
        save(False)
        model, tok = models.load(model_name, stored_dtype=precision == "bf16")
        linears = linear_layers(model)
        place_weights(model, precision, linears, loading=True)  # stored as a run stores them (runner._Setup)
        model.to(args.device)
        print("gpu_check: generation", flush=True)
        report["generation"] = generation(model, tok, args.device, precision, args.new_tokens, report["peaks"])
        save(False)
        print("gpu_check: training", flush=True)
        report["training"] = training(model, linears, args.device, precision, args.seq, args.steps,
                                      report["peaks"]["matmul_tflops"])
        save(False)
        if precision == "bf16":
            print("gpu_check: decoding with trained fp32 weights", flush=True)
            report["generation_trained"] = trained_generation(model, tok, args.device, args.new_tokens)
            save(False)
        del model
        print(f"gpu_check: the {args.preset} card, {' '.join(args.methods)}", flush=True)
        report["runs"] = []
        for record in card_runs(args.preset, model_name, args.device, precision, args.methods, Path(tmp) / "results"):
            report["runs"].append(record)
            save(False)
        print("gpu_check: sharded training, one rank", flush=True)
        report["sharded"] = sharded_training(model_name, args.device, precision)
    save(True)
    print(f"gpu_check: wrote {out} ({report['seconds']:.0f} s)")
    return out


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
