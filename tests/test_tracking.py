"""Experiment tracking (#18): off by default and not part of the protocol; `tracking: tensorboard` logs each run's
per-stage metrics and training curve from the Ray worker that runs it, read back here with TensorBoard's own
reader; a tracker that fails leaves the stored run as it is without tracking."""
import dataclasses
import types

import pytest

from harness.core.errors import ConfigError
from harness.integrations import tracking
from harness.spec import config

NEEDS_TB = "the tracking extra is not installed: pip install -r requirements/tracking.txt"


def _cfg(data_dir, *sets):
    return config.load("tiny", ["methods=[full]", "stream=[stem, law]", "probes=[general]", f"data_dir={data_dir}",
                                *sets])


def _read(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _text(acc):
    return acc.Tensors("run/text_summary")[-1].tensor_proto.string_val[0].decode()


@pytest.mark.slow
def test_a_sweep_logs_every_stage_and_the_training_curve_from_its_ray_worker(tmp_path, data_dir):
    pytest.importorskip("tensorboard", reason=NEEDS_TB)
    from harness.sweep.sweep import run_sweep

    results = tmp_path / "res"
    [run] = run_sweep(_cfg(data_dir, "tracking=tensorboard"), results, log=lambda line: None)
    assert run["status"] == "finished", run["error"]
    assert [p.name for p in (results / "tracking").iterdir()] == [f"full-seed0-{run['run_id']}"]
    acc, stages = _read(results / "tracking" / f"full-seed0-{run['run_id']}"), run["stages"]

    # the curve: every optimisation step of the stream, its first and last of each stage the stored losses
    curve, steps = _scalars(acc, "curve/train_loss"), [s["train"]["steps"] for s in stages[1:]]
    assert [step for step, _ in curve] == list(range(1, sum(steps) + 1)) and steps[0] > 1
    assert curve[0][1] == pytest.approx(stages[1]["train"]["loss_first"])
    assert curve[steps[0] - 1][1] == pytest.approx(stages[1]["train"]["loss_last"])
    assert curve[steps[0]][1] == pytest.approx(stages[2]["train"]["loss_first"])
    assert curve[-1][1] == pytest.approx(stages[2]["train"]["loss_last"])

    # per stage (x = the stage, 0 = before training): training statistics, seconds, every task view and probe
    for key in ("loss_first", "loss_last", "loss_mean_last_epoch", "steps", "tokens_per_second"):
        assert _scalars(acc, f"train/{key}") == [(k, pytest.approx(s["train"][key])) for k, s in enumerate(stages) if k]
    assert _scalars(acc, "seconds/train") == [(k, pytest.approx(s["train"]["seconds"])) for k, s in enumerate(stages) if k]
    assert _scalars(acc, "seconds/eval") == [(k, pytest.approx(s["seconds"])) for k, s in enumerate(stages)]
    for task in ("stem", "law"):
        for view in ("recall", "transfer"):
            for key in ("score", "gold_logprob"):
                assert _scalars(acc, f"eval/{task}/{view}/{key}") == \
                    [(k, pytest.approx(s["scores"][task][view][key])) for k, s in enumerate(stages)]
    assert _scalars(acc, "probe/general/heldout/score") == \
        [(k, pytest.approx(s["probes"]["general"]["heldout"]["score"])) for k, s in enumerate(stages)]
    assert not any(tag.endswith("/n") for tag in acc.Tags()["scalars"])  # counts are not metrics

    # the run's identity, as the run file has it
    text = _text(acc)
    for row in (f"| run_id | {run['run_id']} |", "| method | full |", "| label | full |", "| seed | 0 |",
                f"| protocol | {run['protocol']['name']} {run['protocol']['version']} |", "| stream | stem → law |"):
        assert row in text


@pytest.fixture(scope="module")
def plain(tmp_path_factory, data_dir):
    """One stage of full fine-tuning with the default config, run in this process: (config, spec, results, run)."""
    from harness.run.runner import execute
    from harness.spec.spec import expand
    from harness.store.store import Store

    cfg, root = _cfg(data_dir, "stream=[stem]", "probes=[]"), tmp_path_factory.mktemp("plain")
    [spec] = expand(cfg)
    return cfg, spec, root, execute(spec, Store(root), data_dir=str(data_dir))


def test_tracking_is_off_by_default_and_not_part_of_the_protocol(plain):
    from harness.spec.protocol import stamp

    cfg, _, root, run = plain
    assert cfg.tracking == "none" and run["status"] == "finished"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["runs", "stage0"]  # no tracking folder
    assert stamp(cfg) == stamp(dataclasses.replace(cfg, tracking="tensorboard"))  # the same run when tracked


def test_a_failing_tracker_warns_and_changes_nothing_stored(plain, tmp_path, data_dir, monkeypatch):
    pytest.importorskip("tensorboard", reason=NEEDS_TB)
    from torch.utils.tensorboard import SummaryWriter

    from harness.run.runner import execute
    from harness.store.store import Store
    from harness.store.validate import validate_dir

    _, spec, _, plain = plain
    add_scalar = SummaryWriter.add_scalar

    def full_disk(self, tag, *args, **kwargs):  # stage 0 is logged; the first training curve meets a full disk
        if tag.startswith("curve/"):
            raise OSError(28, "No space left on device")
        return add_scalar(self, tag, *args, **kwargs)

    monkeypatch.setattr(SummaryWriter, "add_scalar", full_disk)
    with pytest.warns(UserWarning, match=r"tracking off for full-seed0-\w+: stage failed with OSError.*No space left"):
        broken = execute(spec, Store(tmp_path / "broken"), data_dir=str(data_dir), tracking="tensorboard")
    assert broken["status"] == "finished", broken["error"]
    assert validate_dir(tmp_path / "broken")[0] == []
    for a, b in zip(plain["stages"], broken["stages"], strict=True):
        assert a["scores"] == b["scores"] and a.get("train", {}).get("loss_last") == b.get("train", {}).get("loss_last")
    assert "losses" not in broken["stages"][1]["train"]  # the curve goes to the tracker, not into the run file
    logged = _read(tmp_path / "broken" / tracking.FOLDER / tracking.run_name(spec))
    assert [k for k, _ in _scalars(logged, "eval/stem/recall/score")] == [0]  # what came before the failure stays


def _spec(label="my label/x"):
    return types.SimpleNamespace(label=label, seed=3, run_id="0123456789abcdef", method="full", model="tiny",
                                 stream=["stem", "law"], method_config={"lr": 1e-4})


def _stage(k, score, curve=()):
    train = {"train": {"steps": len(curve), "loss_first": curve[0], "loss_last": curve[-1], "seconds": 0.5}} if k else {}
    return {"stage": k, "trained_on": None, "seconds": 1.0, "probes": {},
            "scores": {"stem": {"recall": {"score": score, "n": 4, "items": {"uid": ["a"]}}}}, **train}


def test_a_resumed_attempt_continues_the_log_and_a_fresh_one_replaces_it(tmp_path):
    pytest.importorskip("tensorboard", reason=NEEDS_TB)
    spec = _spec()
    path = tmp_path / tracking.FOLDER / "my_label_x-seed3-0123456789abcdef"
    assert tracking.folder(tmp_path, spec) == path

    crashed = tracking.tracker("tensorboard", tmp_path, spec)
    crashed.begin([_stage(0, 0.25)])
    crashed.stage(_stage(1, 0.5, [3.0, 2.0]), [3.0, 2.0])
    crashed.close()  # the attempt died here; a resumed one keeps stages 0 and 1 and goes on
    resumed = tracking.tracker("tensorboard", tmp_path, spec)
    resumed.begin([_stage(0, 0.25), _stage(1, 0.5, [3.0, 2.0])])
    resumed.stage(_stage(2, 0.75, [1.5, 1.0]), [1.5, 1.0])
    resumed.close()
    acc = _read(path)
    assert _scalars(acc, "curve/train_loss") == [(1, 3.0), (2, 2.0), (3, 1.5), (4, 1.0)]
    assert _scalars(acc, "eval/stem/recall/score") == [(0, 0.25), (1, 0.5), (2, 0.75)]

    fresh = tracking.tracker("tensorboard", tmp_path, spec)  # the run computed again from the start
    fresh.begin([_stage(0, 0.25)])
    fresh.stage(_stage(1, 0.0, [9.0, 8.0]), [9.0, 8.0])
    fresh.close()
    acc = _read(path)
    assert _scalars(acc, "curve/train_loss") == [(1, 9.0), (2, 8.0)]
    assert _scalars(acc, "eval/stem/recall/score") == [(0, 0.25), (1, 0.0)]
    assert "| label | my label/x |" in _text(acc)


def test_the_config_field_is_checked_before_any_compute(monkeypatch):
    with pytest.raises(ConfigError, match=r"tracking: 'wandb' is not allowed"):
        config.load("tiny", ["tracking=wandb"])
    monkeypatch.setattr(tracking, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"tracking: tensorboard needs the tensorboard package.*requirements/tracking.txt"):
        config.load("tiny", ["tracking=tensorboard"])
    assert config.load("tiny").tracking == "none"
