"""Selective tokens: the mask drops the tokens the base model already predicts confidently, the
label loss changes accordingly, the excess-loss option keeps the top share, and the harness's loss
without token weights is transformers' causal-LM loss."""
import copy
from types import SimpleNamespace

import pytest
import torch

from harness.run.training import LabelOutputs, batch_loss, collate
from methods.base import StageContext
from methods.full import FullFineTune
from methods.selective_tokens import SelectiveTokens, confident_mask, excess_mask, token_logprobs
from tasks.chat import IGNORE, encode_pairs

CTX = StageContext(stage=1, task=None, seen=[], device="cpu", seed=0)


def test_confident_mask_drops_tokens_the_base_model_already_predicts():
    labels = torch.tensor([[IGNORE, 1, 2, 3, IGNORE]])
    logits = torch.zeros(1, 5, 4)
    logits[0, 0, 1] = 10.0  # position 0 predicts labels[1] = 1 with p ~ 0.9999: confident
    logits[0, 1, 2] = 1.0  # labels[2] = 2 with p ~ 0.48: not confident
    logits[0, 2, 0] = 10.0  # labels[3] = 3 with p ~ 0.00005: wrong, so new knowledge
    base = token_logprobs(logits, labels)
    assert base[0, 1].exp().item() > 0.99 and base[0, 0].item() == 0.0
    assert confident_mask(base, labels, 0.9).tolist() == [[0.0, 0.0, 1.0, 1.0, 0.0]]
    assert confident_mask(base, labels, 0.3).tolist() == [[0.0, 0.0, 0.0, 1.0, 0.0]]


def test_excess_mask_keeps_the_top_share_by_current_minus_base_loss():
    labels = torch.tensor([[IGNORE, 5, 5, 5, 5, 5]])
    base = torch.tensor([[0.0, -1.0, -1.0, -1.0, -1.0, -1.0]])
    current = torch.tensor([[0.0, -1.0, -4.0, -2.0, -9.0, -0.5]])  # excess losses 0, 3, 1, 8, -0.5
    assert excess_mask(current, base, labels, 0.4).tolist() == [[0.0, 0.0, 1.0, 0.0, 1.0, 0.0]]
    assert excess_mask(current, base, labels, 0.0).sum().item() == 0.0


def test_weighted_loss_equals_the_plain_loss_for_unit_weights_and_drops_masked_tokens(tiny):
    model, tok = tiny
    batch = collate(encode_pairs(tok, [{"user": "a?", "reply": "yes it is"}, {"user": "bb?", "reply": "no"}], 64),
                    tok.pad_token_id, "cpu")
    with torch.no_grad():
        out = model(**batch)
    labels = batch["labels"]
    at = labels[:, 1:] != IGNORE
    ones = (labels != IGNORE).float()
    label_outputs = LabelOutputs(out.logits[:, :-1][at], labels[:, 1:][at], at)
    assert label_outputs.loss.item() == pytest.approx(out.loss.item(), rel=1e-6)
    assert label_outputs.weighted_loss(ones).item() == pytest.approx(out.loss.item(), rel=1e-5)
    # dropping all but one reply token: the loss is that token's loss alone
    keep = torch.zeros_like(ones)
    b, t = (labels != IGNORE).nonzero()[0].tolist()
    keep[b, t] = 1.0
    single = -token_logprobs(out.logits, labels)[b, t]
    assert label_outputs.weighted_loss(keep).item() == pytest.approx(single.item(), rel=1e-5)
    loss = batch_loss(model, FullFineTune(), batch, CTX)  # no weights: the causal-LM loss, from labelled logits only
    assert loss.item() == pytest.approx(out.loss.item(), rel=1e-6)


class _FixedLogits(torch.nn.Module):
    """A hand-made base model: returns the logits it was given."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=self.logits)


def test_the_default_is_rho1_excess_selection_under_its_citation():
    config = SelectiveTokens.Config()
    assert (config.mode, config.keep_ratio) == ("excess", 0.6) and "Rho-1" in SelectiveTokens.citation


def test_selective_loss_differs_from_the_plain_loss_by_the_dropped_tokens(tiny):
    base, tok = tiny
    method = SelectiveTokens(SelectiveTokens.Config(mode="confidence"))
    model = method.prepare(copy.deepcopy(base), CTX)
    batch = collate(encode_pairs(tok, [{"user": "a?", "reply": "yes it is"}, {"user": "bb?", "reply": "no"}], 64),
                    tok.pad_token_id, "cpu")
    labels = batch["labels"]
    with torch.no_grad():
        out = model(**batch)
    reply = labels != IGNORE
    assert method.token_weights(model, batch, out, CTX).bool().equal(reply)  # random base: nothing confident
    # a base model that predicts two of the reply tokens with p ~ 1
    base_logits = out.logits.clone()
    confident = reply.nonzero()[[0, 2]].tolist()
    for b, t in confident:
        base_logits[b, t - 1, labels[b, t]] = 100.0
    method.teacher = _FixedLogits(base_logits)
    weights = method.token_weights(model, batch, out, CTX)
    expected_kept = reply.clone()
    for b, t in confident:
        expected_kept[b, t] = False
    assert torch.equal(weights.bool(), expected_kept)
    loss = batch_loss(model, method, batch, CTX)
    per_token = -token_logprobs(out.logits, labels)
    assert loss.item() == pytest.approx(per_token[expected_kept].mean().item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(per_token[reply].mean().item(), rel=1e-5)
    assert loss.item() != pytest.approx(out.loss.item(), rel=1e-4)
    n = int(reply.sum())  # three weightings so far: all n kept, then n - 2 twice
    assert method.stats(CTX) == {"reply_tokens": 3 * n, "reply_tokens_trained": 3 * n - 4,
                                 "trained_share": (3 * n - 4) / (3 * n)}
    assert method.stats(CTX)["reply_tokens"] == 0  # counted per stage


def test_excess_mode_trains_on_the_configured_share_of_reply_tokens(tiny):
    base, tok = tiny
    method = SelectiveTokens(SelectiveTokens.Config(mode="excess", keep_ratio=0.5))
    model = method.prepare(copy.deepcopy(base), CTX)
    batch = collate(encode_pairs(tok, [{"user": "a?", "reply": "yes it is"}, {"user": "bb?", "reply": "no way"}], 64),
                    tok.pad_token_id, "cpu")
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)  # the current model now differs from its base copy
        out = model(**batch)
    reply = batch["labels"] != IGNORE
    weights = method.token_weights(model, batch, out, CTX)
    assert weights.sum().item() == round(0.5 * int(reply.sum())) and not weights[~reply].any()
    excess = (token_logprobs(method.teacher(**batch).logits, batch["labels"])
              - token_logprobs(out.logits, batch["labels"]))[reply]
    kept = excess[weights[reply].bool()]
    assert kept.min() >= excess[~weights[reply].bool()].max()  # the kept tokens have the largest excess loss
