"""Fuzzing the two readers of untrusted input: the config loader raises only ConfigError, the
result-file reader never raises (it returns the reason a file is bad)."""
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.core.errors import ConfigError
from harness.spec import config
from harness.store.validate import problem

scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                      max_leaves=12)
keys = st.sampled_from(["name", "model", "precision", "device", "stream", "task_orders", "probes", "methods", "seeds",
                        "scorer", "budget", "resources", "data_dir", "data_seed", "bogus"])
method_entries = st.lists(st.sampled_from(["full", "lora", "nope"]) | st.fixed_dictionaries(
    {"method": st.sampled_from(["lora", "replay", "x"])}, optional={"config": st.dictionaries(
        st.sampled_from(["r", "lr", "ratio", "alpha", "zzz"]), scalars, max_size=3), "label": st.text(max_size=5)}),
    max_size=3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=6) | values, method_entries)
def test_config_loader_raises_only_config_error(data, methods):
    if isinstance(data, dict) and "methods" not in data:
        data = dict(data, methods=methods)
    try:
        cfg = config.parse(data, "fuzz.yaml")
    except ConfigError:
        return
    assert cfg.methods and cfg.stream  # anything accepted is a usable sweep


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | values.map(lambda v: json.dumps(v).encode()))
def test_result_reader_never_raises(tmp_path, raw):
    path = tmp_path / "0123456789abcdef.json"
    path.write_bytes(raw)
    data, why = problem(path)
    assert (data is None) != (why is None)


def _tiny_preset():
    import yaml

    return yaml.safe_load((config.PRESET_DIR / "tiny.yaml").read_text())


paths = st.sampled_from([("model",), ("stream",), ("seeds",), ("methods",), ("budget", "epochs"), ("budget", "max_length"),
                         ("budget", "learn_items"), ("precision",), ("resources",), ("task_orders",), ("scorer",)])


@settings(max_examples=300, deadline=None)
@given(paths, values)
def test_mutated_preset_raises_only_config_error(path, value):
    data = _tiny_preset()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        config.parse(data, "fuzz.yaml")
    except ConfigError:
        pass


_VALID = {}


def _valid_result(tmp_path_factory_dir, data_dir):
    if "r" not in _VALID:
        from harness.run.runner import execute
        from harness.spec.spec import expand
        from harness.store.store import Store

        f = tmp_path_factory_dir / "c.yaml"
        f.write_text("model: tiny\nprecision: fp32\nstream: [stem]\nprobes: [general]\nmethods: [full]\n"
                     "budget: {learn_items: 2, transfer_items: 1, general_items: 1, epochs: 1}\n")
        spec = expand(config.load(str(f)))[0]
        _VALID["r"] = execute(spec, Store(tmp_path_factory_dir / "res"), data_dir=str(data_dir))
    return _VALID["r"]


result_paths = st.sampled_from(["run_id", "spec", "status", "stages", "provenance", "schema_version",
                                "spec.stream", "spec.budget", "spec.seed", "stages.0", "stages.1.scores"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(result_paths, values)
def test_mutated_result_file_is_named_bad_not_crashing(tmp_path_factory, data_dir, where, value):
    import copy

    result = copy.deepcopy(_valid_result(tmp_path_factory.getbasetemp(), data_dir))
    assert result["status"] == "finished"
    target = result
    *parents, last = where.split(".")
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    path = tmp_path_factory.getbasetemp() / f"{result['run_id'] if isinstance(result['run_id'], str) else 'x'}.json"
    path.write_text(json.dumps(result))
    data, why = problem(path)
    assert (data is None) != (why is None)
