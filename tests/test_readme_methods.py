"""The README's methods table says what the code and the committed tune say: every registered method, its
defaults as its Config has them, and the settings `clbench tune` chose from the committed grid's runs
(harness.sweep.tune.standing, the same choice progress.md and tuned.yaml show), or 'tuning' while a method's grid
is still running."""
from pathlib import Path

from harness.spec import config
from harness.spec.config import MethodEntry
from harness.sweep.tune import grid, standing
from methods.registry import available

ROOT = Path(__file__).resolve().parents[1]
TUNE = ROOT / "results" / "reference" / "standard" / "tune"


def readme_table() -> dict[str, list[str]]:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Method | Source | Defaults |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def defaults(name: str) -> str:
    """The tune's own label of the method's defaults point (its grid's factors 1, 1), less the method's name."""
    entry, _ = next(p for p in grid(MethodEntry(method=name), config.load("standard")) if p[1]["factors"] == (1.0, 1.0))
    return entry.label[len(name) + 1:]


def test_the_readme_lists_every_method_with_its_defaults():
    rows = readme_table()
    assert set(rows) == set(available())
    wrong = [f"{n}: README says {rows[n][2]}, the code {defaults(n)}" for n in rows if rows[n][2] != defaults(n)]
    assert not wrong, "\n".join(wrong)


def test_the_readme_names_the_settings_the_committed_tune_chose(data_dir):
    rows = readme_table()
    card = config.with_overrides(config.load("standard"), data_dir=str(data_dir))
    points, _, _ = standing(card, str(TUNE), list(available()))
    chosen = {r["variant"]: r["label"][len(r["variant"]) + 1:] for r in points if r["chosen"]}
    wrong = [f"{n}: README says {rows[n][3]}, the tune {chosen.get(n, 'tuning')}" for n in rows
             if rows[n][3] != chosen.get(n, "tuning")]
    assert not wrong, "\n".join(wrong)
