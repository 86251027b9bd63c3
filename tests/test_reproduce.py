"""#16: `clbench reproduce RUN_ID` runs a stored spec again and names every cell that differs."""
import json
import re

import pytest

from harness.cli import main
from harness.core.errors import ConfigError
from harness.run.reproduce import reproduce
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


def test_a_cpu_of_the_same_name_with_other_features_is_another_machine(stored, data_dir, capsys, tmp_path):
    """A virtual machine names CPU generations alike ('AMD EPYC': AVX2 only, or AVX-512 with BF16); their float
    kernels differ, so a run from the other one is held to another machine's rule, and the line names both."""
    root, result = stored
    other = json.loads(json.dumps(result))
    other["provenance"]["machine"]["cpu_features"] = "family 23 model 49: avx2 fma"
    Store(tmp_path).save_run(other)
    assert main(["reproduce", result["run_id"], "--results", str(tmp_path), "--data", str(data_dir)]) == 0
    out = capsys.readouterr().out
    cpu = result["provenance"]["machine"]["cpu"]
    assert "same machine" not in out and f"another machine or thread count ({cpu} (family 23 model 49: avx2 fma)" in out


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


@pytest.mark.parametrize("edit, said", [
    (lambda r: r["stages"].__setitem__(1, 5), "its stages are not a list of objects"),
    (lambda r: r["spec"].__setitem__("seed", "zero"), "spec.seed is 'zero', not an integer"),
    (lambda r: r["spec"].pop("seed"), "spec is not a RunSpec"),
])
def test_a_run_file_that_fails_validate_is_refused_before_any_compute(stored, data_dir, capsys, tmp_path, edit, said):
    """Anything validate refuses but an edit the digest shows: reproduce computed for seconds, then raised."""
    root, result = stored
    broken = json.loads(json.dumps(result))
    edit(broken)
    (tmp_path / "runs").mkdir()
    Store(tmp_path).run_path(result["run_id"]).write_text(json.dumps(broken))
    with pytest.raises(ConfigError, match=f"cannot reproduce: {re.escape(said)}"):
        reproduce(result["run_id"], tmp_path, data_dir, log=lambda line: None)


def _with_method(result: dict, method: str) -> dict:
    forged = json.loads(json.dumps(result))
    forged["spec"]["method"] = method
    return forged


def test_a_submission_reproduces_from_a_results_folder_that_has_moved(tmp_path):
    """A submission's runs name the absolute path of the file's copy in the results folder they were made in;
    another lab's copy of the folder has it under its own submissions/ (SHA-256 checked), before any compute."""
    from harness.run.reproduce import located
    from harness.spec.spec import RunSpec

    source = b"class C: pass\n"
    sha12 = __import__("hashlib").sha256(source).hexdigest()[:12]
    copy = tmp_path / "moved" / "submissions" / "mine" / sha12 / "m.py"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(source)
    spec = RunSpec.from_dict({**expand(config.load("tiny"))[0].as_dict(),
                              "method": f"/gone/results/submissions/mine/{sha12}/m.py:C"})
    assert located(spec, tmp_path / "moved", "run.json").method == f"{copy.resolve()}:C"
    copy.write_bytes(b"class C: print('edited')\n")
    with pytest.raises(ConfigError, match=f"not the file the run read .*{sha12}"):
        located(spec, tmp_path / "moved", "run.json")


def test_a_method_file_that_is_gone_is_named_before_any_compute(stored, data_dir, capsys, tmp_path, monkeypatch):
    root, result = stored
    (tmp_path / "runs").mkdir()
    Store(tmp_path).run_path(result["run_id"]).write_text(json.dumps(_with_method(result, "/gone/m.py:C")))
    monkeypatch.setattr("harness.run.runner.execute", lambda *a, **k: pytest.fail("ran before naming the file"))
    assert main(["reproduce", result["run_id"], "--results", str(tmp_path), "--data", str(data_dir)]) == 2
    assert "method file /gone/m.py is not there" in capsys.readouterr().err
