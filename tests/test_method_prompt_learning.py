"""prompt_tuning, prefix_tuning, p_tuning_v2: the harness's cached and batched scorers give what a
plain full forward gives on a model with non-trivial virtual tokens, and a checkpoint restores them."""
import copy

import pytest
import torch

from harness.model.scoring import cloze_scores, generate, letter_choices, letter_token_ids, reply_logprob
from harness.run.checkpoints import Checkpoints
from methods.adafactor import Adafactor
from methods.base import StageContext
from methods.prompt_learning import PrefixTuning, PromptTuning, PTuningV2
from tasks.chat import encode_example, prompt_ids, reply_ids
from tasks.items import MCItem

METHODS = {"prompt_tuning": PromptTuning(PromptTuning.Config(num_virtual_tokens=7)),
           "prefix_tuning": PrefixTuning(PrefixTuning.Config(num_virtual_tokens=5, hidden=32)),
           "p_tuning_v2": PTuningV2(PTuningV2.Config(num_virtual_tokens=6))}
ITEM = MCItem(uid="x", question="Which planet is the largest?", options=("Mars", "Jupiter", "a moon", "Venus or Earth"),
              answer=1, source="test")
LONGER = MCItem(uid="y", question="Which of these oceans is the largest by surface area, marginal seas included?",
                options=("The Atlantic Ocean", "Pacific", "Indian", "The Arctic Ocean, the smallest of them"), answer=1,
                source="test")


