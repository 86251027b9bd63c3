"""One run, top to bottom: load data, load the model, score stage 0, then train and score each task."""
from __future__ import annotations

import copy
import functools
import random
import time
import traceback
from datetime import datetime, timezone

import torch
from tqdm.auto import tqdm

from methods.base import StageContext, count_parameters
from methods.registry import resolve_method
from tasks.chat import encode_pairs, prompt_ids, reply_ids
from tasks.data import DataSource
from tasks.registry import load_stream

from ..core.typed import build
from ..integrations import tracking as trackers
from ..model import models
from ..model.precision import autocast, linear_layers, pick_device, pick_precision, place_weights, weight_dtypes
from ..spec.protocol import items_digest
from ..spec.spec import RunSpec, check_method_file, content_hash
from ..store.files import SCHEMA_VERSION
from ..store.provenance import (git_commit, machine, package_versions, score_package_versions,
                                scoring_code_digest)
from ..store.store import Store
from . import compute, stage_models
from .checkpoints import Checkpoints
from .evaluation import evaluate
from .training import collate, train_task


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def stage0_key(spec: RunSpec, precision: str, items: str) -> str:
    """Identity of the base-model evaluation: model, tasks, what the items say (harness.spec.protocol.items_digest,
    not which files they came from), scorer, budget, precision."""
    return content_hash({"protocol": spec.protocol(), "precision": precision, "items": items})


class _Setup:
    """Data, device, precision and the base model of one spec: what stage 0 and a run both need."""

    def __init__(self, spec: RunSpec, data_dir, precision: str | None = None):
        self.source = source = DataSource(data_dir)
        self.budget = spec.budget_config()
        self.tasks, self.probes = load_stream(source, list(spec.stream), list(spec.probes), self.budget, spec.data_seed,
                                              spec.domains)
        self.checksums = dict(sorted(source.checksums.items()))
        self.items = items_digest(self.tasks, self.probes)
        self.device = pick_device(spec.device)
        # precision: the parent's choice, given to a sandboxed method's process (harness.spec.sandbox) so both agree
        self.precision, self.evidence = ((precision, {"reason": "the parent process's choice"}) if precision
                                         else pick_precision(spec.precision, self.device))
        t0 = time.perf_counter()
        self.model, self.tok = models.load(spec.model, stored_dtype=self.precision == "bf16")
        self.linears = linear_layers(self.model)  # what place_weights may store in bf16
        place_weights(self.model, self.precision, self.linears, loading=True)
        self.model.to(self.device)
        self.load_seconds = time.perf_counter() - t0
        self.key = stage0_key(spec, self.precision, self.items)
        self.eval_kw = dict(scorer=spec.scorer, budget=self.budget, device=self.device, precision=self.precision)

    def stage0(self, spec: RunSpec, store: Store) -> dict:
        """The stored base-model evaluation of this protocol, unless it was made under another package
        stack (provenance.SCORE_PACKAGES) or by other scoring code (provenance.SCORING_CODE), both stored
        beside it, or none is stored: then it is computed."""
        expected = {"scores": {t.name: list(t.views) for t in self.tasks}, "probes": {p.name: None for p in self.probes}}
        made_by = {"packages": score_package_versions(), "scoring_code": scoring_code_digest()}
        stored = store.load_stage0(self.key, expected)
        if stored is not None and all(stored.get(k) == v for k, v in made_by.items()):
            return {k: v for k, v in stored.items() if k not in made_by}
        base = evaluate(self.model, self.tok, self.tasks, self.probes, desc=f"eval base {spec.model}", **self.eval_kw)
        store.save_stage0(self.key, {**base, **made_by})
        return base


def _function_outputs(model, setup: _Setup) -> list[torch.Tensor]:
    """The model's logits on the first training pair of every task (prompt and reply, as trained on): what
    tells whether a method's `prepare` changed the function the model computes."""
    pairs = [task.learn[0].training_pair() for task in setup.tasks if task.learn]
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(setup.device, setup.precision):  # as evaluation computes it
        out = [model(input_ids=torch.tensor([ids], device=setup.device)).logits.float().cpu()
               for ids in (prompt_ids(setup.tok, p["user"]) + reply_ids(setup.tok, p["reply"]) for p in pairs)]
    model.train(was_training)
    return out


