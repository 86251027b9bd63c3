"""Expand a sweep into RunSpecs, check everything that needs no model, skip finished runs, schedule the rest."""
from __future__ import annotations

from pathlib import Path

from tasks.data import DataSource
from tasks.registry import load_stream

from ..core.errors import ConfigError
from ..model.models import check_reachable
from ..run.checkpoints import Checkpoints
from ..spec.config import SweepConfig, sharding_problems
from ..spec.protocol import stamp, version_of
from ..spec.spec import RunSpec, expand, method_identity
from ..store.provenance import REPO, cpu_label, git_commit, score_package_versions, score_packages_of
from ..store.store import Store
from ..store.submissions import read_record, stored_names


def preflight(cfg: SweepConfig) -> list[RunSpec]:
    """Everything that can fail without a model: specs, methods, sharding, and every dataset row."""
    specs = expand(cfg)
    if problems := sharding_problems(cfg):  # again: a submission's sweep is the card with its method put in
        raise ConfigError("; ".join(problems))
    load_stream(DataSource(cfg.data_dir), list(cfg.stream), list(cfg.probes), specs[0].budget_config(), cfg.data_seed,
                cfg.domains)
    return specs


def prepare_problems(cfg: SweepConfig, specs: list[RunSpec]) -> list[str]:
    """A built-in method's `prepare` tried at each run's config on the model's skeleton (the meta device: module
    names and shapes, no weights), so that a config that cannot apply to the model (a LoRA target it lacks, a
    freeze pattern that matches nothing) is named before any run starts, not after its stage 0 is computed. Not
    tried: a submitted method (its own trial runs confined, harness.spec.sandbox) and one that quantizes the base
    model (Needs.quantized_base: quantizing reads the weights)."""
    import copy

    import torch
    from methods.base import StageContext
    from methods.registry import resolve_method

    from ..core.typed import build
    from ..model.models import skeleton
    from ..spec import sandbox

    base, problems = None, {}
    entry = {e.label or e.method: i for i, e in enumerate(cfg.methods)}
    for spec in specs:
        key = (spec.label, spec.method, repr(spec.method_config))
        if key in problems or not sandbox.trusted(spec.method):
            continue
        cls = resolve_method(spec.method)
        if cls.needs.quantized_base:
            continue
        base = base if base is not None else skeleton(spec.model)
        ctx = StageContext(stage=0, task=None, seen=[], device="meta", seed=spec.seed)
        try:
            with torch.random.fork_rng(devices=[]):
                cls(build(cls.Config, spec.method_config, "method_config")).prepare(copy.deepcopy(base), ctx)
            problems[key] = None
        except Exception as e:  # whatever the method raises for this model is the config's problem to name
            problems[key] = (f"methods[{entry.get(spec.label, '?')}].config (label '{spec.label}', method "
                             f"{spec.method}) cannot apply to model '{spec.model}': {type(e).__name__}: "
                             f"{' '.join(str(e).split()).rstrip('.')}; change the config or the model")
    return [why for why in problems.values() if why]


def _other_stack(run: dict) -> str:
    """Where a stored run's score-changing packages differ from the installed ones: which, and what follows."""
    stored, now = score_packages_of(run), score_package_versions()
    changed = [f"{name} {stored[name]} (installed: {now[name]})" for name in now if stored[name] != now[name]]
    if not changed:
        return ""
    return (f"; it was made with {', '.join(changed)}, so it ranks apart from runs made now: to compare this "
            "stack, run into another --results folder")


def pending(specs: list[RunSpec], store: Store, log=print, protocol: dict | None = None) -> list[RunSpec]:
    """The specs without a finished run (under `protocol`'s version, when given: a run stored under
    another version of the card is run again and restamped). A finished run's stage checkpoints, which a kill
    right after it was stored can leave, are removed."""
    todo = []
    for spec in specs:
        done = store.load_run(spec.run_id)
        stale = protocol is not None and done is not None and version_of(done) != protocol["version"]
        if done is not None and done.get("status") == "finished" and not stale:
            stored = done.get("provenance", {}).get("machine", {})
            machine = stored.get("gpu") or cpu_label(stored)
            log(f"skip {spec.label} seed {spec.seed}: finished ({done.get('precision')} on {machine}) in "
                f"{store.run_path(spec.run_id)}{_other_stack(done)}")
            Checkpoints(store.root).remove(spec.run_id)
        else:
            if stale:
                log(f"rerun {spec.label} seed {spec.seed}: stored under protocol version {version_of(done)}, "
                    f"this sweep's is {protocol['version']}")
            todo.append(spec)
    return todo


