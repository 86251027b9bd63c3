"""#19: what a card costs (harness.report.cost): its training work counted from its items equals what a run
measures, rates measured on stored runs give back those runs' own seconds, and a gpu check report calibrates
the GPU's hours; a bad report is named by file and field, an unloadable model is said, not raised."""
import dataclasses
import json
import subprocess
import sys

import pytest

from harness.core.errors import ConfigError
from harness.report import cost
from harness.run.runner import execute
from harness.spec import config
from harness.spec.spec import RunSpec, expand
from harness.store.store import Store

CARD = ("model: tiny\nprecision: fp32\nstream: [stem, code]\nprobes: [general, stop]\nmethods: [full]\n"
        "budget: {learn_items: 3, transfer_items: 1, code_items: 1, general_items: 2, epochs: 2, batch_size: 2, "
        "max_new_tokens: 8, stop_prompts: 1, stop_max_new_tokens: 8}\n")


@pytest.fixture(scope="module")
def board(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("board")
    (root / "card.yaml").write_text(CARD)
    cfg = config.load(str(root / "card.yaml"))
    run = execute(expand(cfg)[0], Store(root / "results"), data_dir=str(data_dir))
    assert run["status"] == "finished", run["error"]
    return cfg, run, root / "results"


def test_the_training_work_is_what_a_run_trains_on(board):
    cfg, run, _ = board
    w = cost.workload(cfg)
    assert w.train_tokens == run["compute"]["train_tokens"] == sum(s["train"]["tokens"] for s in run["stages"][1:])
    assert (w.stages, w.runs) == (2, 1) and w.params == run["total_params"]
    more = config.with_overrides(cfg, seeds=[0, 1, 2])
    more = dataclasses.replace(more, methods=[*more.methods, config.MethodEntry(method="lora", seeds=[4])])
    assert cost.workload(more).runs == 4 == len(expand(more))  # a method's own seeds are counted


def test_rates_measured_on_a_board_give_back_its_runs_seconds(board):
    cfg, run, results = board
    r = cost.rates(results, "cpu")
    assert r.runs == 1 and cost.rates(results, "cuda") is None
    e = cost.estimate(cost.workload(cfg), r)
    assert e["train_hours_per_run"] * 3600 == pytest.approx(run["compute"]["train_seconds"], rel=1e-9)
    assert e["eval_hours_per_evaluation"] * 3600 * 2 == pytest.approx(run["compute"]["eval_seconds"], rel=1e-9)


def test_the_expected_time_counts_the_runs_left_at_this_machines_rates(board, tmp_path):
    cfg, run, results = board
    run = json.loads(json.dumps(run))  # a quiet machine's seconds: the tiny run took over a minute beside other work
    run["compute"].update(train_seconds=20.0, eval_seconds=4.0)
    here = cost.this_machine("cpu")
    elsewhere = json.loads(json.dumps(run))
    elsewhere["spec"]["seed"] = 1  # another run (a file's name is its spec's hash)
    elsewhere["run_id"] = RunSpec.from_dict(elsewhere["spec"]).run_id
    # another CPU of the same name (a virtual machine names CPU generations alike): its features tell it apart
    elsewhere["provenance"]["machine"]["cpu_features"] = "family 6 model 1: avx2"
    there_name = f"{elsewhere['provenance']['machine']['cpu']} (family 6 model 1: avx2)"
    for k in ("train_seconds", "eval_seconds"):
        elsewhere["compute"][k] *= 100
    other, mixed = Store(tmp_path / "other"), Store(tmp_path / "mixed")
    other.save_run(elsewhere)
    mixed.save_run(elsewhere)
    mixed.save_run(run)

    # only another machine's runs: used, and named
    there = cost.expected(cfg, "cpu", [str(other.root)], left=1)
    assert "for the 1 of 1 run(s) left" in there and f"on {there_name} in" in there, there
    # this machine's come first, from whichever source holds them, and each machine's runs apart
    ours = cost.expected(cfg, "cpu", [str(other.root), str(mixed.root)])
    assert f"of 1 run(s) on {here} in {mixed.root}" in ours and "for 1 run(s)," in ours, ours
    assert cost.rates(other.root, "cpu").train == pytest.approx(100 * cost.rates(mixed.root, "cpu", here).train)
    # this card's runs take seconds: the line says so rather than printing 0.000373 h, and says what it leaves out
    assert "expected time: under a minute for 1 run(s), under a minute each" in ours, ours
    assert "fixed costs (model loading, Ray start-up, per-call overheads) are not counted" in ours
    assert cost.rates(mixed.root, "cpu", here).runs == 1
    # only runs in the card's precision measure its rates (bf16 on a CPU without fast bf16 is ~100x slower)
    bf16 = config.with_overrides(cfg, precision="bf16")
    assert cost.expected(bf16, "cpu", [str(mixed.root)]) == "expected time: no stored runs on cpu in bf16 to measure " \
        "rates on"
    assert cost.rates(mixed.root, "cpu", precision="bf16") is None
    assert cost.rates(mixed.root, "cpu", precision="fp32").runs == 2
    assert cost.rates(mixed.root, "cpu").device_name == f"2 machines ({', '.join(sorted([here, there_name]))})"
    # `clbench protocol show` plans at the same rates: this machine's first (it took the first source's, whoever's)
    shown = cost.describe(cfg, [str(other.root), str(mixed.root)])
    assert f"the median rates of 1 fp32 run(s) on {here} in {mixed.root}" in shown, shown


def test_an_auto_card_is_costed_at_the_precision_its_runs_will_pick_here(board, tmp_path, monkeypatch):
    """`precision: auto` took every stored run's rates, bf16 and fp32 alike (bf16 on a CPU without fast bf16 is
    ~100x slower); now the runs in the precision a run would pick on this machine."""
    cfg, run, _ = board
    slow = json.loads(json.dumps(run))
    slow["spec"]["precision"], slow["precision"] = "bf16", "bf16"
    slow["run_id"] = RunSpec.from_dict(slow["spec"]).run_id
    for k in ("train_seconds", "eval_seconds"):
        slow["compute"][k] *= 100
    store = Store(tmp_path / "both")
    store.save_run(run)
    store.save_run(slow)
    auto = config.with_overrides(cfg, precision="auto")
    for picked, scale in (("fp32", 1), ("bf16", 100)):
        monkeypatch.setattr("harness.model.precision.pick_precision", lambda requested, device: (picked, {}))
        e = cost.estimate(cost.workload(auto), cost.rates(store.root, "cpu", precision=picked))
        assert cost.expected(auto, "cpu", [str(store.root)]).startswith(
            f"expected time: {cost.duration(e['hours_per_sweep'] * 3600)} for 1 run(s)")
        assert cost.rates(store.root, "cpu", precision=picked).train == pytest.approx(scale * cost.rates(
            store.root, "cpu", precision="fp32").train)
        # `clbench protocol show` costs the card at the same rates, and says which precision they are in
        shown = cost.describe(auto, [str(store.root)])
        hours = f"hours_per_run: {e['hours_per_run']:.3g}"
        assert f"{picked} run(s) on" in shown and hours in shown, shown
    monkeypatch.setattr("harness.model.precision.pick_precision", lambda requested, device: ("fp32", {}))
    assert cost.expected(auto, "cpu", [str(tmp_path / "none")]) == "expected time: no stored runs on cpu in fp32 " \
        "to measure rates on"


def test_an_estimate_never_stops_a_sweep_and_reads_the_stored_runs_items_where_the_card_does(board, tmp_path,
                                                                                             monkeypatch, data_dir):
    """`clbench run` prints the expected time before its runs: a data folder it cannot read is said in that line
    (it once raised and stopped the sweep), and the stored runs' items are read from the card's data folder
    (`--data`), not only from $CLBENCH_DATA."""
    cfg, _, results = board
    monkeypatch.setenv("CLBENCH_DATA", str(tmp_path / "no-data-here"))
    cost._work_of.cache_clear()
    assert cost.rates(results, "cpu", data_dir=str(data_dir)).runs == 1
    lost = config.with_overrides(cfg, data_dir=str(tmp_path / "missing"))
    line = cost.expected(lost, "cpu", [str(results)])
    assert line.startswith("expected time: not counted (") and "missing" in line, line


@pytest.mark.parametrize("seconds, said", [(30, "under a minute"), (90, "about 1.5 min"), (15 * 60, "about 15 min"),
                                            (52_560, "about 14.6 h"), (4_680_000, "about 1,300 h")])
def test_a_duration_reads_in_the_units_a_sweep_is_planned_in(seconds, said):
    assert cost.duration(seconds) == said


def test_a_gpu_check_report_calibrates_the_gpu(board, tmp_path):
    cfg, run, _ = board
    w = cost.workload(cfg)
    report = {"device": "cuda", "device_name": "Test GPU", "runs": [
        {"status": "finished", "train_seconds": 36.0, "eval_seconds": 72.0, "train_tokens": w.train_tokens * 2,
         "stages": 2, "model_parameters": w.params // 2, "eval_tokens_per_evaluation": w.eval_tokens,
         "precision": "fp32"}]}
    f = tmp_path / "gpu-check-test-gpu.json"
    f.write_text(json.dumps(report))
    e = cost.estimate(w, cost.rates(f, "cuda"))
    # half the parameters and twice the tokens: the same training work, so the same 36 s; evaluation: twice the
    # work of the calibrating run's 36 s per evaluation
    assert e["train_hours_per_run"] * 3600 == pytest.approx(36.0)
    assert e["eval_hours_per_evaluation"] * 3600 == pytest.approx(72.0)
    shown = cost.describe(cfg, [str(f)])
    assert "gpu:  # the median rates of 1 fp32 run(s) on Test GPU" in shown and "no board measured on a GPU" not in shown
    # a bf16 card is not costed at a report's fp32 rates, and is told why, not to pass the board it passed
    bf16 = cost.describe(config.with_overrides(cfg, precision="bf16"), [str(f)])
    assert "gpu: no board measured on a GPU in bf16 yet" in bf16
    assert (f"hours: no finished run of the 1 board(s) read ({f}) ran as this card runs (cpu in bf16 or gpu in "
            "bf16)") in bf16
    report["runs"][0]["train_seconds"] = "fast"
    f.write_text(json.dumps(report))
    with pytest.raises(ConfigError, match=r"gpu-check-test-gpu.json: runs\[0\].train_seconds is 'fast'"):
        cost.rates(f, "cuda")
    f.write_text("[1, 2")
    with pytest.raises(ConfigError, match="not a results folder or a gpu check report"):
        cost.rates(f, "cuda")


def test_a_model_that_cannot_be_loaded_is_said_not_raised(board, tmp_path):
    cfg, _, results = board
    (tmp_path / "card.yaml").write_text(CARD.replace("model: tiny", f"model: {tmp_path / 'no-such-model'}"))
    shown = cost.describe(config.load(str(tmp_path / "card.yaml")), [str(results)])
    assert shown.startswith("cost: not counted: model ") and "no-such-model" in shown


def test_a_stored_run_whose_model_cannot_be_read_sets_no_rate_and_stops_no_estimate(board, tmp_path, monkeypatch):
    """A stored run naming a hub model this machine could not reach made the estimate retry the hub for 48 s and
    then say 'not counted' for every run (a helper's review): it is left out, the other runs set the rates."""
    _, run, results = board
    store = Store(tmp_path)
    store.save_run(run)
    other = json.loads(json.dumps(run))
    other["spec"]["model"] = "nosuch/model"
    other["run_id"] = RunSpec.from_dict(other["spec"]).run_id
    store.save_run(other)
    import huggingface_hub

    def unreachable(*args, **kw):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    r, alone = cost.rates(tmp_path, "cpu"), cost.rates(results, "cpu")
    assert r is not None and r.runs == 1 and (r.train, r.eval) == (alone.train, alone.eval)


def test_protocol_show_prints_the_cost(board, data_dir, tmp_path):
    cfg, run, results = board
    # rates as fast as a quiet machine's, whatever load this test runs under: a measured board's rates move with it
    w = cost.workload(cfg)
    fast = tmp_path / "gpu-check-quiet-cpu.json"
    fast.write_text(json.dumps({"device": "cpu", "device_name": "a quiet CPU", "runs": [
        {"status": "finished", "train_seconds": 1.0, "eval_seconds": 2.0, "train_tokens": w.train_tokens, "stages": 2,
         "model_parameters": w.params, "eval_tokens_per_evaluation": w.eval_tokens, "precision": "fp32"}]}))
    for source in (results, fast):
        out = subprocess.run([sys.executable, "-m", "harness.cli", "protocol", "show", "--preset", "tiny",
                              "--calibrate", str(source)], capture_output=True, text=True,
                             env={"CLBENCH_DATA": str(data_dir), "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr
        assert "cost:\n  model_parameters: " in out.stdout and "hours_per_all_methods_sweep" in out.stdout
    # a tiny-model run takes about a minute of fixed costs the first-order count leaves out: said, not hidden
    assert "under a minute: fixed costs" in out.stdout
    typo = subprocess.run([sys.executable, "-m", "harness.cli", "protocol", "show", "--preset", "tiny", "--calibrate",
                           str(tmp_path / "nope")], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert typo.returncode == 2 and typo.stdout == "" and typo.stderr.strip().endswith(
        "nope: no such results folder or gpu check report"), typo.stderr


def test_the_default_models_count_reads_no_weights(smollm2, monkeypatch, capfd):
    """protocol show and a tune's expected time printed a weight-loading progress bar: the count reads the config."""
    from harness.model import models

    capfd.readouterr()
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("the weights were loaded to count them"))
    _, params = cost.model_facts(models.SMOLLM2)
    assert params == sum(p.numel() for p in smollm2[0].parameters())
    assert "Loading weights" not in "".join(capfd.readouterr())


@pytest.mark.parametrize("dirty", [True, False])
def test_a_sweep_says_before_its_runs_that_they_will_record_a_dirty_tree(dirty, tmp_path, monkeypatch):
    """Two runs of the all-methods board were made beside tracked result pages copied in from a later commit: each
    file said dirty, found only after the runs. The sweep now says so before the first run starts."""
    from harness.sweep import scheduler, sweep

    monkeypatch.setattr(sweep, "git_commit", lambda: {"commit": "0" * 40, "dirty": dirty})
    monkeypatch.setattr(scheduler, "run_specs", lambda todo, *a, **k: [])
    said = []
    sweep.run_sweep(config.load("tiny"), tmp_path / "results", log=said.append)
    assert any("uncommitted changes to tracked files" in line for line in said) == dirty, said


def test_every_committed_board_whose_runs_name_their_cpu_model_calibrates_the_expected_time():
    """The main job priced its runs at the standard board's Xeon rates on an AMD EPYC whose runs were committed in
    the all-methods board: a committed board of current runs that names its CPU model is a default source."""
    reference = cost.RESULTS / "reference"
    named = {str(p.parent.parent) for p in reference.glob("**/runs/*.json")
             if json.loads(p.read_text()).get("provenance", {}).get("machine", {}).get("cpu_features")}
    assert named and named <= set(cost.default_sources()), sorted(named - set(cost.default_sources()))
