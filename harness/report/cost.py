"""What a protocol card costs: its work counted from its items, turned into hours by rates measured on stored runs.

Work (`workload`), counted with the card's tokenizer from the items the card draws:
- training, per run: the tokens of every learned item's training pair (chat-formatted, cut at max_length: what the
  training loop counts as `train.tokens`) x epochs, over the stream. A method that trains on the learned items
  alone (full fine-tuning, LoRA) trains on exactly these; one that adds examples (replay) on more.
- evaluation, per evaluation (after every stage; stage 0 once per sweep): the tokens read (every item's prompt and
  target, every other option of a multiple-choice item) plus the most tokens decoded (each code item and stop
  prompt at its cap). An `lm_eval:` probe reads its own data and is not counted.
Cost = work x N (the model's parameters): training and reading cost about 6N and 2N FLOPs per token, and decoding,
bound by reading the weights, time about proportional to N too. `rates` measures seconds per unit of work on the
finished runs of a stored board, on the device kind they ran on (their train and evaluation seconds against their
own card's work); `estimate` applies them to a card. First order: attention, padding and batch shapes are not
modelled, so a card far from the calibrating board's shape is estimated less well; `clbench protocol show` prints
the calibrating board and the card's work beside the hours.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import statistics
from pathlib import Path

from methods.registry import available
from tasks.chat import encode_pairs, prompt_ids, reply_ids
from tasks.items import ChatItem, CodeItem, GenItem, MCItem

from ..core.errors import ClbenchError, ConfigError, DataError
from ..spec.config import SweepConfig, seeds_of
from ..store.provenance import cpu_features, cpu_label, cpu_name


RESULTS = Path(__file__).resolve().parents[2] / "results"  # the repository's committed results


def default_sources() -> list[str]:
    """The committed runs that measure rates: the standard board, its tune and the all-methods board (CPU: between
    them three CPU models, so more machines find runs of their own) and any GPU check report."""
    standard = RESULTS / "reference" / "standard"
    return [str(standard), str(standard / "tune"), str(RESULTS / "reference" / "standard-tuned"),
            *map(str, sorted((RESULTS / "bench").glob("gpu-check-*.json")))]


@dataclasses.dataclass(frozen=True)
class Workload:
    params: int  # the model's parameters, N
    train_tokens: int  # per run (a method that trains on the learned items alone)
    eval_tokens: int  # per evaluation: read + at most decoded
    stages: int  # trained stages per run
    runs: int  # methods x task orders x seeds


@functools.lru_cache(maxsize=8)
def model_facts(name: str):
    """(tokenizer, parameter count) of a model name as clbench loads it. The count comes from the model's config on
    the meta device (no weights are read, and nothing is printed while they load); the tiny model is made."""
    import torch

    from ..model import models

    if name == models.TINY:
        model, tok = models.load(name)
        return tok, sum(p.numel() for p in model.parameters())
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    models.check_reachable(name)  # one bounded look: the hub client would retry an unreachable id for a minute
    repo, revision = (str(models.smollm2_dir()), None) if name == models.SMOLLM2 else models.hub_revision(name)
    try:
        tok = AutoTokenizer.from_pretrained(repo, revision=revision)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(repo, revision=revision))
    except (OSError, ValueError) as e:
        raise ConfigError(f"model '{name}': its tokenizer and config are needed to count the card's work and could "
                          f"not be loaded ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    return tok, sum(p.numel() for p in model.parameters())


def _item_tokens(tok, item, budget) -> int:
    if isinstance(item, MCItem):
        prompt = len(prompt_ids(tok, item.cloze_prompt()))
        return prompt + sum(len(reply_ids(tok, str(o))) for o in item.options)
    if isinstance(item, (CodeItem, GenItem)):  # the reference's log-likelihood, and an answer decoded to the cap
        return len(prompt_ids(tok, item.prompt)) + len(reply_ids(tok, item.target())) + budget.max_new_tokens
    if isinstance(item, ChatItem):  # instruct: the reference reply's log-likelihood; stop: decoded to the cap
        extra = len(reply_ids(tok, item.reference)) if item.reference else budget.stop_max_new_tokens
        return len(prompt_ids(tok, item.prompt)) + extra
    pair = item.training_pair()
    return len(prompt_ids(tok, pair["user"])) + len(reply_ids(tok, pair["reply"]))


def workload(cfg: SweepConfig) -> Workload:
    from tasks.data import DataSource
    from tasks.registry import load_stream

    tok, params = model_facts(cfg.model)
    budget = cfg.budget
    tasks, probes = load_stream(DataSource(cfg.data_dir), list(cfg.stream), list(cfg.probes), budget, cfg.data_seed,
                                cfg.domains)
    train = budget.epochs * sum(len(e["input_ids"]) for t in tasks
                                for e in encode_pairs(tok, [i.training_pair() for i in t.learn], budget.max_length))
    read = sum(_item_tokens(tok, item, budget) for t in [*tasks, *probes] for items in t.views.values() for item in items)
    orders = 1 + len(cfg.task_orders)
    return Workload(params=params, train_tokens=train, eval_tokens=read, stages=len(tasks),
                    runs=orders * sum(len(seeds_of(cfg, e)) for e in cfg.methods))


@dataclasses.dataclass(frozen=True)
class Rates:
    device_name: str
    board: str  # the folder of runs they were measured on
    runs: int
    train: float  # seconds per (token x parameter) of training
    eval: float  # seconds per (token x parameter) of evaluation


def machine_of(run: dict, device: str) -> str | None:
    """The machine a stored run ran on: its GPU's name (cuda) or its CPU's with its features (cpu: a virtual
    machine may name two CPU generations alike)."""
    if device == "cuda":
        return (run.get("compute") or {}).get("device_name")
    return cpu_label((run.get("provenance") or {}).get("machine") or {})


def this_machine(device: str) -> str | None:
    """This machine's name as `machine_of` reads it from the runs it stores."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return cpu_label({"cpu": cpu_name(), "cpu_features": cpu_features()})


