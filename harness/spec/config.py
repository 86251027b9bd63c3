"""Sweep configs: YAML presets and files validated into typed dataclasses before any compute."""
from __future__ import annotations

import dataclasses
import re
import unicodedata
from pathlib import Path
from typing import Literal, Optional

from tasks import domain_spec

from ..core.errors import ConfigError
from ..core.suggest import did_you_mean
from ..core.typed import build, field
from ..core.yaml_file import parse_yaml, read_yaml
from .sandbox import STAGE_TIMEOUT

PRESET_DIR = Path(__file__).parent / "presets"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a card's name: it names folders and board sections
# the most items one view may hold: the board's bootstrap keeps replicates x items draws per view (10,000 x 2,048
# x 8 bytes = 164 MB), so a stored run's views are held to its budget's counts and these to this
MAX_VIEW_ITEMS = 2048


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much data and compute each stage gets. Part of the benchmark protocol."""

    learn_items: int = field(16, "items trained on per multiple-choice domain (recall is asked on these)",
                             min=1, max=MAX_VIEW_ITEMS)
    transfer_items: int = field(16, "held-out items per domain, never trained on", min=1,
                                max=MAX_VIEW_ITEMS)
    code_items: int = field(8, "items per view of a code or generation domain (learn/recall and transfer; MBPP, "
                                 "GSM8K)", min=1, max=MAX_VIEW_ITEMS)
    heldout_items: int = field(8, "HumanEval problems scored as the code domain's extra held-out view",
                               min=0, max=MAX_VIEW_ITEMS)
    general_items: int = field(32, "items of the general-ability probe (MMLU social sciences + other)",
                               min=1, max=MAX_VIEW_ITEMS)
    max_item_chars: int = field(0, "skip MMLU items whose question + options are longer than this (0: no cap)", min=0)
    epochs: int = field(3, "passes over each domain's learn split", min=1)
    batch_size: int = field(4, "training examples per optimisation step", min=1)
    max_length: int = field(384, "token cap of one training example (prompt is cut from the left, EOS kept)", min=16)
    max_new_tokens: int = field(0, "generation cap for code and generation answers; 0 = sized from the drawn "
                                   "items: 1.25 x the longest reference solution (with its end of turn), so a correct answer fits", min=0)
    stop_prompts: int = field(16, "open-ended prompts of the `stop` probe (of 332)", min=1, max=332)
    stop_max_new_tokens: int = field(160, "token cap of a `stop` probe answer; an answer without EOS by then did not stop", min=1)
    repetition_n: int = field(4, "n of the n-grams in tail repetition and distinct-n", min=1)
    repetition_window: int = field(64, "tail repetition looks at the last this many tokens of each answer", min=2)
    instruct_items: int = field(32, "Self-Instruct tasks of the `instruct` probe (of 252)", min=1, max=252)
    lm_eval_include: str = field("", "folder of extra lm-eval task YAMLs for `lm_eval:<task>` probes ('' = lm-eval's own tasks only)")
    lm_eval_limit: int = field(0, "items per `lm_eval:<task>` probe (0: all)", min=0)


@dataclasses.dataclass(frozen=True)
class Resources:
    """What each run asks Ray for. Not part of the protocol: it changes speed, not results."""

    num_cpus: int = field(1, "CPU cores per run (torch uses this many threads)", min=1)
    num_gpus: float = field(0.0, "GPUs per run; 0 = one when device is cuda or the method needs a GPU", min=0.0)
    memory_gb: float = field(0.0, "memory Ray reserves per run (0: no reservation)", min=0.0)
    workers_per_run: int = field(1, "processes each run's training is sharded over (FSDP under Ray Train, "
                                 "harness.run.sharded); each asks for num_cpus (and a GPU on cuda) besides the run's "
                                 "own process, which evaluates; >1 needs a method that declares `shardable`", min=1)
    activation_checkpointing: bool = field(False, "sharded training recomputes each block's "
                                           "activations in the backward pass: less memory, another forward pass")
    stage_hours: float = field(STAGE_TIMEOUT / 3600, "hours a method clbench did not write may take for its prepare or one stage "
                               "before its run fails: the bound on a busy loop (a child that uses no CPU for 10 "
                               "minutes fails then)", min=0.0001)


@dataclasses.dataclass(frozen=True)
class MethodEntry:
    """One method variant in a sweep: a registered method, its label and its config overrides."""

    method: str = field("full", "registered method name (see `clbench methods`) or path/to/file.py:Class")
    label: str = field("", "name shown on the leaderboard; defaults to the method name")
    config: dict = field({}, "overrides of the method's config fields")
    seeds: list[int] = field([], "this variant's own seeds, e.g. one seed for a method the card does not name "
                                 "(`clbench tune` writes them so); [] = the card's `seeds`")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A benchmark sweep: one model, one stream, methods x seeds."""

    name: str = field("custom", "sweep name, recorded in every result (letters, digits, ., _ and -)")
    model: str = field("smollm2-135m-instruct", "'smollm2-135m-instruct', 'tiny', a hub id (owner/name, or "
                       "owner/name@revision to pin a commit or tag) or a local model dir")
    precision: Literal["auto", "bf16", "fp32"] = field("auto", "auto = bf16 on CUDA, and on CPU only where a measured bf16 matmul is faster")
    device: Literal["auto", "cpu", "cuda"] = field("auto", "auto = cuda when available")
    stream: list[str] = field(["stem", "humanities", "code", "law"], "domain tasks in training order: built-in names "
                              "or paths of domain files (docs/adding-a-domain.md)")
    task_orders: list[list[str]] = field([], "more orders of the same tasks to run besides `stream` (each a permutation)")
    probes: list[str] = field(["general"], "probes scored after every stage, never trained on")
    methods: list[MethodEntry] = field([], "method variants to compare")
    seeds: list[int] = field([0], "one run per method per seed")
    scorer: Literal["cloze_char", "cloze_raw", "cloze", "letter"] = field(
        "cloze_char", "multiple-choice scorer: cloze_char = each option's log-probability per character (lm-eval's "
        "acc_norm); cloze_raw = summed (lm-eval's acc); cloze = mean per token (clbench's default before result "
        "schema 2, no lm-eval equivalent); letter = the most probable of the letters A-D (lm-eval's acc)")
    budget: Budget = field(Budget(), "data and compute per stage")
    resources: Resources = field(Resources(), "Ray resource request of each run")
    data_dir: Optional[str] = field(None, "dataset folder; default: $CLBENCH_DATA")
    data_seed: int = field(1234, "picks which items form each split; fixed across methods and seeds")
    domains: dict[str, str] = field({}, "the stream's user domains, name -> absolute path of the domain file; "
                                    "filled in from the paths a stream lists")
    save_models: bool = field(False, "write each trained stage's model as a Hugging Face folder under "
                              "<results>/models/<run_id>/stage<k>/ (for lm-eval and other tools; 0.5 GB per stage for SmolLM2)")
    tracking: Literal["none", "tensorboard"] = field(
        "none", "experiment tracking: 'tensorboard' logs each run's per-stage metrics and training curve offline "
        "under <results>/tracking/<label>-seed<seed>-<run_id>/ (needs requirements/tracking.txt); 'none' logs nothing")