def _same_outputs(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    """Bit-equal logits: an adapter initialised as the identity (LoRA's B = 0, LLaMA-Pro's zero-output
    copies) adds exact zeros, so the base model's stage 0 is the prepared model's too."""
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def ensure_stage0(spec: RunSpec, store: Store, data_dir=None) -> str:
    """Compute (or find) the base-model evaluation shared by every run of spec's protocol."""
    setup = _Setup(spec, data_dir)
    setup.stage0(spec, store)
    return setup.key


def new_result(spec: RunSpec, sweep: str, protocol: dict | None = None) -> dict:
    """protocol: {name, version} of the sweep's protocol card (harness.spec.protocol.stamp)."""
    return {"schema_version": SCHEMA_VERSION, "run_id": spec.run_id, "sweep": sweep, "spec": spec.as_dict(),
            "status": "running", "error": None, "traceback": None, "stages": [], "started_at": _now(),
            "provenance": {"packages": package_versions(), "git": git_commit()},
            **({"protocol": protocol} if protocol else {})}


def failed_result(spec: RunSpec, store: Store, error: str, sweep: str = "") -> dict:
    """A run that could not finish, keeping the stages its stored file already had."""
    result = store.load_run(spec.run_id) or new_result(spec, sweep)
    result.update(status="failed", error=error, finished_at=_now())
    return result


def _batcher(tok, budget, device):
    def batches(pairs, batch_size=None):
        encoded = encode_pairs(tok, pairs, budget.max_length)
        size = batch_size or budget.batch_size
        for i in range(0, len(encoded), size):
            yield collate(encoded[i:i + size], tok.pad_token_id, device)
    return batches


def prepare(spec: RunSpec, setup: _Setup, method):
    """The method's `prepare` on the run's model, seeded as every run is, its weights then stored by role
    (harness.model.precision.place_weights)."""
    seed_everything(spec.seed)
    ctx = StageContext(stage=0, task=None, seen=[], device=setup.device, seed=spec.seed, precision=setup.precision,
                       data=setup.source)
    model = method.prepare(setup.model, ctx)
    place_weights(model, setup.precision, setup.linears)
    return model


def train_stage(spec: RunSpec, setup: _Setup, method, model, stage: int, train_loop=train_task):
    """(model, training record, context) after the method's hooks and training on task `stage` (1-based):
    train_examples, the training loop (train_loop: this process's, or harness.run.sharded's across workers),
    after_task. Each stage is seeded alone, so a resumed run equals an uninterrupted one."""
    task, budget, tok, device = setup.tasks[stage - 1], setup.budget, setup.tok, setup.device
    seed_everything(spec.seed * 1000 + stage)
    ctx = StageContext(stage=stage, task=task, seen=setup.tasks[: stage - 1], device=device, seed=spec.seed,
                       precision=setup.precision, batches=_batcher(tok, budget, device), tokenizer=tok,
                       data=setup.source, max_length=budget.max_length)
    pairs = method.train_examples([i.training_pair() for i in task.learn], ctx)
    place_weights(model, setup.precision, setup.linears)  # what the method froze or added since is placed too
    encoded = encode_pairs(tok, pairs, budget.max_length)
    train = train_loop(model, method, encoded, ctx, epochs=budget.epochs, batch_size=budget.batch_size,
                       pad_id=tok.pad_token_id, device=device, precision=setup.precision,
                       seed=spec.seed * 1000 + stage, desc=f"{spec.label} s{spec.seed} train {task.name}")
    return method.after_task(model, ctx), train, ctx


def _resume_point(spec: RunSpec, store: Store, checkpoints: Checkpoints) -> int:
    """The last stage an earlier attempt of this run finished and checkpointed (0: start afresh)."""
    previous = store.load_run(spec.run_id)
    if not previous or previous.get("status") == "finished":
        return 0
    for stage in range(len(previous.get("stages", [])) - 1, 0, -1):
        if checkpoints.has(spec.run_id, stage):
            return stage
    return 0


def execute(spec: RunSpec, store: Store, data_dir: str | None = None, sweep: str = "", node: str | None = None,
            on_stage=None, protocol: dict | None = None, save_models: bool = False, tracking: str = "none",
            sharding: dict | None = None, stage_seconds: float | None = None) -> dict:
    """Run one spec and store it; a failure is stored as a failed result, never raised.
    on_stage(stage, model), if given, is called after `prepare` (stage 0) and after every stage.
    save_models: write each trained stage's model under <results>/models/<run_id>/ (harness.run.stage_models).
    tracking: 'tensorboard' logs each stored stage and the training curve under <results>/tracking/
    (harness.integrations.tracking); its failures are warnings, never the run's.
    sharding: {workers, threads, activation_checkpointing}: train each stage across that many Ray Train workers
    (harness.run.sharded) instead of in this process (None: in this process).
    stage_seconds: how long a method clbench did not write may take for its prepare or one stage (None: the
    sandbox's STAGE_TIMEOUT; resources.stage_hours)."""
    result = new_result(spec, sweep, protocol)
    result["provenance"]["node"] = node  # the Ray node id, when scheduled by Ray
    tracker = trackers.tracker(tracking, store.root, spec, sweep, protocol)
    try:
        _execute(spec, store, data_dir, result, on_stage or (lambda stage, model: None), save_models, tracker,
                 sharding, stage_seconds)
        result["status"] = "finished"
    except Exception as e:  # stored with its traceback; the sweep goes on
        result["status"] = "failed"
        # a sandboxed method's own exception is stored as the child raised it (sandbox.MethodFailed)
        result["error"] = getattr(e, "error", None) or f"{type(e).__name__}: {e}"
        result["traceback"] = getattr(e, "child_traceback", None) or traceback.format_exc()
        tqdm.write(f"run {spec.label} seed {spec.seed} failed: {result['error']}")
    finally:
        tracker.close()
    result["finished_at"] = _now()
    store.save_run(result)
    if result["status"] == "finished":  # only now: a kill before this store leaves the checkpoints to resume from
        Checkpoints(store.root).remove(spec.run_id)
    return result


class _InProcess:
    """A built-in method, run in this process: the same interface as sandboxed.SandboxedTrainer, whose model is
    always this process's own and whose scores are always computed here."""

    verified, unverified_reason, peak_memory_mb = True, None, None
    resumable = True  # what the method keeps beside its trainable parameters rides in the checkpoint (Method.state)

    def __init__(self, spec: RunSpec, setup: _Setup, train_loop=train_task):
        self.spec, self.setup, self.train_loop = spec, setup, train_loop
        cls = resolve_method(spec.method)
        self.method = cls(build(cls.Config, spec.method_config, "method_config"))
        self.info = {"description": cls.description, "citation": cls.citation}

    def prepare(self):
        self.model = prepare(self.spec, self.setup, self.method)
        self.counts = count_parameters(self.model)
        self.weights = weight_dtypes(self.model)
        return self.model, None

    def stage(self, stage: int):
        self.model, train, ctx = train_stage(self.spec, self.setup, self.method, self.model, stage, self.train_loop)
        return self.model, train, self.method.stats(ctx), None

    def state(self) -> tuple[dict, dict]:
        return self.method.state()

    def load_state(self, model, tensors: dict, info: dict) -> None:
        self.method.load_state(model, tensors, info)

    def close(self) -> None:
        pass


def _trainer(spec: RunSpec, setup: _Setup, data_dir, store: Store, sharding: dict | None,
             stage_seconds: float | None):
    """In this process for a built-in method, its training across workers when sharded; in a confined child for
    any other (harness.spec.sandbox; never sharded: harness.sweep.sweep.preflight refuses it)."""
    from ..spec import sandbox
    from . import sandboxed

    if not sandbox.trusted(spec.method):
        return sandboxed.SandboxedTrainer(spec, setup, data_dir, stage_seconds)
    if sharding is None:
        return _InProcess(spec, setup)
    from . import sharded

    return _InProcess(spec, setup, functools.partial(sharded.train_task, store_root=store.root, **sharding))


def _execute(spec: RunSpec, store: Store, data_dir, result: dict, on_stage, save_models: bool, tracker,
             sharding: dict | None, stage_seconds: float | None) -> None:
    check_method_file(spec, f"run {spec.run_id}")
    setup = _Setup(spec, data_dir)
    unlisted = {"unlisted_data": setup.source.unlisted} if setup.source.unlisted else {}
    result["provenance"].update(data_checksums=setup.checksums, items_digest=setup.items,
                                machine=machine(setup.device), **unlisted)
    result.update(device=setup.device, precision=setup.precision, precision_evidence=setup.evidence,
                  model_load_seconds=setup.load_seconds, stage0_key=setup.key)
    base = setup.stage0(spec, store)
    result["stages"].append({"stage": 0, "trained_on": None, **base})
    before = _function_outputs(setup.model, setup)
    if save_models:  # the base architecture, before a method's prepare reshapes the model in place
        from . import sandboxed

        architecture = (copy.deepcopy(setup.model.config), sandboxed.shapes_of(setup.model))
        on_stage = _saving(on_stage, spec, store, setup, result, architecture)
    if sharding:
        result["sharding"] = sharding
    trainer = _trainer(spec, setup, data_dir, store, sharding, stage_seconds)
    try:
        _train_and_score(spec, store, setup, trainer, result, base, before, on_stage, tracker)
    finally:
        trainer.close()


def _saving(on_stage, spec: RunSpec, store: Store, setup: _Setup, result: dict, architecture: tuple):
    """on_stage, then each trained stage's model written to its folder; the run's `saved_models[stage]` says
    where (relative to the results folder) or why it was not kept."""
    def call(stage, model):
        on_stage(stage, model)
        if stage == 0:
            return
        path = stage_models.folder(store.root, spec.run_id, stage)
        why = stage_models.save(model, setup.tok, *architecture, path)
        result.setdefault("saved_models", {})[str(stage)] = (
            {"folder": str(path.relative_to(store.root))} if why is None else {"not_saved": why})
    return call


def _train_and_score(spec, store, setup, trainer, result, base, before, on_stage, tracker) -> None:
    result["method_info"] = trainer.info
    model, own = trainer.prepare()
    trainable, total = trainer.counts
    result.update(trainable_params=trainable, total_params=total)
    if trainer.weights:  # parameter elements by storage dtype, after prepare (this process's model only)
        result["weights_by_dtype"] = trainer.weights
    on_stage(0, model)
    checkpoints = Checkpoints(store.root)
    done = _resume_point(spec, store, checkpoints) if trainer.resumable else 0
    if not done and (own or (model is not None and not _same_outputs(before, _function_outputs(model, setup)))):
        # prepare changed what the model computes (quantized base, virtual tokens): the run's baseline b_i is
        # the prepared model, scored here; the shared base-model scores stay beside it for retention vs base
        prepared = own or evaluate(model, setup.tok, setup.tasks, setup.probes, desc=f"eval prepared {spec.label}",
                                   **setup.eval_kw)
        result["stages"][0] = {"stage": 0, "trained_on": None, "prepared": True, **prepared}
        result["base_model"] = {"scores": base["scores"], "probes": base["probes"]}
    if done:
        checkpoints.load_method_state(spec.run_id, done, trainer, model)
        place_weights(model, setup.precision, setup.linears)  # what load_state added, placed as train_stage places it
        checkpoints.restore(spec.run_id, done, model)
        previous = store.load_run(spec.run_id)
        result["stages"] = previous["stages"][: done + 1]
        if "base_model" in previous:  # the attempt scored its prepared model as stage 0
            result["base_model"] = previous["base_model"]
        if "saved_models" in previous:
            result["saved_models"] = {k: v for k, v in previous["saved_models"].items() if int(k) <= done}
        result["resumed_from_stage"] = done
    store.save_run(result)
    tracker.begin(result["stages"])  # stage 0 on a fresh start; a resumed run's earlier attempt logged its stages

    for stage, task in enumerate(setup.tasks, start=1):
        if stage <= done:
            continue
        compute.start_stage(setup.device)
        train_start = time.perf_counter()  # the method's whole training cost: its hooks included
        model, train, method_stats, own = trainer.stage(stage)
        train_seconds = time.perf_counter() - train_start
        curve = train.pop("losses", None)  # the training curve: to the tracker, not into the run file
        on_stage(stage, model)
        scores = own or evaluate(model, setup.tok, setup.tasks, setup.probes,
                                 desc=f"{spec.label} s{spec.seed} eval after {task.name}", **setup.eval_kw)
        cost = compute.stage(setup.device, train_seconds, scores["seconds"], train["tokens"], train.get("workers", 0))
        if trainer.peak_memory_mb:  # a sandboxed method trained in a process of its own
            cost["peak_memory_mb"] = max(cost["peak_memory_mb"], trainer.peak_memory_mb)
        result["stages"].append({"stage": stage, "trained_on": task.name, "train": train, **scores, "compute": cost})
        result["compute"] = compute.run(result["stages"], trainable, total)
        if method_stats:
            result["stages"][-1]["method_stats"] = method_stats
        if not trainer.verified:
            result.update(verified=False, unverified=trainer.unverified_reason)
        saved = (trainer.resumable and stage < len(setup.tasks)
                 and checkpoints.save(spec.run_id, stage, model, trainer.state()) is not None)
        store.save_run(result)
        if saved:  # only now may the previous stage's checkpoint go
            checkpoints.prune(spec.run_id, keep=stage)
        tracker.stage(result["stages"][-1], curve)  # what was stored, after it was stored
