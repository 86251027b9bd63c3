"""`clbench tune`: a validation stream that shares no item with the benchmark, the stated grid, the choice by
the validation headline, and a tuned card that `clbench run --config` accepts."""
import csv
import dataclasses
import re
import subprocess
import sys

import numpy as np
import pytest

from harness.core.errors import ConfigError
from harness.report import tables
from harness.spec import config
from harness.spec.config import MethodEntry
from harness.sweep import tune
from tasks.data import DataSource
from tasks.registry import load_stream


def _uids(tasks, probes):
    out = set()
    for t in [*tasks, *probes]:
        for view in t.views.values():
            out |= {str(i.uid) for i in view}
    return out


@pytest.mark.parametrize("preset", ["tiny", "quick", "standard"])
def test_validation_stream_shares_no_item_with_the_card(preset, data_dir):
    card = config.with_overrides(config.load(preset), data_dir=str(data_dir))
    val = tune.validation_config(card, [MethodEntry(method="full")])
    assert len(val.stream) == len(card.stream) and all(n.endswith("_dev") for n in val.stream)
    assert val.budget.learn_items == card.budget.learn_items and val.budget.epochs == card.budget.epochs
    assert val.budget.max_new_tokens == tune.DECODED == 1  # the criterion reads no generated answer
    source = DataSource(str(data_dir))
    bench = _uids(*load_stream(source, card.stream, card.probes, card.budget, card.data_seed))
    checked = _uids(*load_stream(source, val.stream, val.probes, val.budget, val.data_seed))
    assert checked and not bench & checked
    assert val.probes == (["instruct"] if "instruct" in card.probes else [])


def test_the_grid_crosses_the_learning_rate_with_the_strength_knob(data_dir):
    card = config.load("tiny")
    replay = tune.grid(MethodEntry(method="replay"), card)
    assert len(replay) == 9
    assert sorted({round(p["lr"], 12) for _, p in replay}) == [1.5e-5, 5e-5, 1.5e-4]
    assert sorted({round(p["value"], 12) for _, p in replay}) == [0.1, 0.2, 0.4]
    assert all(e.config["ratio"] == p["value"] and e.config["lr"] == p["lr"] for e, p in replay)
    lora = tune.grid(MethodEntry(method="lora", config={"r": 4}), card)
    assert [e.config for e, _ in lora] == [{"r": 4, "lr": 3e-4 * f} for f in tune.LR_FACTORS]
    assert len({e.label for e, _ in replay + lora}) == 12


def test_the_highest_validation_headline_is_chosen_ties_going_to_the_defaults(monkeypatch):
    card = config.load("tiny")
    entries = [MethodEntry(method="lora")]
    labels = [e.label for e, _ in tune.grid(entries[0], card)]
    headlines = dict(zip(labels, [0.5, 0.7, 0.7]))  # lr 0.3x, 1x, 3x: 1x and 3x tie
    monkeypatch.setattr("harness.metrics.run_metrics.run_row", lambda run: {"headline": headlines[run["label"]]})
    monkeypatch.setattr(tune.stats, "bootstrap", lambda groups, replicates=None: None)  # as for runs without per-item records
    runs = {label: {"status": "finished", "label": label} for label in labels}
    rows = tune.choose(card, entries, runs)
    assert [r["chosen"] for r in rows] == [False, True, False]
    assert "the method's defaults; no paired difference" in tune._choice(rows[1])
    runs[labels[1]]["status"] = "failed"
    assert [r["chosen"] for r in tune.choose(card, entries, runs)] == [False, False, True]


