"""Kill the driver with SIGKILL mid-sweep, run again: finished runs are skipped, the interrupted
run resumes from its last finished stage, and the results equal an uninterrupted sweep."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

SWEEP = """
name: resume-test
model: tiny
precision: fp32
stream: [stem, humanities, law]
probes: [general]
methods: [full, lora]
seeds: [0]
budget: {learn_items: 4, transfer_items: 2, code_items: 1, heldout_items: 0, general_items: 2,
         epochs: 6, batch_size: 2, max_length: 192}
resources: {num_cpus: 2}
"""


def _cmd(cfg, results, data_dir, address=None):
    return [sys.executable, "-m", "harness.cli", "run", "--config", str(cfg), "--results", str(results),
            "--data", str(data_dir), *(["--address", address] if address else [])]


def _runs(results):
    return {json.loads(p.read_text())["spec"]["label"]: json.loads(p.read_text())
            for p in (results / "runs").glob("*.json")}


def _scores(run):
    return [(s["trained_on"], s["scores"], s["probes"]) for s in run["stages"]]


@pytest.mark.slow
def test_sigkill_driver_then_resume(tmp_path, data_dir):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(SWEEP)
    clean = subprocess.run(_cmd(cfg, tmp_path / "clean", data_dir), capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr[-2000:]

    results = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(cfg, results, data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and killed_at is None:
        runs = _runs(results) if (results / "runs").exists() else {}
        finished = [r for r in runs.values() if r["status"] == "finished"]
        midway = [r for r in runs.values() if r["status"] == "running" and len(r["stages"]) >= 3]
        if finished and midway:  # one run done, the other past stage 2 of 3
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started, no clean-up
            # the stage it resumes after: the last stored, but the last stage of 3 has no checkpoint (a kill after it
            # is stored, before the run is, resumes after stage 2: this test failed when the poll landed there)
            killed_at = {r["spec"]["label"]: min(len(r["stages"]) - 1, 2) for r in midway}
        time.sleep(0.05)
    proc.wait(timeout=60)
    if killed_at is None:
        pytest.fail("the sweep never reached the kill point")
    done_before = {label: (results / "runs" / f"{r['run_id']}.json").stat().st_mtime_ns
                   for label, r in _runs(results).items() if r["status"] == "finished"}

    again = subprocess.run(_cmd(cfg, results, data_dir), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    after = _runs(results)
    for label, mtime in done_before.items():
        assert f"skip {label} seed 0" in again.stdout
        assert (results / "runs" / f"{after[label]['run_id']}.json").stat().st_mtime_ns == mtime
    for label, stage in killed_at.items():
        assert after[label]["resumed_from_stage"] == stage
    reference = _runs(tmp_path / "clean")
    assert set(after) == set(reference)
    for label in reference:
        assert after[label]["status"] == "finished"
        assert _scores(after[label]) == _scores(reference[label])
        for a, b in zip(after[label]["stages"][1:], reference[label]["stages"][1:]):
            assert a["train"]["loss_last"] == b["train"]["loss_last"]
    assert not any((results / "checkpoints").glob("*/*.safetensors"))  # cleaned up on finish


def test_checkpoint_round_trip_and_cap(tmp_path, tiny):
    import copy

    import torch

    from harness.run.checkpoints import Checkpoints

    model = copy.deepcopy(tiny[0])
    for name, p in model.named_parameters():
        p.requires_grad_("layers.1." in name)
    ckpt = Checkpoints(tmp_path)
    assert ckpt.save("run", 1, model) is not None
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ckpt.restore("run", 1, model)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, trained[n])  # trainable parameters come back
        else:
            assert torch.equal(p, trained[n] + 1.0)  # frozen ones are not in the checkpoint
    ckpt.save("run", 2, model)
    ckpt.prune("run", keep=2)
    assert ckpt.has("run", 2) and not ckpt.has("run", 1)
    with pytest.warns(UserWarning, match="cap"):
        assert Checkpoints(tmp_path, cap_gb=1e-6).save("other", 1, model) is None


FIVE_POINTS = """
name: kill-test
model: tiny
precision: fp32
stream: [stem, law]
probes: [general]
methods: [full, lora]
seeds: [0]
budget: {learn_items: 4, transfer_items: 1, code_items: 1, heldout_items: 0, general_items: 1,
         epochs: 3, batch_size: 2, max_length: 128}
