"""Scorers: cloze and letter multiple choice, reply log-likelihood, batched greedy generation.

cloze: each option's text is scored as the assistant's reply to the question. The
question prefix runs once; its KV cache is repeated for the options, which run as one
batch of continuations. Score = log-probability of the option's tokens, normalised per
token (default), per character (lm-eval's acc_norm) or not at all (lm-eval's acc).
A peft prompt-learning model (prompt/prefix tuning) puts its virtual tokens in front of every
call's input; the prefix's cache already holds them, so the continuations run on the model
underneath (`_continuation_model`), which would otherwise add them a second time.
letter: the options are listed as A-D in the prompt and the answer is the letter with the
highest next-token probability, one forward pass per question.
"""
from __future__ import annotations

import math
from typing import Literal

import torch

from tasks.chat import IGNORE, encode_example, prompt_ids, reply_ids
from tasks.items import LETTERS, MCItem

from .generation_metrics import split_answer
from .precision import autocast

Norm = Literal["token", "char", "none"]


def _pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def _continuation_model(model):
    """The model that continues from a cache the given model produced: itself, except for a peft
    prompt-learning wrapper, whose virtual tokens (or per-layer prefix) the cache already holds."""
    config = getattr(model, "active_peft_config", None)
    return model.get_base_model() if config is not None and config.is_prompt_learning else model


@torch.inference_mode()
def cloze_option_logprobs(model, tok, item: MCItem, device: str, precision: str) -> list[tuple[float, int]]:
    """(summed log-probability, token count) of each option as the reply."""
    prefix = torch.tensor([prompt_ids(tok, item.cloze_prompt())], device=device)
    options = [reply_ids(tok, str(o).strip()) for o in item.options]
    with autocast(device, precision):
        out = model(input_ids=prefix, use_cache=True, logits_to_keep=1)  # only the last position's logits
        first = out.logits[0, -1].float().log_softmax(-1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(len(options))
        width = max(1, max(len(o) for o in options))
        ids = torch.full((len(options), width), _pad_id(tok), dtype=torch.long, device=device)
        for k, o in enumerate(options):
            ids[k, : len(o)] = torch.tensor(o)
        rest = _continuation_model(model)(input_ids=ids, past_key_values=cache, use_cache=False).logits.float().log_softmax(-1)
    results = []
    for k, o in enumerate(options):
        if not o:
            results.append((-math.inf, 0))
            continue
        total = first[o[0]].item() + sum(rest[k, j - 1, o[j]].item() for j in range(1, len(o)))
        results.append((total, len(o)))
    return results


def cloze_choose(model, tok, item: MCItem, device: str, precision: str, norm: Norm = "token") -> int:
    scored = cloze_option_logprobs(model, tok, item, device, precision)
    values = []
    for (total, n), option in zip(scored, item.options):
        if norm == "token":
            values.append(total / n if n else -math.inf)
        elif norm == "char":
            values.append(total / max(1, len(str(option).strip())))
        else:
            values.append(total)
    return max(range(len(values)), key=values.__getitem__)


def letter_token_ids(tok) -> list[int]:
    ids = [reply_ids(tok, letter) for letter in LETTERS]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"the letter scorer needs A-D to be single tokens; this tokenizer gives {ids}")
    return [i[0] for i in ids]


@torch.inference_mode()
def letter_choose(model, tok, item: MCItem, device: str, precision: str) -> int:
    ids = torch.tensor([prompt_ids(tok, item.letter_prompt())], device=device)
    with autocast(device, precision):
        logits = model(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
    letters = letter_token_ids(tok)
    return int(torch.argmax(logits[letters]).item())


@torch.inference_mode()
def reply_logprob(model, tok, pairs: list[tuple[str, str]], device: str, precision: str, max_length: int) -> list[float]:
    """Mean per-token log-probability of each reply (with its EOS) given its user turn.

    One item per forward, with logits only for the reply's positions (the reply ends the
    sequence): the vocabulary projection of a whole padded batch cost several times more.
    """
    out = []
    for user, reply in pairs:
        enc = encode_example(tok, user, reply, max_length)
        n = sum(1 for x in enc["labels"] if x != IGNORE)
        ids = torch.tensor([enc["input_ids"]], device=device)
        with autocast(device, precision):
            logits = model(input_ids=ids, logits_to_keep=n + 1).logits[0, :-1].float()
        targets = torch.tensor(enc["labels"][-n:], device=device)
        out.append(logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).mean().item())
    return out


@torch.inference_mode()
def generate(model, tok, prompts: list[str], device: str, precision: str, max_new_tokens: int,
             batch_size: int = 8) -> list[dict]:
    """Greedy chat replies: {'text', 'stopped' (EOS before the cap), 'tokens', 'ids' (the reply's token ids)} per prompt."""
    pad, eos = _pad_id(tok), tok.eos_token_id
    results = []
    for s in range(0, len(prompts), batch_size):
        enc = [prompt_ids(tok, p) for p in prompts[s:s + batch_size]]
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), pad, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for i, e in enumerate(enc):  # left padding keeps every prompt's end at the same column
            ids[i, width - len(e):] = torch.tensor(e)
            mask[i, width - len(e):] = 1
        with autocast(device, precision):
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad)
        for generated in out[:, width:].tolist():
            row, stopped = split_answer(generated, eos)
            results.append({"text": tok.decode(row, skip_special_tokens=True), "stopped": stopped, "tokens": len(row),
                            "ids": row})
    return results
