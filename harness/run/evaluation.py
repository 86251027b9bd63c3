"""Score every task view and probe on the current model; one dict per stage.

Each view gets a uniform `score` (accuracy for multiple choice and generation, pass@1 for code) that the
accuracy matrix reads, plus the details (code, generation: reply log-likelihood of the reference). Probes:
`instruct` scores exp(mean per-token log-probability of the references), `lm_eval:<task>` lm-eval's
acc (or exact_match); the `stop` probe has no score, only its generation metrics.

Every view and probe but lm_eval also stores its per-item outcomes under `items`, column-wise (one
list per field, in item order, `uid` first), so every statistic can be recomputed from the run file
and paired across methods on the same items (schema_version 2):
- multiple choice: correct (0/1), gold_logprob (the gold option's mean log-probability per token, whatever
  the scorer: the letter's for letter; on the scale of code's reference_logprob and instruct's logprob),
  margin (the gold option's value minus the best wrong option's, normalised as the scorer chooses:
  per character for cloze_char, summed for cloze_raw, per token for cloze; positive when correct);
- code: passed, truncated (no end of turn within max_new_tokens), reference_logprob;
- generation: correct (the domain's scorer found the answer in the greedy reply), truncated, reference_logprob;
- stop: stopped, length (tokens), tail_repetition; instruct: logprob (mean per token of the reference).
"""
from __future__ import annotations

import math
import time

from tqdm.auto import tqdm

from tasks import answers
from tasks.chat import reply_ids
from tasks.code_exec import extract_code, passes
from tasks.registry import LM_EVAL_PREFIX

from ..integrations import lmeval_bridge
from ..model.generation_metrics import stop_summary, tail_repetition
from ..model.packed import packed_linears
from ..model.scoring import cloze_outcomes, generate, letter_outcomes, reply_logprob

CLOZE_NORM = {"cloze_char": "char", "cloze_raw": "none", "cloze": "token"}  # scorer -> harness.model.scoring's norm
EXAMPLES = 3  # stop-probe answers stored per stage, for people to read
PROGRESS_CHUNK = 256  # multiple-choice items scored between progress-bar updates


def _column(values) -> list:
    """A per-item column as stored: floats to 6 decimals, flags as 0/1."""
    return [round(float(v), 6) if isinstance(v, float) else int(v) if isinstance(v, bool) else v for v in values]


def _items(items, **columns) -> dict:
    return {"uid": [i.uid for i in items], **{name: _column(values) for name, values in columns.items()}}


def _mc_view(model, tok, items, scorer, device, precision, bar) -> dict:
    """Accuracy over the items, scored in batches of questions (harness.model.scoring), with the per-item outcomes
    and the mean gold log-probability beside it."""
    outcomes = []
    for s in range(0, len(items), PROGRESS_CHUNK):
        chunk = items[s:s + PROGRESS_CHUNK]
        if scorer == "letter":
            outcomes += letter_outcomes(model, tok, chunk, device, precision)
        else:
            outcomes += cloze_outcomes(model, tok, chunk, device, precision, norm=CLOZE_NORM[scorer])
        bar.update(len(chunk))
    correct = [o["choice"] == item.answer for o, item in zip(outcomes, items)]
    gold = [o["gold"] for o in outcomes]
    return {"score": sum(correct) / len(items), "n": len(items), "gold_logprob": sum(gold) / len(gold),
            "items": _items(items, correct=correct, gold_logprob=gold, margin=[o["margin"] for o in outcomes])}


def code_cap(tok, items) -> int:
    """Generation cap sized from the items' reference solutions: 1.25 x the longest one in tokens, with
    the end of turn that closes it."""
    return math.ceil(1.25 * max(len(reply_ids(tok, i.target())) + 1 for i in items))


