"""One stage's training spread over several processes: a Ray Train TorchTrainer whose workers hold the model
sharded by FSDP (torch's `fully_shard`: full sharding, one unit per transformer block; under bf16 the autocast and
stored dtypes of one process, gradients reduced in fp32; activation checkpointing when asked for).

The run's own process keeps everything else: the method's `train_examples` and `after_task`, evaluation
and checkpoints. For each stage it hands the workers, through Ray's object store, the method, the encoded
examples and the model: rank 0 the model with its weights, every other worker its shape alone (parameters on
the meta device), so that a node holds the weights in the run's process, the object store and rank 0, not once
more per worker; rank 0 broadcasts them into every worker's shards. They train and rank 0 sends the trained
parameters back (safetensors, under <results>/checkpoints/sharded/), which the run's process loads before it
scores the stage.

Each worker takes its share of every global batch (the same batches, in the same order, as one process with
the same seed). The label loss is normalised by the global batch's label count, so the summed gradient is the
one-process gradient up to floating-point reduction order. A worker that dies is restarted with the whole
group (Ray Train's FailureConfig), and the stage starts again from the model it was handed: a retried
stage equals an uninterrupted one. Dropout (LoRA's, 0.05 by default) draws its masks from each worker's
generator, seeded by the stage's seed and the worker's rank: a sharded run is reproducible at its worker
count, and equals one process only in distribution.

Only a method that declares `shardable` runs here: one without an extra loss or token weights (they would see
one shard of the batch and of the parameters), whose state outside the model lives in its `train_examples`
and `after_task` (run in the run's process). Its hooks are still called on every step and must return None.
"""
from __future__ import annotations

import copy
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from tasks.chat import IGNORE

from ..core.errors import TrainingDiverged
from ..model.precision import autocast
from .training import collate, epoch_order, forward

MAX_FAILURES = 2  # a worker group is restarted this many times before the stage fails
STATE = "trained.safetensors"


def train_task(model, method, examples: list[dict], ctx, *, epochs: int, batch_size: int, pad_id: int, device: str,
               precision: str, seed: int, desc: str, workers: int, threads: int, store_root,
               activation_checkpointing: bool = False, on_step=None) -> dict:
    """training.train_task's contract, trained by `workers` processes: `model`'s trainable parameters are
    replaced by the trained ones; the record adds `workers` and `fit_seconds` (Ray Train's start included).
    on_step(step, rank), if given, is called in each worker after each step."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise RuntimeError(f"method '{method.name}' left no trainable parameters")
    bare = dataclasses.replace(ctx, batches=None, data=None, tokenizer=None)  # the hooks must not need them
    model.to("cpu")  # the payload holds host tensors: each worker's FSDP moves its shards to its own device
    try:
        payload = ray.put((model, method, bare, examples))
        shape = ray.put(shape_only((model, method, bare, examples)))
    finally:
        model.to(device)
    folder = Path(store_root) / "checkpoints" / "sharded"
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(payload=payload, shape=shape, epochs=epochs, batch_size=batch_size, pad_id=pad_id,
                  precision=precision, seed=seed, desc=desc, threads=threads,
                  activation_checkpointing=activation_checkpointing, on_step=on_step)
    gpu = device == "cuda"
    trainer = TorchTrainer(
        _worker, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu,
                                     resources_per_worker={"CPU": threads, **({"GPU": 1} if gpu else {})}),
        run_config=RunConfig(storage_path=str(folder.resolve()), name=Path(tempfile.mkdtemp(dir=folder)).name,
                             failure_config=FailureConfig(max_failures=MAX_FAILURES)))
    start = time.perf_counter()
    try:
        result = trainer.fit()
        fit_seconds = time.perf_counter() - start
        record = dict(result.metrics)
        if record.get("diverged"):
            raise TrainingDiverged(record["diverged"])
        from safetensors.torch import load_file

        with result.checkpoint.as_directory() as saved:
            state = load_file(str(Path(saved) / STATE))
    finally:
        shutil.rmtree(folder / trainer.run_config.name, ignore_errors=True)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in trainable:
            params[name].copy_(state[name])
    model.eval()
    return {**record, "workers": workers, "fit_seconds": fit_seconds}


def shape_only(payload):
    """A deep copy of `payload` whose modules' parameters are on the meta device (shape, dtype and requires_grad,
    no data; buffers, a few rotary tables, are copied): what a rank other than 0 is handed. A parameter that the
    payload refers to twice (a tied embedding, a method's reference) stays one."""
    memo = {}
    for module in (o for o in payload if isinstance(o, nn.Module)):
        for p in module.parameters():
            memo.setdefault(id(p), nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad))
    return copy.deepcopy(payload, memo)


