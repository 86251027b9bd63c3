"""#16: no stored file can crash or hang a reader, and `clbench run` recomputes a run whose file it cannot trust."""
import json
import os
import subprocess
import sys

import pytest
from synthetic_runs import synthetic_run

from harness.spec.spec import RunSpec
from harness.store.store import Store
from harness.sweep.sweep import pending


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=120)


def test_hostile_files_are_named_and_neither_validate_nor_leaderboard_crashes_or_hangs(tmp_path):
    store = Store(tmp_path)
    good = synthetic_run("full", 0, [[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]])
    store.save_run(good)
    runs = tmp_path / "runs"
    (runs / "nested.json").write_text("[" * 400_000)
    os.mkfifo(runs / "fifo.json")
    os.symlink("/dev/zero", runs / "zero.json")
    out = _cli("validate", "--results", str(tmp_path))
    lines = out.stdout.splitlines()
    assert out.returncode == 1 and "1 of 4 run files valid" in out.stdout, out.stderr[-2000:]
    assert any("nested.json" in x and "nested too deeply" in x for x in lines)
    assert any("fifo.json" in x and "not a regular file" in x for x in lines)
    assert any("zero.json" in x and "not a regular file" in x for x in lines)
    board = _cli("leaderboard", "--results", str(tmp_path))
    assert board.returncode == 0 and "| full |" in board.stdout, board.stderr[-2000:]
    # a file the board could not read changes it (a method's row goes): every format says so, not a stderr warning
    for name in ("leaderboard.md", "leaderboard.tex", "leaderboard.html"):
        text = (tmp_path / name).read_text()
        assert "3 run file(s) that cannot be read" in text and "fifo" in text and "zero" in text, name
    assert "UserWarning" not in board.stderr
    power = _cli("power", "--results", str(tmp_path))  # it names the files it skips on stderr: one line each
    skipped = [x for x in power.stderr.splitlines() if "json" in x]
    assert len(skipped) == 3 and all(x.startswith("clbench: warning: ") for x in skipped), power.stderr[-2000:]
    assert "UserWarning" not in power.stderr


@pytest.mark.parametrize("damage", ["truncate", "another run's file"])
def test_a_run_file_that_cannot_be_trusted_is_moved_aside_and_rerun(tmp_path, damage):
    store = Store(tmp_path)
    run = synthetic_run("full", 0, [[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]])
    other = synthetic_run("full", 1, [[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]])
    path = store.save_run(run)
    text = json.dumps(other) if damage == "another run's file" else path.read_text()[:200]
    path.write_text(text)
    spec = RunSpec.from_dict(run["spec"])
    with pytest.warns(UserWarning, match="moved aside"):
        assert pending([spec], store, log=lambda line: None) == [spec]
    assert not path.exists()
    aside = list((tmp_path / "runs").glob(f"{run['run_id']}.json.invalid-*"))
    assert len(aside) == 1 and aside[0].read_text() == text  # nothing stored is lost


def test_a_damaged_stage0_file_is_computed_again(tmp_path):
    store = Store(tmp_path)
    store.save_stage0("k", {"scores": {}, "probes": {}})
    assert store.load_stage0("k") == {"scores": {}, "probes": {}}
    store.stage0_path("k").write_text('{"scores": ')
    with pytest.warns(UserWarning, match="computed again"):
        assert store.load_stage0("k") is None


@pytest.mark.parametrize("mutate", [
    lambda r: r.update(protocol="v1"),
    lambda r: r.update(total_params="12"),
    lambda r: r.update(trainable_params=-3),
    lambda r: r["stages"][-1].pop("probes"),
    lambda r: r["stages"][2]["scores"]["stem"].pop("transfer"),
    lambda r: r["provenance"].update(packages=["torch"]),
    lambda r: r["stages"][-1]["probes"]["general"].update(heldout="0.5"),
    lambda r: r.update(compute={"train_seconds": 9.0, "eval_seconds": 3.0, "peak_memory_mb": 900.0, "train_tokens": 64,
                                "device_count": 1, "cpu_hours": 0.01, "stages": 0}),  # cost.rates divides by it
], ids=["protocol", "total_params", "trainable_params", "probes", "transfer", "packages", "probe-view",
        "compute-stages"])
def test_a_type_mutated_file_fails_validate_instead_of_crashing_the_leaderboard(tmp_path, mutate):
    from harness.report import leaderboard
    from harness.store.validate import problem

    run = synthetic_run("full", 0, [[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]])
    mutate(run)
    path = Store(tmp_path).save_run(run)
    assert problem(path)[1] is not None
    with pytest.warns(UserWarning, match="skipped"):
        assert leaderboard.sections(Store(tmp_path).runs()) == []


def _deep(levels: int) -> dict:
    out: dict = {}
    for _ in range(levels):
        out = {"x": out}
    return out


