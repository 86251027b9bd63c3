"""Sweeps on a real local Ray instance (no mocks)."""
import json
import textwrap

import pytest
import torch

from harness.run.runner import execute
from harness.spec import config
from harness.spec.spec import expand
from harness.store.store import Store
from harness.sweep.sweep import run_sweep

SWEEP = """
name: ray-test
model: tiny
precision: fp32
stream: [stem, code]
probes: [general]
methods: [full, lora]
seeds: [0, 1]
budget: {learn_items: 3, transfer_items: 2, code_items: 1, heldout_items: 0, general_items: 2,
         epochs: 1, batch_size: 2, max_length: 192, max_new_tokens: 8}
resources: {num_cpus: 1}
"""


def _load(tmp_path, text, data_dir):
    f = tmp_path / "sweep.yaml"
    f.write_text(text + f"data_dir: {data_dir}\n")
    return config.load(str(f))


def _comparable(run):
    return [(s["trained_on"], s["scores"], s["probes"]) for s in run["stages"]]


def test_ray_sweep_equals_in_process(tmp_path, data_dir, monkeypatch):
    cfg = _load(tmp_path, SWEEP, data_dir)
    results = run_sweep(cfg, tmp_path / "ray")
    assert len(results) == 4 and all(r["status"] == "finished" for r in results)
    stored = {json.loads(p.read_text())["run_id"]: json.loads(p.read_text())
              for p in (tmp_path / "ray" / "runs").glob("*.json")}
    assert len(stored) == 4

    from harness.run import runner

    evaluations, evaluate = [], runner.evaluate
    monkeypatch.setattr(runner, "evaluate", lambda *a, **kw: evaluations.append(kw["desc"]) or evaluate(*a, **kw))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a Ray task with num_cpus=1 gets
    try:
        local = {s.run_id: execute(s, Store(tmp_path / "local"), data_dir=str(data_dir)) for s in expand(cfg)}
    finally:
        torch.set_num_threads(threads)
    assert set(local) == set(stored)
    for run_id, run in local.items():
        assert _comparable(run) == _comparable(stored[run_id])
        for a, b in zip(run["stages"][1:], stored[run_id]["stages"][1:]):
            assert a["train"]["loss_last"] == pytest.approx(b["train"]["loss_last"], rel=1e-5)
    # one stage-0 evaluation for the whole sweep: counted in-process (4 runs, 2 stages each), one file on Ray
    assert sum(d.startswith("eval base") for d in evaluations) == 1 and len(evaluations) == 1 + 4 * 2
    assert len(list((tmp_path / "ray" / "stage0").glob("*.json"))) == 1


FAILING = '''
from methods.full import FullFineTune


class FailsAtStage2(FullFineTune):
    name = "fails_at_stage_2"
    description = "raises after training its second task"

    def after_task(self, model, ctx):
        if ctx.stage == 2:
            raise RuntimeError("deliberate failure at stage 2")
        return model
'''


@pytest.mark.slow
def test_failing_run_is_stored_as_failed_and_the_sweep_goes_on(tmp_path, data_dir):
    method_file = tmp_path / "failing.py"
    method_file.write_text(textwrap.dedent(FAILING))
    text = SWEEP.replace("methods: [full, lora]", f"methods: [full, '{method_file}:FailsAtStage2']")
    text = text.replace("seeds: [0, 1]", "seeds: [0]")
    cfg = _load(tmp_path, text, data_dir)
    results = run_sweep(cfg, tmp_path / "res")
    by_method = {r["spec"]["method"].rsplit(":", 1)[-1]: r for r in results}
    assert by_method["full"]["status"] == "finished"
    failed = by_method["FailsAtStage2"]
    assert failed["status"] == "failed"
    assert "deliberate failure at stage 2" in failed["error"] and "Traceback" in failed["traceback"]
    assert [s["stage"] for s in failed["stages"]] == [0, 1]  # stage 1 finished and is kept

    from harness.report import leaderboard

    board = leaderboard.write(tmp_path / "res").read_text()
    row = next(line for line in board.splitlines() if "FailsAtStage2" in line)
    assert "1 failed" in row and "0.0" not in row.split("|")[3]  # failed runs show no score


NAN_LOSS = '''
import torch

from methods.full import FullFineTune


class NaNAtStage2(FullFineTune):
    name = "nan_at_stage_2"
    description = "its loss becomes NaN on the second task"

    def extra_loss(self, model, batch, outputs, ctx):
        return torch.tensor(float("nan")) if ctx.stage == 2 else None
'''


def test_nan_loss_is_stored_as_failed_with_the_reason(tmp_path, data_dir):
    method_file = tmp_path / "nan.py"
    method_file.write_text(NAN_LOSS)
    text = SWEEP.replace("methods: [full, lora]", f"methods: ['{method_file}:NaNAtStage2']")
    spec = expand(_load(tmp_path, text.replace("seeds: [0, 1]", "seeds: [0]"), data_dir))[0]
    run = execute(spec, Store(tmp_path / "res"), data_dir=str(data_dir))
    assert run["status"] == "failed"
    assert run["error"].startswith("TrainingDiverged") and "nan" in run["error"]
    assert [s["stage"] for s in run["stages"]] == [0, 1]
    assert json.loads(Store(tmp_path / "res").run_path(spec.run_id).read_text())["status"] == "failed"


