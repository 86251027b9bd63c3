"""The domain tasks and probes a stream can name, and how each picks its items.

Splits are drawn with `data_seed` only, so every method and seed of a sweep trains and
is scored on the same items.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Callable, Literal

from harness.errors import ConfigError

from .data import DataSource

LAW_SUBJECTS = ("professional_law", "international_law", "jurisprudence")
MBPP_TEST, MBPP_VALIDATION, MBPP_TRAIN = range(11, 511), range(511, 601), range(601, 975)


@dataclasses.dataclass
class Task:
    """A domain: the learn split (trained on) and evaluation views (recall = the learn items asked again)."""

    name: str
    kind: Literal["mc", "code", "stop", "instruct", "lm_eval"]
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


def _draw(pool: list, n: int, key: str, seed: int, field: str) -> list:
    """n items of the pool in the order seed gives; a ConfigError naming the budget `field` when it asks for
    more than the pool holds (before any model loads)."""
    if n > len(pool):
        raise ConfigError(f"{field} asks for {n} {key} items but the data holds {len(pool)}"
                          f"{' (after max_item_chars)' if key in ('stem', 'humanities', 'law', 'general') else ''};"
                          f" lower it to at most {len(pool)}")
    rng = random.Random(f"{key}:{seed}")
    order = list(pool)
    rng.shuffle(order)
    return order[:n]


def _mc_domain(name: str, keep, splits=("val", "test")) -> Callable:
    def make(src: DataSource, budget, seed: int) -> Task:
        drawn = _draw(mmlu_pool(src, keep, budget.max_item_chars, splits), budget.learn_items + budget.transfer_items,
                      name, seed, "budget.learn_items + budget.transfer_items")
        learn, transfer = drawn[: budget.learn_items], drawn[budget.learn_items:]
        return Task(name, "mc", learn, {"recall": learn, "transfer": transfer})
    return make


def _code_domain(src: DataSource, budget, seed: int) -> Task:
    mbpp = src.mbpp()
    learn = _draw([mbpp[i] for i in MBPP_TRAIN], budget.code_items, "code-learn", seed, "budget.code_items")
    views = {"recall": learn, "transfer": _draw([mbpp[i] for i in MBPP_TEST], budget.code_items, "code-test", seed,
                                                "budget.code_items")}
    if budget.heldout_items:
        views["humaneval"] = _draw(src.humaneval(), budget.heldout_items, "humaneval", seed, "budget.heldout_items")
    return Task("code", "code", learn, views)


def _code_validation(src: DataSource, budget, seed: int) -> Task:
    mbpp = src.mbpp()
    drawn = _draw([mbpp[i] for i in MBPP_VALIDATION], 2 * budget.code_items, "code_dev", seed, "budget.code_items")
    learn = drawn[: budget.code_items]
    return Task("code_dev", "code", learn, {"recall": learn, "transfer": drawn[budget.code_items:]})


def _general_probe(src: DataSource, budget, seed: int) -> Task:
    items = _draw(mmlu_pool(src, lambda s, c: c in ("social sciences", "other"), budget.max_item_chars), budget.general_items, "general", seed,
                  "budget.general_items")
    return Task("general", "mc", [], {"heldout": items})


DOMAINS: dict[str, Callable] = {
    "stem": _mc_domain("stem", lambda s, c: c == "STEM"),
    "humanities": _mc_domain("humanities", lambda s, c: c == "humanities" and s not in LAW_SUBJECTS),
    "law": _mc_domain("law", lambda s, c: s in LAW_SUBJECTS),
    "code": _code_domain,
}
# Validation domains (`clbench tune`): items no benchmark domain or probe draws from, MMLU's dev split (5
# questions per subject) and MBPP's validation problems, so hyper-parameters never see the benchmark's items.
MMLU_DEV: dict[str, Callable[[str, str], bool]] = {
    "stem_dev": lambda s, c: c == "STEM", "social_dev": lambda s, c: c == "social sciences",
    "other_dev": lambda s, c: c == "other", "humanities_dev": lambda s, c: c == "humanities"}
VALIDATION: dict[str, Callable] = {**{name: _mc_domain(name, keep, ("dev",)) for name, keep in MMLU_DEV.items()},
                                   "code_dev": _code_validation}
DOMAINS.update(VALIDATION)

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
        return Task(name, "lm_eval", [], {})  # lm-eval reads its own data (harness.lmeval_bridge)
    return PROBES[name](src, budget, seed)


def load_stream(src: DataSource, stream: list[str], probes: list[str], budget, seed: int):
    """All tasks and probes of a run, loaded (and checksummed) before any model is touched."""
    return [DOMAINS[n](src, budget, seed) for n in stream], [_probe(n, src, budget, seed) for n in probes]
