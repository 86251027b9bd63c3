"""#16: `clbench reproduce RUN_ID` runs a stored spec again and names every cell that differs."""
import json

import pytest

from harness.cli import main
from harness.run.runner import execute
from harness.spec import config
from harness.spec.spec import expand
from harness.store.files import digest
from harness.store.store import Store


@pytest.fixture(scope="module")
def stored(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("results")
    f = root / "c.yaml"
    f.write_text("model: tiny\nprecision: fp32\nstream: [stem, humanities]\nprobes: [general]\nmethods: [full]\n"
                 "budget: {learn_items: 2, transfer_items: 1, general_items: 2, epochs: 1}\n")
    spec = expand(config.load(str(f)))[0]
    result = execute(spec, Store(root), data_dir=str(data_dir))
    assert result["status"] == "finished"
    return root, result


def test_a_stored_run_reproduces_on_the_same_machine(stored, data_dir, capsys):
    root, result = stored
    assert main(["reproduce", result["run_id"], "--results", str(root), "--data", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert " 0 differ" in out and "same machine and thread count" in out


def test_an_edited_score_is_named_even_with_its_digest_recomputed(stored, data_dir, capsys, tmp_path):
    root, result = stored
    forged = json.loads(json.dumps(result))
    cell = forged["stages"][2]["scores"]["stem"]["recall"]
    cell["score"] = 1.0 if cell["score"] < 1 else 0.5
    forged["digest"] = digest(forged)  # a forger recomputes the digest: validate cannot tell, reproduce can
    store = Store(tmp_path)
    (tmp_path / "runs").mkdir()
    store.run_path(result["run_id"]).write_text(json.dumps(forged))
    assert main(["reproduce", result["run_id"], "--results", str(tmp_path), "--data", str(data_dir)]) == 1
    out = capsys.readouterr().out
    assert f"stage 2 scores.stem.recall.score: stored {cell['score']!r}, now" in out and " 1 differ" in out