@pytest.mark.parametrize("spread, firm", [(0.01, True), (1.0, False)])
def test_the_grid_says_how_firm_a_choice_is_and_when_it_sits_on_the_grids_edge(spread, firm, monkeypatch, tmp_path):
    card = config.load("tiny")
    entries = [MethodEntry(method="replay")]
    labels = [e.label for e, _ in tune.grid(entries[0], card)]  # lr 0.3x, 1x, 3x, each with ratio 0.5x, 1x, 2x
    headlines = {label: 0.1 * i for i, label in enumerate(labels)}  # the last point (lr 3x, ratio 2x) is best
    monkeypatch.setattr("harness.metrics.run_metrics.run_row", lambda run: {"headline": headlines[run["label"]]})
    noise = np.random.default_rng(0).normal(0, spread, size=(len(labels), 2000))
    monkeypatch.setattr(tune.stats, "bootstrap",  # replicates around each point; the item noise is shared by the pair
                        lambda groups, replicates=None: {label: {"headline": headlines[label] + noise[i] + noise[0]}
                                                         for i, label in enumerate(labels) if label in groups})
    rows = tune.choose(card, entries, {label: {"status": "finished", "label": label} for label in labels})
    best = next(r for r in rows if r["chosen"])
    assert best["label"] == labels[-1] and best["edges"] == ["highest learning rate", "highest ratio"]
    assert [r["edges"] for r in rows if r["label"] == labels[4]] == [[]]  # the defaults: inside the grid
    assert best["headline_lo"] < best["headline"] < best["headline_hi"]
    assert best["margin"]["over"] == labels[-2] and best["margin"]["diff"] == pytest.approx(0.1)
    assert (best["margin"]["p"] < 0.05) == firm
    # and against the method's defaults (lr 1x, ratio 1x), whether or not the next best is them
    assert best["over_defaults"]["over"] == labels[4] and best["over_defaults"]["diff"] == pytest.approx(0.4)
    assert (best["over_defaults"]["p"] < 0.05) == firm
    tune.write(card, entries, rows, tmp_path)
    text = (tmp_path / "grid.md").read_text()
    assert f"ahead of the defaults ({labels[4]}) by +0.400 [" in text
    assert "separated from them" in text and ("not separated from them" in text) == (not firm)
    assert "at the grid's highest learning rate and highest ratio" in text
    assert ("not separated from it" in text) == (not firm)


def test_a_choice_at_the_learning_rate_edge_widens_the_grid_from_the_chosen_point_up_to_a_cap(monkeypatch):
    card = config.load("tiny")
    entries = [MethodEntry(method="lora"), MethodEntry(method="replay")]
    monkeypatch.setattr(tune.stats, "bootstrap", lambda groups, replicates=None: None)
    best = {"lora": 1e9, "replay": 0.0}  # headline = -|log lr - log best|: lora's best lies far above its grid

    def rows(widened):
        runs = {}
        for entry in entries:
            for e, p in tune.grid(entry, card, widened.get(entry.method, ())):
                runs[e.label] = {"status": "finished", "label": e.label,
                                 "h": -abs(np.log(p["lr"]) - np.log(best[entry.method] or p["lr"]))
                                 - (p["factors"][1] != 2.0)}  # replay: ratio 2x wins; every lr ties
        monkeypatch.setattr("harness.metrics.run_metrics.run_row", lambda run: {"headline": run["h"]})
        return tune.choose(card, entries, runs, widened)

    widened = {}
    for _ in range(5):
        more = tune.widen(rows(widened), widened)
        if more == widened:
            break
        widened = more
    assert widened == {"lora": ((9.0, 1.0), (27.0, 1.0))}  # two steps beyond 3x, then the cap
    final = rows(widened)
    chosen = {r["method"]: r for r in final if r["chosen"]}
    assert chosen["lora"]["factors"] == (27.0, 1.0) and chosen["lora"]["edges"] == ["highest learning rate"]
    assert chosen["replay"]["factors"] == (1.0, 2.0) and chosen["replay"]["edges"] == ["highest ratio"]  # not widened
    assert len([r for r in final if r["method"] == "lora"]) == 5
    low = [dict(r, chosen=r["factors"] == (0.3, 1.0)) for r in final if r["method"] == "lora"]
    assert tune.widen(low, {})["lora"] == ((pytest.approx(0.1), 1.0),)  # the lowest edge: a step below


def test_the_tuned_card_runs_the_cards_methods_on_its_seeds_and_the_others_on_its_first(monkeypatch, tmp_path):
    """One `clbench run --config tuned.yaml` is the all-methods board: 3 seeds for the methods the card names, one
    for the others (#15), all under the card's protocol (a method's seeds are not part of it)."""
    from harness.spec import protocol
    from harness.spec.spec import expand

    card = config.with_overrides(config.load("tiny"), seeds=[0, 1, 2])
    entries = [MethodEntry(method="full"), MethodEntry(method="l2sp")]  # tiny names full and lora
    monkeypatch.setattr(tune.stats, "bootstrap", lambda groups, replicates=None: None)
    monkeypatch.setattr("harness.metrics.run_metrics.run_row", lambda run: {"headline": 1.0})
    runs = {e.label: {"status": "finished", "label": e.label} for m in entries for e, _ in tune.grid(m, card)}
    tune.write(card, entries, tune.choose(card, entries, runs), tmp_path)
    tuned = config.load(str(tmp_path / "tuned.yaml"))
    assert [(s.label, s.seed) for s in expand(tuned)] == [("full", 0), ("full", 1), ("full", 2), ("lora", 0),
                                                          ("lora", 1), ("lora", 2), ("l2sp", 0)]
    assert protocol.card(tuned) == protocol.card(card)
    assert {s.seed for s in expand(config.with_run_seeds(tuned, [7]))} == {7}  # --seeds: every method's


