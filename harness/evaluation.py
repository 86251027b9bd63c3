"""Score every task view and probe on the current model; one dict per stage.

Each view gets a uniform `score` (accuracy for multiple choice, pass@1 for code) that the
accuracy matrix reads, plus the details (code: reply log-likelihood of the reference).
"""
from __future__ import annotations

import time

from tqdm.auto import tqdm

from tasks.code_exec import extract_code, passes

from .scoring import cloze_choose, generate, letter_choose, reply_logprob


def _mc_view(model, tok, items, scorer, device, precision, bar) -> dict:
    choose = cloze_choose if scorer == "cloze" else letter_choose
    correct = 0
    for item in items:
        correct += int(choose(model, tok, item, device, precision) == item.answer)
        bar.update()
    return {"score": correct / len(items), "n": len(items)}


def _code_views(model, tok, views: dict, budget, device, precision, bar) -> dict:
    """All views of a code task in one generation batch: decoding on a CPU is latency-bound per
    step, so one batch of 16 costs about as much as one of 4."""
    items = [i for view in views.values() for i in view]
    replies = generate(model, tok, [i.prompt for i in items], device, precision, budget.max_new_tokens,
                       batch_size=len(items))
    passed = [passes(extract_code(r["text"]), i.tests) for r, i in zip(replies, items)]
    loglik = reply_logprob(model, tok, [(i.prompt, i.target()) for i in items], device, precision, budget.max_length * 2)
    bar.update(len(items))
    out, start = {}, 0
    for view, view_items in views.items():
        sl = slice(start, start + len(view_items))
        n = len(view_items)
        out[view] = {"score": sum(passed[sl]) / n, "n": n, "reference_logprob": sum(loglik[sl]) / n,
                     "stopped": sum(r["stopped"] for r in replies[sl]) / n}
        start += n
    return out


def evaluate(model, tok, tasks, probes, *, scorer: str, budget, device: str, precision: str, desc: str) -> dict:
    """{'scores': {task: {view: {...}}}, 'probes': {probe: {...}}, 'seconds': float}."""
    start = time.perf_counter()
    total = sum(len(v) for t in [*tasks, *probes] for v in t.views.values())
    out = {"scores": {}, "probes": {}}
    with tqdm(total=total, desc=desc, unit="item", leave=False) as bar:
        for group, key in ((tasks, "scores"), (probes, "probes")):
            for task in group:
                if task.kind == "code":
                    out[key][task.name] = _code_views(model, tok, task.views, budget, device, precision, bar)
                else:
                    out[key][task.name] = {view: _mc_view(model, tok, items, scorer, device, precision, bar)
                                           for view, items in task.views.items()}
    out["seconds"] = time.perf_counter() - start
    return out
