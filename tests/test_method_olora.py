"""O-LoRA: the orthogonality penalty, its scale against the task loss, earlier tasks' LoRAs untouched
by later training, and a freshly prepared model that scores exactly like the base model."""
import copy
import json

import pytest
import torch
from torch import nn

from harness.core.errors import ConfigError
from harness.model.scoring import cloze_scores, generate
from harness.run.training import train_task
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

    method = OLoRA(OLoRA.Config(lambda1=0.5))  # the default reduction: the mean over the adapted modules
    method.layers = [orthogonal, overlapping]
    assert method.penalty().item() == pytest.approx(0.5 * (0.0 + 1.0) / 2)
    method = OLoRA(OLoRA.Config(lambda1=0.5, reduction="sum"))  # the reference code's sum over modules
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


class _Recording(OLoRA):
    """O-LoRA that logs (stage, task loss, penalty) of every training step, measured outside its stats()."""

    log: list

    def extra_loss(self, model, batch, outputs, ctx):
        extra = super().extra_loss(model, batch, outputs, ctx)
        self.log.append((ctx.stage, float(outputs.loss.detach()), 0.0 if extra is None else float(extra.detach())))
        return extra


def _pairs(tok, tag):
    return encode_pairs(tok, [{"user": f"{tag} question {i}?", "reply": f"{tag} answer {i}"} for i in range(8)], 64)


def _after_stage_1(tiny, **config):
    """(model, method, kw) after one stage of 4 steps on the tiny model, the second task's LoRA not yet added."""
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    torch.manual_seed(0)
    method = _Recording(OLoRA.Config(**config))
    method.log = []
    model = method.prepare(model, _ctx(0))
    kw = dict(epochs=1, batch_size=2, pad_id=tok.pad_token_id, device="cpu", precision="fp32", seed=0, desc="t")
    train_task(model, method, _pairs(tok, "first"), _ctx(1), **kw)
    method.after_task(model, _ctx(1))
    return model, method, kw


def _stage_2(model, method, tok, kw, **config):
    model, method = copy.deepcopy((model, method))
    if config:
        method.config = OLoRA.Config(**config)
    torch.manual_seed(1)  # the same new LoRA init and dropout masks whatever the config
    method.train_examples([], _ctx(2))
    method.log = []
    train = train_task(model, method, _pairs(tok, "second"), _ctx(2), **kw)
    return model, method, train


def test_penalty_at_init_does_not_swamp_a_task_loss_on_a_smollm2_shaped_stack():
    """SmolLM2-135M has 60 adapted modules (30 layers x q, v) of 576 inputs. At the reference's
    Kaiming-uniform init an entry of A_t A_i^T has a mean |.| of about 0.27 / sqrt(576), so a module
    adds about 0.27 * 64 / 24 = 0.71 per earlier task: the reference's sum over modules gives
    0.5 * 60 * 0.71 = 21 per earlier task (against a task loss of 2-5), the default mean 0.36."""
    torch.manual_seed(0)
    layers = []
    for _ in range(60):
        layer = TaskLoRALinear(nn.Linear(576, 1), r=8, alpha=32, dropout=0.1)
        layer.add_task()
        layer.add_task()
        layers.append(layer)
    method = OLoRA()
    method.layers = layers
    with torch.no_grad():
        default = method.penalty().item()
        assert 0.25 < default < 0.5, default
        method.config = OLoRA.Config(reduction="sum")
        assert method.penalty().item() == pytest.approx(60 * default)


def test_first_step_penalty_to_loss_ratio_at_stage_2_stays_between_5_and_35_percent(tiny):
    """At default settings the penalty is a visible but minor part of the first step of stage 2: on the
    tiny model (4 modules of 96 inputs, a task loss of about 5.4) it is about 0.5 * 1.75 / 5.4 = 0.16
    of the task loss (the reference's sum over modules: 0.65; on SmolLM2 the sum is 5-20x the loss)."""
    model, method, kw = _after_stage_1(tiny)
    _, method, _ = _stage_2(model, method, tiny[1], kw)
    stage, task_loss, penalty = method.log[0]
    assert stage == 2 and penalty > 0
    assert 0.05 <= penalty / task_loss <= 0.35, (penalty, task_loss)