def _units(model) -> list:
    """The modules FSDP shards one by one: those whose class a model names in `_no_split_modules` (the
    transformer blocks, an expanded LLaMA-Pro block included), innermost first."""
    names = set()
    for m in model.modules():
        names |= set(getattr(m, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def _worker(config: dict) -> None:
    """A Ray Train worker: its share of the stage (fit_shard), reported with rank 0's trained parameters."""
    import ray
    import ray.train
    import ray.train.torch

    torch.set_num_threads(config["threads"])
    rank = ray.train.get_context().get_world_rank()
    # on the host: fully_shard moves each unit's shards; rank 0 alone is handed the weights
    model, method, ctx, examples = ray.get(config["payload"] if rank == 0 else config["shape"])
    record, state = fit_shard(model, method, ctx, examples, device=ray.train.torch.get_device(),
                              **{k: config[k] for k in ("epochs", "batch_size", "pad_id", "precision", "seed", "desc",
                                                        "activation_checkpointing", "on_step")})
    if state is None:
        ray.train.report(record)
        return
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as out:
        save_file(state, str(Path(out) / STATE))
        ray.train.report(record, checkpoint=ray.train.Checkpoint.from_directory(out))


def fit_shard(model, method, ctx, examples: list[dict], *, device: torch.device, epochs: int, batch_size: int,
              pad_id: int, precision: str, seed: int, desc: str, activation_checkpointing: bool = False,
              on_step=None) -> tuple[dict, dict | None]:
    """This process's share of a stage in an initialised process group (Ray Train's, or one made by hand, as the
    GPU check makes one of one rank): `model` sharded in place by FSDP, trained on its rows of every global batch.
    Rank 0's `model` holds the weights, which it broadcasts into every rank's shards; another rank's may be
    `shape_only`.
    Returns the stage's record (train_task's, or {"diverged": why}) and, on rank 0, the trained parameters
    gathered on the host (None elsewhere)."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(seed * world + rank)  # dropout masks: a retried stage draws the same ones
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if activation_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name; 4.x calls it gradient_
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # bf16: parameters gathered as stored (the frozen base's linear layers bf16, the rest fp32) and computed under
    # the same autocast as one process (harness.run.training); casting every parameter to bf16 (param_dtype)
    # would run norms, embeddings and the residual stream in bf16, which one process does not
    policy = MixedPrecisionPolicy(reduce_dtype=torch.float32) if precision == "bf16" else MixedPrecisionPolicy()
    if world > 1:  # what sharding onto an empty device loses: rank 0's weights, every rank's buffers
        weights = model.state_dict() if rank == 0 else {}
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}  # unsaved ones (rotary tables) included
    # the run's device, not FSDP's default (the machine's accelerator: a CPU run on a GPU machine would shard there)
    mesh = init_device_mesh(device.type, (world,))
    for unit in _units(model):
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    if world > 1:  # each rank's shards from rank 0's weights
        model.to_empty(device=device)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        del weights, buffers
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = method.optimiser(params, device.type)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = -(-len(examples) // batch_size)
    losses, tokens, diverged = [], 0, None
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        order = epoch_order(examples, generator)
        for s in range(steps_per_epoch):
            chunk = [examples[i] for i in order[s * batch_size:(s + 1) * batch_size]]
            mine = chunk[rank * len(chunk) // world:(rank + 1) * len(chunk) // world]
            # a rank without an example of a short last batch still takes part in the collectives, at weight 0
            batch = collate(mine or chunk[:1], pad_id, device)
            labelled = (batch["labels"][:, 1:] != IGNORE).sum() if mine else torch.zeros((), dtype=torch.long,
                                                                                         device=device)
            total = labelled.clone()
            dist.all_reduce(total)
            with autocast(device.type, precision):
                outputs = forward(model, method, batch)
                if (method.token_weights(model, batch, outputs, ctx) is not None
                        or method.extra_loss(model, batch, outputs, ctx) is not None):
                    raise RuntimeError(f"method '{method.name}' declares shardable but returned token weights or an "
                                       "extra loss: it cannot train sharded")
                share = outputs.loss * (labelled / total.clamp_min(1))
            (share * world).backward()  # FSDP averages gradients over the workers; the shares sum to the batch's
            loss = share.detach().clone()
            dist.all_reduce(loss)
            if not torch.isfinite(loss):
                diverged = f"{desc}: loss became {loss.item()} at step {len(losses) + 1}"
                break
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            losses.append(loss.item())
            tokens += int(batch["attention_mask"].sum()) if mine else 0
            if on_step is not None:
                on_step(len(losses), rank)
        if diverged:
            break
    seconds = time.perf_counter() - start
    counted = torch.tensor(tokens, device=device)
    dist.all_reduce(counted)
    # the trained parameters only, gathered on the host of rank 0 (the frozen base is the run's process's own)
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                 ignore_frozen_params=True))
    record = ({"diverged": diverged} if diverged else
              {"steps": len(losses), "examples": len(examples), "tokens": int(counted), "seconds": seconds,
               "tokens_per_second": int(counted) / seconds if seconds else None, "loss_first": losses[0],
               "loss_last": losses[-1], "loss_mean_last_epoch": sum(losses[-steps_per_epoch:]) / steps_per_epoch,
               "losses": losses})
    return record, ({n: state[n].contiguous() for n in trainable} if rank == 0 else None)
