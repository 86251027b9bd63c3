"""Where a greedy decoding step's time goes (the GPU check found it nearly flat in the batch size).

    python scripts/decode_profile.py --random-init .gpu/model --out "$OUT"        # on a GPU machine
    python scripts/decode_profile.py --device cpu --model tiny --steps 4 --out /tmp   # the same path on a CPU

Times, per decoding step at batch 1 and 32: the harness's greedy decoding (harness.model.scoring.generate; on
CUDA its steps after the first replayed as a CUDA graph: `harness_graphs_recorded` batches, `_replayed` steps; a
recording that fails leaves the steps eager, with the same tokens) and the same with every step eager
(`harness_eager_`, and whether the two made the same tokens), a bare loop of the model's forward passes with
transformers' own cache (no harness code around it), the bare loop and the harness's eager loop under
torch.profiler (the summed time of the device's kernels and how many were launched, per forward pass:
`device_busy_ms_per_step`, `kernel_launches_per_step` for the bare loop, the same with `harness_` for the
harness's; added after the committed H200 run, as were the graphs), and transformers' own greedy `generate` with
its dynamic cache and with a static one, which on CUDA it compiles (torch.compile, mode reduce-overhead: CUDA
graphs). The top operators by host time are written beside them. Writes <out>/decode-profile-<device>.json (after
each batch) and <out>/decode-profile-<device>.txt.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import ROOT, _sync, device_slug, random_init  # noqa: E402  (gpu_check puts the repository on sys.path)

from harness.model import decoding, models  # noqa: E402
from harness.model.precision import linear_layers, place_weights  # noqa: E402
from harness.model.scoring import autocast, generate  # noqa: E402
from harness.store.files import write_text_atomic  # noqa: E402
from tasks.chat import prompt_ids  # noqa: E402


def bare_steps(model, ids: torch.Tensor, steps: int, device: str, precision: str) -> float:
    """Seconds per step of `steps` one-token forward passes after a prefill, transformers' cache, argmax each."""
    with torch.inference_mode(), autocast(device, precision):
        out = model(input_ids=ids, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        cache = out.past_key_values
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        _sync(device)
    return (time.perf_counter() - start) / steps


def hf_generate(model, ids: torch.Tensor, steps: int, device: str, static: bool) -> float:
    """Seconds per new token of transformers' greedy `generate`, every row made to decode `steps` tokens; with a
    static cache it compiles the forward on CUDA, so two calls first warm it up (and record its graphs). `model`
    holds every weight in the run's dtype: a static cache takes the model's dtype, which autocast's k/v would not."""
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                  pad_token_id=0, **({"cache_implementation": "static"} if static else {}))
    with torch.inference_mode():
        for _ in range(2):
            model.generate(ids, **kwargs)
        _sync(device)
        start = time.perf_counter()
        model.generate(ids, **kwargs)
        _sync(device)
    return (time.perf_counter() - start) / steps


