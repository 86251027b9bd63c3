"""O-LoRA: the orthogonality penalty, earlier tasks' LoRAs untouched by later training, and a
freshly prepared model that scores exactly like the base model."""
import copy

import pytest
import torch
from torch import nn

from harness.errors import ConfigError
from harness.scoring import cloze_scores, generate
from harness.training import train_task
from methods.base import StageContext
from methods.olora import OLoRA, TaskLoRALinear
from tasks.chat import encode_pairs
from tasks.items import MCItem


def _ctx(stage):
    return StageContext(stage=stage, task=None, seen=[], device="cpu", seed=0)


def _two_task_layer(first_rows, second_rows):
    layer = TaskLoRALinear(nn.Linear(6, 5), r=2, alpha=4, dropout=0.0)
    layer.add_task()
    layer.add_task()
    eye = torch.eye(6)
    with torch.no_grad():
        layer.lora_A[0].copy_(eye[list(first_rows)])
        layer.lora_A[1].copy_(eye[list(second_rows)])
    return layer


def test_penalty_is_zero_for_orthogonal_subspaces_and_positive_otherwise():
    orthogonal = _two_task_layer((0, 1), (2, 3))
    assert orthogonal.orthogonality().item() == 0.0
    overlapping = _two_task_layer((0, 1), (1, 2))  # share the direction e1: |A_1 A_0^T| sums to 1
    assert overlapping.orthogonality().item() == pytest.approx(1.0)

    method = OLoRA(OLoRA.Config(lambda1=0.5))
    method.layers = [orthogonal, overlapping]
    assert method.penalty().item() == pytest.approx(0.5)
    method.layers = [orthogonal]
    assert method.penalty().item() == 0.0


def test_no_penalty_on_the_first_task_unless_lambda2():
    layer = TaskLoRALinear(nn.Linear(6, 5), r=2, alpha=4, dropout=0.0)
    layer.add_task()
    method = OLoRA()
    method.layers = [layer]
    assert method.penalty() is None
    method = OLoRA(OLoRA.Config(lambda2=0.1))
    method.layers = [layer]
    expected = 0.1 * (layer.lora_A[0].norm() + layer.lora_B[0].norm())  # B is zero: the norm of A
    assert method.penalty().item() == pytest.approx(expected.item())


def test_earlier_task_lora_is_bit_identical_after_training_a_later_task(tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    method = OLoRA(OLoRA.Config(lr=1e-2, dropout=0.0))
    model = method.prepare(model, _ctx(0))
    examples = encode_pairs(tok, [{"user": f"question {i}?", "reply": f"answer {i}"} for i in range(4)], 64)
    kw = dict(epochs=1, batch_size=2, pad_id=tok.pad_token_id, device="cpu", precision="fp32", seed=0, desc="t")

    train_task(model, method, examples, _ctx(1), **kw)
    method.after_task(model, _ctx(1))
    first = [(layer.lora_A[0].detach().clone(), layer.lora_B[0].detach().clone()) for layer in method.layers]
    assert any(b.abs().sum() > 0 for _, b in first), "the first task's LoRA did not train"

    method.train_examples([], _ctx(2))
    assert all(len(layer.lora_A) == 2 for layer in method.layers)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A.1", "lora_B.1")) for n in trainable)  # only the second task's LoRA trains
    train_task(model, method, examples, _ctx(2), **kw)

    for layer, (a, b) in zip(method.layers, first):
        assert torch.equal(layer.lora_A[0], a) and torch.equal(layer.lora_B[0], b)
    assert any(layer.lora_B[1].abs().sum() > 0 for layer in method.layers), "the second task's LoRA did not train"


def test_prepared_model_scores_like_the_base_model(tiny):
    base, tok = tiny
    model = OLoRA().prepare(copy.deepcopy(base), _ctx(0)).eval()
    item = MCItem(uid="x", question="Which is a colour?", options=("red", "seven", "walk", "soft"), answer=0,
                  source="test")
    assert cloze_scores(model, tok, [item], "cpu", "fp32")[0] == cloze_scores(base, tok, [item], "cpu", "fp32")[0]
    prompts = ["Say hello.", "Count to three."]
    assert generate(model, tok, prompts, "cpu", "fp32", 8) == generate(base, tok, prompts, "cpu", "fp32", 8)


def test_unknown_target_module_is_a_clear_error(tiny):
    with pytest.raises(ConfigError, match=r"target_modules.*\['nope'\].*q_proj"):
        OLoRA(OLoRA.Config(target_modules=["nope"])).prepare(copy.deepcopy(tiny[0]), _ctx(0))
