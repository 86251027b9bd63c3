"""#16: a method clbench did not write cannot touch scores: it is imported and run only in a confined child,
and its model is scored by a process that never imported it."""
import dataclasses
import os
import re
import socket
import sys

import pytest
import torch

from harness.core.errors import ConfigError
from harness.report import leaderboard
from harness.run import sandboxed
from harness.spec import config, sandbox
from harness.store.store import Store
from harness.sweep.sweep import run_sweep

PATCHER = '''
import socket
import harness.run.evaluation, tasks.code_exec
from methods.full import FullFineTune

ESCAPE = {escape!r}


def perfect(*args, **kwargs):
    raise SystemExit("scores patched")


harness.run.evaluation._mc_view = perfect  # what a method that writes its own scores would do
tasks.code_exec.passes = lambda *a, **k: True
try:
    open(ESCAPE, "w").write("escaped")
except OSError:
    pass
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"imported")
except OSError:
    pass


class Patcher(FullFineTune):
    name = "patcher"
'''

GROWS = '''
import torch
from methods.full import FullFineTune


class Grows(FullFineTune):
    name = "grows"

    def prepare(self, model, ctx):
        model = super().prepare(model, ctx)
        model.register_parameter("extra_scale", torch.nn.Parameter(torch.zeros(1)))
        return model
'''


HOARDS = '''
import harness.run.compute
from methods.full import FullFineTune

harness.run.compute.peak_memory_mb = lambda device: 1.0  # what it would report of itself: the child's measure patched


class Hoards(FullFineTune):
    name = "hoards"

    def prepare(self, model, ctx):
        block = bytearray(1536 * 2**20)  # 1.5 GB, every page touched
        for i in range(0, len(block), 4096):
            block[i] = 1
        del block
        try:  # the kernel's peak count can be reset by writing 5 here: the confined child may not write it
            open("/proc/self/clear_refs", "w").write("5")
        except OSError:
            pass
        return super().prepare(model, ctx)
'''


def _sweep(tmp_path, methods, data_dir):
    cfg = config.load("tiny")
    cfg = dataclasses.replace(cfg, data_dir=str(data_dir), methods=[config.MethodEntry(**m) for m in methods],
                              stream=cfg.stream[:2])
    results = tmp_path / "results"
    run_sweep(cfg, results, log=lambda line: None)
    return {r["spec"]["label"]: r for r in Store(results).runs()}


def _cells(run):
    return [(s["scores"], s["probes"]) for s in run["stages"]]


@pytest.mark.slow
def test_a_score_patching_method_scores_like_full_and_touches_nothing_else(tmp_path, data_dir):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.1)
    escape = tmp_path / "escaped.txt"
    path = tmp_path / "patcher.py"
    path.write_text(PATCHER.format(escape=str(escape), port=listener.getsockname()[1]))
    runs = _sweep(tmp_path, [{"method": "full"}, {"method": f"{path}:Patcher", "label": "patcher"}], data_dir)
    full, patcher = runs["full"], runs["patcher"]
    assert full["status"] == patcher["status"] == "finished", patcher.get("error")
    # trained in its child with the same seeds, scored by the parent: every cell equals full fine-tuning's
    assert _cells(patcher) == _cells(full)
    assert all(s["scores"][t]["recall"]["score"] < 1 for s in full["stages"] for t in full["spec"]["stream"])
    assert patcher.get("verified", True) and not escape.exists()
    with pytest.raises(TimeoutError):
        listener.accept()  # no TCP connection came from any import of the file
    here = {m.__spec__.origin for m in list(sys.modules.values()) if getattr(m, "__spec__", None)}
    assert str(path) not in here and str(path.resolve()) not in here  # never imported in this process


@pytest.mark.slow
def test_a_methods_peak_memory_is_the_kernels_count_not_its_word(tmp_path, data_dir):
    """The child reported its own peak memory: a method that used 1.5 GB and said 1 MB showed the parent's
    (scoring-only) peak on the board's memory column."""
    path = tmp_path / "hoards.py"
    path.write_text(HOARDS)
    run = _sweep(tmp_path, [{"method": f"{path}:Hoards", "label": "hoards"}], data_dir)["hoards"]
    assert run["status"] == "finished", run.get("error")
    assert run["compute"]["peak_memory_mb"] > 1536