def _normalise_methods(raw, where):
    if not isinstance(raw, list):
        raise ConfigError(f"{where}.methods: expected a list of method names or mappings")
    out = []
    for i, m in enumerate(raw):
        out.append({"method": m} if isinstance(m, str) else m)
    return out


def _domain_paths(data: dict, base: Path) -> dict:
    """data with every domain-file path in its stream and task orders made absolute against `base` (the config
    file's folder for its own lists; the working directory for --set)."""
    def absolute(entry):
        if not (isinstance(entry, str) and domain_spec.is_path(entry)):
            return entry
        try:
            return str((base / entry).resolve())
        except (OSError, ValueError):  # a NUL byte, a loop of links: domain_spec.read names it
            return entry

    data = dict(data)
    if isinstance(data.get("stream"), list):
        data["stream"] = [absolute(e) for e in data["stream"]]
    if isinstance(data.get("task_orders"), list):
        data["task_orders"] = [[absolute(e) for e in o] if isinstance(o, list) else o for o in data["task_orders"]]
    return data


def _domain_names(data: dict, source: str) -> dict:
    """data with each domain-file path of its stream read (and checked) and replaced by the domain's name, the
    paths kept in `domains`: results, matrices and boards name a task, never a path."""
    stream = data.get("stream")
    if not isinstance(stream, list) or not any(isinstance(e, str) and domain_spec.is_path(e) for e in stream):
        return data
    if not isinstance(data.get("domains", {}), dict):
        raise ConfigError(f"{source}: domains: expected a mapping of domain name to domain file; it is filled in from "
                          "the stream's paths, so it can be left out")
    domains = dict(data.get("domains", {}))
    names = {}
    for i, entry in enumerate(stream):
        if isinstance(entry, str) and domain_spec.is_path(entry):
            try:
                spec = domain_spec.read(Path(entry))
            except ConfigError as e:  # the file's own problem, said where the config names it
                hint = ("" if Path(entry).exists() else " (a domain file's path is relative to the config's folder, "
                        "or to the working directory for --set)")
                raise ConfigError(f"{source}: stream[{i}]: {e}{hint}") from None
            if spec.name in names.values() or spec.name in [e for e in stream if not domain_spec.is_path(str(e))]:
                raise ConfigError(f"{source}: stream[{i}]: {entry} is named '{spec.name}', like another task of the "
                                  "stream; give each domain its own name")
            names[entry] = spec.name
            domains[spec.name] = str(spec.path)
    def name(entry):
        return names.get(entry, entry) if isinstance(entry, str) else entry

    data = dict(data, stream=[name(e) for e in stream], domains=domains)
    if isinstance(data.get("task_orders"), list):
        data["task_orders"] = [[name(e) for e in o] if isinstance(o, list) else o for o in data["task_orders"]]
    return data


