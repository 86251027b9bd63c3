"""Scorers: cloze and letter multiple choice, reply log-likelihood, batched greedy generation.

Multiple choice runs questions in batches of similar length. A batch's common token prefix (the
chat template's system turn) runs once, and its KV cache is repeated for the right-padded rest of
each question (`_prompt_batches`); only the last real position's logits are computed.
cloze: each option's text is scored as the assistant's reply to the question. The question's
cache is repeated for its options, which run as continuations for the whole batch of questions, in
chunks of similar length (`_option_chunks`). Score = log-probability of the option's tokens, normalised
per token (default), per character (lm-eval's acc_norm) or not at all (lm-eval's acc).
letter: the options are listed as A-D in the prompt and the answer is the letter with the
highest next-token logit, one forward position per question.
A peft prompt-learning model (prompt/prefix tuning) puts its virtual tokens in front of every
call's input; the shared prefix's cache already holds them, so everything after it runs on the
model underneath (`_continuation_model`), which would otherwise add them a second time.
"""
from __future__ import annotations

import copy
import math
from typing import Literal

import torch

from tasks.chat import IGNORE, encode_example, prompt_ids, reply_ids
from tasks.items import LETTERS, MCItem

from .decoding import CACHE_ARG, greedy_rows, returned_cache
from .generation_metrics import split_answer
from .padding import padded
from .precision import autocast

Norm = Literal["token", "char", "none"]


def _pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def _continuation_model(model):
    """The model that continues from a cache the given model produced: itself, except for a peft
    prompt-learning wrapper, whose virtual tokens (or per-layer prefix) the cache already holds."""
    config = getattr(model, "active_peft_config", None)
    return model.get_base_model() if config is not None and config.is_prompt_learning else model


def _shared_length(rows: list[list[int]]) -> int:
    """Length of the rows' longest common token prefix, leaving every row two tokens of its own: its last
    position predicts the reply, the one before it the prompt's last token (see `_prompt_batches`)."""
    limit, first, k = min(len(r) for r in rows) - 2, rows[0], 0
    while k < limit and all(r[k] == first[k] for r in rows):
        k += 1
    return k


MC_BATCH = 16  # questions per forward: on a 2-core CPU 16 beat 4, 8 and 32 (measured on 50 MMLU questions)


