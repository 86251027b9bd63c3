"""Our multiple-choice scorers give lm-eval's accuracy on the same 50 MMLU questions, on SmolLM2."""
import pytest

from harness.integrations import lmeval_bridge
from harness.model.scoring import cloze_choices, letter_choices

N = 50


@pytest.fixture(scope="module")
def questions(mmlu_short):
    return mmlu_short(N)


@pytest.fixture(scope="module")
def lmeval_scores(smollm2, questions, tmp_path_factory):
    model, tok = smollm2
    folder = tmp_path_factory.mktemp("lmeval")
    lmeval_bridge.write_task(questions, tok, "cloze", folder, "clbench_cloze")
    lmeval_bridge.write_task(questions, tok, "letter", folder, "clbench_letter")
    return lmeval_bridge.evaluate(model, tok, folder, ["clbench_cloze", "clbench_letter"])


def _acc(model, tok, questions, choose, **kw):
    return sum(c == q.answer for c, q in zip(choose(model, tok, questions, "cpu", "fp32", **kw), questions)) / len(questions)


def test_cloze_unnormalised_equals_lmeval_acc(smollm2, questions, lmeval_scores):
    assert len(questions) == N
    assert _acc(*smollm2, questions, cloze_choices, norm="none") == pytest.approx(lmeval_scores["clbench_cloze"]["acc"])


def test_cloze_char_normalised_equals_lmeval_acc_norm(smollm2, questions, lmeval_scores):
    assert _acc(*smollm2, questions, cloze_choices, norm="char") == pytest.approx(
        lmeval_scores["clbench_cloze"]["acc_norm"])


def test_letter_equals_lmeval_letter_choices(smollm2, questions, lmeval_scores):
    assert _acc(*smollm2, questions, letter_choices) == pytest.approx(lmeval_scores["clbench_letter"]["acc"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_dir):
    from harness.cli import main

    out = tmp_path_factory.mktemp("export")
    assert main(["export-lm-eval", "--out", str(out), "--preset", "tiny", "--data", str(data_dir)]) == 0
    return out


def test_exported_domain_tasks_score_the_same_in_lm_eval_and_the_harness(tiny, exported, data_dir):
    from harness.spec import config
    from tasks.data import DataSource
    from tasks.registry import load_stream

    cfg = config.load("tiny")
    tasks, _ = load_stream(DataSource(str(data_dir)), ["stem", "law"], [], cfg.budget, cfg.data_seed)
    names = {f"clbench_{t.name}_{view}": items for t in tasks for view, items in t.views.items()}
    assert all((exported / f"{n}.yaml").exists() for n in names)
    assert not list(exported.glob("clbench_code_*"))  # code is scored by running tests: not exported
    scores = lmeval_bridge.evaluate(*tiny, exported, sorted(names))
    for name, items in names.items():
        assert scores[name]["n"] == len(items)
        assert _acc(*tiny, items, cloze_choices, norm="none") == pytest.approx(scores[name]["acc"]), name
    # the board's default scorer (cloze_char), as the runner scores a stage, is lm-eval's acc_norm
    assert cfg.scorer == "cloze_char"
    from harness.run.evaluation import evaluate
    board = evaluate(*tiny, tasks, [], scorer=cfg.scorer, budget=cfg.budget, device="cpu", precision="fp32", desc="x")
    for name in names:
        task, view = name[len("clbench_"):].rsplit("_", 1)
        assert board["scores"][task][view]["score"] == pytest.approx(scores[name]["acc_norm"]), name


def test_lm_eval_task_as_a_probe(tiny, exported, tmp_path):
    from harness.core.errors import ConfigError
    from harness.run.evaluation import evaluate
    from harness.spec import config
    from tasks.registry import load_stream

    f = tmp_path / "c.yaml"
    f.write_text(f"model: tiny\nstream: [stem]\nprobes: [lm_eval:clbench_law_transfer]\nmethods: [full]\n"
                 f"budget: {{lm_eval_include: {exported}}}\n")
    cfg = config.load(str(f))
    _, probe = load_stream(None, [], list(cfg.probes), cfg.budget, cfg.data_seed)  # lm-eval reads its own data
    out = evaluate(*tiny, [], probe, scorer="cloze_char", budget=cfg.budget, device="cpu", precision="fp32", desc="x")
    view = out["probes"]["lm_eval:clbench_law_transfer"]["lm_eval"]
    expected = lmeval_bridge.evaluate(*tiny, exported, ["clbench_law_transfer"])["clbench_law_transfer"]
    assert view["score"] == expected["acc"] and view["n"] == expected["n"]
    f.write_text(f.read_text().replace("clbench_law_transfer", "clbench_law_transfr"))
    with pytest.raises(ConfigError, match=r"probes\[0\]: unknown lm-eval task 'clbench_law_transfr'.*clbench_law_transfer"):
        config.load(str(f))