def rates(source: str | Path, device: str, machine: str | None = None, precision: str = "auto",
          data_dir: str | None = None) -> Rates | None:
    """Seconds per unit of work measured on `source`'s finished runs that ran on `device` (and on `machine`, and
    in `precision` unless 'auto': bf16 on a CPU without fast bf16 is ~100x slower; None: none did): the median
    over runs (a run slowed by other work on its machine does not set the rate) of each run's measured train
    seconds against its measured train tokens, and of its measured evaluation seconds against its card's work
    per evaluation. `source`: a results folder, or a report of scripts/gpu_check.py (gpu-check-*.json, whose
    runs carry their work: their model may have been a random-weight copy that is gone). `data_dir`: where the
    stored runs' items are read to count their work (None: $CLBENCH_DATA)."""
    if Path(source).is_file():
        return _report_rates(Path(source), device, machine, precision)
    from ..spec.spec import RunSpec
    from ..store.store import Store

    runs = [r for r in Store(source).runs() if r.get("status") == "finished" and r.get("device") == device
            and r.get("compute") and machine in (None, machine_of(r, device))
            and precision in ("auto", r.get("precision"))]
    if not runs:
        return None
    measured, counted = [], []
    for r in runs:
        # the work is the card's, whatever the method, its settings and seed: one count per card, not per run
        spec = {**RunSpec.from_dict(r["spec"]).as_dict(), "method": "full", "label": "full", "method_config": {},
                "seed": 0, "method_sha256": ""}
        try:
            w = _work_of(json.dumps(spec, sort_keys=True), data_dir)
        except ClbenchError:  # a run whose model or items this machine cannot read sets no rate; the others do
            continue
        measured.append((r["compute"], w.params, w.eval_tokens))
        counted.append(r)
    if not counted:
        return None
    runs = counted
    names = sorted({machine_of(r, device) or device for r in runs})
    name = names[0] if len(names) == 1 else f"{len(names)} machines ({', '.join(names)})"
    return _median_rates(measured, name, str(source))


NUMBERS = ("train_seconds", "eval_seconds", "train_tokens", "stages", "model_parameters", "eval_tokens_per_evaluation")