def _length_batches(prompts: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices of the prompts, shortest first, in batches of `batch_size`."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def _prompt_batches(model, tok, prompts: list[list[int]], device: str, batch_size: int):
    """Run the prompts in batches of similar length; yield (indices, last-token logits [b, V], cache, mask, lead).

    A batch's common token prefix (the chat template's system turn, at least) runs once through the model
    itself, which adds a prompt-learning method's virtual tokens; its cache is repeated over the batch and
    the rest of each prompt runs right-padded on the continuation model, at positions that follow the
    cache. `mask` covers the cache and the padded rests: what a continuation of this cache attends to.
    `lead` [b]: the log-probability of each prompt's last token given the tokens before it, which lm-eval
    counts as part of every option when the prompt ends in whitespace (see `cloze_scores`).
    """
    pad = _pad_id(tok)
    batches = _length_batches(prompts, batch_size)
    while batches:
        batch = batches.pop(0)
        rows = [prompts[i] for i in batch]
        shared = _shared_length(rows)
        if shared == 0:  # nothing in common to run once: one prompt at a time
            if len(batch) == 1:
                raise ValueError(f"a prompt of {len(rows[0])} token{'s' * (len(rows[0]) > 1)} leaves too little to "
                                 "continue from; "
                                 "the scorers' prompts are chat-formatted and longer")
            batches[:0] = [[i] for i in batch]
            continue
        cache = returned_cache(model(input_ids=torch.tensor([rows[0][:shared]], device=device), use_cache=True,
                                      logits_to_keep=1))
        past = cache.get_seq_length()  # the shared prefix, and the virtual tokens of prompt learning
        cache.batch_repeat_interleave(len(rows))
        ids, rest_mask = padded([r[shared:] for r in rows], pad, device)
        mask = torch.cat([torch.ones((len(rows), past), dtype=torch.long, device=device), rest_mask], dim=1)
        last = (rest_mask.sum(1) - 1).unsqueeze(1)  # each row's last real position
        positions = (past + torch.arange(ids.shape[1], device=device)).expand(len(rows), -1)
        out = _continuation_model(model)(input_ids=ids, attention_mask=mask, position_ids=positions,
                                         **{CACHE_ARG: cache}, use_cache=True,
                                         logits_to_keep=torch.cat([last - 1, last], dim=1))
        logits = out.logits.float()
        lead = logits[:, 0].log_softmax(-1).gather(-1, ids.gather(1, last)).squeeze(-1)
        yield batch, logits[:, 1], returned_cache(out), mask, lead


MAX_OPTION_POSITIONS = 4096  # option positions whose log-probabilities are held at once (0.8 GB for 49k tokens)
OPTION_SPREAD = 1.5  # a chunk of options holds rows up to this many times its shortest (+ 2 tokens)


def _option_chunks(lengths: list[int]) -> list[list[int]]:
    """The option rows in chunks of similar length, shortest first, so that right padding wastes little: a chunk
    closes before a row longer than OPTION_SPREAD x its first row + 2, or one that would take it past
    MAX_OPTION_POSITIONS padded positions. (One chunk of a batch's options in their order spent about two thirds
    of its positions on padding on MMLU, where one long option sets the width of all.)"""
    chunks: list[list[int]] = []
    for k in sorted(range(len(lengths)), key=lengths.__getitem__):
        if chunks and lengths[k] <= OPTION_SPREAD * lengths[chunks[-1][0]] + 2 \
                and (len(chunks[-1]) + 1) * lengths[k] <= MAX_OPTION_POSITIONS:
            chunks[-1].append(k)
        else:
            chunks.append([k])
    return chunks


def _selected(cache, rows: torch.Tensor):
    """A copy of the cache holding the given batch rows; the cache itself is left as it was (a forward appends to
    the cache it is given, and batch_select_indices replaces each layer's tensors)."""
    part = copy.copy(cache)
    part.layers = [copy.copy(layer) for layer in cache.layers]
    part.batch_select_indices(rows)
    return part


def _option_logprobs(model, cache, mask, first, owner: list[int], rows: list[list[int]], pad: int, device: str):
    """(summed log-probability, token count) of each option row continuing its owner's row of the cache.
    `first` [b, V] predicts each owner's first reply token; the rest run as right-padded continuations, in
    chunks of similar length (`_option_chunks`), each on its own copy of the cache rows it continues."""
    prompt_length = mask.sum(1)  # cache + real prompt tokens, per owner row
    totals: list = [None] * len(rows)
    lengths: list = [None] * len(rows)
    for chunk in _option_chunks([len(r) for r in rows]):
        who = torch.tensor([owner[k] for k in chunk], device=device)
        ids, option_mask = padded([rows[k] for k in chunk], pad, device)
        positions = prompt_length[who].unsqueeze(1) + torch.arange(ids.shape[1], device=device)
        logits = model(input_ids=ids, attention_mask=torch.cat([mask[who], option_mask], 1), position_ids=positions,
                       **{CACHE_ARG: _selected(cache, who)}, use_cache=False).logits
        later = logits.float().log_softmax(-1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1) * option_mask[:, 1:]
        for k, total, n in zip(chunk, (first[who, ids[:, 0]] + later.sum(1)).tolist(), option_mask.sum(1).tolist()):
            totals[k], lengths[k] = total, n
    return totals, lengths


def cloze_scores(model, tok, items: list[MCItem], device: str, precision: str,
                 batch_size: int = MC_BATCH) -> list[list[tuple[float, int]]]:
    """(summed log-probability, token count) of each option of each item, as the reply to its question."""
    return _cloze_totals(model, tok, items, device, precision, batch_size)[0]


@torch.inference_mode()
def _cloze_totals(model, tok, items: list[MCItem], device: str, precision: str, batch_size: int):
    """(per item: [(summed log-probability, token count)] of its options; per item: the log-probability of
    its prompt's trailing whitespace token, 0 where the prompt does not end in whitespace)."""
    prompts = [prompt_ids(tok, item.cloze_prompt()) for item in items]
    trailing = [not tok.decode([p[-1]]).strip() for p in prompts]
    leads: list = [0.0] * len(items)
    options = [[reply_ids(tok, str(o).strip()) for o in item.options] for item in items]
    results: list = [None] * len(items)
    with autocast(device, precision):
        for batch, last, cache, mask, lead in _prompt_batches(model, tok, prompts, device, batch_size):
            owner = [b for b, i in enumerate(batch) for _ in options[i]]  # the batch row each option continues
            totals, lengths = _option_logprobs(_continuation_model(model), cache, mask, last.log_softmax(-1), owner,
                                               [o for i in batch for o in options[i]], _pad_id(tok), device)
            k = 0
            for b, i in enumerate(batch):
                leads[i] = lead[b].item() if trailing[i] else 0.0
                results[i] = [(totals[k + j], lengths[k + j]) if lengths[k + j] else (-math.inf, 0)
                              for j in range(len(options[i]))]
                k += len(options[i])
    return results, leads


def _normalised(scored: list[tuple[float, int]], item: MCItem, norm: Norm) -> list[float]:
    if norm == "token":
        return [total / n if n else -math.inf for total, n in scored]
    if norm == "char":
        return [total / max(1, len(str(option).strip())) for (total, _), option in zip(scored, item.options)]
    return [total for total, _ in scored]


def _outcome(values: list[float], answer: int, gold: float) -> dict:
    """One multiple-choice item: the chosen option (the highest value), the gold option's mean log-probability
    per token (`gold`) and the gold value's margin over the best wrong option (positive: answered correctly)."""
    choice = max(range(len(values)), key=values.__getitem__)
    wrong = max(v for j, v in enumerate(values) if j != answer)
    return {"choice": choice, "gold": gold, "margin": values[answer] - wrong}


def cloze_outcomes(model, tok, items: list[MCItem], device: str, precision: str, norm: Norm = "token",
                   batch_size: int = MC_BATCH) -> list[dict]:
    """Per item: the chosen option (the highest log-probability, normalised by `norm`), the gold option's mean
    log-probability per token and its normalised margin over the best wrong option.

    norm 'char' and 'none' count, as lm-eval does, the prompt's trailing whitespace as part of every option:
    lm-eval moves a context's trailing whitespace into the continuation, and the chat template's generation
    prompt ends in a newline token, so its log-probability is added to each option's sum (the token count
    stays the option's). It shifts every option of a question alike: the unnormalised choice is the same,
    the per-character one is lm-eval's acc_norm exactly (on SmolLM2 the newline is near-certain; on a
    random model it is not). 'token' is clbench's older per-token score and has no lm-eval equivalent."""
    scored, leads = _cloze_totals(model, tok, items, device, precision, batch_size)
    out = []
    for options, lead, item in zip(scored, leads, items):
        chosen = options if norm == "token" else [(total + lead, n) for total, n in options]
        total, n = options[item.answer]
        out.append(_outcome(_normalised(chosen, item, norm), item.answer, total / n if n else -math.inf))
    return out


def cloze_choices(model, tok, items: list[MCItem], device: str, precision: str, norm: Norm = "token",
                  batch_size: int = MC_BATCH) -> list[int]:
    """The chosen option of each item: the highest log-probability, normalised by `norm`."""
    return [o["choice"] for o in cloze_outcomes(model, tok, items, device, precision, norm, batch_size)]


def letter_token_ids(tok) -> list[int]:
    ids = [reply_ids(tok, letter) for letter in LETTERS]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"the letter scorer needs A-D to be single tokens; this tokenizer gives {ids}")
    return [i[0] for i in ids]


