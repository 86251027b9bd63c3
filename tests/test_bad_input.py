"""Bad input gets a clear error naming the file, field or line, and nothing is written."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.errors import ConfigError, DataError
from harness.spec import config
from methods.registry import available
from tasks.data import ALLOW_UNLISTED, DataSource

ROOT = Path(__file__).resolve().parent.parent


def clbench(*args):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=300)


def _data_copy(data_dir, tmp_path):
    """A private copy of the data folder (small: 13 MB) that a test may break."""
    dst = tmp_path / "data"
    shutil.copytree(data_dir, dst, ignore=shutil.ignore_patterns("LICENSES", "probes", "gsm8k"))
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return dst


def _assert_nothing_written(results):
    assert not results.exists() or not any(results.rglob("*.json"))


def test_malformed_csv_row_names_file_and_line(data_dir, tmp_path):
    data = _data_copy(data_dir, tmp_path)
    bad = data / "mmlu" / "val" / "astronomy_val.csv"
    bad.write_text(bad.read_text() + "a question,only,three\n")
    (data / "SHA256SUMS.json").unlink()  # the edit is deliberate: test the row check, not the checksum
    results = tmp_path / "results"
    out = clbench("run", "--preset", "tiny", "--data", str(data), "--results", str(results), "--allow-unlisted-data")
    assert out.returncode == 2
    assert "astronomy_val.csv:" in out.stderr and "expected 6 fields" in out.stderr
    _assert_nothing_written(results)


def test_answer_outside_a_to_d(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(ALLOW_UNLISTED, "1")
    data = _data_copy(data_dir, tmp_path)
    bad = data / "mmlu" / "val" / "anatomy_val.csv"
    bad.write_text('"Q?",a,b,c,d,E\n')
    (data / "SHA256SUMS.json").unlink()
    with pytest.raises(DataError, match=r"anatomy_val.csv:1: answer 'E'"):
        DataSource(str(data)).mmlu("anatomy", "val")


def test_checksum_mismatch_names_the_file(data_dir, tmp_path):
    data = _data_copy(data_dir, tmp_path)
    f = data / "mmlu" / "val" / "anatomy_val.csv"
    f.write_text(f.read_text().replace("A", "B", 1))
    with pytest.raises(DataError, match="anatomy_val.csv: checksum mismatch"):
        DataSource(str(data)).mmlu("anatomy", "val")


def test_jsonl_line_that_is_not_json(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(ALLOW_UNLISTED, "1")
    data = _data_copy(data_dir, tmp_path)
    f = data / "mbpp" / "mbpp.jsonl"
    lines = f.read_text().splitlines()
    lines[2] = "{not json"
    f.write_text("\n".join(lines) + "\n")
    (data / "SHA256SUMS.json").unlink()
    with pytest.raises(DataError, match=r"mbpp.jsonl:3: not valid JSON"):
        DataSource(str(data)).mbpp()


def test_missing_data_dir(tmp_path):
    results = tmp_path / "results"
    out = clbench("run", "--preset", "tiny", "--data", str(tmp_path / "nowhere"), "--results", str(results))
    assert out.returncode == 2
    assert "nowhere does not exist" in out.stderr and "CLBENCH_DATA" in out.stderr
    _assert_nothing_written(results)


def test_a_data_dir_that_is_a_file_is_said_to_be_one(tmp_path):
    """`data_dir: /dev/zero` was said not to exist."""
    (tmp_path / "data").write_text("")
    with pytest.raises(DataError, match=r"data folder \S+data is not a folder \(from data_dir="):
        DataSource(str(tmp_path / "data"))


def test_missing_file_in_data_dir(data_dir, tmp_path):
    data = _data_copy(data_dir, tmp_path)
    (data / "mbpp" / "mbpp.jsonl").unlink()
    with pytest.raises(DataError, match="mbpp.jsonl: file not found"):
        DataSource(str(data)).mbpp()


def test_no_data_and_hub_off_says_what_to_set(monkeypatch):
    monkeypatch.delenv("CLBENCH_DATA", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="set \\$CLBENCH_DATA"):
        DataSource(None).mmlu("anatomy", "val")


def test_unknown_method_did_you_mean(tmp_path, data_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tiny\nmethods: [ful]\n")
    results = tmp_path / "results"
    out = clbench("run", "--config", str(cfg), "--data", str(data_dir), "--results", str(results))
    assert out.returncode == 2
    assert "unknown method 'ful'" in out.stderr and "did you mean 'full'" in out.stderr
    assert "ful:" not in out.stderr  # named once, as 'ful', not also by every wrapper ("ful: unknown method 'ful'")
    _assert_nothing_written(results)


def test_a_method_file_given_without_its_class_is_told_the_class(tmp_path, data_dir):
    """'file.py' for 'file.py:Class': the classes are read from the file with ast (it is not run), in a config and
    in `clbench submit` (whose check runs in a child in another folder)."""
    (tmp_path / "mine.py").write_text("from methods.full import FullFineTune\n\n\nclass Mine(FullFineTune):\n"
                                      "    name = 'mine'\nraise SystemExit('the file was run')\n")
    (tmp_path / "two.py").write_text("class A:\n    pass\n\n\nclass B:\n    pass\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tiny\nmethods: [mine.py]\n")
    results = tmp_path / "results"
    out = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--config", str(cfg), "--data", str(data_dir),
                          "--results", str(results)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2
    assert out.stderr.strip() == (f"clbench: error: {cfg}: methods[0].method: 'mine.py' names a file, not the class "
                                  "in it; give it as 'mine.py:Mine'")
    _assert_nothing_written(results)
    out = clbench("submit", str(tmp_path / "two.py"), "--preset", "tiny", "--results", str(results))
    assert out.returncode == 2 and "names a file, not the class in it" in out.stderr
    assert f"give it as '{tmp_path / 'two.py'}:ClassName' (its classes: A, B)" in out.stderr
    _assert_nothing_written(results)


@pytest.mark.parametrize("command", ["run", "tune"])
def test_a_misspelt_methods_flag_is_said_once_before_anything_runs(command, tmp_path, data_dir):
    results = tmp_path / "results"
    out = clbench(command, "--preset", "tiny", "--methods", "lroa", "--data", str(data_dir), "--results", str(results))
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1] == (
        "clbench: error: --methods: unknown method 'lroa'; did you mean 'lora'? known: " +
        ", ".join(sorted(available()))), out.stderr
    _assert_nothing_written(results)


@pytest.mark.parametrize("text, message", [
    ("methods: [full]\nbudgte: {}\n", "unknown key 'budgte'; did you mean 'budget'"),
    ("methods: [full]\nseeds: zero\n", "seeds: expected a list"),
    ("methods: [full]\nseeds: [0, 1, 0]\n", "seeds lists a seed twice: [0, 1, 0]"),
    ("methods: [{method: lora, seeds: [-1]}]\n", "methods[0].seeds[0] is -1; a seed is between 0 and 2**32 - 1"),
    ("methods: [{method: lora, seeds: 1}]\n", "seeds: expected a list"),
    ("methods: [{method: lora, config: {lr: -1.0}}]\n", "lr: -1.0 is below the minimum"),
    ("methods: [{method: lora, config: {r: 0}}]\n", "r: 0 is below the minimum"),
    ("methods: [{method: lora, config: {rank: 4}}]\n", "unknown key 'rank'"),
    ("methods: [full]\nstream: []\n", "stream is empty"),
    ("methods: [full]\nstream: [stem, maths]\n", "unknown task 'maths'"),
    ("methods: [full]\nbudget: {epochs: 1.5}\n", "budget.epochs: expected an integer"),
    ("methods: [full]\nprecision: fp8\n", "'fp8' is not allowed"),
    ("- just\n- a list\n", "top level must be a mapping"),
    ("methods: [{method: full, label: \"x\\udcffy\"}]\n", "methods[0].label 'x\\udcffy' is not plain text"),
    ("methods: [{method: full, label: \"a\\u202eb\"}]\n", "methods[0].label 'a\\u202eb' is not plain text"),
    ("methods: [{method: full, label: \" \"}]\n", "methods[0].label ' ' is not plain text"),
])
def test_config_errors_name_the_field(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(str(f))
    assert message in str(err.value) and str(f) in str(err.value)
    assert f"{f}." not in str(err.value)  # 'bad.yaml: budget.epochs', not a field glued onto the file's name


def test_unknown_preset():
    with pytest.raises(ConfigError, match="did you mean 'quick'"):
        config.load("quik")


def test_presets_are_valid_and_pin_their_precision():
    """A preset is a reference card: `auto` would make a bf16 machine's runs another protocol than an fp32 one's."""
    presets = sorted(p.stem for p in (ROOT / "harness" / "spec" / "presets").glob("*.yaml"))
    assert {"quick", "standard", "tiny"} <= set(presets)
    for name in presets:
        cfg = config.load(name)
        assert cfg.methods and cfg.precision in ("fp32", "bf16"), name


def test_result_files_are_whole_json(tmp_path):
    from harness.store.files import write_json_atomic

    target = tmp_path / "x.json"
    write_json_atomic(target, {"a": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": Boom()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_config_and_preset_together_is_an_error_and_a_closed_pipe_is_not(tmp_path):
    out = clbench("run", "--preset", "tiny", "--config", str(tmp_path / "x.yaml"))
    assert out.returncode == 2 and "give --config or --preset, not both" in out.stderr
    piped = subprocess.run(f"{sys.executable} -m harness.cli methods | head -1", shell=True, capture_output=True,
                           text=True, timeout=120)
    assert "Traceback" not in piped.stderr and "BrokenPipeError" not in piped.stderr


def test_a_mistyped_model_is_named_before_anything_runs(tmp_path, data_dir):
    results = tmp_path / "results"
    out = clbench("run", "--preset", "tiny", "--model", "smollm2-135m", "--data", str(data_dir), "--results", str(results))
    assert out.returncode == 2
    assert "model 'smollm2-135m' is not a built-in name" in out.stderr and "did you mean 'smollm2-135m-instruct'" in out.stderr
    assert "Traceback" not in out.stderr and "Ray" not in out.stderr
    _assert_nothing_written(results)
    for name in ("HuggingFaceTB/SmolLM2-360M-Instruct", str(tmp_path), "tiny"):  # hub ids and folders pass the check
        config.check_model(name, "x")


@pytest.mark.slow
def test_a_hub_model_pins_its_revision_in_its_name(tmp_path, monkeypatch):
    from harness.model.models import hub_revision, load

    assert hub_revision("HuggingFaceTB/SmolLM2-360M-Instruct@v1.0") == ("HuggingFaceTB/SmolLM2-360M-Instruct", "v1.0")
    folder = tmp_path / "my@model"
    folder.mkdir()
    for name in ("HuggingFaceTB/SmolLM2-360M-Instruct", "tiny", "user@host", str(folder), "a/b@", "a/b@c/d"):
        assert hub_revision(name) == (name, None)
    config.check_model("HuggingFaceTB/SmolLM2-360M-Instruct@0123abc", "x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub is out of reach: the error names the pinned revision
    with pytest.raises(ConfigError, match=r"model 'nobody/nothing@0123abc': cannot load it"):
        load("nobody/nothing@0123abc")


def test_set_overrides_any_field_and_is_checked_like_the_file():
    cfg = config.load("tiny", ["budget.epochs=1", "seeds=[3, 4]", "precision=bf16", "stream=[law, stem]"])
    assert (cfg.budget.epochs, cfg.seeds, cfg.precision, cfg.stream) == (1, [3, 4], "bf16", ["law", "stem"])
    assert cfg.budget.learn_items == config.load("tiny").budget.learn_items  # the rest of budget stays
    for sets, message in ((["budget.epoch=1"], "unknown key 'epoch'; did you mean 'epochs'"),
                          (["budget.epochs=two"], "with --set budget.epochs=two: budget.epochs: expected an integer"),
                          (["epochs"], "expected KEY=VALUE"), (["model.name=x"], "'model' is not a mapping"),
                          (["seeds=[0"], "not valid YAML"), (["budget=" + "[" * 2000], "nested deeper than 32")):
        with pytest.raises(ConfigError, match=message) as err:
            config.load("tiny", sets)
        assert "--set" in str(err.value)


def test_a_float_written_without_a_dot_is_a_number_in_a_file_and_in_set(tmp_path):
    """YAML 1.1 reads 1e-4 as a string: `lr: 1e-4` was refused as 'expected a number, got str'."""
    card = tmp_path / "c.yaml"
    card.write_text("model: tiny\nmethods: [{method: lora, config: {lr: 1e-4}}]\n")
    assert config.load(str(card)).methods[0].config == {"lr": 1e-4}
    cfg = config.load("tiny", ["methods=[{method: full, config: {lr: 3E-5}}]"])
    assert cfg.methods[0].config == {"lr": 3e-5}


def test_methods_and_seeds_flags_pick_from_the_card(monkeypatch):
    from harness import cli

    seen = {}
    monkeypatch.setattr("harness.sweep.sweep.run_sweep", lambda cfg, results, **_: seen.setdefault("cfg", cfg) and [])
    monkeypatch.setattr("harness.report.leaderboard.write", lambda results: type("P", (), {"read_text": lambda self: ""})())
    cli.main(["run", "--preset", "tiny", "--methods", "lora", "replay", "--seeds", "5", "--device", "cpu",
              "--set", "budget.epochs=1"])
    cfg = seen["cfg"]
    assert [(m.method, m.config) for m in cfg.methods] == [("lora", {}), ("replay", {})]
    assert (cfg.device, cfg.budget.epochs) == ("cpu", 1)
    assert [m.seeds for m in cfg.methods] == [[5], [5]] and cfg.seeds == config.load("tiny").seeds  # run seeds
    with pytest.raises(SystemExit):
        cli.main(["run", "--preset", "tiny", "--seeds", "x"])
    assert cli.main(["run", "--preset", "tiny", "--methods", "ful"]) == 2  # checked like a config's methods


def test_more_seeds_join_the_cards_board_and_skip_the_stored_ones(monkeypatch, data_dir):
    """`clbench run --seeds 0 1` after a seed-0 run of the card: the same protocol version (seeds given on the
    command line are each method's own, not the card's), so seed 0's stored run is skipped and seed 1 ranks beside
    it (they once made another version: seed 0 reran and the board split)."""
    from harness import cli
    from harness.spec.protocol import stamp
    from harness.spec.spec import expand

    seen = []
    monkeypatch.setattr("harness.sweep.sweep.run_sweep", lambda cfg, results, **_: seen.append(cfg) or [])
    board = type("P", (), {"read_text": lambda self: ""})()
    monkeypatch.setattr("harness.report.leaderboard.write", lambda results: board)
    for seeds in (["0"], ["0", "1"]):
        cli.main(["run", "--preset", "tiny", "--data", str(data_dir), "--seeds", *seeds])
    first, more = seen
    assert stamp(first)["version"] == stamp(more)["version"]
    assert {s.run_id for s in expand(first)} < {s.run_id for s in expand(more)}
    assert {s.seed for s in expand(more)} == {0, 1}


@pytest.mark.parametrize("command", [["leaderboard"], ["figures"], ["power"], ["validate"], ["reproduce", "abc"]])
def test_a_results_folder_that_does_not_exist_is_named_not_read_as_empty(tmp_path, command, capsys):
    from harness import cli

    missing = tmp_path / "reslts"
    assert cli.main([*command, "--results", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"results folder {missing} does not exist" in err
    assert not missing.exists()  # nothing created under a typo


@pytest.mark.parametrize("command", [["leaderboard"], ["figures"], ["power"], ["validate"], ["reproduce", "abc"]])
def test_a_path_that_is_no_results_folder_is_named_not_read_as_empty(tmp_path, command, capsys):
    """The runs/ folder itself (an easy slip), a file, a folder without runs/: each one line, and nothing written
    there (leaderboard wrote an empty board into runs/)."""
    from harness import cli

    (tmp_path / "results" / "runs").mkdir(parents=True)
    (tmp_path / "notes.md").write_text("")
    for given, says in [(tmp_path / "results" / "runs", f"is the runs/ folder of a results folder; give "
                                                        f"{tmp_path / 'results'}"),
                        (tmp_path / "notes.md", "is a file, not a folder"), (tmp_path, "holds no runs/ folder")]:
        assert cli.main([*command, "--results", str(given)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and says in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["notes.md", "results", "runs"]


@pytest.mark.parametrize("command", [["leaderboard", "--results", "results/reference/quick-demo"],
                                     ["figures", "--results", "results/reference/quick-demo"], ["export-lm-eval"]])
def test_an_out_that_is_a_file_is_named_before_any_work(tmp_path, command, capsys, monkeypatch, data_dir):
    """figures and export-lm-eval raised FileExistsError; leaderboard said to free space."""
    from harness import cli

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("CLBENCH_DATA", str(data_dir))
    out, link, elsewhere = tmp_path / "afile", tmp_path / "alink", tmp_path / "elsewhere"
    out.write_text("mine")
    elsewhere.mkdir()
    link.symlink_to(elsewhere)  # written through, export-lm-eval put its files outside --out's own folder
    for given, says in [(out, f"--out {out}: a file, not a folder"), (link, f"--out {link}: a link, not a folder"),
                        ("", "--out '': empty, not a folder")]:
        assert cli.main([*command, "--out", str(given)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and says in err
    assert out.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "alink", "elsewhere"]
    assert not any(elsewhere.iterdir())


def test_reproduce_takes_a_run_id_not_a_path(tmp_path, capsys):
    """A run file's path was read as <results>/runs/<path>.json (and '../' walked out of runs/)."""
    from harness import cli

    (tmp_path / "results" / "runs").mkdir(parents=True)
    results = str(tmp_path / "results")
    for given, says in [("results/runs/00315c63d8cb6a2f.json", "for that file: clbench reproduce 00315c63d8cb6a2f "
                                                               "--results results"),
                        ("../../secret", "not a run id (16 hex digits")]:
        assert cli.main(["reproduce", given, "--results", results]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and says in err, err


def test_an_error_quoting_control_characters_cannot_drive_the_terminal(tmp_path, capsys):
    """An error can quote what a method or a stored file said: escape sequences are printed as escapes."""
    from harness.cli import main

    (tmp_path / "loud.py").write_text("raise RuntimeError('x\\x1b[2K\\x1b]0;owned\\x07')\n")
    card = tmp_path / "c.yaml"
    card.write_text(f"model: tiny\nmethods: ['{tmp_path / 'loud.py'}:Loud']\n")
    assert main(["run", "--config", str(card), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\\x1b[2K\\x1b]0;owned\\x07" in err


def test_a_misspelt_flag_gets_its_commands_usage_and_the_flag_it_was_meant_to_be(capsys):
    from harness import cli

    with pytest.raises(SystemExit) as end:
        cli.main(["leaderboard", "--resluts", "x"])
    err = capsys.readouterr().err
    assert end.value.code == 2 and err.startswith("usage: clbench leaderboard")
    assert err.strip().endswith("unrecognized arguments: --resluts x; did you mean '--results'?")


def test_the_api_refuses_a_path_that_is_no_results_folder(tmp_path):
    import clbench

    for read in (clbench.load_runs, clbench.leaderboard):
        with pytest.raises(ConfigError, match="does not exist"):
            read(str(tmp_path / "nope"))


def test_ctrl_c_ends_in_one_line_that_says_how_to_resume(tmp_path, monkeypatch, capsys):
    from harness import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    assert cli.main(["run", "--preset", "tiny", "--results", str(tmp_path)]) == 130
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "interrupted" in err and "resume" in err


def test_a_method_config_that_cannot_apply_to_the_model_is_named_before_stage_0(tmp_path, data_dir):
    """A LoRA target or freeze pattern the model lacks: found by trying `prepare` on the model's skeleton, not
    after the base model is evaluated."""
    card = tmp_path / "card.yaml"
    card.write_text((ROOT / "harness/spec/presets/tiny.yaml").read_text().replace(
        "methods: [full, lora]", "methods: [full, {method: lora, config: {target_modules: [no_proj]}}, "
        "{method: freeze, label: top, config: {patterns: [nothing]}}, qlora]"))
    results = tmp_path / "results"
    out = clbench("run", "--config", str(card), "--data", str(data_dir), "--results", str(results))
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in out.stderr and "Ray" not in out.stderr
    assert "methods[1].config (label 'lora', method lora) cannot apply to model 'tiny'" in err[0]
    assert "{'no_proj'} not found" in err[0]
    assert "methods[2].config (label 'top', method freeze)" in err[0] and "no parameter matches ['nothing']" in err[0]
    assert "'full'" not in err[0] and "qlora" not in err[0]
    _assert_nothing_written(results)


def test_a_hub_model_that_is_not_there_is_named_before_any_run(tmp_path, data_dir):
    results = tmp_path / "results"
    out = clbench("run", "--preset", "tiny", "--model", "nonexistent-owner/model-xyz", "--data", str(data_dir),
                  "--results", str(results))
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()[-1]
    assert err.startswith("clbench: error: model 'nonexistent-owner/model-xyz': not in the local Hugging Face cache")
    assert "Ray" not in out.stderr and "Traceback" not in out.stderr
    _assert_nothing_written(results)


@pytest.mark.parametrize("model", ["./models/my-llama", "/no/such/folder"])
def test_a_local_model_folder_that_is_not_there_is_named(model):
    from harness.model.models import check_reachable

    with pytest.raises(ConfigError, match=f"model '{model}': no such local folder"):
        check_reachable(model)


def test_ctrl_c_in_a_command_that_stores_nothing_says_only_interrupted(tmp_path, monkeypatch, capsys):
    from harness import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_leaderboard", interrupted)
    assert cli.main(["leaderboard", "--results", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == "clbench: interrupted"


@pytest.mark.parametrize("address, says", [("garbage", "not HOST:PORT"), ("", "--address '': not HOST:PORT"),
                                           ("127.0.0.1:1", "nothing answers there")])
def test_a_ray_address_that_cannot_be_joined_is_named_before_anything_runs(tmp_path, data_dir, address, says):
    """Ray raised a ValueError traceback after 15 s for a malformed address, retried one nobody listens at for
    ever, and took '' as no address at all (a helper's review)."""
    results = tmp_path / "results"
    out = clbench("run", "--preset", "tiny", "--data", str(data_dir), "--results", str(results), "--address", address)
    assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    _assert_nothing_written(results)