def _plain_text(text: str) -> bool:
    """Text a board can show as it is: UTF-8, printable (no control, bidirectional or other formatting
    character), not blank at either end."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return bool(text) and text.isprintable() and text == text.strip() and all(
        unicodedata.category(c) != "Cf" for c in text)


def parse(data: dict, source: str) -> SweepConfig:
    """Validate a config mapping; every error names `source` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of config keys")
    data = _domain_names(_domain_paths(data, Path.cwd()), source)
    if "methods" in data:
        data["methods"] = _normalise_methods(data["methods"], source)
    cfg = build(SweepConfig, data, source, root=True)
    check(cfg, source)
    return cfg


def check_model(name: str, source: str) -> None:
    """A model is a built-in name, a local folder or a hub id (owner/name): a bare name that is none of them is a
    typo, caught here rather than after the hub has been retried from every Ray worker."""
    from ..model.models import SMOLLM2, TINY

    if name in (SMOLLM2, TINY) or Path(name).is_dir() or "/" in name.strip("/"):
        return
    raise ConfigError(f"{source}: model '{name}' is not a built-in name, a local folder or a hub id (owner/name); "
                      f"{did_you_mean(name, (SMOLLM2, TINY))}")


def check(cfg: SweepConfig, source: str) -> None:
    """Cross-field checks: known model, tasks and methods, method configs, non-empty lists."""
    from tasks.registry import DOMAINS, LM_EVAL_PREFIX, PROBES

    from methods.registry import available

    from . import sandbox

    if not NAME.fullmatch(cfg.name):  # it names folders (clbench tune's default results/tune/<name>) and sections
        raise ConfigError(f"{source}: name {cfg.name[:80]!r} is not a plain name; use letters, digits, '.', '_' and "
                          "'-' (at most 100, starting with a letter or digit)")
    check_model(cfg.model, source)
    if cfg.tracking == "tensorboard":
        from ..integrations import tracking

        if not tracking.available():
            raise ConfigError(f"{source}: tracking: tensorboard needs the tensorboard package, which is not installed: "
                              "pip install -r requirements/tracking.txt (or clbench[tracking]), or set tracking: none")

    if not cfg.stream:
        raise ConfigError(f"{source}: stream is empty; list at least one of {', '.join(sorted(DOMAINS))}")
    for name, path in cfg.domains.items():
        if name in DOMAINS:
            raise ConfigError(f"{source}: {path} is named '{name}', like the built-in domain; give it a name of its "
                              "own, so no board mistakes one for the other")
    for i, name in enumerate(cfg.stream):
        if name not in DOMAINS and name not in cfg.domains:
            raise ConfigError(f"{source}: stream[{i}]: unknown task '{name}'; {did_you_mean(name, DOMAINS)}, "
                              "or the path of a domain file (docs/adding-a-domain.md)")
    if len(set(cfg.stream)) != len(cfg.stream):
        raise ConfigError(f"{source}: stream lists a task twice: {cfg.stream}")
    for i, order in enumerate(cfg.task_orders):
        if sorted(order) != sorted(cfg.stream):
            raise ConfigError(f"{source}: task_orders[{i}]: {order} is not a permutation of stream {cfg.stream}")
    for i, name in enumerate(cfg.probes):
        if name.startswith(LM_EVAL_PREFIX):
            from ..integrations.lmeval_bridge import task_manager

            task_manager(name[len(LM_EVAL_PREFIX):], cfg.budget.lm_eval_include, where=f"{source}: probes[{i}]")
        elif name not in PROBES:
            raise ConfigError(f"{source}: probes[{i}]: unknown probe '{name}'; "
                              f"{did_you_mean(name, PROBES)} (or {LM_EVAL_PREFIX}<task> for an lm-eval task)")
    if cfg.budget.repetition_window < cfg.budget.repetition_n:
        raise ConfigError(f"{source}: budget.repetition_window ({cfg.budget.repetition_window}) is shorter than "
                          f"budget.repetition_n ({cfg.budget.repetition_n}); the tail would hold no n-gram")
    if len(set(cfg.probes)) != len(cfg.probes):
        raise ConfigError(f"{source}: probes lists a probe twice: {cfg.probes}")
    if not cfg.methods:
        raise ConfigError(f"{source}: methods is empty; add e.g. `methods: [full, lora]`")
    if not cfg.seeds:
        raise ConfigError(f"{source}: seeds is empty; add e.g. `seeds: [0]`")
    for where, seeds in [("seeds", cfg.seeds)] + [(f"methods[{i}].seeds", e.seeds) for i, e in enumerate(cfg.methods)]:
        for i, seed in enumerate(seeds):
            if not 0 <= seed < 2**32:
                raise ConfigError(f"{source}: {where}[{i}] is {seed}; a seed is between 0 and 2**32 - 1")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"{source}: {where} lists a seed twice: {seeds}")
    labels = set()
    for i, entry in enumerate(cfg.methods):
        sandbox.info(entry.method, entry.config, where=f"{source}: methods[{i}].method")  # untrusted: in a child
        label = entry.label or entry.method
        if not _plain_text(label):
            raise ConfigError(f"{source}: methods[{i}].label {label!r} is not plain text (empty, blank at an end, a "
                              "control or formatting character, or not UTF-8); use letters, digits and punctuation")
        clash = next((n for n in available() if n.casefold() == label.casefold() and n != entry.method), None)
        if clash:
            raise ConfigError(f"{source}: methods[{i}].label '{label}' is the name of the method '{clash}'; a "
                              f"{entry.method} row under it would pass as {clash}: pick another label")
        if label in labels:
            raise ConfigError(f"{source}: methods[{i}]: label '{label}' is used twice; give each variant its own label")
        labels.add(label)
    if problems := sharding_problems(cfg):
        raise ConfigError(f"{source}: {'; '.join(problems)}")


