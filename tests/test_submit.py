"""`clbench submit` and the protocol card: the example end to end on tiny, broken submissions
refused in preflight with nothing written, names that belong to someone else refused."""
import dataclasses
import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.core.errors import ConfigError
from harness.report import leaderboard
from harness.spec import config, protocol
from harness.store.store import Store
from harness.submit.submission import submit
from harness.sweep.sweep import pending
from tasks.data import DataSource
from tasks.registry import load_stream

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "decaying_replay.py"


def _tree(root: Path) -> dict:
    """Every file under root with its size and mtime: to show that nothing was written."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")} if root.exists() else {}


@pytest.fixture(scope="module")
def submitted(tmp_path_factory, data_dir):
    results = tmp_path_factory.mktemp("results")
    rc = main(["submit", f"{EXAMPLE}:DecayingReplay", "--preset", "tiny", "--results", str(results),
               "--author", "alice"])
    assert rc == 0
    return results, json.loads((results / "submissions" / "decaying_replay" / "record.json").read_text())


@pytest.mark.slow
def test_example_submits_end_to_end_and_is_ranked(submitted):
    results, record = submitted
    assert record["status"] == "finished"
    store = Store(results)
    runs = [store.load_run(i) for i in record["run_ids"]]
    assert len(runs) == len(config.load("tiny").seeds) and all(r["status"] == "finished" for r in runs)
    card = protocol.stamp(config.load("tiny"))
    assert record["protocol"] == card and all(r["protocol"] == card for r in runs)
    # the runs ran the stored copy, whose bytes and SHA are the example's
    folder = results / "submissions" / "decaying_replay"
    copy = folder / record["file"]["copy"]
    assert copy.read_bytes() == EXAMPLE.read_bytes()
    assert record["file"]["sha256"] == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    assert all(r["spec"]["method"] == f"{copy.resolve()}:DecayingReplay" for r in runs)
    assert all(r["spec"]["label"] == "decaying_replay" for r in runs)
    assert record["author"] == "alice" and record["description"].startswith("Full fine-tuning with replay")
    assert record["packages"]["torch"] and record["hardware"]["cpu_count"]
    assert record["submitted_at"] <= record["preflight_passed_at"] <= record["finished_at"]
    # on the regenerated leaderboard, in its protocol's section, at the rank the record names
    section = next(s for s in leaderboard.sections(store.runs()) if s["key"] == record["protocol_key"])
    assert section["key"].startswith(card["version"] + "/")
    row = next(r for r in section["rows"] if r["label"] == "decaying_replay")
    assert row["overall"] is not None and record["rank"] == row["rank"] == 1 == record["ranked_rows"]
    assert "decaying" in Path(record["leaderboard"]).read_text()


def test_same_name_from_another_file_is_refused(submitted, tmp_path):
    results, record = submitted
    other = tmp_path / "decaying_replay.py"
    other.write_text(EXAMPLE.read_text().replace("ratio: float = field(0.5", "ratio: float = field(0.6"))
    before = _tree(results)
    with pytest.raises(ConfigError, match="earlier submission of another file.*--replace"):
        submit(f"{other}:DecayingReplay", preset="tiny", results=results, author="alice")
    with pytest.raises(ConfigError, match="belongs to alice's submission"):
        submit(f"{other}:DecayingReplay", preset="tiny", results=results, author="bob", replace=True)
    # a built-in method's label cannot be taken either
    with pytest.raises(ConfigError, match="registered method's name"):
        submit(f"{other}:DecayingReplay", name="full", preset="tiny", results=results, author="bob")
    assert _tree(results) == before


def test_replace_takes_back_only_your_own_name_and_drops_the_earlier_runs(submitted, tmp_path):
    from harness.submit.submission import _drop_earlier, _owner_problems

    results = tmp_path / "copy"
    shutil.copytree(submitted[0], results)
    old, problems = _owner_problems(results, "decaying_replay", "f" * 64, "alice", replace=True)
    assert problems == [] and old["run_ids"] == submitted[1]["run_ids"]
    _drop_earlier(results, old, "f" * 64)
    assert not any((results / "runs" / f"{i}.json").exists() for i in old["run_ids"])
    assert not (results / "submissions" / "decaying_replay" / old["file"]["sha256"][:12]).exists()
    # the same file again by its author is no conflict: its finished runs are reused
    assert _owner_problems(submitted[0], "decaying_replay", old["file"]["sha256"], "alice", replace=False)[1] == []


BROKEN = '''
import dataclasses
from harness.core.typed import field
from methods.base import Method


@dataclasses.dataclass(frozen=True)
class Config:
    depth: int
    lr: float = field(1e-4, "learning rate")
    ratio: float = field(0.5, "a share")
    window: int = field(3, "a width")


class Broken(Method):
    Config = Config

    def train_examples(self, pairs):
        return pairs


@dataclasses.dataclass(frozen=True)
class GoodConfig:
    lr: float = field(1e-4, "learning rate")


class Explodes(Method):
    Config = GoodConfig

    def prepare(self, model, ctx):
        raise ValueError("no adapter for this model")
'''


def test_broken_submission_reports_every_problem_and_writes_nothing(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text(BROKEN)
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("ratio: high\nwindow: 2.5\n")
    results = tmp_path / "results"
    with pytest.raises(ConfigError) as e:
        submit(f"{path}:Broken", name="../evil", config_path=overrides, preset="tiny", results=results)
    msg = str(e.value)
    lines = [line for line in msg.splitlines() if line.startswith("  - ")]
    assert "nothing was run or written" in msg and len(lines) == 6, msg
    src = path.read_text().splitlines()
    sig_line = src.index("    def train_examples(self, pairs):") + 1
    assert f"{path}:{sig_line}: Broken.train_examples(self, pairs) cannot be called as" in msg
    assert "Config.depth has no default" in msg
    assert f"{overrides}: ratio: expected a number, got str 'high'" in msg
    assert f"{overrides}: window: expected an integer" in msg
    assert "contains a path separator" in msg and "contains '..'" in msg
    assert not results.exists()


def test_exception_in_prepare_fails_preflight_with_its_line(tmp_path, data_dir):
    path = tmp_path / "explodes.py"
    path.write_text(BROKEN)
    results = tmp_path / "results"
    with pytest.raises(ConfigError) as e:
        submit(f"{path}:Explodes", name="explodes", preset="tiny", results=results)
    line = path.read_text().splitlines().index('        raise ValueError("no adapter for this model")') + 1
    assert (f"{path}:{line} in prepare: trial on the tiny model failed in prepare: ValueError: no adapter"
            in str(e.value))
    assert not results.exists()


def test_unimportable_file_names_its_line(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text("import dataclasses\n\nx = undefined_name\n")
    with pytest.raises(ConfigError, match=rf"{path}:3 in <module>: .*NameError"):
        submit(f"{path}:Anything", preset="tiny", results=tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_a_file_given_without_its_class_is_one_problem_not_also_a_bad_name(tmp_path):
    """No --name: the name would come from the target, which is what is wrong (a path), so only the target's
    problem is said."""
    with pytest.raises(ConfigError) as e:
        submit(str(EXAMPLE), preset="tiny", results=tmp_path / "results")
    assert "preflight found 1 problem(s)" in str(e.value) and "names a file, not the class in it" in str(e.value)
    assert not (tmp_path / "results").exists()


def test_decaying_replay_ratio_decays():
    from methods.base import StageContext
    from methods.registry import resolve_method

    method = resolve_method(f"{EXAMPLE}:DecayingReplay")()
    method.rng, method.buffer = random.Random(0), [{"user": "old", "reply": "r"}] * 5
    pairs = [{"user": f"q{i}", "reply": "a"} for i in range(12)]
    replayed = [sum(p.get("mix") == "replay" for p in method.train_examples(pairs, StageContext(s, None, [], "cpu", 0)))
                for s in (2, 3, 4)]
    assert replayed == [12, 4, 2]  # shares 0.5, 0.25, 0.125 of what is trained on


def test_protocol_version_follows_card_and_items(data_dir, capsys):
    cfg = config.load("tiny")
    checksums = protocol.data_checksums(cfg)
    assert checksums and all(len(v) == 64 for v in checksums.values())
    tasks, probes = load_stream(DataSource(cfg.data_dir), list(cfg.stream), list(cfg.probes), cfg.budget,
                                cfg.data_seed)
    digest = protocol.items_digest(tasks, probes)
    v = protocol.version(cfg, digest)
    assert protocol.version(cfg) == v
    assert protocol.version(dataclasses.replace(cfg, seeds=[0, 1]), digest) != v
    assert protocol.version(dataclasses.replace(cfg, stream=list(reversed(cfg.stream))), digest) != v
    assert protocol.version(dataclasses.replace(cfg, budget=dataclasses.replace(cfg.budget, epochs=3)), digest) != v
    assert protocol.version(dataclasses.replace(cfg, methods=cfg.methods[:1]), digest) == v  # methods are compared
    first = tasks[0].views["recall"][0]
    moved = dataclasses.replace(first, source="elsewhere.csv:1")  # the same item read from another file
    reanswered = dataclasses.replace(first, answer=(first.answer + 1) % len(first.options))
    for item, same in ((moved, True), (reanswered, False)):
        tasks[0].views["recall"][0] = item
        assert (protocol.items_digest(tasks, probes) == digest) is same
    assert main(["protocol", "show", "--preset", "tiny"]) == 0
    run = {"protocol": {"name": "tiny", "version": v}, "stage0_key": "s0"}
    assert leaderboard.protocol_key(run) != leaderboard.protocol_key({**run, "protocol": {"version": "other"}})
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["version"] == v and shown["items_digest"] == digest and shown["data_checksums"] == checksums
    assert shown["card"] == protocol.card(cfg)
    assert main(["protocol", "show", "tiny"]) == 0  # the card named as the command reads, without --preset
    assert yaml.safe_load(capsys.readouterr().out)["version"] == v
    assert main(["protocol", "show", "tiny", "--preset", "quick"]) == 2
    assert "give the card once" in capsys.readouterr().err


def test_runs_under_another_protocol_version_are_rerun(tmp_path):
    from synthetic_runs import synthetic_run

    from harness.spec.spec import RunSpec

    run = synthetic_run("full", 0, [[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]])
    spec = RunSpec.from_dict(run["spec"])
    store = Store(tmp_path)
    store.save_run({**run, "protocol": {"name": "tiny", "version": "a" * 16}})
    assert pending([spec], store, log=lambda m: None, protocol={"name": "tiny", "version": "a" * 16}) == []
    assert pending([spec], store, log=lambda m: None, protocol={"name": "tiny", "version": "b" * 16}) == [spec]


@pytest.mark.slow
def test_an_installed_entry_point_submits_under_its_name(tmp_path, data_dir, monkeypatch):
    """A package that declares `[clbench.methods] slow_replay = slow_replay:SlowReplay`, installed as
    a dist-info folder on the path (what pip leaves), is submitted by its entry-point name."""
    pkg = tmp_path / "site"
    (pkg / "slow_replay-0.1.dist-info").mkdir(parents=True)
    (pkg / "slow_replay-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: slow-replay\nVersion: 0.1\n")
    (pkg / "slow_replay-0.1.dist-info" / "entry_points.txt").write_text(
        "[clbench.methods]\nslow_replay = slow_replay:SlowReplay\n")
    (pkg / "slow_replay.py").write_text(EXAMPLE.read_text().replace("class DecayingReplay(", "class SlowReplay(")
                                        .replace('name = "decaying_replay"', 'name = "slow_replay"'))
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.setenv("PYTHONPATH", f"{pkg}:{__import__('os').environ.get('PYTHONPATH', '')}")  # Ray's workers
    results = tmp_path / "results"
    record = submit("slow_replay", preset="tiny", results=results, author="carol")
    assert record["status"] == "finished" and record["name"] == "slow_replay" and record["method"] == "slow_replay"
    assert record["file"]["sha256"] == hashlib.sha256((pkg / "slow_replay.py").read_bytes()).hexdigest()
    runs = [Store(results).load_run(i) for i in record["run_ids"]]
    assert all(r["status"] == "finished" and r["spec"]["method"] == "slow_replay" for r in runs)
    assert record["rank"] == 1
    with pytest.raises(ConfigError, match="registered method's name"):  # built-in names stay taken
        submit("slow_replay", name="replay", preset="tiny", results=results, author="carol")


def test_a_card_whose_hub_model_is_not_there_fails_preflight_and_writes_nothing(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text((Path(config.PRESET_DIR) / "tiny.yaml").read_text().replace("model: tiny", "model: nonexistent-owner/model-xyz"))
    results = tmp_path / "results"
    with pytest.raises(ConfigError, match="model 'nonexistent-owner/model-xyz': not in the local Hugging Face cache"):
        submit(f"{EXAMPLE}:DecayingReplay", preset=str(card), results=results)
    assert not results.exists()