def label_problems(specs: list[RunSpec], results_dir) -> list[str]:
    """Labels that a stored submission owns (its name, compared case-insensitively) but that these runs would
    fill with another method: a config cannot merge its runs into a submission's row."""
    owners = stored_names(results_dir)
    out = []
    for label, method, sha in sorted({(s.label, s.method, s.method_sha256) for s in specs}):
        name = owners.get(label.casefold())
        if name is None:
            continue
        record, why = read_record(Path(results_dir) / "submissions" / name / "record.json")
        if why or label != name or not _submitted(record, method, sha):
            out.append(f"label '{label}' is the submission '{name}' in {results_dir}/submissions; runs of {method} "
                       "under it would join that row: pick another label")
    return out


def _submitted(record: dict, method: str, sha: str) -> bool:
    """Whether runs of `method` (a method file with SHA-256 `sha`) are the submission's own: its entry point, or its
    file wherever the copy now lies (by name, class and content, as the run id counts it)."""
    if ".py:" not in record["method"]:
        return method == record["method"]
    theirs = {"method": record["method"], "method_sha256": record["file"]["sha256"]}
    return sha == theirs["method_sha256"] and method_identity({"method": method, "method_sha256": sha}) == \
        method_identity(theirs)


def check_address(address: str | None) -> None:
    """A Ray cluster's address (HOST:PORT, or 'auto') checked before anything runs: a malformed one raised inside Ray
    after seconds, one nobody listens at was retried for ever, an empty one silently started a local instance."""
    import re
    import socket

    if address is None or address == "auto":
        return
    match = re.fullmatch(r"(?:ray://)?\[?([^\s\[\]/]+?)\]?:(\d{1,5})", address)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ConfigError(f"--address {address or repr(address)}: not HOST:PORT (the head node's, e.g. "
                          "10.0.0.5:6379) or 'auto'; leave it out to start a local Ray instance")
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout=10).close()
    except OSError as e:
        raise ConfigError(f"--address {address}: nothing answers there ({e.strerror or type(e).__name__}); start the "
                          "cluster's head (ray start --head) or check the address") from None


def run_sweep(cfg: SweepConfig, results_dir, address: str | None = None, log=print,
              cost_sources: list[str] | None = None) -> list[dict]:
    """Run what is not finished yet. cost_sources: stored runs to measure rates on (after `results_dir`'s own) for
    the expected time of the runs left, logged before they start (None: no estimate)."""
    from .scheduler import run_specs

    store = Store(results_dir)
    check_address(address)
    specs = preflight(cfg)
    if problems := label_problems(specs, results_dir):
        raise ConfigError("; ".join(problems))
    card = stamp(cfg)
    log(f"protocol {card['name']} version {card['version']}")
    store.check_writable()
    with store.sweep_lock(log):
        todo = pending(specs, store, log, card)
        if not todo:
            return []
        check_reachable(cfg.model)  # only when something is left to run: a finished sweep needs no model
        if problems := prepare_problems(cfg, todo):
            raise ConfigError("; ".join(problems))
        if git_commit()["dirty"]:  # said before hours of runs, not found in their files after (#15's board lost two)
            log(f"note: {REPO} has uncommitted changes to tracked files (git status): every run file will record "
                "dirty: true, so none can be a reference result; commit or stash them first for one")
        if cost_sources is not None:
            from ..model.precision import pick_device
            from ..report import cost

            log(cost.expected(cfg, pick_device(cfg.device), [str(results_dir), *cost_sources], left=len(todo)))
        return run_specs(todo, store, data_dir=cfg.data_dir, sweep=cfg.name, address=address,
                         num_cpus=cfg.resources.num_cpus, num_gpus=cfg.resources.num_gpus,
                         memory_gb=cfg.resources.memory_gb, protocol=card, save_models=cfg.save_models,
                         tracking=cfg.tracking, workers=cfg.resources.workers_per_run,
                         activation_checkpointing=cfg.resources.activation_checkpointing,
                         stage_seconds=cfg.resources.stage_hours * 3600)
