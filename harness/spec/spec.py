"""RunSpec: everything that determines one run's result, frozen and content-hashed."""
from __future__ import annotations

import dataclasses
import hashlib
import json

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

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        data = dict(data)
        data["stream"], data["probes"] = tuple(data["stream"]), tuple(data["probes"])
        return cls(**data)

    def as_dict(self) -> dict:
        """The spec as stored. `domains` only when the stream has user domains, so the ids of runs over
        built-in domains stay what they were before domain files."""
        d = json.loads(json.dumps(dataclasses.asdict(self)))
        if not d["domains"]:
            del d["domains"]
        return d

    @property
    def run_id(self) -> str:
        return content_hash(self.as_dict())

    def budget_config(self) -> Budget:
        return build(Budget, self.budget, "budget")

    def protocol(self) -> dict:
        """The part shared by every method of a sweep: what makes rows comparable. The task
        order is not part of it: runs over several orders of the same tasks are averaged
        together like seeds (each run's metrics follow its own order)."""
        d = self.as_dict()
        for k in ("method", "label", "method_config", "seed"):
            d.pop(k)
        d.pop("domains", None)  # paths differ between machines; what their items say is in the items digest
        d["stream"] = sorted(d["stream"])
        return d


def content_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def expand(cfg: SweepConfig) -> list[RunSpec]:
    """One RunSpec per method variant x task order x seed (the variant's own seeds, else the card's), each method
    config resolved with its defaults."""
    specs = []
    for i, entry in enumerate(cfg.methods):
        method_config = sandbox.info(entry.method, entry.config, where=f"methods[{i}].method")["config"]
        for seed, order in [(s, o) for o in [cfg.stream, *cfg.task_orders] for s in seeds_of(cfg, entry)]:
            specs.append(RunSpec(model=cfg.model, precision=cfg.precision, device=cfg.device, stream=tuple(order),
                                 probes=tuple(cfg.probes), scorer=cfg.scorer, budget=dataclasses.asdict(cfg.budget),
                                 data_seed=cfg.data_seed, method=entry.method, label=entry.label or entry.method,
                                 method_config=method_config, seed=seed, domains=dict(cfg.domains)))
    return specs
