"""Write clbench multiple-choice items as lm-eval tasks and score a model with lm-eval.

The exported task gives lm-eval exactly the prompt clbench scores: the chat-formatted
question as the context, and either the option texts (cloze) or the letters A-D (letter)
as choices, with no delimiter between them. lm-eval's `acc` then equals clbench's cloze
with norm='none', `acc_norm` equals norm='char', and letter accuracy equals letter's.
Data paths are absolute: lm-eval resolves relative ones against the working directory.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from tasks.items import LETTERS, MCItem


def chat_prefix(tok, user: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False)


def write_task(items: list[MCItem], tok, scorer: str, folder: Path, name: str) -> str:
    """Write <folder>/<name>.jsonl and <name>.yaml; return the task name."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    with data.open("w") as f:
        for it in items:
            user = it.cloze_prompt() if scorer == "cloze" else it.letter_prompt()
            choices = [str(o).strip() for o in it.options] if scorer == "cloze" else list(LETTERS)
            f.write(json.dumps({"prefix": chat_prefix(tok, user), "choices": choices, "answer": it.answer}) + "\n")
    task = {
        "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{prefix}}",
        "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}", "target_delimiter": "",
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}], "metadata": {"version": 1},
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return name


def evaluate(model, tok, folder: Path, tasks: list[str], batch_size: int = 8) -> dict:
    """lm-eval's metrics for tasks written by `write_task`, computed in-process on `model`."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
    manager = TaskManager(include_path=str(Path(folder).resolve()), include_defaults=False)
    out = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, log_samples=False)
    return {t: {k.split(",")[0]: v for k, v in out["results"][t].items() if "," in k} for t in tasks}