def _uid(r):
    r["stages"][2]["scores"]["stem"]["recall"]["items"]["uid"][0] = "other"


def _padded(r, copies=40):
    """Every view's per-item records repeated (means, scores and n kept true): the board's bootstrap draws
    replicates x items per view, so a 10 MB file padded this way took 43 s and 3.5 GB to render, and the 256 MB a
    run file may be, minutes and tens of GB."""
    for stage in r["stages"]:
        for views in [*stage["scores"].values(), *stage["probes"].values()]:
            for view in views.values():
                view["items"] = {k: v * copies for k, v in view["items"].items()}
                view["n"] *= copies


def _renamed(r):
    for stage in r["stages"]:
        items = stage["scores"]["stem"]["recall"]["items"]
        items["uid"] = [f"x{k}" for k in range(len(items["uid"]) // 2)] * 2


@pytest.mark.parametrize("mutate, says", [
    (lambda r: [s["scores"]["stem"]["recall"].update(gold_logprob=5.0) for s in r["stages"][1:]],
     "gold_logprob is 5.0, not the mean of its items' gold_logprob"),  # moved the headline, not its interval
    (lambda r: r["stages"][1]["scores"]["stem"]["recall"]["items"]["correct"].__setitem__(0, float("nan")),
     "holds a non-number (or NaN"),
    (lambda r: r["stages"][1]["scores"]["stem"]["recall"]["items"]["gold_logprob"].__setitem__(0, float("inf")),
     "holds a non-number (or NaN"),
    (lambda r: r["spec"].update(label=12345), "spec.label is 12345, not a string"),
    (lambda r: r["spec"].update(seed="zero"), "spec.seed is 'zero', not an integer"),
    (lambda r: r.update(sweep=7), "field 'sweep' must be a string"),
    (lambda r: r["provenance"].update(machine="evil"), "provenance.machine an object"),
    (lambda r: r["spec"].update(stream=["stem", "stem"]) or r.update(run_id=RunSpec.from_dict(r["spec"]).run_id),
     "names a task twice"),  # a figure's panels crashed on it
    (lambda r: r.update(trainable_params=10**20), "not a count"),
    (lambda r: r.update(trainable_params=200, total_params=100), "exceeds 'total_params'"),
    (lambda r: r.update(total_params=10**400), "not a count"),
    (lambda r: r.update(compute={"train_seconds": 9.0, "eval_seconds": 3.0, "peak_memory_mb": 900.0, "stages": 2,
                                 "train_tokens": 10**400, "device_count": 1, "cpu_hours": 0.01}), "not a positive number"),
    (lambda r: r.update(status="failed") or r["stages"][1].update(probes=["x"]), "stages[1].probes is not an object"),
    (_uid, "its items are not stage 0's"),  # every interval of the section went, unsaid
    (_padded, "holds 320 items, more than its budget draws for any view (32)"),
    (lambda r: _padded(r) or r["spec"]["budget"].update(learn_items=10**6) or r.update(
        run_id=RunSpec.from_dict(r["spec"]).run_id), "spec.budget.learn_items: 1000000 is above the maximum 2048"),
    (_renamed, "items.uid names an item twice"),
    (lambda r: r["spec"].update(method_config=_deep(500)), "spec is not a RunSpec: RecursionError"),
], ids=["view-logprob", "nan-item", "inf-item", "label", "seed", "sweep", "machine", "stream", "huge-count",
        "trainable>total", "overflow-count", "overflow-compute", "probes-list", "uid", "padded-items", "padded-budget", "repeated-uid", "deep-config"])
def test_a_file_whose_numbers_a_report_would_misread_fails_validate(tmp_path, mutate, says):
    """Each edit, with the file's digest recomputed, passed `clbench validate` and then moved a number on the board
    or crashed a reader (#16's review): now each is named, and the board leaves the file out."""
    from harness.report import leaderboard
    from harness.store.validate import problem

    run = synthetic_run("full", 0, [[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]], items=8)
    mutate(run)
    path = Store(tmp_path).save_run(run)
    why = problem(path)[1]
    assert why is not None and says in why, why
    skipped = []
    assert leaderboard.sections(Store(tmp_path).runs(skipped)) == [] and len(skipped) == 1


def test_a_number_of_more_digits_than_python_converts_is_named_not_raised(tmp_path):
    from harness.core.json_file import read_json

    path = tmp_path / "run.json"
    path.write_text('{"zz": ' + "9" * 5000 + "}")
    data, why = read_json(path)
    assert data is None and why.startswith("not readable JSON")


def test_a_stage0_record_whose_means_are_not_its_items_is_computed_again(tmp_path):
    """Its digest deleted and every recall log-probability set to -50: later runs took it as their baseline."""
    store = Store(tmp_path)
    stage = synthetic_run("full", 0, [[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]], items=8)["stages"][0]
    store.save_stage0("k", {"scores": stage["scores"], "probes": stage["probes"]})
    record = json.loads(store.stage0_path("k").read_text())
    del record["digest"]
    for views in record["scores"].values():
        views["recall"]["gold_logprob"] = -50.0
    store.stage0_path("k").write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="not the mean of its items' gold_logprob"):
        assert store.load_stage0("k") is None


def test_a_stage0_record_missing_a_task_or_view_is_computed_again(tmp_path):
    """A stage-0 file with a task or a view deleted (digest recomputed) was taken as whole: every run of the sweep
    then trained in full and was moved aside as unreadable ('stages[0] lacks scores for every task'), each time
    the sweep ran. The runner names what it must hold; a record that lacks any of it, or holds a view that is
    not an object, is computed again."""
    from harness.store.files import digest

    store = Store(tmp_path)
    stage = synthetic_run("full", 0, [[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]], items=8)["stages"][0]
    expected = {"scores": {task: sorted(views) for task, views in stage["scores"].items()},
                "probes": {probe: None for probe in stage["probes"]}}
    store.save_stage0("k", {"scores": stage["scores"], "probes": stage["probes"]})
    assert store.load_stage0("k", expected) is not None

    def damaged(edit, why):
        record = json.loads(json.dumps({"scores": stage["scores"], "probes": stage["probes"]}))
        edit(record)
        store.stage0_path("k").write_text(json.dumps({**record, "digest": digest(record)}))
        with pytest.warns(UserWarning, match=why):
            assert store.load_stage0("k", expected) is None

    task = next(iter(stage["scores"]))
    damaged(lambda r: r["scores"].pop(task), f"lacks scores.{task}")
    damaged(lambda r: r["scores"][task].pop("transfer"), f"lacks scores.{task}.transfer")
    damaged(lambda r: r["probes"].clear(), "lacks probes.")
    damaged(lambda r: r["scores"][task].update(recall="x"), f"scores.{task}.recall is not an object")


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_a_lock_file_that_is_not_the_folders_own_is_refused_and_nothing_outside_is_touched(tmp_path, kind):
    """A `.clbench.lock` linked to a file elsewhere was opened and truncated (a helper's review emptied a file
    outside the results folder); a FIFO gave 'cannot open: None'."""
    from harness.core.errors import StoreError

    store, victim = Store(tmp_path / "results"), tmp_path / "victim.txt"
    store.root.mkdir()
    victim.write_text("keep me")
    lock = store.root / ".clbench.lock"
    {"symlink": lambda: lock.symlink_to(victim), "fifo": lambda: os.mkfifo(lock), "folder": lock.mkdir}[kind]()
    with pytest.raises(StoreError, match=r"\.clbench\.lock: .*remove it"):
        with store.sweep_lock(log=lambda line: None):
            pass
    assert victim.read_text() == "keep me"
    good = Store(tmp_path / "good")
    with good.sweep_lock(log=lambda line: None):  # the folder's own lock file: created, held, emptied after
        assert (good.root / ".clbench.lock").read_text() == f"pid {os.getpid()}\n"
    assert (good.root / ".clbench.lock").read_text() == ""


def test_a_runs_folder_that_cannot_be_listed_is_named_and_the_board_is_left_alone(tmp_path, monkeypatch):
    """Read as empty, it made validate say '0 of 0 run files valid' and the leaderboard replace a good board with
    an empty one (a helper's review, `chmod 000 runs` without CAP_DAC_OVERRIDE)."""
    from harness.core.errors import StoreError
    from harness.report import leaderboard

    store = Store(tmp_path)
    store.save_run(synthetic_run("full", 0, [[0.5, 0.5]] * 3))
    board = leaderboard.write(tmp_path).read_text()
    real = os.scandir

    def denied(path):
        if str(path).endswith("runs"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(StoreError, match=r"runs: cannot list its run files: Permission denied"):
        leaderboard.write(tmp_path)
    assert (tmp_path / "leaderboard.md").read_text() == board


def test_a_run_file_name_that_is_not_utf8_is_named_not_crashed_on(tmp_path):
    store = Store(tmp_path)
    store.save_run(synthetic_run("full", 0, [[0.5, 0.5]] * 3))
    (tmp_path / "runs" / os.fsdecode(b"x\xff.json")).write_text("{}")
    out = _cli("validate", "--results", str(tmp_path))
    assert out.returncode == 1 and "x\ufffd.json: its file name is not UTF-8; rename it" in out.stdout
    assert "1 of 2 run files valid" in out.stdout
    board = _cli("leaderboard", "--results", str(tmp_path))
    assert board.returncode == 0 and "x\ufffd.json" in (tmp_path / "leaderboard.md").read_text()
