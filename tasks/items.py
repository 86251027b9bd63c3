"""The kinds of evaluation item and how each becomes a chat prompt and a target reply."""
from __future__ import annotations

import dataclasses

LETTERS = "ABCDEFGHIJ"  # the letter scorer names up to ten options


@dataclasses.dataclass(frozen=True)
class MCItem:
    """A multiple-choice question with 2 to 10 options (MMLU's have four)."""

    uid: str
    question: str
    options: tuple[str, ...]
    answer: int  # index into options
    source: str  # file:line (or hub id) the row came from

    def cloze_prompt(self) -> str:
        return self.question.strip()

    def letter_prompt(self) -> str:
        lines = [self.question.strip(), ""]
        lines += [f"{LETTERS[i]}. {o}" for i, o in enumerate(self.options)]
        lines += ["", "Answer with the letter of the correct option."]
        return "\n".join(lines)

    def target(self) -> str:
        """What is trained on: the answer's text (scoring by letter position does not learn, see README)."""
        return str(self.options[self.answer]).strip()

    def training_pair(self) -> dict:
        return {"user": self.cloze_prompt(), "reply": self.target()}


@dataclasses.dataclass(frozen=True)
class CodeItem:
    """A programming problem with executable tests."""

    uid: str
    prompt: str  # the user turn
    reference: str  # a known-good solution
    tests: str  # Python run after the candidate code; raises on failure
    source: str

    def target(self) -> str:
        return f"```python\n{self.reference.strip()}\n```"

    def training_pair(self) -> dict:
        return {"user": self.prompt, "reply": self.target()}


@dataclasses.dataclass(frozen=True)
class GenItem:
    """A question answered in free text: trained on the reference reply, scored by comparing the generated
    reply's answer with `answer` (what the domain's scorer takes from the reference, tasks.answers)."""

    uid: str
    prompt: str  # the user turn
    reference: str  # the reference reply (a worked solution, a label)
    answer: str  # the reference's answer as the scorer compares it
    scorer: str  # a name in tasks.answers.SCORERS
    source: str

    def target(self) -> str:
        return self.reference.strip()

    def training_pair(self) -> dict:
        return {"user": self.prompt, "reply": self.target()}


@dataclasses.dataclass(frozen=True)
class ChatItem:
    """An open-ended request for the generation and log-probability probes."""

    uid: str
    prompt: str  # the user turn
    reference: str  # a reference reply ('' where the source has none)
    source: str
