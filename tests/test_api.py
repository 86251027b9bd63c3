"""`import clbench`: the Python API runs a sweep, reads its runs and board, and computes metrics; the command line
has --version and --limit, and off a terminal it logs lines, not redrawn bars."""
import subprocess
import sys

import pytest

import clbench


def test_api_runs_reads_and_ranks_a_limited_sweep(tmp_path, data_dir):
    cfg = clbench.load_config("tiny", sets=["stream=[stem, law]", "probes=[]", "methods=[full]",
                                            f"data_dir={data_dir}"])
    produced = clbench.run(cfg, str(tmp_path))
    assert [r["status"] for r in produced] == ["finished"]
    runs = clbench.load_runs(str(tmp_path))
    assert [r["run_id"] for r in runs] == [produced[0]["run_id"]]
    run = runs[0]
    R = clbench.metrics.matrix(run["stages"], run["spec"]["stream"])
    assert clbench.run_metrics(run)["bwt"] == pytest.approx(clbench.metrics.bwt(R))
    rows = clbench.leaderboard(str(tmp_path))
    assert [(r["label"], r["ranked"]) for r in rows] == [("full", True)]
    assert (tmp_path / "leaderboard.md").exists()
    assert clbench.__version__ != "unknown"


def test_version_and_limit_on_the_command_line(tmp_path, data_dir):
    version = subprocess.run([sys.executable, "-m", "harness.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"clbench {clbench.__version__}"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--preset", "tiny", "--limit", "1", "--methods",
                           "full", "--set", "stream=[stem, law]", "--results", str(tmp_path), "--data", str(data_dir)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = clbench.load_runs(str(tmp_path))[0]
    assert run["sweep"] == "tiny-limit1" and run["spec"]["budget"]["learn_items"] == 1
    assert all(v["n"] == 1 for s in run["stages"] for views in s["scores"].values() for v in views.values())
    # not a terminal: a line per stage and per run, no \r-redrawn progress bars
    assert "\r" not in done.stdout + done.stderr and "stage 2/2 law" in done.stdout + done.stderr
