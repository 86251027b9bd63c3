"""Regenerating the leaderboard (Markdown, CSV, LaTeX, HTML) from 1,000 stored run files: reading
and validating every file, aggregating, writing all four formats. Target: under 2 s.
Run with: python -m tox -- tests/bench/test_bench_leaderboard.py --benchmark-only -s"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/synthetic_runs.py

from synthetic_runs import CHECKSUMS, synthetic_run  # noqa: E402

from harness.report import leaderboard  # noqa: E402
from harness.store.store import Store  # noqa: E402

RUNS, LABELS = 1000, 20


def test_leaderboard_from_1000_runs(benchmark, tmp_path):
    store = Store(tmp_path / "results")
    for i in range(RUNS):
        label, seed = f"method-{i % LABELS}", i // LABELS
        q = (i % LABELS) / LABELS
        R = [[0.3, 0.4], [0.6, 0.4], [0.4 + 0.3 * q + 0.001 * seed, 0.7 - 0.2 * q]]
        kw = {"model": "tiny2", "checksums": {**CHECKSUMS, "mmlu/test/a.csv": "3" * 64}} if i % 10 == 9 else {}
        store.save_run(synthetic_run(label, seed, R, **kw))
    out = tmp_path / "board"
    path = benchmark.pedantic(leaderboard.write, args=(tmp_path / "results", out), rounds=5, iterations=1,
                              warmup_rounds=1)
    assert path.exists() and len(list(out.glob("leaderboard.*"))) == 4
    board = path.read_text()
    assert board.count("## ") == 2 and "| method-19 |" in board
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update(runs=RUNS, labels=LABELS, mean_s=round(mean, 3))
    print(f"\nleaderboard from {RUNS} stored runs, all four formats: mean {mean:.3f} s over 5 rounds (target < 2 s)")