def _report_rates(path: Path, device: str, machine: str | None, precision: str) -> Rates | None:
    """The rates of a gpu check report's finished runs; a report that is not one is named, field and all."""
    from ..core.json_file import read_json

    report, why = read_json(path)
    if why or not isinstance(report, dict) or not isinstance(report.get("runs"), list):
        raise ConfigError(f"--calibrate {path}: not a results folder or a gpu check report ({why or 'no runs list'})")
    if report.get("device") != device or machine not in (None, report.get("device_name")):
        return None
    runs = [r for r in report["runs"] if isinstance(r, dict) and r.get("status") == "finished"
            and precision in ("auto", r.get("precision"))]
    for i, r in enumerate(runs):
        for k in NUMBERS:
            v = r.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1e15:
                raise ConfigError(f"--calibrate {path}: runs[{i}].{k} is {v!r}, not a positive number; rerun "
                                  "scripts/gpu_check.py (reports before its work fields cannot calibrate)")
    if not runs:
        return None
    return _median_rates([(r, r["model_parameters"], r["eval_tokens_per_evaluation"]) for r in runs],
                         str(report.get("device_name") or device), str(path))


def _median_rates(measured: list[tuple[dict, int, int]], name: str, source: str) -> Rates:
    """measured: (compute record with train/eval seconds, train tokens and stages; parameters; eval tokens)."""
    train = [c["train_seconds"] / (c["train_tokens"] * n) for c, n, _ in measured]
    evaluation = [c["eval_seconds"] / (e * n * c["stages"]) for c, n, e in measured]
    return Rates(device_name=name, board=source, runs=len(measured),
                 train=statistics.median(train), eval=statistics.median(evaluation))


@functools.lru_cache(maxsize=32)
def _work_of(spec_json: str, data_dir: str | None) -> Workload:
    """The work of a stored run's card (a one-run card of its spec, its items read from `data_dir`)."""
    from ..spec.config import MethodEntry
    from ..spec.spec import RunSpec

    spec = RunSpec.from_dict(json.loads(spec_json))
    return workload(SweepConfig(name="stored", model=spec.model, precision=spec.precision, device=spec.device,
                                stream=list(spec.stream), probes=list(spec.probes), scorer=spec.scorer,
                                methods=[MethodEntry(method=spec.method)], seeds=[spec.seed],
                                budget=spec.budget_config(), data_seed=spec.data_seed, domains=dict(spec.domains),
                                data_dir=data_dir))


def estimate(w: Workload, r: Rates) -> dict:
    """Hours of one run (its stages' training and evaluations) and of the card's sweep (stage 0 once)."""
    train = w.train_tokens * w.params * r.train
    evaluation = w.eval_tokens * w.params * r.eval
    run = train + w.stages * evaluation
    return {"train_hours_per_run": train / 3600, "eval_hours_per_evaluation": evaluation / 3600,
            "hours_per_run": run / 3600, "hours_per_sweep": (w.runs * run + evaluation) / 3600}


