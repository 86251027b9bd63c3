"""`save_models: true`: each stage's model is a Hugging Face folder that the `lm_eval` CLI scores, on the tasks
`clbench export-lm-eval` writes, exactly as the board did; a model that is more than its weights is not kept."""
import json
import subprocess
import sys

import pytest
import torch


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, data_dir):
    """full, lora and llama_pro on two tiny stages with save_models, run in this process (the Ray path of
    save_models is the same execute call: scheduler._run_task passes the flag through)."""
    from harness.run.runner import execute
    from harness.spec import config
    from harness.spec.spec import expand
    from harness.store.store import Store

    root = tmp_path_factory.mktemp("saved")
    results, exported = root / "results", root / "export"
    cfg = config.load("tiny", ["save_models=true", "methods=[full, lora, {method: llama_pro, config: {every: 1}}]",
                               "stream=[stem, law]", "probes=[]", f"data_dir={data_dir}"])
    assert cfg.save_models
    store = Store(results)
    runs = {spec.method: execute(spec, store, data_dir=str(data_dir), save_models=True) for spec in expand(cfg)}
    assert all(r["status"] == "finished" for r in runs.values()), [r["error"] for r in runs.values()]
    assert _cli("harness.cli", "export-lm-eval", "--preset", "tiny", "--out", str(exported), "--data",
                str(data_dir)).returncode == 0
    return results, exported, runs


def test_every_stage_is_saved_and_loads_as_the_model_that_was_scored(saved):
    from transformers import AutoModelForCausalLM

    results, _, runs = saved
    for method, run in runs.items():
        assert sorted(run["saved_models"], key=int) == ["1", "2"], method
        for stage, where in run["saved_models"].items():
            folder = results / where["folder"]
            assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    # lora's adapters are merged: the folder is the base architecture; llama_pro's is its deeper stack
    lora = AutoModelForCausalLM.from_pretrained(results / runs["lora"]["saved_models"]["2"]["folder"])
    assert not any("lora" in n for n, _ in lora.named_parameters())
    pro = AutoModelForCausalLM.from_pretrained(results / runs["llama_pro"]["saved_models"]["2"]["folder"])
    assert pro.config.num_hidden_layers == 2 * AutoModelForCausalLM.from_pretrained(
        results / runs["full"]["saved_models"]["2"]["folder"]).config.num_hidden_layers


@pytest.mark.slow
def test_lm_eval_cli_on_a_saved_stage_reproduces_the_boards_accuracy(saved):
    results, exported, runs = saved
    run = runs["full"]
    folder = results / run["saved_models"]["2"]["folder"]
    tasks = ["clbench_stem_recall", "clbench_law_transfer"]
    out = results.parent / "lm_eval_out"
    done = _cli("lm_eval", "--model", "hf", "--model_args", f"pretrained={folder}", "--device", "cpu",
                "--include_path", str(exported), "--tasks", ",".join(tasks), "--output_path", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    stage = run["stages"][2]
    for task in tasks:
        domain, view = task[len("clbench_"):].rsplit("_", 1)
        assert scores[task]["acc_norm,none"] == pytest.approx(stage["scores"][domain][view]["score"]), task
    assert "higher_is_better" not in done.stderr  # the exported tasks declare aggregation and direction


def test_a_model_that_is_more_than_its_weights_is_not_kept(tmp_path, tiny):
    import copy

    from harness.run import sandboxed, stage_models

    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    config, shapes = copy.deepcopy(model.config), sandboxed.shapes_of(model)
    assert stage_models.save(model, tok, config, shapes, tmp_path / "plain") is None

    class Shifted(torch.nn.Module):  # a forward that is not a function of the saved weights alone
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) + 1.0

    model.model.norm = Shifted(model.model.norm)
    why = stage_models.save(model, tok, config, shapes, tmp_path / "shifted")
    assert why and "other logits" in why and not (tmp_path / "shifted").exists()
