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
from harness.spec.spec import RunSpec, check_method_file, expand, file_sha256
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


def test_a_card_may_run_a_submissions_own_file_from_a_moved_copy_under_its_name(tmp_path):
    """`label_problems` compared the record's method path with the card's: the submission's own file, copied with a
    results folder that moved, was refused under its own name. Another file under that name still is."""
    from harness.sweep.sweep import label_problems

    sha = file_sha256(f"{EXAMPLE}:DecayingReplay")
    folder = tmp_path / "results" / "submissions" / "mine"
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps({
        "name": "mine", "author": "a", "method": f"/elsewhere/submissions/mine/{sha[:12]}/decaying_replay.py:DecayingReplay",
        "file": {"sha256": sha}, "run_ids": []}))

    def spec(path: Path) -> RunSpec:
        return expand(dataclasses.replace(config.load("tiny"), methods=[
            config.MethodEntry(method=f"{path}:DecayingReplay", label="mine")]))[0]

    assert label_problems([spec(EXAMPLE)], tmp_path / "results") == []
    edited = tmp_path / "decaying_replay.py"
    edited.write_text(EXAMPLE.read_text() + "\n# edited\n")
    assert "would join that row" in label_problems([spec(edited)], tmp_path / "results")[0]


def test_a_stored_run_with_a_forged_method_sha256_is_invalid(tmp_path):
    from harness.store.validate import problem
    from synthetic_runs import synthetic_run

    run = synthetic_run("full", 0, [[0.5, 0.5]] * 3)
    run["spec"]["method_sha256"] = "not a digest"
    run["run_id"] = RunSpec.from_dict(run["spec"]).run_id
    store = Store(tmp_path)
    store.save_run(run)
    data, why = problem(store.run_path(run["run_id"]))
    assert data is None and "method_sha256" in why, why


def test_a_method_file_is_described_once_whatever_names_its_config(monkeypatch):
    """Loading a card and expanding it describe a method file under two names for its config ('card.yaml:
    methods[0].config', 'methods[0].config'): one confined child, unless there are problems, which name it."""
    from harness.spec import sandbox

    started = []
    real = sandbox.Child
    monkeypatch.setattr(sandbox, "Child", lambda *a, **k: started.append(1) or real(*a, **k))
    monkeypatch.setattr(sandbox, "_DESCRIBED", {})
    target = f"{EXAMPLE}:DecayingReplay"
    first = sandbox.describe(target, {"lr": 1e-4}, "card.yaml: methods[0].config", root=False)
    assert sandbox.describe(target, {"lr": 1e-4}, "methods[0].config", root=False) == first and len(started) == 1
    assert "card.yaml: methods[0].config.lr" in "".join(
        sandbox.describe(target, {"lr": "fast"}, "card.yaml: methods[0].config", root=False)["problems"])
    assert "overrides.yaml: lr" in "".join(sandbox.describe(target, {"lr": "fast"}, "overrides.yaml")["problems"])
    assert len(started) == 3


def test_a_method_file_gone_before_its_run_is_named(tmp_path):
    path = tmp_path / "decaying_replay.py"
    shutil.copyfile(EXAMPLE, path)
    spec = expand(dataclasses.replace(config.load("tiny"),
                                      methods=[config.MethodEntry(method=f"{path}:DecayingReplay")]))[0]
    path.unlink()
    with pytest.raises(ConfigError, match=f"method file {path}: cannot be read"):
        check_method_file(spec, "here")
