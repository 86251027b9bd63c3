"""Every registered method (and one loaded from a file) runs two stages of the tiny stream, trains
the parameters it marks trainable, leaves every other parameter bit-identical, and stores a valid
result file."""
import textwrap

import pytest
import torch

from harness.run.runner import execute
from harness.spec import config
from harness.spec.spec import expand
from harness.store.store import Store
from harness.store.validate import problem
from methods.registry import available

THIRD_PARTY = '''
from methods.full import FullFineTune


class TopOnly(FullFineTune):
    name = "top_only"
    description = "third-party test method: trains the final norm only"

    def prepare(self, model, ctx):
        for n, p in model.named_parameters():
            p.requires_grad_(n.endswith("model.norm.weight"))
        return model
'''


# the tiny model has 2 decoder blocks: methods whose defaults assume more get a fitting override
TINY_OVERRIDES = {"llama_pro": "{every: 1}", "sdft": "{max_new_tokens: 16}"}  # sdft: short rewrites keep it fast


@pytest.fixture(scope="module")
def third_party(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin") / "top_only.py"
    path.write_text(textwrap.dedent(THIRD_PARTY))
    return f"{path}:TopOnly"


@pytest.mark.parametrize("name", sorted(available()) + ["third-party-file"])
def test_method_conforms(name, third_party, tmp_path, data_dir):
    method = third_party if name == "third-party-file" else name
    f = tmp_path / "c.yaml"
    f.write_text(f"model: tiny\nprecision: fp32\nstream: [stem, humanities]\nprobes: [general]\n"
                 f"methods: [{{method: '{method}', config: {TINY_OVERRIDES.get(name, '{}')}}}]\n"
                 "budget: {learn_items: 4, transfer_items: 2, general_items: 2, epochs: 2, batch_size: 2, max_length: 192}\n")
    spec = expand(config.load(str(f)))[0]
    snapshots = {}

    def on_stage(stage, model):
        snapshots[stage] = {n: (p.requires_grad, p.detach().clone()) for n, p in model.named_parameters()}

    store = Store(tmp_path / "res")
    result = execute(spec, store, data_dir=str(data_dir), on_stage=on_stage)
    assert result["status"] == "finished", result["traceback"]
    data, why = problem(store.run_path(spec.run_id))
    assert why is None

    assert sorted(snapshots) == [0, 1, 2]
    start, end = snapshots[0], snapshots[2]
    if name == "third-party-file":  # trained in a sandbox child: the parent sees the handed-over weights only
        changed = [n for n in start if not torch.equal(start[n][1], end[n][1])]
        assert changed and sum(start[n][1].numel() for n in changed) == result["trainable_params"]
        return
    trainable = [n for n, (grad, _) in start.items() if grad]
    assert trainable, "the method trains nothing"
    assert result["trainable_params"] == sum(start[n][1].numel() for n in trainable)
    for n, (grad, before) in start.items():
        after = end[n][1]
        if grad:
            continue
        assert torch.equal(before, after), f"frozen parameter {n} changed"
    assert any(not torch.equal(start[n][1], end[n][1]) for n in trainable), "no trainable parameter moved"


@pytest.mark.parametrize("name", ["lora", "lora_all_r64", "prompt_tuning", "prefix_tuning", "p_tuning_v2"])
def test_a_peft_method_prepares_without_a_librarys_deprecation_noise(name, tiny):
    """peft reads a property transformers deprecated: every Ray worker printed its FutureWarning into the main
    job's progress. Wrapping says nothing a researcher can act on, so it says nothing."""
    import copy
    import warnings

    from methods.base import StageContext
    from methods.registry import resolve_method

    cls = resolve_method(name)
    method = cls(cls.Config())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        method.prepare(copy.deepcopy(tiny[0]), StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []


CONTEXT_SPY = '''
from methods.full import FullFineTune


class ContextSpy(FullFineTune):
    name = "context_spy"
    description = "test method: stores the length its training examples are cut to, as its hooks are told it"

    def stats(self, ctx):
        return {"max_length": ctx.max_length}
'''


def test_a_methods_hooks_are_told_the_length_training_examples_are_cut_to(tmp_path, data_dir):
    """StageContext.max_length is the budget's (sdft keeps only rewrites that fit whole), in a run's stages."""
    path = tmp_path / "spy.py"
    path.write_text(CONTEXT_SPY)
    f = tmp_path / "c.yaml"
    f.write_text(f"model: tiny\nprecision: fp32\nstream: [stem]\nprobes: [general]\nmethods: ['{path}:ContextSpy']\n"
                 "budget: {learn_items: 2, transfer_items: 1, general_items: 2, epochs: 1, max_length: 160}\n")
    spec = expand(config.load(str(f)))[0]
    result = execute(spec, Store(tmp_path / "res"), data_dir=str(data_dir))
    assert result["status"] == "finished", result["traceback"]
    assert result["stages"][-1]["method_stats"] == {"max_length": 160}
