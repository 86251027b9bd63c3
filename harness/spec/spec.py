"""RunSpec: everything that determines one run's result, frozen and content-hashed."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from ..core.errors import ConfigError
from ..core.typed import build
from . import sandbox
from .config import Budget, SweepConfig, seeds_of


@dataclasses.dataclass(frozen=True)
class RunSpec:
    model: str
    precision: str
    device: str
    stream: tuple
    probes: tuple
    scorer: str
    budget: dict
    data_seed: int
    method: str
    label: str
    method_config: dict
    seed: int
    domains: dict = dataclasses.field(default_factory=dict)  # user domain name -> file path (SweepConfig.domains)
    method_sha256: str = ""  # a 'file.py:Class' method: the file's SHA-256 (file_sha256), what the run id names

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        data = dict(data)
        data["stream"], data["probes"] = tuple(data["stream"]), tuple(data["probes"])
        return cls(**data)

    def as_dict(self) -> dict:
        """The spec as stored. `domains` only when the stream has user domains and `method_sha256` only for a
        method file, so the ids of runs of built-in methods over built-in domains stay what they were."""
        d = json.loads(json.dumps(dataclasses.asdict(self)))
        for key in ("domains", "method_sha256"):
            if not d[key]:
                del d[key]
        return d

    @property
    def run_id(self) -> str:
        """The hash of the spec. A method file counts by its name and content (`method_sha256`), not by the
        folder it lies in: the same file run from a moved results folder or another clone keeps its run ids,
        and an edited file gets new ones (runs stored before method_sha256 hash their path, as they did)."""
        d = self.as_dict()
        d["method"] = method_identity(d)
        return content_hash(d)

    def budget_config(self) -> Budget:
        return build(Budget, self.budget, "budget")

    def protocol(self) -> dict:
        """The part shared by every method of a sweep: what makes rows comparable. The task
        order is not part of it: runs over several orders of the same tasks are averaged
        together like seeds (each run's metrics follow its own order)."""
        d = self.as_dict()
        for k in ("method", "label", "method_config", "seed"):
            d.pop(k)
        # a method file's content is the method's; domain paths differ between machines (the items digest holds
        # what their items say)
        for k in ("method_sha256", "domains"):
            d.pop(k, None)
        d["stream"] = sorted(d["stream"])
        return d


def content_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def method_identity(spec: dict) -> str:
    """A stored spec's method as its run id and board row count it: a registered name, or a method file's name and
    class (its content is `method_sha256`), wherever the file lies."""
    if not spec.get("method_sha256"):
        return spec["method"]
    file, _, cls = spec["method"].rpartition(":")
    return f"{Path(file).name}:{cls}"


def file_sha256(method: str) -> str:
    """The SHA-256 of a 'file.py:Class' method's file ('' for a registered name)."""
    if ".py:" not in method:
        return ""
    file = method.rpartition(":")[0]
    try:
        return hashlib.sha256(Path(file).read_bytes()).hexdigest()
    except OSError as e:
        raise ConfigError(f"method file {file}: cannot be read ({type(e).__name__}: {e.strerror or e})") from None


def check_method_file(spec: RunSpec, where: str) -> None:
    """ConfigError when the spec's method file is not the content its run id names (edited since the runs were
    planned). Before any compute: a run executes the code its id stands for."""
    if spec.method_sha256 and (now := file_sha256(spec.method)) != spec.method_sha256:
        raise ConfigError(f"{where}: {spec.method.rpartition(':')[0]} is not the file this run's id names (SHA-256 "
                          f"{now[:12]}..., the run's {spec.method_sha256[:12]}...): it was edited since; run the "
                          "card again to plan runs of the file as it is, or put the earlier file back")


def expand(cfg: SweepConfig) -> list[RunSpec]:
    """One RunSpec per method variant x task order x seed (the variant's own seeds, else the card's), each method
    config resolved with its defaults."""
    specs = []
    for i, entry in enumerate(cfg.methods):
        method_config = sandbox.info(entry.method, entry.config, where=f"methods[{i}].method")["config"]
        sha = file_sha256(entry.method)
        for seed, order in [(s, o) for o in [cfg.stream, *cfg.task_orders] for s in seeds_of(cfg, entry)]:
            specs.append(RunSpec(model=cfg.model, precision=cfg.precision, device=cfg.device, stream=tuple(order),
                                 probes=tuple(cfg.probes), scorer=cfg.scorer, budget=dataclasses.asdict(cfg.budget),
                                 data_seed=cfg.data_seed, method=entry.method, label=entry.label or entry.method,
                                 method_config=method_config, seed=seed, domains=dict(cfg.domains),
                                 method_sha256=sha))
    return specs
