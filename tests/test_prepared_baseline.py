"""#14: the baseline b_i of a run is its method's prepared model. A method whose `prepare` changes what the
model computes (P-tuning v2's random prefix) gets its own stage 0; one whose adapter starts as the identity
(LoRA, B = 0) shares the base model's."""
import pytest

from harness.metrics.run_metrics import run_row
from harness.run.runner import execute
from harness.spec import config
from harness.spec.spec import expand
from harness.store.store import Store


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("results")
    f = root / "c.yaml"
    f.write_text("model: tiny\nprecision: fp32\nstream: [stem, humanities]\nprobes: [general]\n"
                 "methods: [lora, p_tuning_v2]\n"
                 "budget: {learn_items: 2, transfer_items: 2, general_items: 4, epochs: 1}\n")
    store = Store(root)
    out = {spec.method: execute(spec, store, data_dir=str(data_dir)) for spec in expand(config.load(str(f)))}
    assert all(r["status"] == "finished" for r in out.values()), [r["error"] for r in out.values()]
    return out


def test_a_prepare_that_changes_the_function_gets_its_own_stage0(runs):
    lora, ptv2 = runs["lora"], runs["p_tuning_v2"]
    assert "prepared" not in lora["stages"][0] and "base_model" not in lora
    assert ptv2["stages"][0]["prepared"] is True
    assert ptv2["base_model"]["scores"] == lora["stages"][0]["scores"]  # the shared base-model evaluation
    margins = [(ptv2["stages"][0]["scores"][t]["recall"]["items"]["margin"],
                lora["stages"][0]["scores"][t]["recall"]["items"]["margin"]) for t in ("stem", "humanities")]
    assert any(a != b for a, b in margins)  # scored on the prepared model, not copied


def test_retention_is_reported_against_both_baselines(runs):
    lora, ptv2 = run_row(runs["lora"]), run_row(runs["p_tuning_v2"])
    assert lora["general_retention"] == lora["general_retention_base"]
    base = runs["p_tuning_v2"]["base_model"]["probes"]["general"]["heldout"]["score"]
    final = runs["p_tuning_v2"]["stages"][-1]["probes"]["general"]["heldout"]["score"]
    assert ptv2["general_retention_base"] == (final / base if base else None)


def test_a_resumed_run_keeps_its_prepared_stage0_and_the_base_model_scores(tmp_path, data_dir, runs):
    f = tmp_path / "c.yaml"
    f.write_text("model: tiny\nprecision: fp32\nstream: [stem, humanities]\nprobes: [general]\n"
                 "methods: [p_tuning_v2]\n"
                 "budget: {learn_items: 2, transfer_items: 2, general_items: 4, epochs: 1}\n")
    spec = expand(config.load(str(f)))[0]
    store = Store(tmp_path / "results")

    def crash_after_stage1(stage, model):
        if stage == 2:
            raise RuntimeError("killed")

    assert execute(spec, store, data_dir=str(data_dir), on_stage=crash_after_stage1)["status"] == "failed"
    resumed = execute(spec, store, data_dir=str(data_dir))
    assert resumed["status"] == "finished" and resumed["resumed_from_stage"] == 1
    assert resumed["stages"][0] == runs["p_tuning_v2"]["stages"][0] | {"seconds": resumed["stages"][0]["seconds"]}
    assert resumed["base_model"] == runs["p_tuning_v2"]["base_model"]


def test_the_headline_starts_from_the_unprepared_base_model(runs):
    """A method must not score by repairing what its own initialisation did (P-tuning v2's random prefix)."""
    from harness.metrics import metrics, stats

    run = runs["p_tuning_v2"]
    tasks = list(run["spec"]["stream"])
    from_base = [run["base_model"], *run["stages"][1:]]
    expected = metrics.headline(metrics.logprob_matrix(from_base, tasks))["headline"]
    from_prepared = metrics.headline(metrics.logprob_matrix(run["stages"], tasks))["headline"]
    assert run_row(run)["headline"] == pytest.approx(expected) and expected != pytest.approx(from_prepared)
    lo, hi = stats.interval(stats.bootstrap({"p": [run]})["p"]["headline"])
    assert lo <= expected <= hi
