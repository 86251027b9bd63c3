"""A run whose training is sharded over two Ray Train workers (FSDP, gloo on this CPU) trains and scores as one
process does, a killed worker is retried, and a method that cannot be sharded is refused before any compute."""
import dataclasses
import inspect
import sys
from pathlib import Path

import pytest
import torch

from harness.core.errors import ConfigError
from harness.run import sharded
from harness.run.runner import execute
from harness.spec import config
from harness.spec.spec import expand
from harness.store.store import Store
from harness.sweep.sweep import preflight, run_sweep
from methods.base import Method
from methods.registry import available, resolve_method

SWEEP = ("model: tiny\nprecision: fp32\nstream: [stem, humanities]\nprobes: [general]\nmethods: [{method}]\n"
         "budget: {{learn_items: 5, transfer_items: 2, general_items: 2, epochs: 2, batch_size: 4, max_length: 192}}\n")
# one process and two workers add the same numbers in another order (a batch's loss is one sum in one
# process, two partial sums reduced across workers; padding is to each worker's longest example)
LOSS_RTOL, SCORE_ATOL = 1e-4, 1e-4


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled", "TQDM_DISABLE": "1"}})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test file
    yield
    ray.shutdown()


def _spec(tmp_path, method, **fields):
    f = tmp_path / "sweep.yaml"
    f.write_text(SWEEP.format(method=method) + "".join(f"{k}: {v}\n" for k, v in fields.items()))
    return config.load(str(f))


