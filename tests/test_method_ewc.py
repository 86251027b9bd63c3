"""EWC's Fisher and penalty on the tiny model: the Fisher is the model's own (sampled-label) Fisher, per
example, and stays large after the task is memorised (where the empirical Fisher, the bug that made ewc a
copy of full, goes to ~0); at the default lambda the penalty's gradient is a real share of the new task's."""
import copy

import pytest
import torch

from harness.run.training import batch_loss, collate
from methods.base import StageContext
from methods.ewc import EWC
from tasks.chat import IGNORE, encode_example
from tasks.items import MCItem
from tasks.registry import Task

FIRST = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
SECOND = ["paris", "rome", "oslo", "lima", "cairo", "tokyo", "delhi", "quito"]


def _task(name, words, n=8):
    items = [MCItem(uid=f"{name}/{i}", question=f"{name} question {i}?",
                    options=tuple(words[(i + j) % 8] for j in range(4)), answer=i % 4, source="test") for i in range(n)]
    return Task(name, "mc", items, {"recall": items})


def _encoded(tok, task):
    return [encode_example(tok, p["user"], p["reply"], 128) for p in (i.training_pair() for i in task.learn)]


def _ctx(tok, task, stage, seed=0, one_batch=False):
    """one_batch: every example in one padded batch, whatever batch size is asked for."""
    def batches(pairs, batch_size=None):
        enc = [encode_example(tok, p["user"], p["reply"], 128) for p in pairs]
        size = len(enc) if one_batch else (batch_size or 2)
        for i in range(0, len(enc), size):
            yield collate(enc[i:i + size], tok.pad_token_id, "cpu")
    return StageContext(stage=stage, task=task, seen=[], device="cpu", seed=seed, batches=batches)


def _label_loss(model, tok, task):
    with torch.no_grad():
        return model(**collate(_encoded(tok, task), tok.pad_token_id, "cpu")).loss.item()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model gains nothing from threads, and on a loaded machine two threads made a step 50x slower
    (measured 1.8 s against 0.04 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def memorised(tiny, one_thread):
    """The tiny model after 80 full-batch AdamW steps (lr 3e-3) on the first task: label loss 0.015."""
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    task = _task("first", FIRST)
    batch = collate(_encoded(tok, task), tok.pad_token_id, "cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(80):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    assert _label_loss(model, tok, task) < 0.05
    return model, tok, task


def _norm_weight_fishers(model, tok, task):
    """(exact, empirical) Fisher of the final RMSNorm weight, mean over the task's reply tokens. exact:
    E_{y ~ p}[(d log p(y) / dw)^2] in closed form (logits = E (w * n), E the tied embedding, n the normalised
    hidden state, so d log p(y) / dw = n * (E_y - sum_v p_v E_v)); empirical: the same at the training label."""
    seen = {}
    hook = model.model.norm.register_forward_hook(lambda m, inputs, out: seen.__setitem__("h", inputs[0]))
    E, eps = model.lm_head.weight.detach().float(), model.model.norm.variance_epsilon
    exact, empirical, tokens = 0.0, 0.0, 0
    try:
        for ex in _encoded(tok, task):
            ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor(ex["labels"])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, :-1].float()
            at = labels[1:] != IGNORE
            h = seen["h"][0, :-1][at].float()
            n = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
            p = torch.softmax(logits[at], -1)
            mean_e = p @ E
            spread = p @ E.pow(2) - mean_e.pow(2)  # sum_y p_y (E_y - mean)^2, per coordinate
            exact = exact + (n.pow(2) * spread).sum(0)
            empirical = empirical + ((n * (E[labels[1:][at]] - mean_e)).sum(0)).pow(2)  # per example, summed tokens
            tokens += int(at.sum())
    finally:
        hook.remove()
    return exact / tokens, empirical / tokens


def _norm_index(method, model):
    return next(k for k, p in enumerate(method.params) if p is model.model.norm.weight)


def test_fisher_is_the_models_own_fisher_and_not_near_zero_after_memorising(memorised):
    """The estimate matches the closed-form Fisher of the model's own distribution (mean over reply tokens)
    for the final norm weight (averaged over 16 seeds of draws); the empirical Fisher at the memorised labels, which the
    old estimator squared (and averaged over a batch first), is more than 10x smaller there."""
    model, tok, task = memorised
    exact, empirical = _norm_weight_fishers(model, tok, task)
    assert exact.sum() > 10 * empirical.sum()  # the premise: memorised, the empirical Fisher has vanished (24x)
    estimates = []
    for seed in range(16):
        method = EWC()
        method.prepare(model, _ctx(tok, None, 0))
        method.after_task(model, _ctx(tok, task, 1, seed=seed))
        estimates.append(method.fisher[_norm_index(method, model)])
    estimate = torch.stack(estimates).mean(0)
    assert 0.5 < (estimate.sum() / exact.sum()).item() < 2  # measured 0.95; the old estimator: 0.005
    assert torch.corrcoef(torch.stack([estimate, exact]))[0, 1] > 0.7  # the same coordinates carry it (measured 0.92)
    stats = method.stats(None)
    tokens = sum(sum(v != IGNORE for v in ex["labels"][1:]) for ex in _encoded(tok, task))
    assert stats["fisher_tokens"] == tokens and stats["fisher_examples"] == len(task.learn)
    assert stats["fisher_mean"] > 0 and stats["fisher_max"] >= stats["fisher_mean"]


def test_fisher_is_per_example_whatever_the_batching(memorised):
    """One backward pass per example: the same Fisher whether the context hands the examples over one by one
    or all in one padded batch (squaring a batch's gradient would differ)."""
    model, tok, task = memorised
    fishers = []
    for one_batch in (False, True):
        method = EWC()
        method.prepare(model, _ctx(tok, None, 0))
        method.after_task(model, _ctx(tok, task, 1, one_batch=one_batch))
        fishers.append(method.fisher)
    for a, b in zip(*fishers):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-12)


