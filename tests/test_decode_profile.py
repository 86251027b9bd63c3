"""scripts/decode_profile.py on this CPU with the tiny model: both batches are timed every way and written
(transformers' static cache runs uncompiled here), and the profile's counts are per forward pass (no kernels on
a CPU)."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "decode_profile.py"


def test_decode_profile_on_cpu(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("CLBENCH_DATA", str(data_dir))
    spec = importlib.util.spec_from_file_location("decode_profile", SCRIPT)
    decode_profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decode_profile)
    out = decode_profile.main(["--device", "cpu", "--model", "tiny", "--steps", "3", "--out", str(tmp_path)])
    report = json.loads(out.read_text())
    assert set(report["batches"]) == {"1", "32"}
    for b in report["batches"].values():
        assert not [k for k in b if k.endswith("_error")], b
        assert b["hf_generate_step_ms"] > 0 and b["hf_generate_static_step_ms"] > 0
        assert b["harness_step_ms"] > 0 and b["bare_step_ms"] > 0 and b["profiled_step_ms"] > 0
        assert 1 <= b["harness_steps"] <= 3
        assert b["harness_eager_step_ms"] > 0 and b["harness_tokens_equal_eager"] is True
        assert b["harness_graphs_recorded"] == b["harness_graphs_replayed"] == 0  # a CPU records no graph
        for prefix in ("", "harness_"):
            assert b[f"{prefix}profiled_step_ms"] > 0
            assert b[f"{prefix}device_busy_ms_per_step"] == 0 and b[f"{prefix}kernel_launches_per_step"] == 0
    text = out.with_suffix(".txt").read_text()
    assert "aten::" in text and "batch 32, harness loop" in text