def _numbers(tree, path=()):
    """Every number of a stage's scores and probes, by its path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in sorted(tree.items()) for k, v in _numbers(sub, (*path, key)).items()}
    return {path: tree} if isinstance(tree, (int, float)) and not isinstance(tree, bool) else {}


def _scores(run):
    return _numbers({str(s["stage"]): {"scores": s["scores"], "probes": s["probes"]} for s in run["stages"]})


@pytest.mark.slow
def test_two_workers_train_and_score_as_one_process(tmp_path, data_dir):
    """A sweep on local Ray whose run trains over two workers, against the same spec in one process. LoRA:
    frozen and trained parameters in one sharded block, only the adapter handed back; without its dropout:
    masks are drawn per worker, so only a dropout-free run can equal one process. Activation checkpointing
    on: it recomputes the same fp32 numbers. (Full fine-tuning trains sharded in the test below.)"""
    cfg = _spec(tmp_path, "{method: lora, config: {dropout: 0.0}}", data_dir=data_dir,
                resources="{num_cpus: 1, workers_per_run: 2, activation_checkpointing: true}")
    spec = expand(cfg)[0]
    one = execute(spec, Store(tmp_path / "one"), data_dir=str(data_dir))
    [two] = run_sweep(cfg, tmp_path / "two")
    assert two["status"] == "finished", two["traceback"]
    assert two["sharding"] == {"workers": 2, "threads": 1, "activation_checkpointing": True}
    assert all(s["train"]["workers"] == 2 for s in two["stages"][1:])
    for a, b in zip(one["stages"][1:], two["stages"][1:]):
        assert b["train"]["steps"] == a["train"]["steps"] == 4  # 5 items at batch 4: a short last batch
        assert b["train"]["tokens"] == a["train"]["tokens"]
        assert b["train"]["loss_last"] == pytest.approx(a["train"]["loss_last"], rel=LOSS_RTOL)
        assert b["train"]["loss_first"] == pytest.approx(a["train"]["loss_first"], rel=LOSS_RTOL)
        assert b["compute"]["device_count"] == 3  # the run's thread and each worker's (num_cpus 1)
    a, b = _scores(one), _scores(two)
    assert a.keys() == b.keys() and len(a) > 20
    assert {k: v for k, v in b.items() if "seconds" not in k} == pytest.approx(
        {k: v for k, v in a.items() if "seconds" not in k}, abs=SCORE_ATOL)
    assert not any(Path(tmp_path / "two" / "checkpoints" / "sharded").iterdir())  # the hand-back is removed


# bf16: each worker computes its rows in bf16 as one process does, but two workers' gradients (and so every step
# after the first) differ by bf16 rounding; the first step's loss is one forward of the same weights
BF16_FIRST_RTOL, BF16_LOSS_RTOL, BF16_SCORE_ATOL = 1e-6, 1e-3, 2e-3


@pytest.mark.slow
def test_two_workers_in_bf16_compute_as_one_process(tmp_path, data_dir):
    """Under bf16 a worker computes under the same autocast, over the same stored dtypes, as one process (the frozen
    base's linear layers in bf16, norms, embeddings and the trained adapter in fp32): the first step's loss agrees
    to float32 rounding. (Casting every parameter to bf16, FSDP's param_dtype, ran norms and the residual stream
    in bf16: 1.7e-5 apart on this card.)"""
    cfg = config.with_overrides(_spec(tmp_path, "{method: lora, config: {dropout: 0.0}}", data_dir=data_dir,
                                      resources="{num_cpus: 1, workers_per_run: 2}"), precision="bf16")
    one = execute(expand(cfg)[0], Store(tmp_path / "one"), data_dir=str(data_dir))
    [two] = run_sweep(cfg, tmp_path / "two")
    assert two["status"] == "finished", two["traceback"]
    first = one["stages"][1]["train"]["loss_first"]
    assert two["stages"][1]["train"]["loss_first"] == pytest.approx(first, rel=BF16_FIRST_RTOL)
    for a, b in zip(one["stages"][1:], two["stages"][1:]):
        assert b["train"]["loss_last"] == pytest.approx(a["train"]["loss_last"], rel=BF16_LOSS_RTOL)
    a, b = _scores(one), _scores(two)
    assert {k: v for k, v in b.items() if "seconds" not in k} == pytest.approx(
        {k: v for k, v in a.items() if "seconds" not in k}, abs=BF16_SCORE_ATOL)


def _kill_once(marker: str):
    def on_step(step, rank):
        import os

        if step == 2 and rank == 1 and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)  # the worker process dies mid-stage, as on a lost node
    return on_step


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_stage_equals_an_uninterrupted_one(tmp_path, tiny, ray_local):
    import copy

    from harness.run.runner import seed_everything
    from methods.base import StageContext
    from tasks.chat import encode_pairs

    model, tok = tiny
    pairs = [{"user": f"What is {i} plus {i}?", "reply": f"It is {2 * i}."} for i in range(8)]
    examples = encode_pairs(tok, pairs, 64)
    method = resolve_method("full")()
    ctx = StageContext(stage=1, task=None, seen=[], device="cpu", seed=0)
    kw = dict(epochs=1, batch_size=4, pad_id=tok.pad_token_id, device="cpu", precision="fp32", seed=7, desc="t",
              workers=2, threads=1, store_root=tmp_path)
    seed_everything(0)
    runs = {}
    for name, on_step in (("clean", None), ("killed", _kill_once(str(tmp_path / "killed")))):
        trained = method.prepare(copy.deepcopy(model), ctx)
        runs[name] = (sharded.train_task(trained, method, examples, ctx, on_step=on_step, **kw), trained)
    assert (tmp_path / "killed").exists()  # the worker did die
    assert runs["killed"][0]["losses"] == runs["clean"][0]["losses"]
    for a, b in zip(runs["clean"][1].parameters(), runs["killed"][1].parameters()):
        assert torch.equal(a, b)



class _SGD(resolve_method("full")):
    """Full fine-tuning by plain SGD: unlike Adam's, its step scales with the gradient, so a gradient summed
    wrongly over the processes (twice or half the batch's) moves the weights by another amount."""

    def optimiser(self, params, device):
        return torch.optim.SGD(params, lr=1.0)


def _fit_shard_worker(rank, world, init, model, shape, examples, pad_id, out):
    """One process of a hand-made gloo group (no Ray): its share of the stage, rank 0's record and state saved.
    Rank 0 is handed the model, the other rank its shape alone, as Ray Train's workers are."""
    import torch.distributed as dist

    from methods.base import StageContext

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ctx = StageContext(stage=1, task=None, seen=[], device="cpu", seed=0)
        record, state = sharded.fit_shard(model if rank == 0 else shape, _SGD(), ctx, examples, device=torch.device("cpu"),
                                          epochs=2, batch_size=4, pad_id=pad_id, precision="fp32", seed=7, desc="t")
        assert (state is None) == (rank != 0)
        if rank == 0:
            torch.save((record, state), out)
    finally:
        dist.destroy_process_group()


def test_two_processes_of_fit_shard_train_as_one_process(tmp_path, tiny):
    """The sharded step's arithmetic without Ray (what the GPU check runs on NCCL): two gloo processes, each
    holding half the model and half of every batch, the last batch of one example (a process with no rows takes
    part at weight 0), rank 1 handed the model's shape alone and its shards filled from rank 0's weights, against
    training.train_task in one process: the same losses and weight updates. By SGD,
    on a model whose final norm is scaled down so that no gradient's norm reaches the clipping threshold (a clipped
    step, like Adam's, hides the gradient's scale)."""
    import copy

    from harness.run.training import train_task
    from methods.base import StageContext
    from tasks.chat import encode_pairs

    model, tok = tiny
    examples = encode_pairs(tok, [{"user": f"What is {i} plus {i}?", "reply": f"It is {2 * i}."} for i in range(9)], 64)
    method = _SGD()
    ctx = StageContext(stage=1, task=None, seen=[], device="cpu", seed=0)
    base = method.prepare(copy.deepcopy(model), ctx)
    with torch.no_grad():
        base.model.norm.weight.mul_(0.02)  # gradient norms about 0.2
    one = copy.deepcopy(base)
    expected = train_task(one, method, examples, ctx, epochs=2, batch_size=4, pad_id=tok.pad_token_id, device="cpu",
                          precision="fp32", seed=7, desc="t")
    out = tmp_path / "rank0.pt"
    shape = sharded.shape_only([base])[0]
    assert all(p.is_meta for p in shape.parameters()) and all(not b.is_meta for b in shape.buffers())
    torch.multiprocessing.spawn(_fit_shard_worker, nprocs=2, args=(
        2, f"file://{tmp_path / 'group'}", base, shape, examples, tok.pad_token_id, str(out)))
    record, state = torch.load(out, weights_only=False)
    assert record["steps"] == expected["steps"] == 6 and record["tokens"] == expected["tokens"]
    assert record["losses"] == pytest.approx(expected["losses"], rel=LOSS_RTOL)
    before, trained = dict(base.named_parameters()), dict(one.named_parameters())
    assert set(state) == set(trained)
    for name, value in state.items():
        step = trained[name] - before[name]
        assert torch.allclose(value - before[name], step, rtol=1e-3, atol=1e-7), name
    assert any((trained[n] != before[n]).any() for n in trained)


def test_a_worker_other_than_rank_0_is_handed_no_weights(tiny):
    """shape_only: the payload's parameters on the meta device, with their shapes, dtypes and requires_grad, a
    parameter referred to twice (the tied embedding; a method holding one) still one; its pickle a small fraction
    of the weights'."""
    import pickle

    class Holder:  # a method that keeps a reference to one of the model's parameters
        def __init__(self, p):
            self.p = p

    model, _ = tiny
    model.lm_head.weight.requires_grad_(False)
    try:
        shape, holder = sharded.shape_only((model, Holder(model.lm_head.weight)))
    finally:
        model.lm_head.weight.requires_grad_(True)
    real = dict(model.named_parameters(remove_duplicate=False))
    for name, p in shape.named_parameters(remove_duplicate=False):
        assert p.is_meta and p.shape == real[name].shape and p.dtype == real[name].dtype, name
    assert shape.lm_head.weight is shape.model.embed_tokens.weight is holder.p and not holder.p.requires_grad
    assert len(pickle.dumps(shape)) < len(pickle.dumps(model)) / 20


def test_activation_checkpointing_recomputes_each_block_in_the_backward_pass(tmp_path, tiny):
    """Recomputing gives the same numbers as keeping the activations, so comparing losses cannot tell whether it
    happened: a block's modules run twice per step with it (the forward pass, then again in the backward), once
    without."""
    import torch.distributed as dist

    from methods.base import StageContext
    from tasks.chat import encode_pairs

    model, tok = tiny
    examples = encode_pairs(tok, [{"user": f"What is {i}?", "reply": f"It is {i}."} for i in range(4)], 64)
    calls = {}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        for checkpointing in (False, True):
            fresh = model.__class__(model.config)
            calls[checkpointing] = 0
            fresh.model.layers[0].mlp.register_forward_pre_hook(  # inside the block (transformers checkpoints forward)
                lambda *_, c=checkpointing: calls.__setitem__(c, calls[c] + 1))
            record, _ = sharded.fit_shard(
                fresh, resolve_method("full")(), StageContext(stage=1, task=None, seen=[], device="cpu", seed=0),
                examples, device=torch.device("cpu"), epochs=1, batch_size=4, pad_id=tok.pad_token_id,
                precision="fp32", seed=0, desc="t", activation_checkpointing=checkpointing)
            assert record["steps"] == 1
    finally:
        dist.destroy_process_group()
    assert calls == {False: 1, True: 2}


def test_a_cpu_run_shards_on_the_cpu_on_a_machine_whose_accelerator_is_a_gpu(tmp_path, tiny, monkeypatch):
    """FSDP's default mesh is the machine's accelerator (a GPU where there is one), whatever the process group:
    a CPU card's sharded run (gloo) on a GPU machine would move its shards to the GPU. The mesh is the run's
    device. (Here the accelerator is said to be CUDA, which this torch build lacks.)"""
    import torch.distributed as dist

    from methods.base import StageContext
    from tasks.chat import encode_pairs

    model, tok = tiny
    examples = encode_pairs(tok, [{"user": f"What is {i}?", "reply": f"It is {i}."} for i in range(4)], 64)
    monkeypatch.setattr(torch._C, "_get_accelerator", lambda: torch.device("cuda"))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        record, state = sharded.fit_shard(
            model.__class__(model.config), resolve_method("full")(), StageContext(stage=1, task=None, seen=[],
                                                                                  device="cpu", seed=0),
            examples, device=torch.device("cpu"), epochs=1, batch_size=4, pad_id=tok.pad_token_id, precision="fp32",
            seed=0, desc="t")
    finally:
        dist.destroy_process_group()
    assert record["steps"] == 1 and all(v.device.type == "cpu" for v in state.values())


@pytest.mark.parametrize("name", sorted(n for n in available() if resolve_method(n).shardable))
def test_a_shardable_method_has_no_loss_a_worker_could_not_compute(name):
    cls = resolve_method(name)
    assert cls.extra_loss is Method.extra_loss and cls.token_weights is Method.token_weights, inspect.getsourcefile(cls)


@pytest.mark.parametrize("method, why", [
    ("ewc", "it adds a loss or token weights"),
    ("qlora", "its base is quantized by bitsandbytes"),
    ("prompt_tuning", "it does not declare `shardable`"),
])
def test_a_method_that_cannot_be_sharded_is_refused_with_its_reason_and_the_file(tmp_path, method, why):
    f = tmp_path / "sweep.yaml"
    with pytest.raises(ConfigError) as e:
        _spec(tmp_path, method, resources="{workers_per_run: 2}")
    assert str(e.value).startswith(f"{f}: resources.workers_per_run: 2, but methods[0] ({method}) cannot be sharded: "
                                   f"{why}") and "set workers_per_run: 1" in str(e.value)
    assert "\n" not in str(e.value)


def test_sharding_a_sweep_it_cannot_is_refused_before_compute(tmp_path, data_dir):
    with pytest.raises(ConfigError, match=r"sweep.yaml: resources.workers_per_run: 8 workers .*batch_size 4"):
        _spec(tmp_path, "full", resources="{workers_per_run: 8}", data_dir=data_dir)
    # activation checkpointing is done by the workers: one process would ignore it
    with pytest.raises(ConfigError, match=r"sweep.yaml: resources.activation_checkpointing: .*set it false"):
        _spec(tmp_path, "full", resources="{activation_checkpointing: true}", data_dir=data_dir)
    # a sweep put together after its card was read (a submission's: the card with its method put in) is checked again
    cfg = _spec(tmp_path, "full", resources="{workers_per_run: 2}", data_dir=data_dir)
    submitted = dataclasses.replace(cfg, methods=[config.MethodEntry(method="ewc")])
    with pytest.raises(ConfigError, match=r"^resources.workers_per_run: 2, but methods\[0\] \(ewc\) cannot be sharded"):
        preflight(submitted)


def test_a_local_ray_instance_makes_room_for_workers_only_when_a_run_is_sharded():
    from harness.sweep.scheduler import local_cpus

    assert local_cpus(2, 1, 2) == 2  # the README's quick card: one 2-core run at a time on 2 cores
    assert local_cpus(1, 2, 2) == 3  # a run and its two workers
    assert local_cpus(1, 1, 8) == 8


def test_sharded_gpu_runs_are_submitted_no_more_than_the_gpus_hold_whole():
    """A sharded run's task keeps its GPU while it waits for its workers' GPUs: 8 GPUs and 4 workers a run hold one
    run at a time (five runs would hold five GPUs and wait for ever), 3 workers two; runs without GPUs or without
    workers are not limited here."""
    from harness.sweep.scheduler import sharded_in_flight

    gpu, cpu = {"num_cpus": 1, "num_gpus": 1}, {"num_cpus": 1, "num_gpus": 0}
    assert sharded_in_flight([gpu] * 5, 4, 8) == 1
    assert sharded_in_flight([gpu] * 5, 3, 8) == 2
    assert sharded_in_flight([gpu] * 5, 1, 8) is None and sharded_in_flight([cpu] * 5, 4, 0) is None


def test_a_run_on_device_auto_holds_a_gpu_where_the_cluster_has_gpus(tmp_path):
    """Ray leaves a node's GPUs visible to a task that asked for none, and `auto` picks CUDA wherever torch sees
    it: on a GPU cluster every run of a sweep would run on cuda:0 at once (and a sharded run's workers' GPUs would
    go uncounted) unless the run asks for its GPU."""
    from harness.sweep.scheduler import _resources, _with_workers

    auto, cpu, cuda = (expand(_spec(tmp_path, "full", device=d))[0] for d in ("auto", "cpu", "cuda"))
    assert _resources(auto, 1, 0, 0, cluster_gpus=8)["num_gpus"] == 1
    assert _with_workers(_resources(auto, 1, 0, 0, cluster_gpus=8), 2)["num_gpus"] == 3
    assert _resources(auto, 1, 0, 0, cluster_gpus=0)["num_gpus"] == 0
    assert _resources(cpu, 1, 0, 0, cluster_gpus=8)["num_gpus"] == 0
    assert _resources(cuda, 1, 0, 0, cluster_gpus=8)["num_gpus"] == 1


def test_queued_runs_are_submitted_as_runs_finish(tmp_path):
    """The sweep's collector submits a queued run each time one finishes: every run is stored, and no more
    than the first submission's runs are ever in flight."""
    from harness.sweep import scheduler

    specs = expand(_spec(tmp_path, "full", seeds="[0, 1, 2, 3]"))
    in_flight, most = set(), []

    class Ray:  # what _collect uses of Ray: wait for one finished task, get its result
        @staticmethod
        def wait(refs, num_returns, timeout):
            return [refs[0]], refs[1:]

        @staticmethod
        def get(ref):
            in_flight.discard(ref)
            return {"run_id": ref, "status": "finished", "error": None, "stages": [{}]}

    def submit(spec):  # a task's reference: its run id
        in_flight.add(spec.run_id)
        most.append(len(in_flight))
        return spec.run_id

    store = Store(tmp_path / "results")
    stored = []
    store.save_run = stored.append
    results = scheduler._collect({submit(s): s for s in specs[:2]}, store, Ray, specs[2:], submit)
    assert [r["run_id"] for r in results] == [s.run_id for s in specs] == [r["run_id"] for r in stored]
    assert max(most) == 2 and not in_flight