def test_the_stated_grids_labels_are_those_a_stored_tune_resumes_by():
    card = config.load("standard")
    assert [e.label for e, _ in tune.grid(MethodEntry(method="lora"), card)] == [
        "lora lr=9e-05", "lora lr=0.0003", "lora lr=0.0009"]
    assert [e.label for e, _ in tune.grid(MethodEntry(method="replay"), card)][:2] == [
        "replay lr=1.5e-05 ratio=0.1", "replay lr=1.5e-05 ratio=0.2"]


def test_a_failed_point_beyond_the_choice_keeps_it_at_the_edge_and_is_not_proposed_again(monkeypatch):
    card = config.load("tiny")
    entries = [MethodEntry(method="lora"), MethodEntry(method="lora", label="lora-r4", config={"r": 4})]
    monkeypatch.setattr(tune.stats, "bootstrap", lambda groups, replicates=None: None)
    monkeypatch.setattr("harness.metrics.run_metrics.run_row", lambda run: {"headline": run["h"]})
    widened = {"lora": ((9.0, 1.0),)}
    runs = {}
    for entry in entries:
        for e, p in tune.grid(entry, card, widened.get(entry.label or entry.method, ())):
            failed = p["factors"][0] == 9.0
            runs[e.label] = {"status": "failed" if failed else "finished", "label": e.label, "h": p["factors"][0]}
    rows = tune.choose(card, entries, runs, widened)
    chosen = {r["variant"]: r for r in rows if r["chosen"]}
    assert chosen["lora"]["factors"] == (3.0, 1.0) and chosen["lora"]["edges"] == ["highest learning rate"]
    # lora's next step failed: nothing new for it; the other variant of the method widens on its own
    assert tune.widen(rows, widened) == {"lora": ((9.0, 1.0),), "lora-r4": ((9.0, 1.0),)}


def test_tune_widens_until_the_choice_is_inside_and_a_second_call_runs_nothing_new(monkeypatch, tmp_path):
    """The loop of `tune`, its sweeps faked: headline = lr factor until 9x, so 9x is chosen once widened."""
    from harness.spec import spec as spec_module

    card = config.load("tiny")
    monkeypatch.setattr(tune.stats, "bootstrap", lambda groups, replicates=None: None)
    monkeypatch.setattr(tune, "validation_config", lambda c, methods, widened=None, source=None: dataclasses.replace(
        c, methods=[e for m in methods for e, _ in tune.grid(m, c, (widened or {}).get(m.label or m.method, ()))]))
    stored, swept = {}, []

    def run_sweep(cfg, results, address=None, log=None, cost_sources=None):
        todo = [e.label for e in cfg.methods if e.label not in stored]
        swept.append(todo)
        for e in cfg.methods:
            stored.setdefault(e.label, {"status": "finished", "label": e.label, "h": -abs(e.config["lr"] / 5e-5 - 9)})

    class FakeStore:
        def __init__(self, results):
            pass

        def load_run(self, run_id):
            return stored[run_id]

    monkeypatch.setattr("harness.sweep.sweep.run_sweep", run_sweep)
    monkeypatch.setattr("harness.store.store.Store", FakeStore)
    monkeypatch.setattr(spec_module, "expand", lambda cfg: [type("S", (), {"label": e.label, "run_id": e.label})()
                                                           for e in cfg.methods])
    monkeypatch.setattr("harness.metrics.run_metrics.run_row", lambda run: {"headline": run["h"]})
    paths = tune.tune(card, str(tmp_path), ["full"], log=lambda line: None)
    assert swept == [["full lr=1.5e-05", "full lr=5e-05", "full lr=0.00015"], ["full lr=0.00045"],
                     ["full lr=0.00135"]]
    rows = list(csv.DictReader(open(paths["csv"])))
    assert next(r for r in rows if r["chosen"] == "True")["label"] == "full lr=0.00045"  # 9x: inside the grid
    swept.clear()
    tune.tune(card, str(tmp_path), ["full"], log=lambda line: None)
    assert all(todo == [] for todo in swept) and len(swept) == 3  # resumed: the same widening, nothing rerun


