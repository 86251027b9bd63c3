"""The stop and instruct probes, retention and compute accounting on a real (tiny) run."""
import json
import math

import pytest

from harness.metrics import run_metrics
from harness.run.runner import execute
from harness.spec import config
from harness.spec.spec import expand
from harness.store.files import digest
from harness.store.store import Store
from harness.store.validate import problem


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("results")
    f = root / "c.yaml"
    f.write_text("model: tiny\nprecision: fp32\nstream: [stem, law]\nprobes: [general, stop, instruct]\nmethods: [full]\n"
                 "budget: {learn_items: 2, transfer_items: 1, general_items: 2, epochs: 1, stop_prompts: 3,\n"
                 "         stop_max_new_tokens: 12, repetition_n: 2, repetition_window: 8, instruct_items: 3}\n")
    result = execute(expand(config.load(str(f)))[0], Store(root), data_dir=str(data_dir))
    assert result["status"] == "finished", result["traceback"]
    return root, result


def test_stop_and_instruct_probes_are_stored_every_stage(run):
    _, result = run
    for stage in result["stages"]:
        stop = stage["probes"]["stop"]["prompts"]
        assert stop["n"] == 3 and 0.0 <= stop["stop_rate"] <= 1.0 and 0.0 <= stop["tail_repetition"] <= 1.0
        assert 0 < stop["mean_length"] <= 12
        assert len(stop["examples"]) == 3 and all(isinstance(e["text"], str) for e in stop["examples"])
        instruct = stage["probes"]["instruct"]["reference"]
        assert instruct["n"] == 3 and instruct["mean_logprob"] < 0
        assert instruct["score"] == pytest.approx(math.exp(instruct["mean_logprob"]))


def test_compute_is_measured_and_positive(run):
    _, result = run
    for stage in result["stages"][1:]:
        c = stage["compute"]
        assert c["device"] == "cpu" and c["gpu_hours"] is None
        for key in ("train_seconds", "eval_seconds", "cpu_hours", "peak_memory_mb", "train_tokens", "tokens_per_second"):
            assert c[key] > 0, key
        assert c["eval_seconds"] == stage["seconds"]
        assert c["train_seconds"] >= stage["train"]["seconds"]  # the method's hooks are part of its cost
    total = result["compute"]
    assert total["device_count"] >= 1 and total["stages"] == 2 and total["gpu_hours"] is None
    assert total["train_tokens"] == sum(s["train"]["tokens"] for s in result["stages"][1:])
    assert total["cpu_hours"] == pytest.approx(
        (total["train_seconds"] + total["eval_seconds"]) * total["device_count"] / 3600)
    assert total["trainable_share"] == 1.0 and total["trainable_params"] == result["total_params"]


def test_run_row_fills_the_probe_and_compute_keys(run):
    _, result = run
    row = run_metrics.run_row(result)
    base, final = result["stages"][0]["probes"], result["stages"][-1]["probes"]
    assert row["stop_rate_change"] == final["stop"]["prompts"]["stop_rate"] - base["stop"]["prompts"]["stop_rate"]
    assert row["tail_repetition"] == final["stop"]["prompts"]["tail_repetition"]
    assert row["cpu_hours"] == result["compute"]["cpu_hours"] and row["gpu_hours"] is None
    kept = run_metrics.retention(result["stages"][0], result["stages"][-1])
    # only accuracies are averaged: the instruct probe's log-probability has its own column (instruct_change)
    assert set(kept) == {"general"} and kept["general"] == pytest.approx(
        final["general"]["heldout"]["score"] / base["general"]["heldout"]["score"])
    assert row["general_retention"] == pytest.approx(sum(v for v in kept.values() if v is not None)
                                                     / sum(v is not None for v in kept.values()))


def test_retention_is_a_ratio_to_the_base_and_skips_a_zero_base():
    base = {"probes": {"general": {"heldout": {"score": 0.5}}, "zero": {"v": {"score": 0.0}},
                       "stop": {"prompts": {"stop_rate": 0.2}}}}
    after = {"probes": {"general": {"heldout": {"score": 0.25}}, "zero": {"v": {"score": 0.5}},
                        "stop": {"prompts": {"stop_rate": 0.9}}}}
    assert run_metrics.retention(base, after) == {"general": 0.5, "zero": None}


def test_validate_accepts_the_run_and_rejects_bad_compute(run, tmp_path):
    root, result = run
    assert problem(root / "runs" / f"{result['run_id']}.json")[1] is None
    bad = json.loads(json.dumps(result))
    bad["compute"]["train_seconds"] = -1.0
    bad["digest"] = digest(bad)  # past the digest: the compute check itself must catch it
    path = tmp_path / f"{result['run_id']}.json"
    path.write_text(json.dumps(bad))
    assert "compute.train_seconds" in problem(path)[1]
