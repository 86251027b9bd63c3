"""A run's id names what determines its result: a method file by its name and content, not the folder it lies in
(a submission's copy sits in the results folder, so a moved folder or another clone kept none of its run ids),
and a run whose file was edited after its id was planned refuses before any compute."""
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from harness.core.errors import ConfigError
from harness.run import runner
from harness.spec import config
from harness.spec.spec import RunSpec, check_method_file, expand
from harness.store.store import Store

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "decaying_replay.py"
TUNE_RUNS = ROOT / "results" / "reference" / "standard" / "tune" / "runs"


def _ids(method: str) -> list[str]:
    cfg = dataclasses.replace(config.load("tiny"), methods=[config.MethodEntry(method=method, label="mine")])
    return [s.run_id for s in expand(cfg)]


def test_a_method_file_counts_by_its_content_not_its_folder(tmp_path):
    here, there = tmp_path / "a" / "decaying_replay.py", tmp_path / "b" / "c" / "decaying_replay.py"
    for path in (here, there):
        path.parent.mkdir(parents=True)
        shutil.copyfile(EXAMPLE, path)
    ids = _ids(f"{here}:DecayingReplay")
    assert ids == _ids(f"{there}:DecayingReplay")
    there.write_text(there.read_text() + "\n# edited\n")
    assert set(_ids(f"{there}:DecayingReplay")).isdisjoint(ids)


def test_built_in_methods_keep_their_stored_run_ids():
    """No method_sha256 in a built-in method's spec: the committed runs' ids are still the hash of their spec."""
    files = sorted(TUNE_RUNS.glob("*.json"))[:5]
    assert files
    for path in files:
        spec = json.loads(path.read_text())["spec"]
        assert "method_sha256" not in spec and RunSpec.from_dict(spec).run_id == path.stem


def test_a_run_of_an_edited_method_file_fails_before_any_compute(tmp_path, monkeypatch):
    path = tmp_path / "decaying_replay.py"
    shutil.copyfile(EXAMPLE, path)
    spec = expand(dataclasses.replace(config.load("tiny"),
                                      methods=[config.MethodEntry(method=f"{path}:DecayingReplay")]))[0]
    check_method_file(spec, "here")  # the file as planned
    path.write_text(path.read_text() + "\n# edited\n")
    monkeypatch.setattr(runner, "_Setup", lambda *a, **k: pytest.fail("loaded the model first"))
    result = runner.execute(spec, Store(tmp_path / "results"))
    assert result["status"] == "failed"
    assert f"{path} is not the file this run's id names" in result["error"] and "edited since" in result["error"]
    with pytest.raises(ConfigError, match="edited since"):
        check_method_file(spec, "here")


def test_a_method_files_runs_from_two_results_folders_are_one_board_row():
    """Runs of one submission made in two results folders (their specs name two paths of one file) are seeds of one
    row; another version of the file under the same label is a row of its own, never averaged with it."""
    from harness.report.leaderboard import method_groups

    def run(folder: str, sha: str, seed: int) -> dict:
        return {"spec": {"label": "mine", "method": f"/{folder}/submissions/mine/{sha[:12]}/m.py:C",
                         "method_config": {"lr": 1e-4}, "method_sha256": sha, "seed": seed}}

    same = method_groups([run("lab-a", "a" * 64, 0), run("lab-b", "a" * 64, 1)])
    assert list(same) == ["mine"] and len(same["mine"]) == 2
    two = method_groups([run("lab-a", "a" * 64, 0), run("lab-a", "b" * 64, 0)])
    assert len(two) == 2 and all(len(g) == 1 for g in two.values()), two
