"""#19: under bf16 the weights are stored by role (harness.model.precision.place_weights): the base model's frozen
linear layers in bf16, every trainable parameter in fp32, the function computed under autocast unchanged."""
import copy
import math

import pytest
import torch

from harness.model.precision import autocast, linear_layers, place_weights, weight_dtypes
from harness.run import runner
from harness.spec import config
from harness.spec.spec import expand
from methods.base import StageContext
from methods.lora import LoRA
from methods.registry import available

TINY = {"llama_pro": "{every: 1}", "sdft": "{max_new_tokens: 8}"}  # 2 blocks; short rewrites keep sdft fast


def _logits(model, ids):
    with torch.inference_mode(), autocast("cpu", "bf16"):
        return model(input_ids=ids).logits.float()


def test_lora_under_bf16_keeps_its_frozen_base_in_bf16_and_computes_the_same_function(tiny):
    base, tok = copy.deepcopy(tiny[0]), tiny[1]
    ids = torch.tensor([tok("The capital of France is Paris.")["input_ids"]])
    linears = linear_layers(base)
    before = _logits(base, ids)
    model = LoRA().prepare(base, StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    place_weights(model, "bf16", linears)
    assert torch.equal(_logits(model, ids), before)  # autocast computed the linears in bf16 already
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.dtype == torch.float32, name  # the adapters: the optimiser's master weights
        elif "base_layer" in name or name.endswith("_proj.weight"):
            assert p.dtype == torch.bfloat16, name
    embed = model.get_input_embeddings().weight
    assert embed.dtype == torch.float32 and model.get_output_embeddings().weight is embed  # tied, not autocast
    counts = weight_dtypes(model)
    assert counts["bfloat16"] > counts["float32"] - embed.numel()


def test_fp32_places_nothing(tiny):
    model = copy.deepcopy(tiny[0])
    place_weights(model, "fp32", linear_layers(model))
    assert set(weight_dtypes(model)) == {"float32"}


CHANGES_FUNCTION = {"prompt_tuning", "prefix_tuning", "p_tuning_v2", "qlora"}  # virtual tokens; a quantized base
ADAPTERS = {"lora", "lora_all_r64", "prompt_tuning", "prefix_tuning", "p_tuning_v2", "moe_lora", "olora", "llama_pro",
            "latent_replay"}  # a frozen base of plain linear layers


@pytest.mark.parametrize("name", sorted(available()))
def test_every_method_trains_two_stages_with_its_weights_placed_under_bf16(name, tmp_path, data_dir):
    f = tmp_path / "c.yaml"
    f.write_text(f"model: tiny\nprecision: bf16\nstream: [stem, humanities]\nprobes: [general]\n"
                 f"methods: [{{method: {name}, config: {TINY.get(name, '{}')}}}]\n"
                 "budget: {learn_items: 2, transfer_items: 1, general_items: 1, epochs: 1, batch_size: 2, "
                 "max_length: 128}\n")
    spec = expand(config.load(str(f)))[0]
    setup = runner._Setup(spec, str(data_dir))
    loaded = [p.dtype for m in setup.model.modules() if m in setup.linears for p in m.parameters(recurse=False)
              if p is not setup.model.get_input_embeddings().weight]
    assert loaded and set(loaded) == {torch.bfloat16}  # before the model goes to the device
    before = runner._function_outputs(setup.model, setup)
    trainer = runner._InProcess(spec, setup)
    model, _ = trainer.prepare()
    assert trainer.weights == weight_dtypes(model)  # what the result records
    # the fp32 master weights made from the bf16 copy compute what it computed: stage 0 stays shared
    assert runner._same_outputs(before, runner._function_outputs(model, setup)) == (name not in CHANGES_FUNCTION)
    for stage in (1, 2):
        model, train, _, _ = trainer.stage(stage)
        assert train["steps"] and math.isfinite(train["loss_last"])
        wrong = [n for n, p in model.named_parameters() if p.requires_grad and p.dtype != torch.float32]
        assert not wrong, f"trainable parameters not in fp32: {wrong[:3]}"
        shared = {id(p) for m in model.modules() if not isinstance(m, torch.nn.Linear) for p in m.parameters(False)}
        frozen = [p for m in model.modules() if m in setup.linears for p in m.parameters(recurse=False)
                  if not p.requires_grad and p.is_floating_point() and id(p) not in shared]
        assert all(p.dtype == torch.bfloat16 for p in frozen)
        assert frozen or name not in ADAPTERS


def test_a_bf16_checkpoint_is_read_in_bf16_and_placed_as_if_read_in_fp32(tiny, tmp_path):
    """Under bf16 the host reads a checkpoint in the dtype it stores (half of fp32's memory for a hub model's bf16
    weights while it loads); placed, it is the model that reading it in fp32 gives, parameter for parameter."""
    from harness.model import models

    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    model.to(torch.bfloat16).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    read, _ = models.load(str(tmp_path), stored_dtype=True)
    assert {p.dtype for p in read.parameters()} == {torch.bfloat16}  # nothing was widened on the host
    wide, _ = models.load(str(tmp_path))
    assert {p.dtype for p in wide.parameters()} == {torch.float32}
    for m in (read, wide):
        place_weights(m, "bf16", linear_layers(m), loading=True)
    for placed, expected in ((dict(read.named_parameters()), dict(wide.named_parameters())),
                             (dict(read.named_buffers()), dict(wide.named_buffers()))):
        assert placed.keys() == expected.keys()
        for name, p in expected.items():
            assert placed[name].dtype == p.dtype and torch.equal(placed[name], p), name
    assert read.get_input_embeddings().weight.dtype == torch.float32  # the lookup is not autocast


@pytest.mark.parametrize("declared, weights", [("float16", torch.bfloat16), ("bfloat16", torch.float32)])
def test_a_checkpoint_whose_config_and_weights_disagree_is_read_in_fp32(declared, weights, tiny, tmp_path):
    """Read in bf16 only where both the config and every stored tensor say bf16: a config's float16 over bf16
    weights would lose their range, a config's bfloat16 over fp32 weights would round the embeddings."""
    import json

    from harness.model import models

    copy.deepcopy(tiny[0]).to(weights).save_pretrained(tmp_path)
    tiny[1].save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "dtype": declared}))
    read, _ = models.load(str(tmp_path), stored_dtype=True)
    assert {p.dtype for p in read.parameters()} == {torch.float32}


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_the_runner_reads_the_checkpoint_in_its_stored_dtype_only_under_bf16(precision, tiny, tmp_path, data_dir,
                                                                              monkeypatch):
    from harness.model import models

    copy.deepcopy(tiny[0]).to(torch.bfloat16).save_pretrained(tmp_path / "m")
    tiny[1].save_pretrained(tmp_path / "m")
    asked, load = [], models.load
    monkeypatch.setattr(models, "load", lambda name, **kw: asked.append(kw) or load(name, **kw))
    f = tmp_path / "c.yaml"
    f.write_text(f"model: {tmp_path / 'm'}\nprecision: {precision}\nstream: [stem]\nprobes: []\nmethods: [lora]\n"
                 "budget: {learn_items: 2, transfer_items: 1, epochs: 1, batch_size: 2, max_length: 128}\n")
    setup = runner._Setup(expand(config.load(str(f)))[0], str(data_dir))
    assert asked == [{"stored_dtype": precision == "bf16"}]
    assert setup.model.get_input_embeddings().weight.dtype == torch.float32