@pytest.mark.slow
def test_a_model_the_base_architecture_cannot_hold_is_scored_by_its_child_and_marked_unverified(tmp_path, data_dir):
    path = tmp_path / "grows.py"
    path.write_text(GROWS)
    runs = _sweep(tmp_path, [{"method": f"{path}:Grows", "label": "grows"}], data_dir)
    run = runs["grows"]
    assert run["status"] == "finished", run.get("error")
    assert run["verified"] is False and "extra_scale" in run["unverified"]
    row = leaderboard.sections(list(runs.values()))[0]["rows"][0]
    assert row["unverified"] == 1
    from harness.report import tables

    assert "1 unverified" in tables.markdown(leaderboard.sections(list(runs.values())), leaderboard.header([run]))


@pytest.mark.parametrize("body, expected", [
    ("import time\ntime.sleep(600)\n", "sent nothing within 10 s"),
    ("import sys\nsys.exit(0)\n", "SystemExit: 0"),
    ("import os\nos._exit(0)\n", "exited (code 0) before reporting"),
    ("print('{\"kind\": \"described\"}')\nimport os\nos._exit(3)\n", "exited (code 3)"),  # stdout is no channel
])
def test_import_time_hangs_and_exits_are_named_in_one_line(tmp_path, body, expected):
    path = tmp_path / "bad.py"
    path.write_text(body)
    with pytest.raises(ConfigError) as e:
        sandbox.describe(f"{path}:Bad", timeout=10)
    assert expected in str(e.value).splitlines()[0]


def test_a_sleeping_import_is_named_once_its_child_uses_no_cpu(tmp_path, monkeypatch):
    """A hang that sleeps is named after IDLE_LIMIT seconds without CPU, before the timeout runs out (at the
    defaults, describe's timeout, 5 minutes, ends first: this is the check every receive makes)."""
    monkeypatch.setattr(sandbox, "IDLE_LIMIT", 3.0)
    path = tmp_path / "bad.py"
    path.write_text("import time\ntime.sleep(600)\n")
    with pytest.raises(ConfigError) as e:
        sandbox.describe(f"{path}:Bad", timeout=120)
    assert re.search(r"used no CPU for \d+ s and sent nothing", str(e.value).splitlines()[0])


SLEEPS = '''
import time
from methods.full import FullFineTune


class Sleeps(FullFineTune):
    name = "sleeps"

    def train_examples(self, examples, ctx):
        time.sleep(3600)  # a method waiting for something that never comes
'''


def test_a_run_whose_method_sleeps_fails_in_one_line_within_the_idle_limit(tmp_path, data_dir, monkeypatch):
    """The stage of a submitted method that sleeps used to hold its run for STAGE_TIMEOUT (6 h): it fails once
    its child has used no CPU for IDLE_LIMIT seconds, and the run is stored as failed with that reason."""
    import time

    from harness.run.runner import execute
    from harness.spec.spec import expand

    monkeypatch.setattr(sandbox, "IDLE_LIMIT", 3.0)
    path = tmp_path / "sleeps.py"
    path.write_text(SLEEPS)
    cfg = config.load("tiny")
    cfg = dataclasses.replace(cfg, data_dir=str(data_dir), stream=cfg.stream[:1],
                              methods=[config.MethodEntry(method=f"{path}:Sleeps", label="sleeps")])
    start = time.monotonic()
    result = execute(expand(cfg)[0], Store(tmp_path / "results"), data_dir=str(data_dir))
    assert result["status"] == "failed" and re.search(r"used no CPU for \d+ s and sent nothing", result["error"])
    assert time.monotonic() - start < 120


SPINS = '''
from methods.full import FullFineTune


class Spins(FullFineTune):
    name = "spins"

    def train_examples(self, examples, ctx):
        while True:  # a busy loop: it uses CPU, so the idle check never fires
            pass
'''