def test_progress_runs_nothing_and_marks_a_choice_only_once_all_its_points_have_run(monkeypatch, tmp_path, data_dir):
    """Mid-tune: replay's 9 points have finished (its choice is final), lora's 3 have and its choice sits at the
    highest rate (so the widened point it will run is listed, not run, and the choice only leads), full's 1 of 3 has
    and another failed (the tune runs a failed point again: full stays open)."""
    card = config.with_overrides(config.load("tiny"), data_dir=str(data_dir))
    entries = [MethodEntry(method="full"), MethodEntry(method="lora"), MethodEntry(method="replay")]
    monkeypatch.setattr(tune.stats, "bootstrap", lambda groups, replicates=None: None)
    labels = {e.method: [x.label for x, _ in tune.grid(e, card)] for e in entries}
    finished = [labels["full"][0], *labels["lora"], *labels["replay"]]
    headline = {**{label: float(i) for i, label in enumerate(labels["lora"])},  # lora: the highest rate leads
                **{label: -abs(i - 4.0) for i, label in enumerate(labels["replay"])}, labels["full"][0]: 0.0}

    def stored(results, cfg):
        state = {e.label: "finished" if e.label in finished else "not run" for e in cfg.methods}
        state[labels["full"][2]] = "failed: the tune runs it again"
        return {label: {"status": "finished", "label": label} for label in finished}, state

    monkeypatch.setattr(tune, "_stored", stored)
    monkeypatch.setattr("harness.metrics.run_metrics.run_row", lambda run: {"headline": headline[run["label"]]})
    monkeypatch.setattr("harness.sweep.sweep.run_sweep", lambda *a, **k: pytest.fail("progress ran a sweep"))
    path, line = tune.progress(card, str(tmp_path), ["full", "lora", "replay"])
    assert line == "13 of 16 grid points finished (1 to run again); 1 of 3 variants chosen"
    rows = {r.split(" | ")[0].strip("| "): r for r in path.read_text().splitlines() if r.startswith("| ")}
    assert rows[labels["replay"][4]].endswith("| **yes** | finished |")  # the defaults: inside the grid, final
    assert rows[labels["lora"][2]].endswith("|  | finished: leading so far |")
    assert rows["lora lr=0.0027"].endswith("|  | not run |")  # the widened point the tune will run next
    assert rows[labels["full"][0]].endswith("|  | finished: leading so far |")
    assert rows[labels["full"][1]].endswith("|  | not run |")
    assert "**replay**" in path.read_text() and "**lora**" not in path.read_text()


def test_a_choice_names_the_defaults_once_when_they_are_the_next_best():
    over = {"over": "lora lr=0.0003", "diff": 0.2, "lo": 0.1, "hi": 0.3, "p": 0.01}
    r = {"variant": "lora", "label": "lora lr=0.0009", "edges": [], "factors": (3.0, 1.0), "margin": over,
         "over_defaults": over}
    line = tune._choice(r)
    assert "ahead of lora lr=0.0003 (the defaults) by +0.200 [+0.100, +0.300]" in line and line.count("ahead of") == 1
    r["margin"] = None  # the next best without per-item records: the defaults' difference is still given
    assert "; ahead of the defaults (lora lr=0.0003) by +0.200" in tune._choice(r)


def test_a_labelled_variant_widens_on_its_own(data_dir):
    card = config.with_overrides(config.load("tiny"), data_dir=str(data_dir))
    entries = [MethodEntry(method="lora"), MethodEntry(method="lora", label="lora-r4", config={"r": 4})]
    val = tune.validation_config(card, entries, {"lora-r4": ((9.0, 1.0),)})
    assert [e.label for e in val.methods].count("lora-r4 lr=0.0027") == 1  # its widened point, under its label
    assert len(val.methods) == 7  # 3 + 3 stated, 1 widened: lora's own grid is not widened with it


