"""`clbench run --preset tiny` through the real CLI: stored JSON, leaderboard, resume skips finished runs."""
import json
import subprocess
import sys

import pytest


def clbench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_tiny_sweep_end_to_end(tmp_path, data_dir):
    results = tmp_path / "results"
    done = clbench("run", "--preset", "tiny", "--results", str(results), "--data", str(data_dir),
                   "--set", "save_models=true")  # not part of the protocol: the run below without it skips
    assert done.returncode == 0, done.stderr[-3000:]
    assert "expected time: under a minute for the 2 of 2 run(s) left" in done.stdout  # at the committed runs' rates
    files = sorted((results / "runs").glob("*.json"))
    assert len(files) == 2
    runs = [json.loads(f.read_text()) for f in files]
    assert {r["spec"]["method"] for r in runs} == {"full", "lora"}
    for r in runs:
        assert r["status"] == "finished" and r["schema_version"] == 2
        assert [s["trained_on"] for s in r["stages"]] == [None, "stem", "humanities", "code", "law"]
        for stage in r["stages"]:
            for task in ("stem", "humanities", "law"):
                assert set(stage["scores"][task]) == {"recall", "transfer"}
                assert 0.0 <= stage["scores"][task]["recall"]["score"] <= 1.0
            assert set(stage["scores"]["code"]) == {"recall", "transfer", "humaneval"}
            assert "reference_logprob" in stage["scores"]["code"]["recall"]
            assert 0.0 <= stage["probes"]["general"]["heldout"]["score"] <= 1.0
            # per-item records: every score is recomputed from them, items paired by uid across runs
            for task in ("stem", "humanities", "law"):
                for view in ("recall", "transfer"):
                    record = stage["scores"][task][view]
                    items = record["items"]
                    assert len(items["uid"]) == record["n"] == len(items["correct"]) == len(items["margin"])
                    assert sum(items["correct"]) / record["n"] == record["score"]
                    assert all((m > 0) == bool(c) for m, c in zip(items["margin"], items["correct"]) if m != 0)
                    assert record["gold_logprob"] == pytest.approx(sum(items["gold_logprob"]) / record["n"], abs=1e-5)
            code = stage["scores"]["code"]["recall"]
            assert sum(code["items"]["passed"]) / code["n"] == code["score"]
            assert code["truncated"] == sum(code["items"]["truncated"]) / code["n"]
            stop = stage["probes"]["stop"]["prompts"]
            assert stop["stop_rate"] == sum(stop["items"]["stopped"]) / stop["n"]
            assert stop["tail_repetition"] == pytest.approx(sum(stop["items"]["tail_repetition"]) / stop["n"], abs=1e-5)
            assert len(stage["probes"]["instruct"]["reference"]["items"]["logprob"]) == \
                stage["probes"]["instruct"]["reference"]["n"]
        for stage in r["stages"][1:]:
            assert stage["train"]["steps"] > 0 and stage["train"]["tokens"] > 0 and stage["train"]["seconds"] > 0
        assert r["precision"] == "fp32" and r["device"] == "cpu"
        assert [(k, (results / v["folder"] / "model.safetensors").is_file()) for k, v in r["saved_models"].items()] == \
            [(str(k), True) for k in range(1, 5)]  # save_models went through the Ray workers
        assert 0 < r["trainable_params"] <= r["total_params"]
        prov = r["provenance"]
        assert prov["packages"]["torch"] and prov["git"]["commit"] is not None
        assert any(k.startswith("mmlu/test/") for k in prov["data_checksums"])
        assert "mbpp/mbpp.jsonl" in prov["data_checksums"]
    full, lora = sorted(runs, key=lambda r: r["spec"]["method"])
    assert full["trainable_params"] == full["total_params"]
    assert lora["trainable_params"] < full["trainable_params"] / 5
    # stage 0 is one shared base-model evaluation
    assert full["stage0_key"] == lora["stage0_key"]
    assert full["stages"][0]["scores"] == lora["stages"][0]["scores"]

    board = (results / "leaderboard.md").read_text()
    assert "| full |" in board and "| lora |" in board
    full_row = next(line for line in board.splitlines() if "| full |" in line)
    assert "1 !" in full_row and "0." in full_row and " [" in full_row  # one seed, yet bootstrap intervals

    again = clbench("run", "--preset", "tiny", "--results", str(results), "--data", str(data_dir))
    assert again.returncode == 0
    assert again.stdout.count("skip ") == 2
    assert f"finished ({full['precision']} on " in again.stdout  # the stored run's precision is named
    assert sorted((results / "runs").glob("*.json")) == files

    rebuilt = clbench("leaderboard", "--results", str(results), "--out", str(tmp_path / "board"))
    assert rebuilt.returncode == 0
    assert (tmp_path / "board" / "leaderboard.md").read_text() == board


def test_methods_command_lists_defaults():
    out = clbench("methods")
    assert out.returncode == 0
    assert "full:" in out.stdout and "lora:" in out.stdout
    assert "r = 8" in out.stdout and "alpha = 32" in out.stdout


def test_a_plugin_that_cannot_be_described_is_named_and_the_others_still_listed(monkeypatch, capsys):
    """One broken plugin (sorted first) aborted the whole listing with exit 2, so no method was shown."""
    from harness import cli
    from harness.core.errors import ConfigError
    from harness.spec import sandbox
    from methods import registry

    monkeypatch.setattr(registry, "available", lambda: {**registry.BUILTIN, "aaa_broken": "broken_plugin:Broken"})

    def fails(name, *args, **kwargs):
        raise ConfigError(f"{name}: importing it failed: SyntaxError: \x1b[2Joops")

    monkeypatch.setattr(sandbox, "info", fails)
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "aaa_broken: (plugin) cannot be described: aaa_broken: importing it failed: SyntaxError: \\x1b[2Joops" in out
    assert "\x1b" not in out and "full:" in out and "lora:" in out
