"""Check a method class against the plugin interface, then try it for real on the tiny model.

`static(target, overrides, source)` returns (class, problems): every problem the interface
checks find (a Method subclass, every hook callable with the base signature, a dataclass Config
whose fields all have defaults and an `lr`, each config override valid), each naming the file and
line where it can. `trial` then runs the method for real, as the runner calls it: two stages of
one optimisation step each (train_examples, training with its loss hooks, after_task, stats) and
one evaluation on the random 2-layer `tiny` model on CPU; it stops at the first
exception and names the line of the method's file it came from. Nothing is written anywhere.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import traceback
from pathlib import Path

from methods.base import Method, StageContext
from methods.registry import load_class
from tasks.chat import encode_pairs
from tasks.data import DataSource
from tasks.registry import load_stream

from ..core.errors import ConfigError
from ..core.typed import build
from ..spec.config import Budget

# the hooks a submitted method's trial calls; state/load_state only serve a built-in's stage checkpoints (a submitted
# method trains in its confined child, which is not checkpointed), so a class may use those names for its own ends
HOOKS = [n for n, v in vars(Method).items() if inspect.isfunction(v) and not n.startswith("_")
         and n not in ("state", "load_state")]
TRIAL_STREAM = ["stem", "humanities"]  # multiple choice only: no generated code is executed
TRIAL_BUDGET = Budget(learn_items=2, transfer_items=1, code_items=1, heldout_items=0, general_items=1, epochs=1,
                      max_length=128)


def _where(obj) -> str:
    """'file:line' of a class or function, '' when its source is unknown."""
    try:
        return f"{inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]}"
    except (OSError, TypeError):
        return ""


def _at(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def _frame_of(exc: BaseException, files: set[str]) -> str:
    """'file:line in function' of the deepest traceback frame inside the method's files (else the deepest)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    inside = [f for f in frames if str(Path(f.filename).resolve()) in files]
    f = (inside or frames)[-1]
    return f"{f.filename}:{f.lineno} in {f.name}"


def _hook_problems(cls) -> list[str]:
    out = []
    for hook in HOOKS:
        base = getattr(Method, hook)
        expected = list(inspect.signature(base).parameters)[1:]
        fn = inspect.getattr_static(cls, hook, None)
        if fn is None:
            out.append(_at(_where(cls), f"{cls.__name__} lacks the hook {hook}({', '.join(expected)})"))
            continue
        if isinstance(fn, (staticmethod, classmethod)) or not callable(fn):
            out.append(_at(_where(cls), f"{cls.__name__}.{hook} must be a plain method {hook}(self, "
                                        f"{', '.join(expected)})"))
            continue
        try:
            inspect.signature(fn).bind(None, *expected)
        except TypeError as e:
            out.append(_at(_where(fn), f"{cls.__name__}.{hook}{inspect.signature(fn)} cannot be called as "
                                       f"{hook}(self, {', '.join(expected)}): {e}"))
    return out


def _config_problems(cls, overrides: dict, source: str, root: bool) -> list[str]:
    config_cls = getattr(cls, "Config", None)
    where = _where(config_cls) if config_cls is not None else _where(cls)
    if not (inspect.isclass(config_cls) and dataclasses.is_dataclass(config_cls)):
        return [_at(where, f"{cls.__name__}.Config must be a dataclass (see methods.base.BaseConfig)")]
    out = []
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for f in fields.values():
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            out.append(_at(where, f"{config_cls.__name__}.{f.name} has no default; give every field one "
                                  f"(harness.core.typed.field(default, help))"))
    if "lr" not in fields:
        out.append(_at(where, f"{config_cls.__name__} has no 'lr' field: the harness's optimiser reads config.lr"))
    if not isinstance(overrides, dict):
        return out + [f"{source}: expected a mapping of {config_cls.__name__} fields, got {type(overrides).__name__}"]
    for key, value in overrides.items():  # one at a time, so every bad field is reported
        try:
            build(config_cls, {key: value}, source, root)
        except ConfigError as e:
            out.append(str(e))
        except TypeError:  # the value is fine; the config cannot be built without defaults (reported above)
            pass
    return out


def _trial(cls, config, data_dir, files: set[str]) -> list[str]:
    """Two stages of one optimisation step each, then one evaluation, on the tiny model."""
    from ..model import models
    from ..run.evaluation import evaluate
    from ..run.runner import _batcher
    from ..run.training import train_task

    source = DataSource(data_dir)
    tasks, _ = load_stream(source, TRIAL_STREAM, [], TRIAL_BUDGET, seed=0)
    model, tok = models.load("tiny")
    step = "__init__"
    try:
        method = cls(config)
        step = "prepare"
        model = method.prepare(model, StageContext(stage=0, task=None, seen=[], device="cpu", seed=0,
                                                       data=source))
        for stage, task in enumerate(tasks, start=1):
            ctx = StageContext(stage=stage, task=task, seen=tasks[: stage - 1], device="cpu", seed=0,
                               precision="fp32", batches=_batcher(tok, TRIAL_BUDGET, "cpu"), tokenizer=tok,
                               data=source, max_length=TRIAL_BUDGET.max_length)
            step = f"train_examples (stage {stage})"
            pairs = method.train_examples([i.training_pair() for i in task.learn], ctx)
            encoded = encode_pairs(tok, pairs, TRIAL_BUDGET.max_length)
            step = f"training (stage {stage})"
            train_task(model, method, encoded, ctx, epochs=1, batch_size=max(len(encoded), 1),
                       pad_id=tok.pad_token_id, device="cpu", precision="fp32", seed=stage, desc=f"trial {stage}")
            step = f"after_task (stage {stage})"
            model = method.after_task(model, ctx)
            step = f"stats (stage {stage})"
            json.dumps(method.stats(ctx))  # stored in the result file: must be JSON
        step = "evaluation"
        evaluate(model, tok, tasks, [], scorer="cloze_char", budget=TRIAL_BUDGET, device="cpu", precision="fp32",
                 desc="trial evaluation")
    except Exception as e:  # the method's own bug: report where it happened
        return [_at(_frame_of(e, files), f"trial on the tiny model failed in {step}: {type(e).__name__}: {e}")]
    return []


def static(target: str, overrides: dict, source: str, root: bool = True) -> tuple[type | None, list[str]]:
    """(the class or None, every problem the interface and config checks find) for a 'file.py:Class'
    or registered name."""
    try:
        cls = load_class(target, where=target)
    except ConfigError as e:
        cause = e.__cause__
        return None, [_at(_frame_of(cause, set()), str(e)) if cause else str(e)]
    if not inspect.isclass(cls):
        return None, [f"{target}: {type(cls).__name__} object is not a class"]
    problems = []
    if not issubclass(cls, Method):
        problems.append(_at(_where(cls), f"{cls.__name__} must subclass methods.base.Method "
                                         "(it supplies the hooks you do not override)"))
    return cls, problems + _hook_problems(cls) + _config_problems(cls, overrides, source, root)


def trial(cls, overrides: dict, source: str, data_dir=None, root: bool = True) -> list[str]:
    """The problem the trial on the tiny model meets, if any (call after `static` found none)."""
    files = {str(Path(inspect.getsourcefile(cls)).resolve())} if inspect.getsourcefile(cls) else set()
    return _trial(cls, build(cls.Config, overrides, source, root), data_dir, files)