def test_a_busy_looping_method_fails_its_run_at_the_sweeps_stage_time_limit(tmp_path, data_dir, monkeypatch):
    """A submitted method that loops without end held its run for STAGE_TIMEOUT (6 h) whatever the sweep wanted:
    `resources.stage_hours` now reaches the run, which fails in one line once its stage has taken that long."""
    import time

    from harness.run.runner import execute
    from harness.spec.spec import expand
    from harness.sweep import scheduler, sweep

    path = tmp_path / "spins.py"
    path.write_text(SPINS)
    cfg = config.load("tiny", [f"methods=[{path}:Spins]", "resources.stage_hours=0.002"])
    asked = {}
    monkeypatch.setattr(scheduler, "run_specs", lambda todo, *a, **k: asked.update(k) or [])
    sweep.run_sweep(dataclasses.replace(cfg, data_dir=str(data_dir)), tmp_path / "results", log=lambda line: None)
    assert asked["stage_seconds"] == pytest.approx(7.2)
    cfg = dataclasses.replace(cfg, data_dir=str(data_dir), stream=cfg.stream[:1])
    start = time.monotonic()
    result = execute(expand(cfg)[0], Store(tmp_path / "results"), data_dir=str(data_dir),
                     stage_seconds=asked["stage_seconds"])
    assert result["status"] == "failed" and "sent nothing within 7 s" in result["error"], result["error"]
    assert time.monotonic() - start < 120


PROBE = '''
import fcntl, os, socket
T = {target!r}
tried = []


def attempt(name, call):
    try:
        call()
        tried.append(name + ":done")
    except OSError as e:
        tried.append(name + ":" + type(e).__name__)


attempt("fork", lambda: os.fork() or os._exit(0))
attempt("chmod", lambda: os.chmod(T, 0o777))
attempt("utime", lambda: os.utime(T, (0, 0)))
attempt("setxattr", lambda: os.setxattr(T, "user.x", b"1"))
attempt("flock", lambda: fcntl.flock(os.open(T, os.O_RDONLY), fcntl.LOCK_EX))
attempt("lockf", lambda: fcntl.lockf(os.open(T, os.O_RDONLY), fcntl.LOCK_SH))
attempt("unix", lambda: socket.socket(socket.AF_UNIX).close())
attempt("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close())
attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close())
attempt("thread", lambda: __import__("threading").Thread(target=lambda: None).start())
tried.append("secret:" + str(os.environ.get("MY_API_TOKEN")))
tried.append("CapEff:" + next(l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")))
raise RuntimeError(" ".join(tried))
'''


def test_a_methods_process_starts_no_process_and_changes_no_file_or_lock_outside(tmp_path, monkeypatch):
    """What Landlock leaves open is closed by dropped capabilities and the seccomp filter (tasks/confine.py): a
    process that would outlive the command, a file's mode, times or attributes, a lock on a results folder, a UNIX
    or raw socket; the caller's environment stays with the caller. Threads and UDP sockets still work."""
    target = tmp_path / "outside.txt"
    target.write_text("x")
    before = target.stat()
    path = tmp_path / "probe.py"
    path.write_text(PROBE.format(target=str(target)))
    monkeypatch.setenv("MY_API_TOKEN", "hunter2")
    problems = sandbox.describe(f"{path}:X", timeout=60)["problems"]
    said = dict(word.split(":", 1) for word in problems[0].rsplit("RuntimeError: ", 1)[1].split())
    assert said == {"fork": "PermissionError", "chmod": "PermissionError", "utime": "PermissionError",
                    "setxattr": "PermissionError", "flock": "PermissionError", "lockf": "PermissionError",
                    "unix": "PermissionError", "raw": "PermissionError", "udp": "done", "thread": "done",
                    "secret": "None", "CapEff": "0000000000000000"}
    after = target.stat()
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)


def test_a_log_swapped_for_a_fifo_does_not_hang_the_parent(tmp_path):
    path = tmp_path / "fifo.py"
    path.write_text("import os\nos.unlink('child.log')\nos.mkfifo('child.log')\nos._exit(3)\n")
    with pytest.raises(ConfigError, match=r"exited \(code 3\) before reporting"):
        sandbox.describe(f"{path}:X", timeout=60)


def test_a_handed_over_file_must_be_the_base_architecture(tmp_path, tiny):
    from safetensors.torch import save_file

    model = tiny[0]
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / "handover.safetensors"
    first = next(iter(state))
    for bad, why in [({k: v for k, v in state.items() if k != first}, "names differ"),
                     ({**state, first: torch.full_like(state[first], float("nan"))}, "NaN"),
                     ({**state, first: state[first].to(torch.int32)}, "floating")]:
        save_file(bad, str(path))
        with pytest.raises(sandbox.SandboxError, match=why):
            sandboxed.load_handover(path, model)
    path.unlink()
    path.symlink_to("/dev/zero")
    with pytest.raises(sandbox.SandboxError, match="regular file"):
        sandboxed.load_handover(path, model)
    path.unlink()
    save_file(state, str(tmp_path / "elsewhere.safetensors"))
    path.symlink_to(tmp_path / "elsewhere.safetensors")  # a link, even to a good file: not what the child wrote
    with pytest.raises(sandbox.SandboxError, match="regular file"):
        sandboxed.load_handover(path, model)
    path.unlink()
    os.mkfifo(path)  # opened without blocking, refused on what was opened
    with pytest.raises(sandbox.SandboxError, match="regular file"):
        sandboxed.load_handover(path, model)


