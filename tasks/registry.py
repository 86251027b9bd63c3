"""The domain tasks and probes a stream can name, and how each picks its items.

A domain is a YAML file (tasks.domain_spec): the built-in ones are in tasks/domains/ (the validation
domains of `clbench tune` in tasks/domains/validation/), and a stream may name a user's file by its path.
Splits are drawn with `data_seed` only, so every method and seed of a sweep trains and is scored on the
same items.
"""
from __future__ import annotations

import dataclasses
import functools
import random
from pathlib import Path
from typing import Callable, Literal

from harness.core.errors import ConfigError, DataError

from . import domain_items, domain_spec
from .data import DataSource
from .domain_spec import DomainSpec

BUILTIN_DIR = Path(__file__).parent / "domains"


@dataclasses.dataclass
class Task:
    """A domain: the learn split (trained on) and evaluation views (recall = the learn items asked again)."""

    name: str
    kind: Literal["mc", "gen", "code", "stop", "instruct", "lm_eval"]
    learn: list
    views: dict[str, list]


def mmlu_pool(src: DataSource, keep: Callable[[str, str], bool], max_chars: int, splits=("val", "test")) -> list:
    pool = []
    for subject, category in sorted(src.mmlu_subjects().items()):
        if keep(subject, category):
            for split in splits:
                pool += src.mmlu(subject, split)
    if max_chars:
        pool = [it for it in pool if len(it.question) + sum(len(o) for o in it.options) <= max_chars]
    return pool


def _draw(pool: list, n: int, key: str, seed: int, field: str, capped: bool = False) -> list:
    """n items of the pool in the order seed gives; a ConfigError naming the budget `field` when it asks for
    more than the pool holds (before any model loads). capped: the pool is what max_item_chars left."""
    if n > len(pool):
        raise ConfigError(f"{field} asks for {n} {key} items but the data holds {len(pool)}"
                          f"{' (after max_item_chars)' if capped else ''}; lower {'their sum' if '+' in field else 'it'} "
                          f"to at most {len(pool)}")
    rng = random.Random(f"{key}:{seed}")
    order = list(pool)
    rng.shuffle(order)
    return order[:n]


@functools.cache
def _builtin_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted([*BUILTIN_DIR.glob("*.yaml"), *BUILTIN_DIR.glob("validation/*.yaml")])}


DOMAINS: tuple[str, ...] = tuple(_builtin_files())  # built-in domain names a stream can list
VALIDATION: tuple[str, ...] = tuple(p.stem for p in sorted(BUILTIN_DIR.glob("validation/*.yaml")))


@functools.cache
def builtin(name: str) -> DomainSpec:
    return domain_spec.read(_builtin_files()[name])


def _mmlu_keep(block: dict) -> Callable[[str, str], bool]:
    categories, subjects = set(block.get("categories", ())), set(block.get("subjects", ()))
    exclude = set(block.get("exclude_subjects", ()))
    return lambda s, c: (c in categories or s in subjects) and s not in exclude


def mmlu_domain_pool(spec: DomainSpec, src: DataSource, max_chars: int) -> list:
    """The MMLU items an mmlu-sourced domain draws from."""
    return mmlu_pool(src, _mmlu_keep(spec.reader), max_chars, tuple(spec.reader.get("splits", ("val", "test"))))


def _pools(spec: DomainSpec, src: DataSource, budget) -> dict[str, list]:
    """The domain's items by role: {pool} (split by the data seed) or {learn, transfer}."""
    if spec.source == "mmlu":
        return {"pool": mmlu_domain_pool(spec, src, budget.max_item_chars)}
    if spec.source == "mbpp":
        mbpp = src.mbpp()
        return {role: [mbpp[i] for i in range(*ids) if i in mbpp] for role, ids in spec.reader.items()}
    return {role: domain_items.items(spec, role, src) for role in spec.files}


def load_domain(spec: DomainSpec, src: DataSource, budget, seed: int) -> Task:
    """The domain's learn split and views (recall, transfer; code: humaneval when budget.heldout_items).
    Multiple choice draws budget.learn_items + transfer_items; generation and code budget.code_items each."""
    pools = _pools(spec, src, budget)
    if spec.kind == "multiple_choice":
        n_learn, n_transfer, field = budget.learn_items, budget.transfer_items, "budget.learn_items + budget.transfer_items"
    else:
        n_learn = n_transfer = budget.code_items
        field = "budget.code_items"
    capped = spec.source == "mmlu" and bool(budget.max_item_chars)
    if "pool" in pools:
        drawn = _draw(pools["pool"], n_learn + n_transfer, spec.name, seed, field, capped)
        learn, transfer = drawn[:n_learn], drawn[n_learn:]
    else:
        learn = _draw(pools["learn"], n_learn, f"{spec.name}-learn", seed, field, capped)
        transfer = _draw(pools["transfer"], n_transfer, f"{spec.name}-test", seed, field, capped)
    views = {"recall": learn, "transfer": transfer}
    if spec.heldout and budget.heldout_items:
        views["humaneval"] = _draw(src.humaneval(), budget.heldout_items, "humaneval", seed, "budget.heldout_items")
    return Task(spec.name, spec.task_kind, learn, views)


def _general_probe(src: DataSource, budget, seed: int) -> Task:
    items = _draw(mmlu_pool(src, lambda s, c: c in ("social sciences", "other"), budget.max_item_chars),
                  budget.general_items, "general", seed, "budget.general_items", bool(budget.max_item_chars))
    return Task("general", "mc", [], {"heldout": items})


def _stop_probe(src: DataSource, budget, seed: int) -> Task:
    return Task("stop", "stop", [], {"prompts": _draw(src.stop_prompts(), budget.stop_prompts, "stop", seed,
                                                            "budget.stop_prompts")})


def _instruct_probe(src: DataSource, budget, seed: int) -> Task:
    return Task("instruct", "instruct", [], {"reference": _draw(src.self_instruct(), budget.instruct_items, "instruct",
                                                                       seed, "budget.instruct_items")})


PROBES: dict[str, Callable] = {"general": _general_probe, "stop": _stop_probe, "instruct": _instruct_probe}
LM_EVAL_PREFIX = "lm_eval:"  # `lm_eval:<task>`: any lm-evaluation-harness task, scored in-process


def _probe(name: str, src: DataSource, budget, seed: int) -> Task:
    if name.startswith(LM_EVAL_PREFIX):
        return Task(name, "lm_eval", [], {})  # lm-eval reads its own data (harness.integrations.lmeval_bridge)
    return PROBES[name](src, budget, seed)


def domain(name: str, domains: dict[str, str]) -> DomainSpec:
    """A stream entry's domain: a user's file (`domains` maps its name to its path), else a built-in one."""
    if name not in domains:
        return builtin(name)
    spec = domain_spec.read(Path(domains[name]))
    if spec.name != name:
        raise DataError(f"{spec.path}: its name is now '{spec.name}', but the sweep knows it as '{name}'; "
                        "the file changed after the config was read: start the sweep again")
    return spec


def load_stream(src: DataSource, stream: list[str], probes: list[str], budget, seed: int,
                domains: dict[str, str] | None = None):
    """All tasks and probes of a run, loaded (and checksummed) before any model is touched. A user's domain
    file is checksummed too (`domain:<name>`), so a run's provenance names the file it read."""
    domains = domains or {}
    tasks = []
    for name in stream:
        spec = domain(name, domains)
        if name in domains:
            src.checksums[f"domain:{name}"] = spec.digest
        tasks.append(load_domain(spec, src, budget, seed))
    return tasks, [_probe(n, src, budget, seed) for n in probes]