@torch.inference_mode()
def letter_logprobs(model, tok, items: list[MCItem], device: str, precision: str,
                    batch_size: int = MC_BATCH) -> list[list[float]]:
    """Per item, the next-token log-probability of each option's letter after the listed options."""
    letters = torch.tensor(letter_token_ids(tok), device=device)
    prompts = [prompt_ids(tok, item.letter_prompt()) for item in items]
    out: list = [None] * len(items)
    with autocast(device, precision):
        for batch, last, _, _, _ in _prompt_batches(model, tok, prompts, device, batch_size):
            chosen = last.log_softmax(-1)[:, letters]
            for b, i in enumerate(batch):
                out[i] = chosen[b, :len(items[i].options)].tolist()
    return out


def letter_outcomes(model, tok, items: list[MCItem], device: str, precision: str,
                    batch_size: int = MC_BATCH) -> list[dict]:
    """Per item: the letter with the highest next-token probability, the gold letter's log-probability
    and its margin over the best wrong letter."""
    return [_outcome(lp, item.answer, lp[item.answer])
            for lp, item in zip(letter_logprobs(model, tok, items, device, precision, batch_size), items)]


def letter_choices(model, tok, items: list[MCItem], device: str, precision: str, batch_size: int = MC_BATCH) -> list[int]:
    """The chosen option of each item: the letter with the highest next-token logit after the listed options."""
    return [o["choice"] for o in letter_outcomes(model, tok, items, device, precision, batch_size)]


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
             batch_size: int = 8, capture: bool = True) -> list[dict]:
    """Greedy chat replies: {'text', 'stopped' (EOS before the cap), 'tokens', 'ids' (the reply's token ids)} per prompt.

    The harness decodes itself rather than through `model.generate`: prompts run as `_prompt_batches` does
    (shared prefix once, through the model itself, which adds a prompt-learning method's virtual tokens),
    then one token per row and step on the continuation model, each row at its own next position with its
    right padding masked. peft's generation glue for prefix tuning reads the KV cache under the keyword
    `past_key_values`, which transformers 5.24 renamed to `cache`, and silently dropped the prefix
    (clbench issue #21); the scorers here never relied on that glue. `capture`: on CUDA, replay each decoding
    step as a CUDA graph (`decoding.greedy_rows`).
    """
    eos = tok.eos_token_id
    enc = [prompt_ids(tok, p) for p in prompts]
    results: list[dict | None] = [None] * len(prompts)
    with autocast(device, precision):
        for batch, logits, cache, mask, _ in _prompt_batches(model, tok, enc, device, batch_size):
            for i, row in zip(batch, greedy_rows(_continuation_model(model), logits, cache, mask, eos,
                                                 _pad_id(tok), max_new_tokens, capture)):
                answer, stopped = split_answer(row, eos)
                results[i] = {"text": tok.decode(answer, skip_special_tokens=True), "stopped": stopped,
                              "tokens": len(answer), "ids": answer}
    return results