OUT_OF_MEMORY = '''
import torch

from methods.full import FullFineTune


class OOMAtStage2(FullFineTune):
    name = "oom_at_stage_2"
    description = "asks the allocator for more memory than any machine has on the second task"

    def extra_loss(self, model, batch, outputs, ctx):
        if ctx.stage == 2:
            torch.empty(2**48, dtype=torch.uint8, device=ctx.device)  # 256 TiB: a real allocation failure
        return None
'''


@pytest.mark.slow
def test_out_of_memory_is_stored_as_failed_with_the_reason_and_the_sweep_goes_on(tmp_path, data_dir):
    method_file = tmp_path / "oom.py"
    method_file.write_text(OUT_OF_MEMORY)
    text = SWEEP.replace("methods: [full, lora]", f"methods: ['{method_file}:OOMAtStage2', full]")
    results = run_sweep(_load(tmp_path, text.replace("seeds: [0, 1]", "seeds: [0]"), data_dir), tmp_path / "res")
    by_method = {r["spec"]["method"].rsplit(":", 1)[-1]: r for r in results}
    oom = by_method["OOMAtStage2"]
    assert oom["status"] == "failed" and "allocate" in oom["error"] and "memory" in oom["error"]
    assert [s["stage"] for s in oom["stages"]] == [0, 1]
    assert by_method["full"]["status"] == "finished"


def _kill_workers_mid_stage_2(results, times: dict, stop) -> dict:
    """From outside, as a node failure would: SIGKILL the Ray worker running a run labelled in `times` once it
    is training stage 2 (its file shows stage 1 finished), at most times[label] times, never the same process
    twice. A method cannot do this itself: it runs in a confined child that may not signal its worker."""
    import os
    import signal
    import time

    import psutil

    killed, pids = dict.fromkeys(times, 0), set()
    while not stop.is_set():
        for path in (results / "runs").glob("*.json"):
            try:
                run = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            label = run["spec"]["label"]
            if label in times and killed[label] < times[label] and run["status"] == "running" \
                    and len(run["stages"]) == 2:
                workers = [p for p in psutil.process_iter(["pid", "cmdline"])  # this test's Ray: below this process
                           if (p.info["cmdline"] or [""])[0].startswith("ray::_run_task") and p.pid not in pids
                           and os.getpid() in {a.pid for a in p.parents()}]
                if len(workers) == 1:  # one run at a time (num_cpus 2 of 2): it is this run's worker
                    os.kill(workers[0].pid, signal.SIGKILL)
                    pids.add(workers[0].pid)
                    killed[label] += 1
        time.sleep(0.1)
    return killed


def _sweep_with_kills(tmp_path, data_dir, methods: str, times: dict) -> tuple[dict, dict]:
    """Run a one-at-a-time sweep of `methods` while the worker of each run labelled in `times` is killed; one
    victim per sweep, so the running worker is always the victim's."""
    import threading

    text = SWEEP.replace("methods: [full, lora]", f"methods: {methods}")
    text = text.replace("seeds: [0, 1]", "seeds: [0]").replace("resources: {num_cpus: 1}", "resources: {num_cpus: 2}")
    cfg = _load(tmp_path, text, data_dir)
    stop, killed = threading.Event(), {}
    killer = threading.Thread(target=lambda: killed.update(_kill_workers_mid_stage_2(tmp_path / "res", times, stop)))
    killer.start()
    try:
        results = run_sweep(cfg, tmp_path / "res")
    finally:
        stop.set()
        killer.join()
    return {r["spec"]["label"]: r for r in results}, killed


@pytest.mark.slow
def test_worker_killed_mid_stage_is_retried_and_completes(tmp_path, data_dir):
    by_label, killed = _sweep_with_kills(tmp_path, data_dir, "[full, {method: full, label: dies}]", {"dies": 1})
    assert killed == {"dies": 1}  # it really died
    retried = by_label["dies"]
    assert retried["status"] == "finished" and retried.get("resumed_from_stage") == 1
    # resumed from its stage-1 checkpoint: the same numbers as full fine-tuning, never interrupted
    assert _comparable(retried) == _comparable(by_label["full"])
    assert len(list((tmp_path / "res").glob("runs/*.json"))) == 2


@pytest.mark.slow
def test_a_worker_that_keeps_dying_is_stored_as_failed_with_its_finished_stages(tmp_path, data_dir):
    from harness.sweep.scheduler import MAX_RETRIES

    by_label, killed = _sweep_with_kills(tmp_path, data_dir, "[{method: full, label: always_dies}]",
                                         {"always_dies": MAX_RETRIES + 1})
    assert killed == {"always_dies": MAX_RETRIES + 1}
    lost = by_label["always_dies"]
    assert lost["status"] == "failed" and "worker lost" in lost["error"]
    assert [s["stage"] for s in lost["stages"]] == [0, 1]  # the finished stage is kept