def test_a_config_label_cannot_take_a_method_or_a_submission_name(tmp_path, data_dir):
    cfg = dataclasses.replace(config.load("tiny"), data_dir=str(data_dir))
    with pytest.raises(ConfigError, match="label 'LoRA' is the name of the method 'lora'"):
        config.check(dataclasses.replace(cfg, methods=[config.MethodEntry(method="freeze", label="LoRA")]), "x.yaml")
    results = tmp_path / "results"
    folder = results / "submissions" / "decaying_replay"
    folder.mkdir(parents=True)
    (folder / "record.json").write_text('{"name": "decaying_replay", "author": "alice", "method": "/x.py:D", '
                                        '"file": {"sha256": "' + "a" * 64 + '"}, "run_ids": []}')
    taken = dataclasses.replace(cfg, methods=[config.MethodEntry(method="freeze", label="Decaying_Replay")])
    with pytest.raises(ConfigError, match="is the submission 'decaying_replay'"):
        run_sweep(taken, results, log=lambda line: None)
    assert not (results / "runs").exists()


def test_replace_touches_only_the_submissions_own_folder(tmp_path):
    from harness.submit.submission import _drop_earlier, read_record

    results = tmp_path / "results"
    outside = tmp_path / "X"
    outside.mkdir()
    folder = results / "submissions" / "mine"
    folder.mkdir(parents=True)
    hostile = {"name": "mine", "author": "bob", "method": "m", "file": {"sha256": "../../../X"}, "run_ids": []}
    (folder / "record.json").write_text(__import__("json").dumps(hostile))
    assert read_record(folder / "record.json") == (None, "file.sha256 is not 64 hex digits")
    _drop_earlier(results, hostile, "b" * 64)  # even if a caller skipped the check
    assert outside.is_dir()


def test_replace_deletes_only_runs_stored_under_the_submissions_name(tmp_path):
    """A record listing other labels' runs (edited, or written by hand) cannot make --replace delete them."""
    from harness.submit.submission import _drop_earlier
    from synthetic_runs import synthetic_run

    store = Store(tmp_path / "results")
    full, mine = synthetic_run("full", 0, [[0.5, 0.5]] * 3), synthetic_run("mine", 0, [[0.5, 0.5]] * 3)
    for run in (full, mine):
        store.save_run(run)
    record = {"name": "mine", "author": "me", "method": "m.py:M", "file": {"sha256": "0" * 64},
              "run_ids": [full["run_id"], mine["run_id"]]}
    _drop_earlier(store.root, record, "b" * 64)
    assert store.load_run(full["run_id"]) is not None and store.load_run(mine["run_id"]) is None


def test_a_name_taken_while_a_submission_was_in_preflight_is_refused(tmp_path, data_dir, monkeypatch):
    """Two `submit --name shared` at once: the second to reach the submissions lock finds the first's record."""
    import json
    from pathlib import Path

    from harness.submit import submission

    example = Path(__file__).resolve().parent.parent / "examples" / "decaying_replay.py"
    results = tmp_path / "results"
    real = submission.preflight

    def meanwhile(*args, **kwargs):
        out = real(*args, **kwargs)
        folder = results / "submissions" / "shared"
        folder.mkdir(parents=True)
        (folder / "record.json").write_text(json.dumps({"name": "shared", "author": "alice", "method": "m",
                                                        "file": {"sha256": "c" * 64}, "run_ids": []}))
        return out

    monkeypatch.setattr(submission, "preflight", meanwhile)
    with pytest.raises(ConfigError, match="belongs to alice's submission"):
        submission.submit(f"{example}:DecayingReplay", name="shared", author="bob", preset="tiny", results=results)
    assert not (results / "runs").exists()