def profiled(run, passes: int, device: str, prefix: str) -> tuple[dict, str]:
    """`run()` (seconds per step) under torch.profiler: those seconds, the device's kernel time and launches per
    forward pass (`passes` of them), keyed with `prefix`, and the op table."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        seconds = run()
    events = prof.key_averages()
    kernels = [e for e in events if getattr(e, "device_type", None) is not None
               and str(e.device_type).endswith("CUDA") and e.self_device_time_total > 0]
    device_us = sum(e.self_device_time_total for e in kernels)
    launches = sum(e.count for e in events if "LaunchKernel" in e.key)  # cudaLaunchKernel, cuLaunchKernelEx, ...
    table = events.table(sort_by="self_cpu_time_total", row_limit=25)
    return ({f"{prefix}profiled_step_ms": seconds * 1e3, f"{prefix}device_busy_ms_per_step": device_us / 1e3 / passes,
             f"{prefix}kernel_launches_per_step": launches / passes}, table)


def harness_steps(model, tok, prompts: list[str], steps: int, device: str, precision: str,
                  capture: bool = True) -> tuple[float, int, list]:
    """(seconds per step, steps, the replies' tokens) of the harness's greedy decoding of `prompts` as one batch: its
    forward passes are the prompts' two (shared prefix, then the rest) and one per step after the first, steps + 1
    in all; `capture`: on CUDA, the steps after the first replayed as a CUDA graph (harness.model.decoding)."""
    _sync(device)
    start = time.perf_counter()
    replies = generate(model, tok, prompts, device, precision, steps, batch_size=len(prompts), capture=capture)
    _sync(device)
    made = max(r["tokens"] + r["stopped"] for r in replies)
    return (time.perf_counter() - start) / max(made, 1), made, [r["ids"] for r in replies]


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--model", default=models.SMOLLM2)
    ap.add_argument("--random-init", metavar="FOLDER", help="config.json + tokenizer of the model, weights random")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench"))
    args = ap.parse_args(argv)
    precision = "bf16" if args.device == "cuda" else "fp32"
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    report = {"device_name": name, "torch": torch.__version__, "precision": precision, "model": args.model,
              "random_weights": bool(args.random_init), "steps": args.steps, "batches": {}}
    texts = []
    out = Path(args.out) / f"decode-profile-{device_slug(name)}.json"
    with tempfile.TemporaryDirectory() as tmp:
        model_name = random_init(args.random_init, Path(tmp) / "model") if args.random_init else args.model
        model, tok = models.load(model_name, stored_dtype=precision == "bf16")
        place_weights(model, precision, linear_layers(model), loading=True)
        model.to(args.device).eval()
        whole = copy.deepcopy(model).to(torch.bfloat16) if precision == "bf16" else model  # for hf_generate
        prompts = [f"Write a short note about the number {i}." for i in range(32)]
        for batch in (1, 32):
            chosen = prompts[:batch]
            harness_steps(model, tok, chosen, 4, args.device, precision)  # warm-up
            before = dict(decoding.COUNTS)
            harness, steps, tokens = harness_steps(model, tok, chosen, args.steps, args.device, precision)
            graphs = {f"harness_graphs_{k}": decoding.COUNTS[k] - before[k] for k in before}
            harness_steps(model, tok, chosen, 4, args.device, precision, capture=False)  # warm-up
            eager, _, eager_tokens = harness_steps(model, tok, chosen, args.steps, args.device, precision, capture=False)
            rows = [prompt_ids(tok, p) for p in chosen]
            width = min(len(r) for r in rows)
            ids = torch.tensor([r[:width] for r in rows], device=args.device)
            bare_steps(model, ids, 4, args.device, precision)  # warm-up
            bare_ms = bare_steps(model, ids, args.steps, args.device, precision) * 1e3
            measured, tables = {}, []
            for prefix, run in (("", lambda: bare_steps(model, ids, args.steps, args.device, precision)),
                                ("harness_", lambda: harness_steps(model, tok, chosen, args.steps, args.device,
                                                                   precision, capture=False)[0])):
                try:  # both are steps + 1 forward passes: the prefill and one per step after the first
                    numbers, table = profiled(run, args.steps + 1, args.device, prefix)
                    measured.update(numbers)
                    tables.append(f"{'harness' if prefix else 'bare'} loop\n{table}")
                except Exception as e:  # the timings above stand without the profile
                    measured[f"{prefix}profile_error"] = f"{type(e).__name__}: {e}"[:500]
            for key, static in (("hf_generate_step_ms", False), ("hf_generate_static_step_ms", True)):
                try:
                    measured[key] = hf_generate(whole, ids, args.steps, args.device, static) * 1e3
                except Exception as e:  # the timings above stand without it
                    measured[key.replace("_ms", "_error")] = f"{type(e).__name__}: {e}"[:500]
            report["batches"][str(batch)] = {"harness_step_ms": harness * 1e3, "harness_steps": steps, **graphs,
                                             "harness_eager_step_ms": eager * 1e3,
                                             "harness_tokens_equal_eager": tokens == eager_tokens,
                                             "bare_step_ms": bare_ms, **measured}
            texts.append(f"batch {batch}, " + f"\n\nbatch {batch}, ".join(tables))
            print(f"batch {batch}: {report['batches'][str(batch)]}", flush=True)
            write_text_atomic(out, json.dumps(report, indent=2) + "\n")
            write_text_atomic(out.with_suffix(".txt"), "\n\n".join(texts))
    print(f"decode_profile: wrote {out}")
    return out


if __name__ == "__main__":
    main()