@pytest.mark.parametrize("stored, state", [
    (None, "unreadable (not valid JSON (truncated?)"),  # a truncated file
    (({"status": "finished", "protocol": {"version": 3}}, "field 'protocol' must be an object with a string 'version'"),
     "unreadable (field 'protocol' must be"),  # well-formed, but no report could read it
    (({"status": "finished", "protocol": {"version": "old"}}, None), "stored under protocol version old: the tune runs"),
    (({"status": "running", "protocol": {"version": None}}, None), "running"),
])
def test_progress_sees_a_stored_point_as_the_tunes_resume_does_and_moves_no_file(stored, state, monkeypatch, tmp_path,
                                                                              data_dir):
    from harness.spec.protocol import stamp
    from harness.spec.spec import expand

    card = config.with_overrides(config.load("tiny"), data_dir=str(data_dir))
    val = tune.validation_config(card, [MethodEntry(method="full")])
    spec = expand(val)[0]
    bad = tmp_path / "runs" / f"{spec.run_id}.json"
    bad.parent.mkdir()
    bad.write_text('{"status": "fini')
    if stored is not None:
        data, why = stored
        if data["protocol"]["version"] is None:
            data["protocol"]["version"] = stamp(val)["version"]
        monkeypatch.setattr("harness.store.validate.problem", lambda path: (data, why))
    path, line = tune.progress(card, str(tmp_path), ["full"])
    assert line.startswith("0 of 3 grid points finished") and bad.read_text() == '{"status": "fini'
    assert f"| {tables.md_escape(state)}" in path.read_text()


def test_the_tuned_card_keeps_a_variants_own_seeds(monkeypatch, tmp_path):
    card = config.parse({"model": "tiny", "stream": ["stem"], "seeds": [0, 1, 2],
                         "methods": ["full", {"method": "ewc", "seeds": [1]}]}, "card.yaml")
    monkeypatch.setattr(tune.stats, "bootstrap", lambda groups, replicates=None: None)
    monkeypatch.setattr("harness.metrics.run_metrics.run_row", lambda run: {"headline": 1.0})
    tune.write(card, list(card.methods), tune.choose(card, list(card.methods), {}), tmp_path)
    tuned = config.load(str(tmp_path / "tuned.yaml"))
    assert [(m.label, m.seeds) for m in tuned.methods] == [("full", []), ("ewc", [1])]


def test_a_label_that_reads_as_a_spreadsheet_formula_is_written_as_text(monkeypatch, tmp_path):
    card = config.parse({"model": "tiny", "stream": ["stem"], "methods": [{"method": "full", "label": "=1+1"}]},
                        "card.yaml")
    monkeypatch.setattr(tune.stats, "bootstrap", lambda groups, replicates=None: None)
    monkeypatch.setattr("harness.metrics.run_metrics.run_row", lambda run: {"headline": 1.0})
    tune.write(card, list(card.methods), tune.choose(card, list(card.methods), {}), tmp_path)
    labels = [row["label"] for row in csv.DictReader(open(tmp_path / "grid.csv"))]
    assert labels and all(label.startswith("'=1+1") for label in labels)  # as leaderboard.csv guards its cells


def test_a_failure_while_making_the_outputs_leaves_the_last_tunes_three_as_they_were(monkeypatch, tmp_path):
    """grid.csv and grid.md were replaced before tuned.yaml was made: a failure between left a grid that named
    choices the card beside it did not hold (a helper's review)."""
    card = config.parse({"model": "tiny", "stream": ["stem"], "methods": ["full"]}, "card.yaml")
    monkeypatch.setattr(tune.stats, "bootstrap", lambda groups, replicates=None: None)
    monkeypatch.setattr("harness.metrics.run_metrics.run_row", lambda run: {"headline": 1.0})
    before = {name: f"the last tune's {name}\n" for name in ("grid.csv", "grid.md", "tuned.yaml")}
    for name, text in before.items():
        (tmp_path / name).write_text(text)

    def fail(*args, **kw):
        raise OSError("no space left on device")

    monkeypatch.setattr(tune.yaml, "safe_dump", fail)
    with pytest.raises(OSError):
        tune.write(card, list(card.methods), tune.choose(card, list(card.methods), {}), tmp_path)
    assert {name: (tmp_path / name).read_text() for name in before} == before


@pytest.mark.parametrize("method, setting, said", [("ewc", {"ewc_lambda": 0}, "config.ewc_lambda is 0.0"),
                                                    ("full", {"lr": 0}, "config.lr is 0.0")])
def test_a_default_the_grid_cannot_scale_is_named(method, setting, said):
    """A zero was multiplied into three equal points, refused as 'label used twice' (a helper's review)."""
    card = config.parse({"model": "tiny", "stream": ["stem"], "methods": [{"method": method, "config": setting}]},
                        "card.yaml")
    with pytest.raises(ConfigError, match=f"method '{method}': {said}; clbench tune scales it by"):
        tune.grid(card.methods[0], card)


