"""#16: every data fault is one line naming the file (and line), before any model loads; sizes are bounded by
what the data holds; a file the manifest does not list is refused unless the user says otherwise."""
import json
import subprocess
import sys

import pytest
from test_bad_input import _data_copy

from harness.core.errors import ConfigError, DataError
from harness.spec import config
from tasks.data import ALLOW_UNLISTED, DataSource
from tasks.registry import load_stream


def _rehash(data, rel):
    """Keep the manifest true to an edited file: the test is about the content, not the checksum."""
    import hashlib

    manifest = json.loads((data / "SHA256SUMS.json").read_text())
    for f in manifest["files"]:
        if f["path"] == rel:
            f["sha256"] = hashlib.sha256((data / rel).read_bytes()).hexdigest()
    (data / "SHA256SUMS.json").write_text(json.dumps(manifest))


def _run(*args):
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", *args], capture_output=True, text=True,
                          timeout=300)


def test_a_non_utf8_byte_names_the_file_and_line(data_dir, tmp_path):
    data = _data_copy(data_dir, tmp_path)
    rel = "mmlu/val/anatomy_val.csv"
    (data / rel).write_bytes((data / rel).read_bytes() + b'"Caf\xe9?",a,b,c,d,A\n')
    _rehash(data, rel)
    lines = (data / rel).read_bytes().count(b"\n")
    with pytest.raises(DataError, match=rf"anatomy_val.csv:{lines}: byte 0xe9 is not UTF-8"):
        DataSource(str(data)).mmlu("anatomy", "val")


@pytest.mark.parametrize("manifest, why", [("{not json", "not valid JSON"), ('{"note": "x"}', "has no 'files' list"),
                                           ('{"files": [{"path": "a"}]}', r"files\[0\] is not")])
def test_a_malformed_manifest_is_named(data_dir, tmp_path, manifest, why):
    data = _data_copy(data_dir, tmp_path)
    (data / "SHA256SUMS.json").write_text(manifest)
    with pytest.raises(DataError, match=f"SHA256SUMS.json: {why}"):
        DataSource(str(data))


def test_an_mbpp_row_with_null_code_names_its_line(data_dir, tmp_path):
    data = _data_copy(data_dir, tmp_path)
    rel = "mbpp/mbpp.jsonl"
    rows = (data / rel).read_text().splitlines()
    row = json.loads(rows[4])
    row["code"] = None
    rows[4] = json.dumps(row)
    (data / rel).write_text("\n".join(rows) + "\n")
    _rehash(data, rel)
    with pytest.raises(DataError, match=r"mbpp.jsonl:5: MBPP row's text, code"):
        DataSource(str(data)).mbpp()


def test_an_empty_subjects_file_fails_before_any_model(data_dir, tmp_path):
    data = _data_copy(data_dir, tmp_path)
    rel = "mmlu/subjects.json"
    (data / rel).write_text('{"subjects": {}}')
    _rehash(data, rel)
    out = _run("--preset", "tiny", "--data", str(data), "--results", str(tmp_path / "results"))
    assert out.returncode == 2 and "subjects.json: lists no subjects" in out.stderr, out.stderr[-2000:]
    assert "Started a local Ray instance" not in out.stderr and not (tmp_path / "results" / "runs").exists()


def test_a_file_the_manifest_does_not_list_is_refused_unless_allowed(data_dir, tmp_path, monkeypatch):
    data = _data_copy(data_dir, tmp_path)
    rel = "mmlu/val/anatomy_val.csv"
    manifest = json.loads((data / "SHA256SUMS.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if f["path"] != rel]
    (data / "SHA256SUMS.json").write_text(json.dumps(manifest))
    (data / rel).write_text((data / rel).read_text().replace(",A\n", ",B\n"))  # every answer changed
    with pytest.raises(DataError, match="anatomy_val.csv: not listed in .*--allow-unlisted-data"):
        DataSource(str(data)).mmlu("anatomy", "val")
    monkeypatch.setenv(ALLOW_UNLISTED, "1")
    source = DataSource(str(data))
    source.mmlu("anatomy", "val")
    assert source.unlisted == [rel]  # what the runs' provenance records


def test_a_missing_manifest_is_named_not_a_file_it_does_not_list(data_dir, tmp_path):
    data = _data_copy(data_dir, tmp_path)
    (data / "SHA256SUMS.json").unlink()
    with pytest.raises(DataError, match=r"SHA256SUMS.json: missing, so no file's contents can be checked "
                                        r"\(mmlu/val/anatomy_val.csv was read first\); restore it"):
        DataSource(str(data)).mmlu("anatomy", "val")


@pytest.mark.parametrize("budget, field", [({"learn_items": 10**12}, "budget.learn_items"),
                                           ({"code_items": 10**6}, "budget.code_items"),
                                           ({"general_items": 10**6}, "budget.general_items")])
def test_sizes_beyond_the_data_are_refused_before_any_model(data_dir, budget, field):
    cfg = config.load("tiny")
    import dataclasses

    b = dataclasses.replace(cfg.budget, **budget)
    with pytest.raises(ConfigError, match=rf"{field}.* but the data holds \d+") as e:
        load_stream(DataSource(str(data_dir)), list(cfg.stream), list(cfg.probes), b, cfg.data_seed)
    # the fix names what to lower: learn_items + transfer_items share one pool, so their sum
    assert ("lower their sum to at most" if field == "budget.learn_items" else "lower it to at most") in str(e.value)


def test_a_huge_seed_is_refused_in_the_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text((config.PRESET_DIR / "tiny.yaml").read_text().replace("seeds: [0]", "seeds: [100000000000000000000]"))
    with pytest.raises(ConfigError, match=r"seeds\[0\] is 100000000000000000000"):
        config.load(str(path))


def test_a_fifo_in_place_of_a_data_file_is_named_not_read(data_dir, tmp_path):
    import os

    data = _data_copy(data_dir, tmp_path)
    rel = "mmlu/val/anatomy_val.csv"
    (data / rel).unlink()
    os.mkfifo(data / rel)
    with pytest.raises(DataError, match="anatomy_val.csv: not a regular file"):
        DataSource(str(data)).mmlu("anatomy", "val")
    (data / "SHA256SUMS.json").unlink()
    os.mkfifo(data / "SHA256SUMS.json")
    with pytest.raises(DataError, match="SHA256SUMS.json: not a regular file"):
        DataSource(str(data))