def _generated_views(model, tok, task, budget, device, precision, bar) -> dict:
    """All views of a code or generation task in one generation batch: decoding on a CPU is latency-bound
    per step, so one batch of 16 costs about as much as one of 4. Code: a reply is right when its code
    passes the item's tests (`passed`); generation: when the domain's scorer finds the item's answer in it
    (`correct`)."""
    views = task.views
    items = [i for view in views.values() for i in view]
    cap = budget.max_new_tokens or code_cap(tok, items)
    replies = generate(model, tok, [i.prompt for i in items], device, precision, cap, batch_size=len(items))
    if task.kind == "code":
        column, right = "passed", [passes(extract_code(r["text"]), i.tests) for r, i in zip(replies, items)]
    else:
        column, right = "correct", [answers.matches(i.scorer, r["text"], i.answer) for r, i in zip(replies, items)]
    loglik = reply_logprob(model, tok, [(i.prompt, i.target()) for i in items], device, precision, budget.max_length * 2)
    bar.update(len(items))
    out, start = {}, 0
    for view, view_items in views.items():
        sl = slice(start, start + len(view_items))
        n = len(view_items)
        truncated = [not r["stopped"] for r in replies[sl]]
        out[view] = {"score": sum(right[sl]) / n, "n": n, "reference_logprob": sum(loglik[sl]) / n,
                     "stopped": 1 - sum(truncated) / n, "truncated": sum(truncated) / n, "max_new_tokens": cap,
                     "items": _items(view_items, **{column: right[sl]}, truncated=truncated,
                                     reference_logprob=loglik[sl])}
        start += n
    return out


def _stop_view(model, tok, items, budget, device, precision, bar) -> dict:
    """Greedy answers to open-ended prompts, in batches of up to 64 (decoding on a CPU is latency-bound
    per step): stop rate, tail repetition, distinct-n, mean length, a few example answers."""
    replies = generate(model, tok, [i.prompt for i in items], device, precision, budget.stop_max_new_tokens,
                       batch_size=min(len(items), 64))
    bar.update(len(items))
    out = stop_summary([r["ids"] for r in replies], [r["stopped"] for r in replies],
                       budget.repetition_n, budget.repetition_window)
    out["examples"] = [{"uid": i.uid, "stopped": r["stopped"], "tokens": r["tokens"], "text": r["text"]}
                       for i, r in zip(items[:EXAMPLES], replies)]
    out["items"] = _items(items, stopped=[r["stopped"] for r in replies], length=[r["tokens"] for r in replies],
                          tail_repetition=[tail_repetition(r["ids"], budget.repetition_n, budget.repetition_window)
                                           for r in replies])
    return out


def _instruct_view(model, tok, items, budget, device, precision, bar) -> dict:
    """Mean per-token log-probability of the reference replies; score = exp of it (a per-token probability)."""
    logprobs = reply_logprob(model, tok, [(i.prompt, i.reference) for i in items], device, precision, budget.max_length)
    bar.update(len(items))
    mean = sum(logprobs) / len(logprobs)
    return {"score": math.exp(mean), "mean_logprob": mean, "n": len(items), "items": _items(items, logprob=logprobs)}


def _probe_views(model, tok, task, budget, device, precision, bar) -> dict:
    if task.kind == "stop":
        return {"prompts": _stop_view(model, tok, task.views["prompts"], budget, device, precision, bar)}
    if task.kind == "instruct":
        return {"reference": _instruct_view(model, tok, task.views["reference"], budget, device, precision, bar)}
    if task.kind == "lm_eval":
        return {"lm_eval": lmeval_bridge.probe(model, tok, task.name[len(LM_EVAL_PREFIX):], budget.lm_eval_include,
                                               budget.lm_eval_limit)}
    return None


def evaluate(model, tok, tasks, probes, *, scorer: str, budget, device: str, precision: str, desc: str) -> dict:
    """{'scores': {task: {view: {...}}}, 'probes': {probe: {...}}, 'seconds': float}."""
    start = time.perf_counter()
    total = sum(len(v) for t in [*tasks, *probes] for v in t.views.values())
    out = {"scores": {}, "probes": {}}
    # disable=None: no bar off a terminal (a log file, CI), where \r-redrawn bars are noise
    with tqdm(total=total, desc=desc, unit="item", leave=False, disable=None) as bar, \
            packed_linears(model, device, precision):
        for group, key in ((tasks, "scores"), (probes, "probes")):
            for task in group:
                views = _probe_views(model, tok, task, budget, device, precision, bar)
                if views is not None:
                    out[key][task.name] = views
                elif task.kind in ("code", "gen"):
                    out[key][task.name] = _generated_views(model, tok, task, budget, device, precision, bar)
                else:
                    out[key][task.name] = {view: _mc_view(model, tok, items, scorer, device, precision, bar)
                                           for view, items in task.views.items()}
    out["seconds"] = time.perf_counter() - start
    return out
