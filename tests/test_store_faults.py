"""The results folder under faults, with real processes and real filesystems: a full disk, a
read-only folder, and two `clbench run`s started on the same folder at once."""
import json
import subprocess
import sys
import uuid

import pytest

from harness.core.errors import StoreError
from harness.store.store import Store


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (root only; skipped where the platform forbids mounting)."""
    mounted = []

    def mount(options: str):
        point = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True,
                              text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); this test needs root in a "
                        "container that allows mounts")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def _result(run_id: str, payload: str) -> dict:
    return {"run_id": run_id, "payload": payload}


def test_disk_full_keeps_the_old_file_and_leaves_no_partial_one(tmpfs):
    store = Store(tmpfs("size=64k"))
    store.save_run(_result("r1", "old"))
    with pytest.raises(StoreError) as err:
        store.save_run(_result("r1", "x" * 200_000))  # larger than the whole filesystem
    assert "r1.json" in str(err.value) and "No space left" in str(err.value)
    assert json.loads(store.run_path("r1").read_text())["payload"] == "old"
    assert [p.name for p in (store.root / "runs").iterdir()] == ["r1.json"]  # no temp file left behind


def test_read_only_results_folder_fails_before_any_compute(tmpfs, data_dir):
    ro = tmpfs("ro,size=64k")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--preset", "tiny", "--results", str(ro),
                           "--data", str(data_dir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Read-only file system" in proc.stderr and str(ro) in proc.stderr
    assert "eval base" not in proc.stderr  # stopped before the base model was evaluated


def test_store_error_in_process_names_the_file(tmpfs):
    ro = tmpfs("ro,size=64k")
    with pytest.raises(StoreError, match="Read-only file system"):
        Store(ro).check_writable()


SWEEP = """
name: concurrent-test
model: tiny
precision: fp32
stream: [stem, law]
probes: []
methods: [full, freeze]
seeds: [0]
budget: {learn_items: 2, transfer_items: 1, code_items: 1, heldout_items: 0, general_items: 1,
         epochs: 1, batch_size: 2, max_length: 128}
resources: {num_cpus: 1}
"""


@pytest.mark.slow
def test_two_sweeps_on_one_folder_compute_each_run_once(tmp_path, data_dir):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(SWEEP)
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "harness.cli", "run", "--config", str(cfg), "--results", str(results),
           "--data", str(data_dir)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    files = sorted((results / "runs").glob("*.json"))
    runs = [json.loads(p.read_text()) for p in files]
    assert sorted(r["spec"]["label"] for r in runs) == ["freeze", "full"]
    assert all(r["status"] == "finished" for r in runs)
    # exactly one process computed the runs; the other (after waiting for the lock, if it came
    # second while the first was still running) skipped them all
    assert sorted(("2 run(s) finished" in o, "0 run(s) finished" in o) for o in outs) == [(False, True), (True, False)]
    skipper = next(o for o in outs if "0 run(s) finished" in o)
    assert skipper.count("skip ") == 2, skipper
    assert not list((results / "runs").glob(".*.tmp"))