resources: {num_cpus: 2}
"""


def _progress(results) -> int:
    """Stage-0 files + stored stages + finished runs: grows with every write the sweep makes."""
    stage0 = len(list((results / "stage0").glob("*.json"))) if (results / "stage0").exists() else 0
    runs = _runs(results) if (results / "runs").exists() else {}
    return stage0 + sum(len(r["stages"]) + (r["status"] == "finished") for r in runs.values())


@pytest.fixture
def ray_head():
    """A Ray head of its own, so each killed driver joins in seconds (`--address`)."""
    from ray.cluster_utils import Cluster

    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    yield head.address
    head.shutdown()


@pytest.mark.slow
def test_sigkill_at_five_points_then_complete(tmp_path, data_dir, ray_head):
    """Kill the driver five times, each time just after the sweep has written something new
    (plus a random delay), then let it finish: every run is stored once and equals a clean sweep.
    The drivers join one Ray head; Ray ends a dead driver's tasks with it."""
    import random

    rng = random.Random(0)
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(FIVE_POINTS)
    clean = subprocess.run(_cmd(cfg, tmp_path / "clean", data_dir, ray_head), capture_output=True, text=True,
                           timeout=600)
    assert clean.returncode == 0, clean.stderr[-2000:]
    results = tmp_path / "killed"
    points = []
    for _ in range(5):
        before = _progress(results)
        proc = subprocess.Popen(_cmd(cfg, results, data_dir, ray_head), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline and _progress(results) <= before and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.5))
        if proc.poll() is not None:
            break  # the sweep finished before this kill point
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        points.append(_progress(results))
    assert len(points) >= 4 and points == sorted(set(points)), points  # distinct, ever later points
    final = subprocess.run(_cmd(cfg, results, data_dir, ray_head), capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    files = list((results / "runs").glob("*.json"))
    after, reference = _runs(results), _runs(tmp_path / "clean")
    assert len(files) == len(reference) == 2 and set(after) == set(reference)
    for label in reference:
        assert after[label]["status"] == "finished"
        assert _scores(after[label]) == _scores(reference[label])


def test_a_resumed_run_says_which_stages_an_earlier_attempt_stored(capsys):
    from synthetic_runs import synthetic_run

    from harness.spec.spec import RunSpec
    from harness.sweep.scheduler import _show_stages

    run = synthetic_run("full", 0, [[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]])
    for stage in run["stages"][1:]:
        stage["train"] = {"seconds": 1.0, "loss_first": 2.0, "loss_last": 1.0}
    _show_stages(RunSpec.from_dict(run["spec"]), {**run, "resumed_from_stage": 1}, {})
    first, second = capsys.readouterr().out.strip().splitlines()
    assert "stage 1/2" in first and "(stored by an earlier attempt" in first
    assert "stage 2/2" in second and "stored" not in second


def test_a_damaged_checkpoint_is_not_resumed_from(tmp_path, tiny):
    """It failed the run after stage 0 with 'SafetensorError: header too large', naming neither file nor fix."""
    from harness.run.checkpoints import Checkpoints

    ckpt = Checkpoints(tmp_path)
    path = ckpt.save("run", 1, tiny[0])
    assert ckpt.has("run", 1)
    path.write_bytes(b"\xff" * 64)
    with pytest.warns(UserWarning, match="stage1.safetensors: not a readable checkpoint .* run does not resume"):
        assert not ckpt.has("run", 1)


def test_a_checkpoint_whose_method_state_cannot_be_read_or_taken_back_is_named(tmp_path, tiny):
    """A method's state rides in the checkpoint's header (JSON) and tensors: a header that is not JSON makes the
    checkpoint unreadable like a damaged one (resumed from no further), and a state the method cannot take back fails
    the run naming the file and the fix, not with a bare KeyError."""
    from safetensors.torch import save_file

    from harness.run.checkpoints import Checkpoints

    ckpt = Checkpoints(tmp_path)
    path = ckpt.save("run", 1, tiny[0], ({"fisher.0": torch.ones(2)}, {"parameters": 1}))
    assert ckpt.has("run", 1)

    class Trainer:
        def load_state(self, model, tensors, info):
            self.got = tensors, info
            tensors["anchor.0"]  # noqa: B018 (what a method of other code would look for)

    trainer = Trainer()
    with pytest.raises(RuntimeError, match=r"stage1.safetensors: the method cannot take back .*KeyError.*delete .*run"):
        ckpt.load_method_state("run", 1, trainer, tiny[0])
    assert torch.equal(trainer.got[0]["fisher.0"], torch.ones(2)) and trainer.got[1] == {"parameters": 1}
    save_file({"w": torch.zeros(1)}, str(path), metadata={"method_state": "{not json"})
    with pytest.warns(UserWarning, match="not a readable checkpoint"):
        assert not ckpt.has("run", 1)


class _Killed(BaseException):
    """A kill: not an Exception, so the runner stores nothing of it."""


def test_a_run_killed_as_it_is_stored_finished_resumes_from_its_last_checkpoint(tmp_path, data_dir, tiny,
                                                                              monkeypatch):
    """The checkpoints were removed before the finished run was stored: a kill between the two left a run file that
    says running, with every stage, and no checkpoint, so the whole run was trained again. They go once the finished
    run is stored; a kill after that leaves a folder that the next sweep over the results removes."""
    from harness.run.checkpoints import Checkpoints
    from harness.run.runner import execute
    from harness.spec import config
    from harness.spec.spec import expand
    from harness.store.store import Store
    from harness.sweep.sweep import pending

    f = tmp_path / "c.yaml"
    f.write_text("model: tiny\nprecision: fp32\nstream: [stem, humanities, law]\nprobes: [general]\nmethods: [lora]\n"
                 "budget: {learn_items: 2, transfer_items: 1, general_items: 2, epochs: 1, max_length: 128}\n")
    spec = expand(config.load(str(f)))[0]
    store = Store(tmp_path / "results")
    real = Store.save_run

    def killed_when_finished(self, result):
        if result["status"] == "finished":
            raise _Killed
        return real(self, result)

    monkeypatch.setattr(Store, "save_run", killed_when_finished)
    with pytest.raises(_Killed):
        execute(spec, store, data_dir=str(data_dir))
    monkeypatch.setattr(Store, "save_run", real)
    assert store.load_run(spec.run_id)["status"] == "running"
    resumed = execute(spec, store, data_dir=str(data_dir))
    assert resumed["status"] == "finished" and resumed.get("resumed_from_stage") == 2  # the last stage has none
    assert not Checkpoints(store.root).has(spec.run_id, 2)  # gone once the finished run is stored

    Checkpoints(store.root).save(spec.run_id, 2, tiny[0])  # what a kill right after that store leaves
    assert pending([spec], store, log=lambda line: None) == []
    assert not (store.root / "checkpoints" / spec.run_id).exists()
