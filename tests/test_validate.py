"""`clbench validate` names each bad run file; the leaderboard skips it with a warning."""
import json
import subprocess
import sys

import pytest

from harness.report import leaderboard
from harness.run.runner import execute
from harness.spec import config
from harness.spec.spec import expand
from harness.store.files import digest
from harness.store.store import Store


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("results")
    f = root / "c.yaml"
    f.write_text("model: tiny\nprecision: fp32\nstream: [stem]\nprobes: [general]\nmethods: [full]\n"
                 "budget: {learn_items: 2, transfer_items: 1, general_items: 1, epochs: 1}\n")
    spec = expand(config.load(str(f)))[0]
    result = execute(spec, Store(root), data_dir=str(data_dir))
    assert result["status"] == "finished"
    return root, result


def test_validate_names_each_bad_file(good_run, tmp_path):
    root, result = good_run
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    good_text = json.dumps(result)
    (runs / f"{result['run_id']}.json").write_text(good_text)
    (runs / "aaaaaaaaaaaaaaaa.json").write_text(good_text[: len(good_text) // 2])  # truncated
    foreign = dict(result, schema_version=99)
    (runs / "bbbbbbbbbbbbbbbb.json").write_text(json.dumps(foreign))
    edited = json.loads(good_text)
    edited["spec"]["method_config"]["lr"] = 1.0  # result claims a config it was not run with
    (runs / f"{result['run_id'][:-1]}y.json").write_text(json.dumps(edited))  # its digest no longer holds
    edited["digest"] = digest(edited)  # a careful editor recomputes the digest: the spec hash still tells
    (runs / f"{result['run_id'][:-1]}x.json").write_text(json.dumps(edited))
    scored = json.loads(good_text)
    scored["stages"][1]["scores"]["stem"]["recall"]["score"] = 1.0  # a score edit: only the digest tells
    (runs / "cccccccccccccccc.json").write_text(json.dumps(scored))

    out = subprocess.run([sys.executable, "-m", "harness.cli", "validate", "--results", str(tmp_path / "results")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert any("aaaaaaaaaaaaaaaa.json" in x and "not valid JSON" in x for x in lines)
    assert any("bbbbbbbbbbbbbbbb.json" in x and "schema_version 99" in x for x in lines)
    assert any("x.json" in x and "does not match the hash of its spec" in x for x in lines)
    assert any("y.json" in x and "digest mismatch" in x for x in lines)
    assert any("cccccccccccccccc.json" in x and "digest mismatch" in x and "clbench reproduce" in x for x in lines)
    assert not any(result["run_id"] + ".json" in x for x in lines)
    assert "1 of 6 run files valid" in out.stdout

    with pytest.warns(UserWarning) as caught:
        table = leaderboard.rows(Store(tmp_path / "results").runs())
    assert len(caught) == 5
    assert [r["label"] for r in table] == ["full"] and table[0]["seeds"] == 1


def test_validate_accepts_a_good_store(good_run):
    root, _ = good_run
    out = subprocess.run([sys.executable, "-m", "harness.cli", "validate", "--results", str(root)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "1 of 1 run files valid" in out.stdout


def test_nothing_is_ever_unpickled():
    """Checkpoints and caches are safetensors: no code path can unpickle a file from a results folder."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    unpickling = re.compile(r"torch\.load\(|pickle\.loads?\(|dill\.|joblib\.load|weights_only\s*=\s*False")
    found = [f"{p.relative_to(root)}:{i}" for d in ("harness", "methods", "tasks") for p in (root / d).rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if unpickling.search(line)]
    assert found == []


def test_per_item_records_are_checked_and_schema_1_files_are_still_read(good_run, tmp_path):
    """schema_version 2: a score that is not the mean of its per-item outcomes, a missing or ragged column
    is named; a file of schema 1 (no per-item records, e.g. the committed quick-cpu board) is read."""
    from harness.store.validate import problem

    _, result = good_run
    path = tmp_path / f"{result['run_id']}.json"

    def check(data):  # each edit with its digest recomputed: these checks hold even against that
        path.write_text(json.dumps({**data, "digest": digest(data)}))
        return problem(path)[1]

    assert check(result) is None
    recall = "stages[1].scores.stem.recall"
    edited = json.loads(json.dumps(result))
    record = edited["stages"][1]["scores"]["stem"]["recall"]
    record["score"] = 1.0 if record["score"] < 1 else 0.5
    assert check(edited).startswith(f"{recall}: score") and "not the mean of its per-item outcomes" in check(edited)
    ragged = json.loads(json.dumps(result))
    ragged["stages"][1]["scores"]["stem"]["recall"]["items"]["margin"].append(0.5)
    assert check(ragged) == f"{recall}.items.margin is not a list of 2 values"
    bare = json.loads(json.dumps(result))
    del bare["stages"][0]["probes"]["general"]["heldout"]["items"]
    assert check(bare) == "stages[0].probes.general.heldout has no per-item records (items.uid)"
    assert check({**bare, "schema_version": 1}) is None
    assert "this clbench reads [1, 2]" in check({**result, "schema_version": [2]})


def test_a_record_the_readers_cannot_read_is_named_not_crashed_on(good_run, tmp_path):
    """Hand edits (digest recomputed) that the readers (stats, power, figures) crashed on while validate passed or
    crashed itself: a stage's `probes` or a view that is not an object, a bad value in `base_model` (which was not
    checked), a view's mean with its item column gone or the reverse. Each is named, path and field."""
    from harness.store.validate import problem

    _, result = good_run
    path = tmp_path / f"{result['run_id']}.json"

    def check(edit):
        data = json.loads(json.dumps(result))
        edit(data)
        path.write_text(json.dumps({**data, "digest": digest(data)}))
        return problem(path)[1]

    def parent(data, keys):
        for k in keys[:-1]:
            data = data[k]
        return data

    def put(*keys, value):
        return lambda data: parent(data, keys).__setitem__(keys[-1], value)

    def drop(*keys):
        return lambda data: parent(data, keys).__delitem__(keys[-1])

    def base_model(data):
        data["base_model"] = json.loads(json.dumps(data["stages"][0]))
        data["base_model"]["scores"]["stem"]["recall"]["items"]["correct"][0] = "x"

    assert check(put("stages", 1, "probes", value=None)) == "stages[1].probes is not an object"
    assert check(put("stages", 1, "probes", value=[])) == "stages[1].probes is not an object"
    assert check(put("stages", 1, "probes", "general", "heldout", value=[])) == \
        "stages[1].probes.general.heldout is not an object"
    assert check(put("stages", 1, value="x")) == "stages[1] is not an object"
    assert check(base_model) == "base_model.scores.stem.recall.items.correct holds a non-number (or NaN, or an infinity)"
    assert check(drop("stages", 0, "scores", "stem", "recall", "gold_logprob")) == \
        "stages[0].scores.stem.recall has items.gold_logprob but no gold_logprob (the mean the reports read)"
    assert check(drop("stages", 0, "scores", "stem", "recall", "items", "gold_logprob")) == \
        "stages[0].scores.stem.recall has gold_logprob but no items.gold_logprob"


@pytest.mark.parametrize("field, value, said", [
    ("budget", "x", "spec.budget is 'x', not an object"),
    ("budget", {"epochs": [1]}, "spec.budget.epochs is not a number or a string"),
    ("probes", [3], "spec.probes is [3], not a list of names"),
    ("model", None, "spec.model is None, not a string"),
    ("data_seed", "0", "spec.data_seed is '0', not an integer"),
    ("method_config", [], "spec.method_config is [], not an object"),
    ("label", "lo\udcffra", "spec.label holds text that is not UTF-8 (a lone surrogate)")])
def test_a_spec_field_of_the_wrong_kind_is_named_with_its_run_id_recomputed(good_run, tmp_path, field, value, said):
    """A spec field the reports print or group by (the board's facts line joined `budget.items()`), of the wrong
    kind in a file whose run_id and digest were recomputed to match: validate names it, the board skips it."""
    from harness.spec.spec import content_hash, method_identity
    from harness.store.validate import problem

    _, result = good_run
    data = json.loads(json.dumps(result))
    data["spec"][field] = value
    data["run_id"] = content_hash({**data["spec"], "method": method_identity(data["spec"])})
    runs = tmp_path / "runs"
    runs.mkdir()
    path = runs / f"{data['run_id']}.json"
    path.write_text(json.dumps({**data, "digest": digest(data)}))
    assert problem(path)[1] == said
    (runs / f"{result['run_id']}.json").write_text(json.dumps(result))
    text = leaderboard.write(tmp_path).read_text()
    assert f"runs/{data['run_id']}.json (spec." in text and "| full |" in text  # named on the board, not crashed on
