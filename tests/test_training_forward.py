"""The training forward computes the LM head only where a label is predicted (harness.run.training.forward): for
every registered method, after its `prepare`, the loss and the trainable parameters' gradients equal those of
the plain full-logits forward; a hook that reads every position's logits without declaring it gets a clear
error, and one that declares Needs(full_logits=True) gets them."""
import copy

import pytest
import torch

from harness.run.training import collate, forward
from methods.base import Needs, StageContext
from methods.full import FullFineTune
from methods.registry import available, resolve_method
from tasks.chat import IGNORE, encode_pairs

PAIRS = [{"user": "What is the capital of France?", "reply": "Paris, on the Seine."},
         {"user": "2 + 2?", "reply": "4"},
         {"user": "Name a prime number larger than ten, please.", "reply": "Thirteen is one."}]
TINY = {"llama_pro": {"every": 1}}  # the tiny model has 2 blocks


def _batch(tok):
    return collate(encode_pairs(tok, PAIRS, 64), tok.pad_token_id, "cpu")


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("name", sorted(available()))
def test_labelled_logits_give_the_full_forward_loss_and_gradients(name, tiny, data_dir):
    from tasks.data import DataSource

    base, tok = tiny
    cls = resolve_method(name)
    method = cls(cls.Config(**TINY.get(name, {})))
    ctx = StageContext(stage=0, task=None, seen=[], device="cpu", seed=0, tokenizer=tok, data=DataSource(str(data_dir)))
    torch.manual_seed(0)
    model = method.prepare(copy.deepcopy(base), ctx)
    model.eval()  # dropout off: both forwards see the same network
    batch = _batch(tok)
    full = model(**batch).loss  # transformers' causal-LM loss over every position's logits
    full.backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    outputs = forward(model, method, batch)
    outputs.loss.backward()
    assert outputs.loss.item() == pytest.approx(full.item(), rel=1e-5)
    got = _grads(model)
    assert got.keys() == expected.keys() and got
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-4, atol=1e-6, msg=n)
    labelled = int((batch["labels"][:, 1:] != IGNORE).sum())
    if not method.needs.full_logits:
        assert outputs.label_logits.shape[0] == labelled < batch["input_ids"].numel()


def test_reading_every_positions_logits_needs_the_declaration(tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    batch = _batch(tok)
    with pytest.raises(AttributeError, match=r"Needs\(full_logits=True\)"):
        forward(model, FullFineTune(), batch).logits

    class Reader(FullFineTune):
        needs = Needs(full_logits=True)

    outputs = forward(model, Reader(), batch)
    assert outputs.logits.shape == (*batch["input_ids"].shape, model.config.vocab_size)
    assert torch.equal(outputs.label_logits, outputs.logits[:, :-1][batch["labels"][:, 1:] != IGNORE])


def test_a_methods_own_wrapper_module_gets_the_full_forward(tiny):
    """A method may wrap the model in a module of its own, which has no output embeddings to hook: the loss is
    then taken from every position's logits, and equals the model's own."""
    model, tok = copy.deepcopy(tiny[0]), tiny[1]

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kwargs):
            return self.inner(**kwargs)

    batch = _batch(tok)
    outputs = forward(Wrapper(model), FullFineTune(), batch)
    assert outputs.loss.item() == pytest.approx(model(**batch).loss.item(), rel=1e-6)
    assert outputs.logits.shape[:2] == batch["input_ids"].shape