def describe(cfg: SweepConfig, boards: list[str]) -> str:
    """The cost section of `clbench protocol show`: the card's work, and hours on each device kind some board
    measured."""
    try:
        w = workload(cfg)
    except ConfigError as e:
        return f"cost: not counted: {e}\n"
    lines = ["cost:", f"  model_parameters: {w.params}", f"  train_tokens_per_run: {w.train_tokens}",
             f"  eval_tokens_per_evaluation: {w.eval_tokens}  # read + at most decoded",
             f"  runs: {w.runs}  # methods x task orders x seeds (a method's own, else the card's), {w.stages} trained "
             "stages each"]
    measured, precisions = {}, {device: runs_precision(cfg.precision, device) for device in ("cpu", "cuda")}
    for device in ("cpu", "cuda"):
        try:
            measured[device] = measured_rates(boards, device, precisions[device], cfg.data_dir)
        except DataError as e:  # a stored board whose items cannot be read counts nothing; the card still shows
            measured[device] = None
            lines.append(f"  {device}: rates not measured ({e})")
    for device, r in measured.items():
        if r is not None:
            e = estimate(w, r)
            unit = "gpu" if device == "cuda" else "cpu"
            per_method = (1 + len(cfg.task_orders)) * len(cfg.seeds)
            every = estimate(dataclasses.replace(w, runs=per_method * len(available())), r)
            small = (" (under a minute: fixed costs, model loading, Ray start-up and per-call overheads, are not "
                     "counted and dominate here)" if e["hours_per_run"] * 3600 < 60 else "")
            lines += [f"  {unit}:  # the median rates of {r.runs} {precisions[device]} run(s) on {r.device_name} in "
                      f"{r.board}",
                      f"    hours_per_run: {e['hours_per_run']:.3g}  # training {e['train_hours_per_run']:.3g}, "
                      f"{e['eval_hours_per_evaluation']:.3g} per evaluation{small}",
                      f"    hours_per_sweep: {e['hours_per_sweep']:.3g}  # the card's methods",
                      f"    hours_per_all_methods_sweep: {every['hours_per_sweep']:.3g}  # all {len(available())} "
                      "registered methods, the card's seeds and orders"]
    if measured["cuda"] is None:
        lines.append(f"  gpu: no board measured on a GPU in {precisions['cuda']} yet (scripts/gpu-check.sh writes "
                     "results/bench/gpu-check-<device>.json, which --calibrate takes)")
    if not any(measured.values()):
        wanted = " or ".join(f"{'gpu' if d == 'cuda' else d} in {precisions[d]}" for d in measured)
        read = f"the {len(boards)} board(s) read ({', '.join(map(str, boards))})" if boards else "no board"
        lines.append(f"  hours: no finished run of {read} ran as this card runs ({wanted}) to measure rates on; "
                     "pass a board of such runs with --calibrate")
    return "\n".join(lines) + "\n"


def runs_precision(requested: str, device: str) -> str:
    """The precision a card's runs use on `device` ('cpu' | 'cuda'): `precision: auto` resolved as a run resolves it
    on this machine; on a GPU that this machine lacks, bf16 (what auto picks on every GPU with bf16 support)."""
    import torch

    from ..model.precision import pick_precision

    if requested == "auto" and device == "cuda" and not torch.cuda.is_available():
        return "bf16"
    return pick_precision(requested, device)[0]


def measured_rates(sources: list[str], device: str, precision: str, data_dir: str | None) -> Rates | None:
    """The rates to plan with: those of the first source holding runs made on this machine, else of the first
    holding runs on the device kind at all (a virtual machine's name may cover CPUs of other speeds)."""
    found = (r for m in dict.fromkeys((this_machine(device), None)) for s in sources
             if (r := rates(s, device, m, precision, data_dir)) is not None)
    return next(found, None)


def expected(cfg: SweepConfig, device: str, sources: list[str], left: int | None = None) -> str:
    """One line: about how long `cfg`'s sweep (or the `left` runs of it not yet finished) takes on `device`
    ('cpu' | 'cuda'), or why that is not known, at `measured_rates` in the precision the runs will use (a card's
    `precision: auto` resolved as a run resolves it here). An estimate never stops a sweep: what it cannot count
    (a model or data it cannot read) it says."""
    precision = runs_precision(cfg.precision, device)
    try:
        w = workload(cfg)
        r = measured_rates(sources, device, precision, cfg.data_dir)
    except ClbenchError as e:
        return f"expected time: not counted ({e})"
    if r is None:
        return f"expected time: no stored runs on {device} in {precision} to measure rates on"
    e = estimate(dataclasses.replace(w, runs=w.runs if left is None else left), r)
    what = f"{w.runs} run(s)" if left is None else f"the {left} of {w.runs} run(s) left"
    small = ("; fixed costs (model loading, Ray start-up, per-call overheads) are not counted and dominate at this "
             "size" if e["hours_per_run"] * 3600 < 60 else "")
    return (f"expected time: {duration(e['hours_per_sweep'] * 3600)} for {what}, "
            f"{duration(e['hours_per_run'] * 3600)} each (harness/report/cost.py: the median rates of {r.runs} run(s) "
            f"on {r.device_name} in {r.board}{small})")


def duration(seconds: float) -> str:
    """'about 14.6 h', 'about 15 min' or 'under a minute': the units a person plans a sweep in."""
    if seconds >= 3600:
        return f"about {seconds / 3600:.3g} h" if seconds < 3600 * 1000 else f"about {seconds / 3600:,.0f} h"
    return f"about {seconds / 60:.2g} min" if seconds >= 60 else "under a minute"
