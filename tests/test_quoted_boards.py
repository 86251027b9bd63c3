"""Boards quoted in the README and the docs say what the committed boards say, cell for cell: a number on a page
is copied from a stored board, never typed in (docs/methods.md's General retention column once stayed behind
after the board changed)."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# (page, the section that quotes, the board quoted): the first ranked table of that section
QUOTES = [("README.md", "## What the main job does", "results/reference/quick-demo/leaderboard.md"),
          ("README.md", "## The all-methods board", "results/reference/standard-tuned/leaderboard.md"),
          ("docs/methods.md", "## The earlier all-methods leaderboard", "results/reference/quick-cpu/leaderboard.md")]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def table(lines: list[str], start: int) -> list[dict]:
    """The rows of the Markdown table whose header is lines[start], keyed by column names less their arrows."""
    names = [c.removesuffix(" ↑").removesuffix(" ↓") for c in cells(lines[start])]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(names, cells(line))))
    return rows


def ranked_board(path: Path) -> dict[str, dict]:
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Rank ↓"))
    return {r["Method"]: r for r in table(lines, start)}


def quoted_table(lines: list[str], section: str) -> list[dict]:
    """The first table headed "| Rank | Method |" in the section that starts at the line `section`."""
    start = lines.index(section)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return table(lines, next(i for i in range(start, end) if lines[i].startswith("| Rank | Method |")))


@pytest.mark.parametrize("page, section, board", QUOTES)
def test_a_quoted_board_equals_the_committed_one(page, section, board):
    lines = (ROOT / page).read_text().splitlines()
    quoted = quoted_table(lines, section)
    stored = ranked_board(ROOT / board)
    assert quoted and {r["Method"] for r in quoted} <= set(stored)
    wrong = [f"{r['Method']} {k}: {page} says {v}, {board} says {stored[r['Method']].get(k)}"
             for r in quoted for k, v in r.items() if stored[r["Method"]].get(k) != v]
    assert not wrong, "\n".join(wrong)