def test_penalty_gradient_is_a_real_share_of_the_task_gradient_at_the_default_lambda(memorised):
    """After the memorised task and 12 training steps on a new one (the harness's loss, penalty included;
    lr 1e-3, at which the tiny model learns the new task), the penalty's gradient norm at the default lambda
    is between 0.1 and 10 times the new task's label-loss gradient norm, and training with it keeps more
    of the first task than full fine-tuning does."""
    base, tok, first = memorised
    second = _task("second", SECOND)
    batch_all = collate(_encoded(tok, second), tok.pad_token_id, "cpu")
    kept = {}
    for lam in (0.0, None):
        model = copy.deepcopy(base)
        method = EWC() if lam is None else EWC(EWC.Config(ewc_lambda=lam))
        method.prepare(model, _ctx(tok, None, 0))
        method.after_task(model, _ctx(tok, first, 1))
        ctx = _ctx(tok, second, 2)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
        enc = _encoded(tok, second)
        model.train()
        for step in range(12):
            batch = collate([enc[(4 * step + k) % len(enc)] for k in range(4)], tok.pad_token_id, "cpu")
            batch_loss(model, method, batch, ctx).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad()
        model.eval()
        if lam is None:
            task_grads = torch.autograd.grad(model(**batch_all).loss, params, allow_unused=True)
            penalty_grads = torch.autograd.grad(method.penalty(), params, allow_unused=True)
            norm = lambda gs: torch.sqrt(sum((g ** 2).sum() for g in gs if g is not None)).item()  # noqa: E731
            ratio = norm(penalty_grads) / norm(task_grads)
            assert 0.1 < ratio < 10, ratio  # measured 0.34; the old ewc (lambda 100, empirical batch Fisher): 7e-5
            method.after_task(model, ctx)
            stats = method.stats(None)
            assert stats["penalty_grad_norm"] == pytest.approx(norm(penalty_grads), rel=1e-3)
            assert stats["penalty_last"] > 0 and stats["penalty_mean"] > 0 and stats["drift_norm"] > 0
        kept[lam] = _label_loss(model, tok, first)
        assert _label_loss(model, tok, second) < 0.9 * _label_loss(base, tok, second)  # it does learn the new task
    assert kept[None] < kept[0.0]  # forgets less of the first task than with no penalty


def test_penalty_is_zero_at_the_anchor_and_exactly_quadratic(memorised):
    model, tok, task = memorised
    model = copy.deepcopy(model)
    method = EWC(EWC.Config(ewc_lambda=3.0))
    method.prepare(model, _ctx(tok, None, 0))
    method.after_task(model, _ctx(tok, task, 1))
    penalty = method.penalty()
    assert penalty.item() == 0.0
    grads = torch.autograd.grad(penalty, method.params)
    assert all(g.abs().max() == 0 for g in grads)
    direction = [torch.randn(p.shape, generator=torch.Generator().manual_seed(k)) for k, p in enumerate(method.params)]
    values = []
    for scale in (1e-3, 2e-3):
        with torch.no_grad():
            for p, a, d in zip(method.params, method.anchor, direction):
                p.copy_(a + scale * d)
        values.append(method.penalty().item())
    expected = 3.0 / 2 * sum((f * (1e-3 * d) ** 2).sum() for f, d in zip(method.fisher, direction)).item()
    assert values[0] == pytest.approx(expected, rel=1e-3)
    assert values[1] == pytest.approx(4 * values[0], rel=1e-3)


def test_online_fisher_decays_earlier_tasks_by_gamma(memorised):
    model, tok, first = memorised
    second = _task("second", SECOND)
    method = EWC(EWC.Config(gamma=0.5))
    method.prepare(model, _ctx(tok, None, 0))
    method.after_task(model, _ctx(tok, first, 1))
    earlier = [f.clone() for f in method.fisher]
    new, _, _ = method.estimate_fisher(model, _ctx(tok, second, 2))
    method.after_task(model, _ctx(tok, second, 2))
    for f, e, n in zip(method.fisher, earlier, new):
        torch.testing.assert_close(f, 0.5 * e + n)
