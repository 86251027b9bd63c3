"""How a generation domain's reply is scored against its reference (`scorer:` in a domain file).

Each scorer takes the answer out of the reference once, when the item is loaded (`answer`), and
decides whether a generated reply gives that answer (`matches`):
- exact_match: the whole reply, with case, surrounding whitespace and runs of whitespace ignored,
  equals the whole reference (labels, short answers: TRACE's classification tasks);
- last_number: the last number in the reply equals the reference's final answer, the number after
  GSM8K's `####` or else the reference's last number (lm-eval's gsm8k "flexible-extract");
  thousands separators and a trailing `.0` are ignored, so 1,000 = 1000 = 1000.0.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
FINAL = "####"


def _normal_text(text: str) -> str:
    return " ".join(text.split()).casefold()


def _number(text: str) -> str:
    """A number's canonical text: no thousands separators, no trailing zeros after the point."""
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return text
    return format(value.normalize(), "f")


def _last_number(text: str) -> str:
    found = NUMBER.findall(text)
    return _number(found[-1].rstrip(".,")) if found else ""


def _final_number(reference: str) -> str:
    tail = reference.rsplit(FINAL, 1)[1] if FINAL in reference else reference
    return _last_number(tail)


SCORERS = {
    "exact_match": (_normal_text, lambda reply, answer: _normal_text(reply) == answer),
    "last_number": (_final_number, lambda reply, answer: answer != "" and _last_number(reply) == answer),
}


def answer(scorer: str, reference: str) -> str:
    return SCORERS[scorer][0](reference)


def matches(scorer: str, reply: str, answer_: str) -> bool:
    return SCORERS[scorer][1](reply, answer_)
