"""Write clbench multiple-choice items as lm-eval tasks and score a model with lm-eval.

The exported task gives lm-eval exactly the prompt clbench scores: the chat-formatted
question as the context (the model's chat template is already applied: run lm_eval without
--apply_chat_template, which would apply it twice), and either the option texts (cloze) or the letters A-D (letter)
as choices, with no delimiter between them. lm-eval's `acc` then equals clbench's cloze_raw
scorer, `acc_norm` its default cloze_char, and letter accuracy equals letter's.
Data paths are absolute: lm-eval resolves relative ones against the working directory.
"""
from __future__ import annotations

import difflib
import errno
import json
import os
from pathlib import Path

import yaml

from tasks.items import LETTERS, MCItem

from ..core.errors import ConfigError


def chat_prefix(tok, user: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False)


def write_task(items: list[MCItem], tok, scorer: str, folder: Path, name: str) -> str:
    """Write <folder>/<name>.jsonl and <name>.yaml; return the task name."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    rows = []
    for it in items:
        user = it.letter_prompt() if scorer == "letter" else it.cloze_prompt()
        choices = list(LETTERS[:len(it.options)]) if scorer == "letter" else [str(o).strip() for o in it.options]
        rows.append(json.dumps({"prefix": chat_prefix(tok, user), "choices": choices, "answer": it.answer}) + "\n")
    _write(data, "".join(rows))
    task = {
        "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{prefix}}",
        "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}", "target_delimiter": "",
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")],
        "metadata": {"version": 1},
    }
    _write(folder / f"{name}.yaml", yaml.safe_dump(task, sort_keys=False))
    return name


def _write(path: Path, text: str) -> None:
    """Write a file of the export, never through a link left at its name (it would write outside --out)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write it ({'a symbolic link' if e.errno == errno.ELOOP else e.strerror}); "
                          "give another --out or remove it") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)


def task_manager(task: str, include: str = "", where: str = "probes"):
    """An lm-eval TaskManager that knows `task`: the `include` folder's tasks alone when it has it
    (lm-eval's own index costs ~6 s to build), else lm-eval's own tasks too; ConfigError if neither has it."""
    from lm_eval.tasks import TaskManager

    folder = None
    if include:
        folder = Path(include).expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError(f"{where}: budget.lm_eval_include folder {folder} does not exist; "
                              f"point it at a folder of lm-eval task YAMLs (e.g. from `clbench export-lm-eval`)")
        local = TaskManager(include_path=str(folder), include_defaults=False)
        if task in local.all_tasks:
            return local
    manager = TaskManager(include_path=str(folder) if folder else None, include_defaults=True)
    if task not in manager.all_tasks:
        close = difflib.get_close_matches(task, manager.all_tasks, n=3)
        raise ConfigError(f"{where}: unknown lm-eval task '{task}'{f' (also not in {folder})' if folder else ''}; "
                          f"{f'did you mean {close}? ' if close else ''}`lm_eval ls tasks` lists lm-eval's own")
    return manager


def evaluate(model, tok, folder: Path | None, tasks: list[str], batch_size: int = 8, manager=None,
             limit: int = 0) -> dict:
    """lm-eval's metrics ({task: {metric: value, 'n': items}}) for tasks written by `write_task` in
    `folder` (or known to `manager`), computed in-process on `model`; `limit` items per task (0: all)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
    manager = manager or TaskManager(include_path=str(Path(folder).resolve()), include_defaults=False)
    out = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, log_samples=False, limit=limit or None)
    return {t: {**{k.split(",")[0]: v for k, v in out["results"][t].items() if "," in k},
                "n": out.get("n-samples", {}).get(t, {}).get("effective")} for t in tasks}


def probe(model, tok, task: str, include: str, limit: int) -> dict:
    """One `lm_eval:<task>` probe view: lm-eval's metrics, with `score` = acc (else exact_match)."""
    metrics = evaluate(model, tok, None, [task], manager=task_manager(task, include), limit=limit)[task]
    score = metrics.get("acc", metrics.get("exact_match"))
    if score is None:
        raise ConfigError(f"lm-eval task '{task}' reports neither acc nor exact_match ({sorted(metrics)}); "
                          f"use a multiple-choice or exact-match task as a probe")
    return {**metrics, "score": score}


def export(cfg, out: Path) -> list[str]:
    """Write every multiple-choice view of cfg's domain tasks as an lm-eval task `clbench_<task>_<view>`
    (the items the harness scores, with cfg's scorer and the model's chat template); returns the names.
    Code tasks are scored by running their tests, which lm-eval's task YAMLs cannot express: skipped."""
    from tasks.data import DataSource
    from tasks.registry import load_stream

    from ..model import models

    tasks, _ = load_stream(DataSource(cfg.data_dir), list(cfg.stream), [], cfg.budget, cfg.data_seed, cfg.domains)
    _, tok = models.load(cfg.model)
    return [write_task(items, tok, cfg.scorer, out, f"clbench_{task.name}_{view}")
            for task in tasks if task.kind == "mc" for view, items in task.views.items()]
