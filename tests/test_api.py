"""`import clbench`: the Python API reads a sweep's runs and board and computes metrics; the command line has
--version and --limit, and off a terminal it logs lines, not redrawn bars."""
import subprocess
import sys

import pytest

import clbench


@pytest.fixture(scope="module")
def limited(tmp_path_factory, data_dir):
    results = tmp_path_factory.mktemp("limited")
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--preset", "tiny", "--limit", "1", "--methods",
                           "full", "--set", "stream=[stem, law]", "--results", str(results), "--data", str(data_dir)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return results, done


def test_limit_runs_one_item_per_view_under_a_name_of_its_own_and_logs_lines(limited):
    results, done = limited
    run = clbench.load_runs(str(results))[0]
    assert run["sweep"] == "tiny-limit1" and run["spec"]["budget"]["learn_items"] == 1
    assert all(v["n"] == 1 for s in run["stages"] for views in s["scores"].values() for v in views.values())
    # not a terminal: a line per stage and per run, no \r-redrawn progress bars
    assert "\r" not in done.stdout + done.stderr and "stage 2/2 law" in done.stdout + done.stderr


def test_api_reads_runs_board_and_metrics(limited):
    results, _ = limited
    runs = clbench.load_runs(str(results))
    run = runs[0]
    R = clbench.metrics.matrix(run["stages"], run["spec"]["stream"])
    assert clbench.run_metrics(run)["bwt"] == pytest.approx(clbench.metrics.bwt(R))
    rows = clbench.leaderboard(str(results))
    assert [(r["label"], r["ranked"]) for r in rows] == [("full", True)]
    assert rows[0]["protocol"].startswith(run["protocol"]["version"])  # the board's key: version/stage 0/stack


def test_api_run_is_the_sweep_and_writes_the_board(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr("harness.sweep.sweep.run_sweep", lambda cfg, results, address=None: seen.update(cfg=cfg) or [])
    monkeypatch.setattr("harness.report.leaderboard.write", lambda results: seen.update(board=results))
    cfg = clbench.load_config("tiny", sets=["budget.epochs=1"])
    assert clbench.run(cfg, str(tmp_path)) == [] and seen == {"cfg": cfg, "board": str(tmp_path)}
    clbench.run("tiny", str(tmp_path))
    assert seen["cfg"] == clbench.load_config("tiny")


def test_version():
    version = subprocess.run([sys.executable, "-m", "harness.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"clbench {clbench.__version__}"
    assert clbench.__version__ != "unknown"


def test_api_misuse_is_named_in_one_line():
    from synthetic_runs import synthetic_run

    from harness.core.errors import ConfigError

    failed = synthetic_run("full", 0, [[0.5, 0.5]] * 3, status="failed")
    with pytest.raises(ConfigError, match="the run is 'failed', not finished"):
        clbench.run_metrics(failed)
    with pytest.raises(ConfigError, match="give a list of 'KEY=VALUE' strings"):
        clbench.load_config("tiny", sets="budget.epochs=1")  # a string, not a list: read letter by letter before
    with pytest.raises(ConfigError, match="is not a preset name or a path"):
        clbench.load_config(None)