def sharding_problems(cfg: SweepConfig) -> list[str]:
    """Why this sweep's runs cannot be trained as `resources` asks (harness.run.sharded)."""
    from methods.registry import available, resolve_method

    from . import sandbox

    workers, out = cfg.resources.workers_per_run, []
    if workers == 1:
        if cfg.resources.activation_checkpointing:
            out.append("resources.activation_checkpointing: it applies to sharded training (workers_per_run 2 or "
                       "more), and this sweep trains each run in one process; set it false or shard the runs")
        return out
    if cfg.budget.batch_size < workers:
        out.append(f"resources.workers_per_run: {workers} workers cannot share a batch of budget.batch_size "
                   f"{cfg.budget.batch_size}; use at most {cfg.budget.batch_size} workers")
    able = ", ".join(n for n in sorted(available()) if resolve_method(n).shardable)
    for i, entry in enumerate(cfg.methods):
        if not sandbox.trusted(entry.method):
            why = "it is not built in (a submitted method runs confined in one process)"
        else:
            why = resolve_method(entry.method).not_shardable()
        if why:
            out.append(f"resources.workers_per_run: {workers}, but methods[{i}] ({entry.method}) cannot be sharded: "
                       f"{why}; set workers_per_run: 1, or run it in a sweep of its own (these can be sharded: "
                       f"{able})")
    return out


