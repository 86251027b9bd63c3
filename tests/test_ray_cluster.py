"""A two-node Ray cluster on this machine: GPU runs land on the GPU node; a node removed
mid-sweep has its runs retried elsewhere and every run is stored once."""
import json
import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster

from harness.spec import config
from harness.sweep.sweep import run_sweep

SWEEP = """
name: cluster-test
model: tiny
precision: fp32
device: cpu
stream: [stem, humanities, law]
probes: [general]
methods: [full, lora]
seeds: [0, 1]
budget: {learn_items: 4, transfer_items: 2, general_items: 2, epochs: 6, batch_size: 2, max_length: 192}
"""


@pytest.fixture
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head runs no tasks
    yield c
    ray.shutdown()
    c.shutdown()


def _load(tmp_path, data_dir, extra=""):
    f = tmp_path / "sweep.yaml"
    f.write_text(SWEEP + extra + f"data_dir: {data_dir}\n")
    return config.load(str(f))


@pytest.mark.slow
def test_gpu_runs_land_on_the_gpu_node(cluster, tmp_path, data_dir):
    cluster.add_node(num_cpus=2)
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
    ray.init(address=cluster.address)
    cfg = _load(tmp_path, data_dir, "resources: {num_cpus: 1, num_gpus: 1}\n")
    results = run_sweep(cfg, tmp_path / "res")
    assert len(results) == 4 and all(r["status"] == "finished" for r in results)
    assert {r["provenance"]["node"] for r in results} == {gpu_node.node_id}


@pytest.mark.slow
def test_removed_node_runs_are_retried_elsewhere(cluster, tmp_path, data_dir):
    doomed = cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    cfg = _load(tmp_path, data_dir, "resources: {num_cpus: 1}\n")
    runs_dir = tmp_path / "res" / "runs"
    removed = {}

    def remove_when_busy():
        deadline = time.time() + 240
        while time.time() < deadline:
            for p in runs_dir.glob("*.json"):
                try:
                    data = json.loads(p.read_text())
                except (OSError, ValueError):
                    continue
                if data["provenance"].get("node") == doomed.node_id and data["status"] == "running" \
                        and len(data["stages"]) >= 2:
                    removed["run"] = data["run_id"]
                    cluster.remove_node(doomed)
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=remove_when_busy)
    watcher.start()
    results = run_sweep(cfg, tmp_path / "res")
    watcher.join()
    assert removed, "no run was seen on the node to remove"
    assert sorted(r["run_id"] for r in results) == sorted(p.stem for p in runs_dir.glob("*.json"))
    assert len(results) == 4 and all(r["status"] == "finished" for r in results)
    retried = next(r for r in results if r["run_id"] == removed["run"])
    assert retried["provenance"]["node"] != doomed.node_id
