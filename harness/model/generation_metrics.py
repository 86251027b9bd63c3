"""Stop behaviour and repetition of generated answers: pure functions of token id lists.

An answer is the list of generated token ids before the end-of-turn/EOS token (the EOS itself
is not part of it); `stopped` says whether the EOS came before the token cap.
"""
from __future__ import annotations


def ngrams(tokens: list[int], n: int) -> list[tuple]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def tail_repetition(tokens: list[int], n: int, window: int) -> float:
    """Share of the n-grams in the last `window` tokens that repeat an earlier n-gram of that
    window: (count - distinct) / count. 0 for a tail without repeats or shorter than n."""
    grams = ngrams(tokens[-window:], n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def distinct_n(answers: list[list[int]], n: int) -> float | None:
    """Distinct n-grams over all answers / all n-grams of all answers (corpus-level distinct-n);
    None when no answer has n tokens."""
    grams = [g for a in answers for g in ngrams(a, n)]
    return len(set(grams)) / len(grams) if grams else None


def stop_summary(answers: list[list[int]], stopped: list[bool], n: int, window: int) -> dict:
    """Per-stage numbers of the stop probe: stop rate, mean tail repetition, distinct-n, mean length."""
    if not answers or len(answers) != len(stopped):
        raise ValueError(f"need one stop flag per answer, got {len(answers)} answers and {len(stopped)} flags")
    return {"stop_rate": sum(stopped) / len(answers),
            "tail_repetition": sum(tail_repetition(a, n, window) for a in answers) / len(answers),
            "distinct_n": distinct_n(answers, n),
            "mean_length": sum(len(a) for a in answers) / len(answers),
            "n": len(answers)}


def split_answer(generated: list[int], eos: int) -> tuple[list[int], bool]:
    """(answer, stopped): the tokens before the first EOS, and whether an EOS was generated at all
    (a reply cut at the token cap has none, so it did not stop)."""
    if eos in generated:
        return generated[: generated.index(eos)], True
    return list(generated), False