def card_path(path_or_preset: str) -> Path:
    """The file of a YAML path or a preset's name ('quick', 'tiny')."""
    path = Path(path_or_preset)
    if not path.suffix and not path.exists():
        path = PRESET_DIR / f"{path_or_preset}.yaml"
        if not path.exists():
            presets = [p.stem for p in PRESET_DIR.glob("*.yaml")]
            raise ConfigError(f"unknown preset '{path_or_preset}'; {did_you_mean(path_or_preset, presets)}")
    return path


def load(path_or_preset: str, sets: list[str] = ()) -> SweepConfig:
    """Load a YAML file, or a preset by name ('quick', 'tiny'), with `key=value` overrides (`--set`) applied
    to its mapping before it is validated."""
    path = card_path(path_or_preset)
    data = read_yaml(path)
    if isinstance(data, dict):
        data = _domain_paths(data, path.parent)
    if sets:
        data = with_sets(data, sets, str(path))
    return parse(data, f"{path} with --set {' '.join(sets)}" if sets else str(path))


def with_sets(data, sets: list[str], source: str) -> dict:
    """`data` with each `dotted.key=value` applied; the value is read as YAML (`3`, `1e-4`, `[stem, law]`, `true`).
    The keys are checked when the result is parsed, like the file's own."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of config keys")
    data = dict(data)
    for item in sets:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set budget.epochs=2")
        value = parse_yaml(text, f"--set {item[:60]!r}") if text.strip() else ""
        *parents, leaf = key.strip().split(".")
        node = data
        for i, part in enumerate(parents):
            child = node.get(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{'.'.join(parents[:i + 1])}' is not a mapping of fields")
            node[part] = node = dict(child)
        node[leaf] = value
    return data


def methods_named(cfg: SweepConfig, names: list[str]) -> list[MethodEntry]:
    """The card's entries of the named methods (matched by label, then by method), in the order named; a name the
    card does not list runs that method at its defaults."""
    from methods.registry import check_name

    by_label = {e.label or e.method: e for e in cfg.methods}
    by_method = {e.method: e for e in reversed(cfg.methods)}
    for n in names:
        if n not in by_label:
            check_name(n, "--methods")
    return [by_label.get(n) or by_method.get(n) or MethodEntry(method=n) for n in names]


LIMITED = ("learn_items", "transfer_items", "code_items", "heldout_items", "general_items", "stop_prompts",
           "instruct_items", "lm_eval_limit")


def limited(cfg: SweepConfig, n: int) -> SweepConfig:
    """cfg with at most n items per view and probe (`--limit`), renamed <name>-limit<n>: a quick check, whose
    changed budget makes it a protocol of its own, never ranked with the card's runs."""
    if n < 1:
        raise ConfigError(f"--limit {n}: give at least 1 item per view")
    budget = dataclasses.replace(cfg.budget, **{k: min(getattr(cfg.budget, k), n) if k != "lm_eval_limit" else
                                                (min(cfg.budget.lm_eval_limit, n) if cfg.budget.lm_eval_limit else n)
                                                for k in LIMITED})
    return dataclasses.replace(cfg, name=f"{cfg.name}-limit{n}", budget=budget)


def seeds_of(cfg: SweepConfig, entry: MethodEntry) -> list[int]:
    """The seeds a method variant runs: its own, else the card's."""
    return list(entry.seeds or cfg.seeds)


def with_run_seeds(cfg: SweepConfig, seeds: list[int]) -> SweepConfig:
    """Every variant run on `seeds` (its own seeds, which are not part of the protocol card): more seeds of a card
    join its board instead of making another protocol version (the card's `seeds` are in the version)."""
    return dataclasses.replace(cfg, methods=[dataclasses.replace(e, seeds=list(seeds)) for e in cfg.methods])


def with_overrides(cfg: SweepConfig, **changes) -> SweepConfig:
    """A copy of cfg with some top-level fields replaced (CLI flags; None: kept)."""
    cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    return cfg
