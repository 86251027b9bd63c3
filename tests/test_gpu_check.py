"""scripts/gpu_check.py, the GPU check, on this CPU with the tiny model: every section is measured and
written, and the device-hours a run reports, with stage 0 and loading beside them, account for most of its
wall time and never more (so the same check on a GPU compares GPU-hours with wall time)."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"
CARD = ("name: gpu-check-test\nmodel: tiny\nprecision: fp32\nstream: [stem, humanities]\nprobes: [general]\n"
        "methods: [full]\nbudget: {learn_items: 2, transfer_items: 2, general_items: 2, epochs: 1, batch_size: 2, "
        "max_length: 128}\n")


def test_gpu_check_on_cpu(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("CLBENCH_DATA", str(data_dir))
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    card = tmp_path / "card.yaml"
    card.write_text(CARD)
    out = gpu_check.main(["--device", "cpu", "--model", "tiny", "--preset", str(card), "--methods", "full", "lora",
                          "--seq", "64", "--steps", "2", "--new-tokens", "8", "--out", str(tmp_path / "bench")])
    report = json.loads(out.read_text())
    assert report["complete"] is True
    assert out.name == f"gpu-check-{report['device_name'].lower()}.json"
    assert report["peaks"]["matmul_tflops"] > 0 and report["peaks"]["copy_gb_per_s"] > 0
    assert 0 < report["training"]["mfu_vs_measured_matmul"] < 1
    assert set(report["generation"]) == {"1", "8", "32"} and all(g["tokens"] > 0 for g in report["generation"].values())
    for g in report["generation"].values():  # decoding's two ceilings: compute and reading every weight per step
        assert 0 < g["mfu_vs_measured_matmul"] < 1 and 0 < g["share_of_bandwidth_bound"] < 1
        assert g["tokens_equal_eager"] is True and g["eager_step_ms"] > 0
        assert g["graphs_recorded"] == g["graphs_replayed"] == 0  # no CUDA: every step eager
    runs = {r["method"]: r for r in report["runs"]}
    assert set(runs) == {"full", "lora"} and all(r["status"] == "finished" for r in runs.values())
    for r in runs.values():
        # nothing counted twice and something counted; how much is missed is a timing (tiny runs last under a second,
        # and on shared cores the wall clock's share outside training and evaluation varies): a bench's, not a test's
        assert 0 <= r["unaccounted_seconds"] < r["wall_seconds"]
        assert 0 < r["reported_over_wall"] <= 1
        assert r["device_hours_reported"] * 3600 == pytest.approx(
            (r["train_seconds"] + r["eval_seconds"]) * r["device_count"], rel=1e-6)
    shards = report["sharded"]  # FSDP over one gloo rank trains as one process (on CUDA: one NCCL rank)
    assert shards["backend"] == "gloo" and set(shards) == {"backend", "world_size", "full", "lora"}
    for name in ("full", "lora"):
        assert "error" not in shards[name], shards[name]
        assert shards[name]["steps"] == 8 and len(shards[name]["losses_sharded"]) == 8
        assert shards[name]["loss_max_rel_diff"] < 1e-5 and shards[name]["weight_max_abs_diff"] < 1e-5
    assert shards["lora"]["trained_parameters"] < shards["full"]["trained_parameters"]


def test_a_stopped_check_keeps_what_it_measured(tmp_path, data_dir, monkeypatch):
    """The device call has a time limit: a check stopped in its card runs (here, the second run fails) has written
    the sections and runs it finished, marked incomplete."""
    monkeypatch.setenv("CLBENCH_DATA", str(data_dir))
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)

    def stopped(*args):
        yield {"method": "full", "status": "finished"}
        raise KeyboardInterrupt("stopped by the time limit")

    monkeypatch.setattr(gpu_check, "card_runs", stopped)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--device", "cpu", "--model", "tiny", "--seq", "64", "--steps", "1", "--new-tokens", "4",
                        "--out", str(tmp_path)])
    (out,) = tmp_path.glob("gpu-check-*.json")
    report = json.loads(out.read_text())
    assert report["complete"] is False and [r["method"] for r in report["runs"]] == ["full"]
    assert {"peaks", "generation", "training"} <= set(report)


def test_generation_measures_count_steps_tokens_and_bytes(monkeypatch):
    """The decoding measures' arithmetic, on a fake decoder and clock: a row of 9 answer tokens and an end of turn
    took 10 steps, each step reads every weight once, and a batch of many rows takes as many steps as its
    longest row (one row alone: as many as its tokens)."""
    import itertools

    from harness.model import models

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    model, tok = models.load("tiny")
    clock = itertools.count(0.0, 2.0)  # every generate() call timed takes 2 s
    monkeypatch.setattr(gpu_check.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(gpu_check, "_sync", lambda device: None)
    counts = {"recorded": 0, "replayed": 0}
    monkeypatch.setattr(gpu_check.decoding, "COUNTS", counts)

    def generate(model, tok, prompts, *a, capture=True, **k):  # on CUDA: a batch recorded, its other steps replayed
        counts.update(recorded=counts["recorded"] + capture, replayed=counts["replayed"] + 5 * capture)
        return [{"tokens": 9 if i % 2 else 4, "stopped": bool(i % 2), "ids": [i]} for i in range(len(prompts))]
    monkeypatch.setattr(gpu_check, "generate", generate)
    peaks = {"matmul_tflops": 1.0, "copy_gb_per_s": 1.0}
    out = gpu_check.generation(model, tok, "cpu", "fp32", 64, peaks)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    one, eight = out["1"], out["8"]
    assert one["tokens"] == 4 + 10 and one["step_ms"] == pytest.approx(2000 / 14)  # two prompts, one at a time
    assert eight["tokens"] == 4 * 4 + 4 * 10 and eight["step_ms"] == pytest.approx(2000 / 10)  # the longest row
    assert eight["tokens_per_s"] == pytest.approx(56 / 2)
    assert eight["eager_step_ms"] == pytest.approx(2000 / 10) and eight["tokens_equal_eager"] is True
    # whether the timed steps replayed graphs at all (a recording that fails leaves them eager, same tokens)
    assert (eight["graphs_recorded"], eight["graphs_replayed"]) == (1, 5)
    assert eight["share_of_bandwidth_bound"] == pytest.approx(weight_bytes / 1e9 / 0.2)
    assert eight["weight_bytes"] == weight_bytes and 0 < eight["mfu_vs_measured_matmul"]


def test_a_sharded_method_that_fails_is_recorded_and_the_next_runs(monkeypatch):
    """The check is one device call: a failure in the sharded section leaves a one-line error with where it was
    raised, and the other method still runs; a process group that cannot start is recorded, not raised."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)

    def pair(model_name, name, *args):
        if name == "full":
            raise RuntimeError("NCCL error: unhandled system error\nmore lines")
        return {"steps": 1}

    monkeypatch.setattr(gpu_check, "_sharded_pair", pair)
    out = gpu_check.sharded_training("tiny", "cpu", "fp32")
    assert out["full"]["error"].startswith("RuntimeError: NCCL error: unhandled system error (at test_gpu_check.py:")
    assert out["lora"] == {"steps": 1}
    import torch.distributed as dist

    assert not dist.is_initialized()  # the group is destroyed after the section
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: (_ for _ in ()).throw(OSError("no route")))
    failed = gpu_check.sharded_training("tiny", "cpu", "fp32")
    assert set(failed) == {"backend", "world_size", "error"} and failed["error"].startswith("OSError: no route (at ")


def test_decoding_with_trained_weights_is_timed_both_ways_to_the_same_tokens(tiny):
    """The bf16 section after training: a model whose every weight is stored fp32 decodes with its weights cast
    once and cast in every step, to the same tokens."""
    import copy

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    model, tok = tiny
    out = gpu_check.trained_generation(copy.deepcopy(model), tok, "cpu", 6, batch=3)
    assert out["tokens_equal"] is True and out["fp32_weights"] == sum(p.numel() for p in model.parameters())
    assert out["cast_once_step_ms"] > 0 and out["cast_each_step_ms"] > 0
