"""MoE-LoRA (LoRAMoE): router weights are a distribution, zero-initialised B leaves the model exactly
the base model (logits, cached cloze scoring, generation), and the balancing term is minimal (0)
for a uniform router."""
import copy

import torch
from torch import nn

from harness.checkpoints import Checkpoints
from harness.scoring import cloze_scores, generate
from methods.base import StageContext
from methods.moe_lora import MoELoRA, MoELoRALinear, balance_term
from tasks.items import MCItem

CTX = StageContext(stage=0, task=None, seen=[], device="cpu", seed=0)


def test_router_weights_sum_to_one():
    layer = MoELoRALinear(nn.Linear(6, 5), experts=4, r=2, alpha=4, dropout=0.0)
    g = layer.route(torch.randn(3, 7, 6))
    assert g.shape == (3, 7, 4) and (g >= 0).all()
    assert torch.allclose(g.sum(-1), torch.ones(3, 7))


def test_zero_b_gives_the_base_model_exactly(tiny):
    base, tok = tiny
    method = MoELoRA()
    model = method.prepare(copy.deepcopy(base), CTX).eval()
    assert len(method.layers) == 3 * base.config.num_hidden_layers  # gate, up and down of every block
    ids = torch.randint(0, 200, (2, 12))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, base(input_ids=ids).logits)
    item = MCItem(uid="x", question="Which is a colour?", options=("red", "seven", "walk", "soft"), answer=0,
                  source="test")
    assert cloze_scores(model, tok, [item], "cpu", "fp32")[0] == cloze_scores(base, tok, [item], "cpu", "fp32")[0]
    prompts = ["Say hello.", "Count to three."]
    assert generate(model, tok, prompts, "cpu", "fp32", 8) == generate(base, tok, prompts, "cpu", "fp32", 8)
    with torch.no_grad():  # and the experts do act once B moves
        method.layers[0].lora_B.fill_(0.5)
        assert not torch.equal(model(input_ids=ids).logits, base(input_ids=ids).logits)


def test_balance_term_is_zero_for_a_uniform_router_and_positive_otherwise():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # samples of unequal length
    uniform = torch.full((2, 4, 4), 0.25)
    assert balance_term(uniform, mask).item() == 0.0
    skewed = torch.softmax(torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(0)) * 3, -1)
    assert balance_term(skewed, mask).item() > 0.01


def test_extra_loss_collects_each_layers_router_weights(tiny):
    base, _ = tiny
    method = MoELoRA(MoELoRA.Config(balance_weight=1.0))
    model = method.prepare(copy.deepcopy(base), CTX).train()
    batch = {"input_ids": torch.randint(0, 200, (2, 10)), "attention_mask": torch.ones(2, 10, dtype=torch.long)}
    for layer in method.layers:  # a zero router is uniform: the term is 0
        nn.init.zeros_(layer.router.weight)
    assert method.extra_loss(model, batch, model(**batch), CTX).item() == 0.0
    for layer in method.layers:
        nn.init.normal_(layer.router.weight, std=1.0)
    loss = method.extra_loss(model, batch, model(**batch), CTX)
    assert loss.item() > 0
    loss.backward()
    assert all(layer.router.weight.grad is not None for layer in method.layers)
    assert all(layer.last_weights is None for layer in method.layers)  # released after use


def test_a_stage_checkpoint_restores_experts_and_routers(tiny, tmp_path):
    base, _ = tiny
    trained = MoELoRA().prepare(copy.deepcopy(base), CTX).eval()
    with torch.no_grad():
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)  # stands in for training
    Checkpoints(tmp_path).save("run", 1, trained)
    fresh = MoELoRA().prepare(copy.deepcopy(base), CTX).eval()  # what a resumed run builds
    Checkpoints(tmp_path).restore("run", 1, fresh)
    ids = torch.randint(0, 200, (2, 12))
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids).logits, trained(input_ids=ids).logits)
        assert not torch.equal(fresh(input_ids=ids).logits, base(input_ids=ids).logits)
