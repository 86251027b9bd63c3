"""The committed all-methods board (#15) is what tuned.yaml runs, from one clean commit: every run file finished,
made by a clean tree of one commit, one per (label, seed) of the tuned card, with the settings `clbench tune`
chose, and none of the card's runs missing."""
import json
from pathlib import Path

from harness.spec import config

ROOT = Path(__file__).resolve().parents[1]
BOARD = ROOT / "results" / "reference" / "standard-tuned"
TUNED = ROOT / "results" / "reference" / "standard" / "tune" / "tuned.yaml"


def test_the_all_methods_board_runs_the_tuned_card_from_one_clean_commit():
    cfg = config.load(str(TUNED))
    wanted = {(m.label, seed): m for m in cfg.methods for seed in config.seeds_of(cfg, m)}
    runs = [json.loads(p.read_text()) for p in sorted((BOARD / "runs").glob("*.json"))]
    assert runs
    commits = {(r["provenance"]["git"]["commit"], r["provenance"]["git"]["dirty"]) for r in runs}
    assert len(commits) == 1 and not next(iter(commits))[1], commits
    for r in runs:
        spec, where = r["spec"], r["run_id"]
        assert r["status"] == "finished", where
        entry = wanted.get((spec["label"], spec["seed"]))
        assert entry and spec["method"] == entry.method, f"{where}: {spec['label']} seed {spec['seed']} not in {TUNED}"
        assert {k: spec["method_config"].get(k) for k in entry.config} == entry.config, where
        assert r["protocol"]["name"] == cfg.name and spec["precision"] == cfg.precision, where
    made = sorted((r["spec"]["label"], r["spec"]["seed"]) for r in runs)
    assert made == sorted(wanted), f"runs {made} against the card's {sorted(wanted)}"
