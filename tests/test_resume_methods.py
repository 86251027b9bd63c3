"""Methods that keep state outside the model's trainable parameters (a replay buffer, EWC's Fisher and anchor,
latent replay's codebooks and codes, O-LoRA's frozen earlier LoRAs) resume from a stage checkpoint like any other
(`Method.state` / `load_state`): a run interrupted after stage 2 of 3 resumes there and ends as the uninterrupted
run ends, score for score. They used to restart from stage 1 (a replay run of the standard card lost ~25 minutes
to each interruption). The other built-ins, whose state is their trainable parameters, are held to the same (slow)."""
import pytest

from harness.run.runner import execute
from harness.spec import config
from harness.spec.spec import expand
from harness.store.store import Store
from methods.registry import BUILTIN

CARD = ("model: tiny\nprecision: {precision}\nstream: [stem, humanities, law]\nprobes: [general]\nmethods: [{method}]\n"
        "budget: {{learn_items: 4, transfer_items: 2, general_items: 2, epochs: 2, batch_size: 2, max_length: 128}}\n")


def _spec(tmp_path, method, precision="fp32"):
    f = tmp_path / "c.yaml"
    f.write_text(CARD.format(method=method, precision=precision))
    return expand(config.load(str(f)))[0]


def _outcome(run):
    """What a run computed, stage by stage (not how long it took)."""
    return [(s["trained_on"], s["scores"], s["probes"], {k: v for k, v in s.get("train", {}).items() if "second" not in k},
             s.get("method_stats")) for s in run["stages"]]


STATEFUL = ["replay", "ewc", "latent_replay", "olora"]


@pytest.mark.parametrize("method", [*STATEFUL, *[pytest.param(m, marks=pytest.mark.slow) for m in BUILTIN
                                                 if m not in STATEFUL]])
def test_a_run_with_state_outside_the_model_resumes_where_it_stopped(tmp_path, data_dir, method):
    _resumes_as_uninterrupted(tmp_path, data_dir, method, "fp32")


@pytest.mark.parametrize("method", ["olora", "ewc"])
def test_under_bf16_a_resumed_run_keeps_its_fp32_master_weights(tmp_path, data_dir, method):
    """Under bf16 the base linears are stored in bf16 and every trainable parameter is fp32 (place_weights). O-LoRA's
    LoRAs that load_state adds were made in the base weights' bf16: the checkpoint's fp32 values were rounded into
    them and its first step crashed on a bf16 x fp32 product."""
    _resumes_as_uninterrupted(tmp_path, data_dir, method, "bf16")


def _resumes_as_uninterrupted(tmp_path, data_dir, method, precision):
    """Killed in stage 3 of 3, the run resumes after stage 2 and ends as the uninterrupted run ends."""
    spec = _spec(tmp_path, method, precision)
    clean = execute(spec, Store(tmp_path / "clean"), data_dir=str(data_dir))
    assert clean["status"] == "finished", clean["error"]
    run = Store(tmp_path / "clean").load_run(spec.run_id)
    stored = run["weights_by_dtype"]  # the dtypes it stored its weights in (#19)
    frozen_base = precision == "bf16" and run["trainable_params"] < run["total_params"]  # o-lora's; not ewc's
    assert {d for d in stored if "float" in d} == ({"bfloat16", "float32"} if frozen_base else {"float32"})
    if set(stored) <= {"bfloat16", "float32"}:  # every element once (qlora's base: 4-bit codes packed in uint8)
        assert sum(stored.values()) == run["total_params"]

    def killed_in_stage3(stage, model):
        if stage == 3:
            raise RuntimeError("killed")

    store = Store(tmp_path / "killed")
    assert execute(spec, store, data_dir=str(data_dir), on_stage=killed_in_stage3)["status"] == "failed"
    resumed = execute(spec, store, data_dir=str(data_dir))
    assert resumed["status"] == "finished", resumed["error"]
    assert resumed.get("resumed_from_stage") == 2
    assert _outcome(resumed) == _outcome(clean)

