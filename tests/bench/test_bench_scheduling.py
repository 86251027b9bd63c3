"""Scheduling overhead of Ray: tiny sweeps of N and 3N runs through `run_sweep` (local Ray, one
run at a time, stage 0 included) against the same runs executed in one process. The slope gives
the marginal overhead per task, the intercept the fixed cost (ray.init, worker start, shutdown).
Run with: python -m tox -- tests/bench --benchmark-only -s"""
import time

import torch

from harness.run.runner import ensure_stage0, execute
from harness.spec import config
from harness.spec.spec import expand
from harness.store.store import Store
from harness.sweep.sweep import run_sweep

SIZES = (4, 12)


def _config(tmp_path, data_dir, n):
    f = tmp_path / f"sweep{n}.yaml"
    f.write_text(f"""
name: bench-scheduling
model: tiny
precision: fp32
stream: [stem, humanities]
probes: [general]
methods: [full, lora]
seeds: {list(range(n // 2))}
budget: {{learn_items: 2, transfer_items: 1, general_items: 1, epochs: 1, batch_size: 2, max_length: 128}}
resources: {{num_cpus: {torch.get_num_threads()}}}
data_dir: {data_dir}
""")
    return config.load(str(f))


def _in_process(cfg, root, data_dir):
    specs = expand(cfg)
    store = Store(root)
    start = time.perf_counter()
    ensure_stage0(specs[0], store, str(data_dir))
    for s in specs:
        assert execute(s, store, data_dir=str(data_dir))["status"] == "finished"
    return time.perf_counter() - start


def _on_ray(cfg, root):
    start = time.perf_counter()
    assert len(run_sweep(cfg, root, log=lambda *_: None)) == len(cfg.seeds) * len(cfg.methods)
    return time.perf_counter() - start


def test_ray_overhead_per_task(benchmark, tmp_path, data_dir):
    small, large = (_config(tmp_path, data_dir, n) for n in SIZES)
    _in_process(small, tmp_path / "warm-up", data_dir)  # first-call costs (imports, kernels) are not scheduling
    local = [_in_process(c, tmp_path / f"local{i}", data_dir) for i, c in enumerate((small, large))]

    def both():
        return [_on_ray(c, tmp_path / f"ray{i}-{time.monotonic_ns()}") for i, c in enumerate((small, large))]

    ray_wall = benchmark.pedantic(both, rounds=1, iterations=1)
    overhead = [r - lo for r, lo in zip(ray_wall, local)]
    marginal = (overhead[1] - overhead[0]) / (SIZES[1] - SIZES[0])
    fixed = overhead[0] - marginal * SIZES[0]
    benchmark.extra_info.update(sizes=SIZES, in_process_s=[round(x, 2) for x in local],
                                ray_s=[round(x, 2) for x in ray_wall], marginal_overhead_per_task_s=round(marginal, 3),
                                fixed_overhead_s=round(fixed, 2))
    print(f"\nin-process {[round(x, 1) for x in local]} s, local Ray {[round(x, 1) for x in ray_wall]} s for {SIZES} runs: "
          f"marginal overhead {marginal:.2f} s per task, fixed {fixed:.1f} s per sweep")