def _prepared(tiny, name, seed=0):
    torch.manual_seed(seed)
    model = METHODS[name].prepare(copy.deepcopy(tiny[0]), StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    with torch.no_grad():  # trained-looking virtual tokens: large enough to change every prediction
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    model.eval()
    return model


def _last_logprobs(model, ids: list[int], n: int) -> torch.Tensor:
    """Log-probabilities predicting the last n tokens of ids, from one forward without cache or logits_to_keep
    (a prompt-tuned model returns logits for its virtual tokens too, so positions count from the end)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return logits[-(n + 1):-1].float().log_softmax(-1)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_cached_cloze_letter_and_reply_scores_equal_a_full_forward(tiny, name):
    model, tok = _prepared(tiny, name), tiny[1]
    expected = []
    for item in (ITEM, LONGER):
        prefix = prompt_ids(tok, item.cloze_prompt())
        scores = []
        for option in item.options:
            ids = reply_ids(tok, option)
            lp = _last_logprobs(model, prefix + ids, len(ids))
            scores.append(sum(lp[j, t].item() for j, t in enumerate(ids)))
        expected.append(scores)
    # one batch of two questions of different lengths: a right-padded row and a shared cached prefix
    got = cloze_scores(model, tok, [ITEM, LONGER], "cpu", "fp32", batch_size=2)
    for item, scored, scores in zip((ITEM, LONGER), got, expected):
        assert [n for _, n in scored] == [len(reply_ids(tok, o)) for o in item.options]
        assert [s for s, _ in scored] == pytest.approx(scores, abs=1e-4)
    got = got[0]

    with torch.no_grad():  # the virtual tokens matter: the base model scores otherwise
        base = cloze_scores(tiny[0], tok, [ITEM], "cpu", "fp32")[0]
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, base)) > 0.1

    enc = encode_example(tok, ITEM.cloze_prompt(), "Jupiter", 256)
    n = sum(1 for x in enc["labels"] if x != -100)
    lp = _last_logprobs(model, enc["input_ids"], n)
    mean = lp.gather(-1, torch.tensor(enc["labels"][-n:]).unsqueeze(-1)).mean().item()
    assert reply_logprob(model, tok, [(ITEM.cloze_prompt(), "Jupiter")], "cpu", "fp32", 256) == \
        pytest.approx([mean], abs=1e-4)

    chosen = []
    for item in (ITEM, LONGER):
        with torch.no_grad():
            last = model(input_ids=torch.tensor([prompt_ids(tok, item.letter_prompt())])).logits[0, -1]
        chosen.append(int(last[letter_token_ids(tok)[:len(item.options)]].argmax()))
    assert letter_choices(model, tok, [ITEM, LONGER], "cpu", "fp32", batch_size=2) == chosen


@pytest.mark.parametrize("name", sorted(METHODS))
def test_batched_generation_equals_greedy_full_forwards(tiny, name):
    model, tok = _prepared(tiny, name), tiny[1]
    prompts = ["Hi", "Write a function that adds two numbers and returns their sum."]
    replies = generate(model, tok, prompts, "cpu", "fp32", max_new_tokens=6, batch_size=2)
    for prompt, reply in zip(prompts, replies):
        ids, new = prompt_ids(tok, prompt), []
        for _ in range(6):
            with torch.no_grad():
                token = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            if token == tok.eos_token_id:
                break
            new.append(token)
        assert reply["ids"] == new


@pytest.mark.parametrize("name", sorted(METHODS))
def test_checkpoint_restores_the_virtual_tokens(tiny, tmp_path, name):
    trained, fresh = _prepared(tiny, name, seed=1), _prepared(tiny, name, seed=2)
    ids = torch.tensor([prompt_ids(tiny[1], ITEM.cloze_prompt())])
    with torch.no_grad():
        before, other = trained(input_ids=ids).logits, fresh(input_ids=ids).logits
    assert not torch.allclose(before, other)
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save("run", 1, trained)
    checkpoints.restore("run", 1, fresh)
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids).logits, before)


def test_prompt_tuning_trains_with_the_papers_adafactor(tiny):
    """Lester et al. train the prompt with Adafactor (lr 0.3, second-moment decay 0.8, weight decay 1e-5);
    the harness's training loop takes the method's optimiser, and one stage moves the prompt."""
    from harness.run.training import train_task

    method = PromptTuning(PromptTuning.Config(num_virtual_tokens=7))
    model = _prepared(tiny, "prompt_tuning")
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = method.optimiser(params, "cpu")
    assert isinstance(optimiser, Adafactor)  # t5x's, as the reference runs it (the tests below)
    group = optimiser.param_groups[0]
    assert (group["lr"], group["decay_rate"], group["weight_decay_rate"]) == (0.3, 0.8, 1e-5)
    assert isinstance(METHODS["prefix_tuning"].optimiser(params, "cpu"), torch.optim.AdamW)
    tok = tiny[1]
    before = [p.detach().clone() for p in params]
    examples = [encode_example(tok, ITEM.cloze_prompt(), ITEM.target(), 64)] * 2
    ctx = StageContext(stage=1, task=None, seen=[], device="cpu", seed=0)
    train_task(model, method, examples, ctx, epochs=1, batch_size=2, pad_id=tok.pad_token_id, device="cpu",
               precision="fp32", seed=0, desc="adafactor")
    assert any(not torch.equal(b, p) for b, p in zip(before, params))


def _t5x_update(w, g, v, t, lr, decay_rate=0.8, wd=0.0, eps1=1e-30, clip=1.0, factor_least=128):
    """t5x/adafactor.py's apply_param_gradient (multiply_by_parameter_scale False, no momentum), in numpy."""
    import numpy as np

    beta = 1.0 - t ** (-decay_rate)
    sq = g * g + eps1
    order = np.argsort(w.shape)
    if w.ndim == 2 and w.shape[order[-2]] >= factor_least:
        d1, d0 = int(order[-2]), int(order[-1])
        if v is None:
            v = (np.zeros(np.delete(w.shape, d0)), np.zeros(np.delete(w.shape, d1)))
        v = (beta * v[0] + (1 - beta) * sq.mean(axis=d0), beta * v[1] + (1 - beta) * sq.mean(axis=d1))
        row = (v[0] / v[0].mean(axis=d1 - (d0 < d1), keepdims=True)) ** -0.5
        y = g * np.expand_dims(row, d0) * np.expand_dims(v[1] ** -0.5, d1)
    else:
        v = beta * (0.0 if v is None else v) + (1 - beta) * sq
        y = g * v ** -0.5
    y = y / max(1.0, np.sqrt((y * y).mean()) / clip)
    return (1.0 - wd) * w - lr * y, v


@pytest.mark.parametrize("shape", [(100, 24), (160, 130)])  # a prompt's full second moment; a factored one
def test_prompt_tunings_adafactor_is_t5xs(shape):
    import numpy as np

    torch.manual_seed(0)
    w = torch.nn.Parameter(0.01 * torch.randn(shape))
    opt = METHODS["prompt_tuning"].optimiser([w], "cpu")
    ref = w.detach().double().numpy().copy()
    v = None
    for t in range(1, 6):
        g = torch.randn(shape) * (t if t % 2 else 0.1)
        w.grad = g.clone()
        opt.step()
        ref, v = _t5x_update(ref, g.double().numpy(), v, t, lr=0.3, wd=1e-5)
        assert np.allclose(w.detach().numpy(), ref, rtol=1e-5, atol=1e-6), t


def test_prompt_tunings_step_is_absolute_not_scaled_by_the_prompts_size():
    """The paper's lr 0.3 is a step size (t5x, multiply_by_parameter_scale=False): the first step moves every
    entry by 0.3 whatever the prompt's scale (torch.optim.Adafactor would move it by 0.3 x its RMS)."""
    w = torch.nn.Parameter(0.001 * torch.randn(100, 24))
    before = w.detach().clone()
    opt = METHODS["prompt_tuning"].optimiser([w], "cpu")
    w.grad = torch.randn(100, 24)
    opt.step()
    step = (1 - 1e-5) * before - w.detach()
    assert torch.allclose(step.abs(), torch.full_like(step, 0.3), rtol=1e-5)


def test_p_tuning_v2s_prefix_starts_at_the_models_init_scale(tiny):
    """The reference re-initialises its prefix with the model's _init_weights (N(0, initializer_range)), not
    nn.Embedding's N(0, 1), so the untrained prefix moves the model's predictions far less."""
    method = PTuningV2(PTuningV2.Config())
    torch.manual_seed(0)
    model = method.prepare(copy.deepcopy(tiny[0]), StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    weight = next(iter(model.prompt_encoder.values())).embedding.weight
    assert weight.std().item() == pytest.approx(model.config.initializer_range, rel=0.05)


def _encoder(tiny, method):
    torch.manual_seed(0)
    model = method.prepare(copy.deepcopy(tiny[0]), StageContext(stage=0, task=None, seen=[], device="cpu", seed=0))
    return model, next(iter(model.prompt_encoder.values()))


def test_the_defaults_build_what_each_source_builds(tiny):
    """The sources' structures at the defaults (a changed default passed every other test): prefix tuning's prefix
    comes from an MLP 512 wide over 10 positions (Li & Liang's reparameterisation), P-tuning v2 trains 16 positions
    directly with no MLP, and prompt tuning's 100 prompt rows start as rows of the vocabulary's embeddings."""
    cfg = tiny[0].config
    layers, width = cfg.num_hidden_layers, cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    _, prefix = _encoder(tiny, PrefixTuning(PrefixTuning.Config()))
    assert prefix.embedding.weight.shape[0] == 10
    linear = [m for m in prefix.transform if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear][0] == 512 and linear[-1].out_features == layers * 2 * width
    _, v2 = _encoder(tiny, PTuningV2(PTuningV2.Config()))
    assert not hasattr(v2, "transform") or v2.transform is None
    assert v2.embedding.weight.shape == (16, layers * 2 * width)
    model, prompt = _encoder(tiny, PromptTuning(PromptTuning.Config()))
    rows = prompt.embedding.weight
    vocab = model.get_input_embeddings().weight
    assert rows.shape[0] == 100 and all(bool((vocab == row).all(dim=1).any()) for row in rows)
