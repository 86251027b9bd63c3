"""#16: configs that hung, exploded or passed the range checks are refused in one line, before any compute."""
import time

import pytest

from harness.core.errors import ConfigError
from harness.spec import config

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


def _refused(tmp_path, text, match, mode="w"):
    f = tmp_path / "c.yaml"
    f.write_bytes(text) if mode == "wb" else f.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=match) as e:
        config.load(str(f))
    assert time.perf_counter() - start < 5 and "\n" not in str(e.value) and len(str(e.value)) < 300
    assert str(f) in str(e.value)
    return str(e.value)


def test_a_yaml_alias_bomb_is_refused_at_its_first_alias(tmp_path):
    assert len(BOMB) < 500
    assert "line 2: YAML aliases (*a) are not allowed" in _refused(tmp_path, BOMB, "aliases")


def test_deep_nesting_is_refused(tmp_path):
    _refused(tmp_path, "model: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 32 levels")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_nan_and_inf_are_not_numbers_a_range_check_can_pass(tmp_path, value):
    _refused(tmp_path, f"methods: [{{method: full, config: {{lr: {value}}}}}]\n", "is not a finite number")


def test_a_directory_or_non_utf8_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not a regular file"):
        config.load(str(tmp_path))
    _refused(tmp_path, b"model: tiny\nname: \xff\xfe\n", r"not UTF-8 text \(byte 18\)", mode="wb")


def test_a_normal_config_still_loads(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: tiny\nmethods: [full, {method: lora, label: l, config: {r: 4}}]\nbudget: {epochs: 1}\n")
    assert config.load(str(f)).methods[1].config == {"r": 4}


def test_resources_no_node_has_are_refused_instead_of_queued_forever(tmp_path, data_dir):
    import dataclasses

    from harness.sweep.scheduler import check_resources
    from harness.sweep.sweep import run_sweep

    with pytest.raises(ConfigError, match=r"resources.num_gpus .* asks for 1 but the Ray cluster has 0"):
        check_resources([{"num_cpus": 1, "num_gpus": 1}], {"CPU": 2.0, "memory": 2**34})
    cfg = config.load("tiny")
    cfg = dataclasses.replace(cfg, data_dir=str(data_dir), methods=cfg.methods[:1],
                              resources=dataclasses.replace(cfg.resources, memory_gb=100000))
    with pytest.raises(ConfigError, match=r"resources.memory_gb: a run asks for 100000.0 GB"):
        run_sweep(cfg, tmp_path / "results", log=lambda line: None)
    assert not any((tmp_path / "results" / "runs").glob("*.json"))


BASE = "model: tiny\nstream: [stem]\nmethods: [full]\n"


@pytest.mark.parametrize("line, match", [
    ("name: ../../../../tmp/escaped", "is not a plain name"),  # clbench tune wrote to results/tune/<name>
    ("name: a/b", "is not a plain name"),
    ("name: x\ndata_seed: " + "9" * 5000, "a value cannot be read"),  # a ValueError traceback
    ("name: x\nmethods: [{method: full, config: {lr: " + "9" * 400 + "}}]", "lr: 9+\\.\\.\\. is too large"),
])
def test_a_name_that_walks_out_or_a_number_python_cannot_hold_is_refused(tmp_path, line, match):
    text = BASE.replace("methods: [full]\n", "") + line + ("\n" if "methods" in line else "\nmethods: [full]\n")
    _refused(tmp_path, text, match)


def test_a_set_value_of_more_digits_than_python_converts_is_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\n" + BASE)
    with pytest.raises(ConfigError, match="--set 'data_seed=9+': a value cannot be read"):
        config.load(str(f), ["data_seed=" + "9" * 5000])


def test_a_key_given_twice_is_refused_not_overwritten(tmp_path):
    """PyYAML keeps the last of two equal keys: `epochs: 4, epochs: 1` ran one epoch without a word."""
    text = "model: tiny\nstream: [stem]\nmethods: [full]\nbudget:\n  epochs: 4\n  epochs: 1\n"
    assert "line 6: the key 'epochs' appears twice in one mapping; keep one" in _refused(tmp_path, text, "twice")