def test_penalty_still_pushes_the_new_a_out_of_the_earlier_row_space(tiny):
    """Against lambda1 = 0 from the same state and the same new init, the default penalty lowers the
    share of A_2's energy in A_1's row space over 4 steps of stage 2 (a random A_2 has about 8 / 96)."""
    model, method, kw = _after_stage_1(tiny)
    shares = {}
    for lambda1 in (0.5, 0.0):
        _, trained, _ = _stage_2(model, method, tiny[1], kw, lambda1=lambda1)
        stats = trained.stats(_ctx(2))
        assert stats["overlap_share_final"] == pytest.approx(_mean_share(trained))
        shares[lambda1] = (stats["overlap_share_start"], stats["overlap_share_final"])
    assert shares[0.5][0] == shares[0.0][0]  # the same start
    assert shares[0.0][0] == pytest.approx(8 / 96, rel=0.5)
    assert shares[0.5][1] < 0.85 * shares[0.0][1], shares
    assert shares[0.5][1] < shares[0.5][0], shares


def _mean_share(method):
    """The share of A_t's squared Frobenius norm in the earlier rows' span, computed by projection."""
    out = []
    for layer in method.layers:
        earlier = torch.cat(list(layer.lora_A[:-1])).detach()
        projector = earlier.t() @ torch.linalg.pinv(earlier.t())
        current = layer.lora_A[-1].detach()
        out.append(((current @ projector).pow(2).sum() / current.pow(2).sum()).item())
    return sum(out) / len(out)


def test_stats_record_the_two_terms_their_ratio_and_the_overlap(tiny):
    model, method, kw = _after_stage_1(tiny)
    first = method.stats(_ctx(1))
    assert first["steps_recorded"] == 4 and first["penalty_mean"] == 0.0 and first["penalty_ratio_first"] == 0.0
    assert first["overlap_share_final"] is None and first["overlap_raw_final"] is None
    _, method, train = _stage_2(model, method, tiny[1], kw)
    stats = method.stats(_ctx(2))
    json.dumps(stats)
    keys = {"steps_recorded", "task_loss_first", "penalty_first", "penalty_ratio_first", "penalty_ratio_last",
            "task_loss_mean", "penalty_mean", "penalty_ratio_mean", "overlap_raw_start", "overlap_raw_final",
            "overlap_share_start", "overlap_share_final", "overlap_share_random"}
    assert keys <= set(stats) and all(isinstance(stats[k], (int, float)) for k in keys)
    losses, penalties = [x[1] for x in method.log], [x[2] for x in method.log]
    assert stats["steps_recorded"] == train["steps"] == len(losses) == 4
    assert stats["task_loss_first"] == pytest.approx(losses[0]) and stats["penalty_first"] == pytest.approx(penalties[0])
    assert stats["task_loss_first"] + stats["penalty_first"] == pytest.approx(train["loss_first"], rel=1e-5)
    assert stats["penalty_ratio_first"] == pytest.approx(penalties[0] / losses[0])
    assert stats["penalty_ratio_last"] == pytest.approx(penalties[-1] / losses[-1])
    assert stats["task_loss_mean"] == pytest.approx(sum(losses) / 4)
    assert stats["penalty_ratio_mean"] == pytest.approx(sum(penalties) / sum(losses))
    # the first step's penalty is lambda1 times the raw overlap before any update (the mean over modules)
    assert stats["penalty_first"] == pytest.approx(0.5 * stats["overlap_raw_start"], rel=1e-5)
    assert stats["overlap_share_random"] == pytest.approx(8 / 96)