def test_a_card_whose_stream_is_already_validation_items_is_refused():
    card = config.parse({"model": "tiny", "stream": ["stem_dev"], "methods": ["full"]}, "card.yaml")
    with pytest.raises(ConfigError, match="validation domain"):
        tune.validation_stream(card)


@pytest.mark.slow
def test_tune_end_to_end_writes_the_grid_and_a_card_run_accepts(tmp_path, data_dir):
    results = tmp_path / "tune"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "tune", "--preset", "tiny", "--methods", "full",
                           "--results", str(results), "--data", str(data_dir)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(open(results / "grid.csv")))
    assert sum(r["chosen"] == "True" for r in rows) == 1
    chosen = next(r for r in rows if r["chosen"] == "True")
    # the stated 3 points, and the widened ones while the choice sat at the highest (or lowest) learning rate
    lrs = sorted(float(r["lr"]) for r in rows)
    steps = sorted(round(b / a, 6) for a, b in zip(lrs, lrs[1:]))
    assert 3 <= len(rows) <= 3 + tune.WIDEN_STEPS and steps == [3.0] * (len(rows) - 2) + [round(1 / 0.3, 6)]
    assert len(rows) == 3 + tune.WIDEN_STEPS or float(chosen["lr"]) not in (lrs[0], lrs[-1])
    assert float(chosen["headline"]) == max(float(r["headline"]) for r in rows)
    # each point's interval over the validation items, from its per-item records
    assert all(float(r["headline_lo"]) <= float(r["headline"]) <= float(r["headline_hi"]) for r in rows)
    assert "How firm each choice is" in (results / "grid.md").read_text()
    tuned = config.load(str(results / "tuned.yaml"))
    assert [(m.method, m.label) for m in tuned.methods] == [("full", "full"), ("lora", "lora")]
    assert tuned.methods[0].config["lr"] == pytest.approx(float(chosen["lr"]))
    assert tuned.methods[1].config == {}  # not tuned: the card's
    assert (tuned.stream, tuned.budget) == (config.load("tiny").stream, config.load("tiny").budget)
    assert "tuned.yaml" in done.stdout and "clbench run --config" in done.stdout
    shown = subprocess.run([sys.executable, "-m", "harness.cli", "tune", "--preset", "tiny", "--methods", "full",
                            "--results", str(results), "--data", str(data_dir), "--progress"],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert f"{len(rows)} of {len(rows)} grid points finished; 1 of 1 variants chosen" in shown.stdout
    assert f"| {chosen['label']} |" in next(r for r in shown.stdout.splitlines() if "**yes**" in r)
    # before any run: the grid's expected time at the rates of the committed standard board (harness.report.cost);
    # before a widening round, that of its one new point at the rates of the grid's own runs on this machine
    assert re.search(r"expected time: (about [0-9.]+ (h|min)|under a minute) for the 3 of 3 run\(s\) left",
                     done.stdout), done.stdout[:2000]
    assert len(rows) == 3 or re.search(r"for the 1 of 4 run\(s\) left, .* on [^\n]* in " + re.escape(str(results)),
                                       done.stdout), done.stdout[-3000:]


def test_progress_names_stored_runs_outside_its_grid_and_creates_no_folder(tmp_path, data_dir):
    """`--progress` with fewer --methods than the tune ran would otherwise overwrite progress.md with a subset
    that never mentions the rest; a misspelt --results would read as a tune with nothing run."""
    card = config.with_overrides(config.load("tiny"), data_dir=str(data_dir))
    missing = tmp_path / "tunee"
    with pytest.raises(ConfigError, match="tunee does not exist"):
        tune.progress(card, str(missing), ["full"])
    assert not missing.exists()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "0123456789abcdef.json").write_text("{}")  # another method's point
    _, line = tune.progress(card, str(tmp_path), ["full"])
    assert line.startswith("0 of 3 grid points finished") and "1 stored run file(s) are no point of this grid" in line


def test_a_card_the_tune_cannot_use_is_named_with_its_file(tmp_path, capsys):
    """The tune-only checks of a card's stream said `stream: [...]` without the file (a helper's review)."""
    from harness.cli import main

    card = tmp_path / "card.yaml"
    card.write_text("name: tt\nmodel: tiny\nstream: [stem, math]\nmethods: [full]\n")
    assert main(["tune", "--config", str(card), "--results", str(tmp_path), "--progress"]) == 2
    assert f"{card}: stream: ['math'] have no validation domain" in capsys.readouterr().err

