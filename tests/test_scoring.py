"""Scorers: the KV-cached cloze equals a plain full forward per option; generation reports stops."""
import pytest
import torch

from harness.model.scoring import _prompt_batches, _shared_length, cloze_choices, cloze_scores, generate, letter_choices, \
    reply_logprob
from tasks.chat import prompt_ids, reply_ids
from tasks.items import MCItem

ITEM = MCItem(uid="t", question="Which planet is known as the red planet?",
              options=("Venus", "Mars, the fourth planet", "Jupiter", "A"), answer=1, source="test")


def _naive(model, tok, item):
    out = []
    prefix = prompt_ids(tok, item.cloze_prompt())
    for o in item.options:
        opt = reply_ids(tok, o)
        ids = torch.tensor([prefix + opt])
        with torch.no_grad():
            logp = model(input_ids=ids).logits[0].log_softmax(-1)
        out.append(sum(logp[len(prefix) - 1 + j, t].item() for j, t in enumerate(opt)))
    return out


def test_cached_cloze_equals_full_forward(tiny):
    model, tok = tiny
    cached = [total for total, _ in cloze_scores(model, tok, [ITEM], "cpu", "fp32")[0]]
    assert cached == pytest.approx(_naive(model, tok, ITEM), abs=1e-4)


ITEMS = [ITEM, MCItem(uid="u", question="2+2?", options=("3", "4", "5", "22"), answer=1, source="test"),
         MCItem(uid="v", question="Which ocean is the largest on Earth by surface area, counting its marginal seas?",
                options=("Atlantic", "The Pacific Ocean", "Indian, south of Asia", "Arctic"), answer=1, source="test")]


def test_a_batch_of_questions_scores_as_full_forwards(tiny):
    model, tok = tiny
    batched = cloze_scores(model, tok, ITEMS, "cpu", "fp32", batch_size=3)  # padded rows, one shared prefix
    for item, scored in zip(ITEMS, batched):
        assert [n for _, n in scored] == [len(reply_ids(tok, o)) for o in item.options]
        assert [t for t, _ in scored] == pytest.approx(_naive(model, tok, item), abs=1e-4)
    flat = [x for scored in batched for pair in scored for x in pair]
    cut = cloze_scores(model, tok, ITEMS, "cpu", "fp32", batch_size=2)  # batches cut elsewhere: same, in order
    assert [x for scored in cut for pair in scored for x in pair] == pytest.approx(flat, abs=1e-4)


def test_options_scored_in_chunks_equal_one_call(tiny, monkeypatch):
    from harness.model import scoring

    model, tok = tiny
    whole = cloze_scores(model, tok, ITEMS, "cpu", "fp32", batch_size=3)
    monkeypatch.setattr(scoring, "MAX_OPTION_POSITIONS", 8)  # 12 option rows of up to 10 tokens: many chunks
    chunked = cloze_scores(model, tok, ITEMS, "cpu", "fp32", batch_size=3)
    assert [x for s in chunked for p in s for x in p] == pytest.approx([x for s in whole for p in s for x in p], abs=1e-4)


def test_a_one_token_prompt_is_refused(tiny):
    with pytest.raises(ValueError, match="1 token"):
        next(_prompt_batches(tiny[0], tiny[1], [[5]], "cpu", batch_size=4))


def test_batched_prompts_give_each_prompts_last_logits(tiny):
    model, tok = tiny
    prompts = [prompt_ids(tok, item.letter_prompt()) for item in ITEMS]
    with torch.no_grad():
        for batch, last, _, _, _ in _prompt_batches(model, tok, prompts, "cpu", batch_size=3):
            assert sorted(batch) == [0, 1, 2]
            for b, i in enumerate(batch):
                assert last[b] == pytest.approx(model(input_ids=torch.tensor([prompts[i]])).logits[0, -1], abs=1e-4)


def test_shared_prefix_leaves_every_row_two_tokens():
    assert _shared_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 2
    assert _shared_length([[1, 2, 3], [1, 2, 3, 4]]) == 1  # [1, 2, 3] keeps its last two tokens
    assert _shared_length([[7, 1, 1], [8, 1, 1]]) == 0


def test_cloze_norms_pick_from_the_same_scores(tiny):
    model, tok = tiny
    scored = cloze_scores(model, tok, [ITEM], "cpu", "fp32")[0]
    per_token = [t / n for t, n in scored]
    assert cloze_choices(model, tok, [ITEM], "cpu", "fp32", "token")[0] == per_token.index(max(per_token))
    totals = [t for t, _ in scored]
    assert cloze_choices(model, tok, [ITEM], "cpu", "fp32", "none")[0] == totals.index(max(totals))


def test_letter_scorer_returns_an_option_index(tiny):
    model, tok = tiny
    assert letter_choices(model, tok, [ITEM], "cpu", "fp32")[0] in range(4)


def test_reply_logprob_is_higher_for_a_trained_reply(tiny):
    import copy

    from harness.run.training import train_task
    from methods.full import FullFineTune
    from tasks.chat import encode_example

    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    pair = ("Say the word.", "banana")
    before = reply_logprob(model, tok, [pair], "cpu", "fp32", 128)[0]
    method = FullFineTune(FullFineTune.Config(lr=1e-2))
    method.prepare(model, None)
    enc = [encode_example(tok, *pair, 128)]
    stats = train_task(model, method, enc, None, epochs=20, batch_size=1, pad_id=tok.pad_token_id, device="cpu",
                       precision="fp32", seed=0, desc="t")
    after = reply_logprob(model, tok, [pair], "cpu", "fp32", 128)[0]
    assert stats["loss_last"] < stats["loss_first"]
    assert after > before + 1.0


def test_generation_marks_answers_cut_at_the_cap(tiny):
    model, tok = tiny
    out = generate(model, tok, ["hello", "a longer prompt here"], "cpu", "fp32", max_new_tokens=5, batch_size=2)
    assert len(out) == 2
    for r in out:
        assert r["tokens"] <= 5
        assert r["stopped"] or r["tokens"] == 5  # not stopped means it ran into the cap


def test_batched_generation_equals_one_by_one(tiny):
    model, tok = tiny
    prompts = ["short", "a much longer prompt that needs padding on the left"]
    batched = generate(model, tok, prompts, "cpu", "fp32", max_new_tokens=8, batch_size=2)
    single = [generate(model, tok, [p], "cpu", "fp32", max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert [b["text"] for b in batched] == [s["text"] for s in single]


def test_reply_logprob_equals_masked_mean_over_full_logits(tiny):
    from harness.run.training import collate
    from tasks.chat import IGNORE, encode_example

    model, tok = tiny
    pairs = [("Write add.", "def add(a, b):\n    return a + b"), ("Say hi", "Hello there!")]
    fast = reply_logprob(model, tok, pairs, "cpu", "fp32", 256)
    batch = collate([encode_example(tok, u, r, 256) for u, r in pairs], tok.pad_token_id, "cpu")
    with torch.no_grad():
        logp = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].log_softmax(-1)
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    assert fast == pytest.approx(((picked * keep).sum(1) / keep.sum(1)).tolist(), abs=1e-5)


def test_padding_puts_rows_at_the_left_edge_with_their_mask():
    from harness.model.padding import padded

    ids, mask = padded([[1, 2, 3], [4]], 0, "cpu")
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = padded([[]], 7, "cpu")  # an empty row still gets one (masked) column
    assert ids.tolist() == [[7]] and mask.tolist() == [[0]]


def _hf_generate(model, tok, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    """transformers' own greedy `generate` on the left-padded batch: what the harness decoded with before #21."""
    from harness.model.generation_metrics import split_answer
    from harness.model.padding import padded

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids, mask = padded([prompt_ids(tok, p)[::-1] for p in prompts], pad, "cpu")
    ids, mask = ids.flip(1), mask.flip(1)  # left padding: every prompt ends at the same column
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=tok.eos_token_id, pad_token_id=pad)
    return [split_answer(row, tok.eos_token_id)[0] for row in out[:, ids.shape[1]:].tolist()]


def test_harness_decoding_equals_transformers_generate(tiny):
    model, tok = tiny
    prompts = ["short", "a much longer prompt that needs padding on the left", "Write a function that adds."]
    assert [r["ids"] for r in generate(model, tok, prompts, "cpu", "fp32", 12, batch_size=3)] == \
        _hf_generate(model, tok, prompts, 12)


def test_harness_decoding_equals_transformers_generate_on_the_quick_cards_prompts(smollm2, data_dir):
    """SmolLM2 in fp32 on the quick card's code and stop-probe prompts, as one batch each: token for token."""
    from harness.spec.config import load, with_overrides
    from harness.spec.spec import expand
    from tasks.data import DataSource
    from tasks.registry import load_stream

    model, tok = smollm2
    cfg = with_overrides(load("quick"), data_dir=str(data_dir))
    tasks, probes = load_stream(DataSource(cfg.data_dir), list(cfg.stream), list(cfg.probes),
                                expand(cfg)[0].budget_config(), cfg.data_seed)
    code = [i.prompt for t in tasks if t.kind == "code" for view in t.views.values() for i in view]
    stop = [i.prompt for p in probes if p.name == "stop" for i in p.views["prompts"]]
    for prompts, n in ((code, cfg.budget.max_new_tokens), (stop, cfg.budget.stop_max_new_tokens)):
        ours = [r["ids"] for r in generate(model, tok, prompts, "cpu", "fp32", n, batch_size=len(prompts))]
        assert ours == _hf_generate(model, tok, prompts, n)


def test_outcomes_give_the_gold_options_logprob_and_its_margin(tiny):
    from harness.model.scoring import cloze_outcomes, letter_outcomes

    model, tok = tiny
    naive = _naive(model, tok, ITEM)
    per_token = [total / len(reply_ids(tok, o)) for total, o in zip(naive, ITEM.options)]
    got = cloze_outcomes(model, tok, [ITEM], "cpu", "fp32")[0]
    assert got["choice"] == max(range(4), key=per_token.__getitem__)
    assert got["gold"] == pytest.approx(per_token[ITEM.answer], abs=1e-4)
    wrong = max(v for j, v in enumerate(per_token) if j != ITEM.answer)
    assert got["margin"] == pytest.approx(per_token[ITEM.answer] - wrong, abs=1e-4)
    assert (got["margin"] > 0) == (got["choice"] == ITEM.answer)

    from harness.model.scoring import letter_token_ids
    with torch.no_grad():
        last = model(input_ids=torch.tensor([prompt_ids(tok, ITEM.letter_prompt())])).logits[0, -1].log_softmax(-1)
    letters = last[letter_token_ids(tok)[:len(ITEM.options)]].tolist()  # ids of A-J; the options use A-D
    got = letter_outcomes(model, tok, [ITEM], "cpu", "fp32")[0]
    assert got["gold"] == pytest.approx(letters[ITEM.answer], abs=1e-4)
    assert got["margin"] == pytest.approx(letters[ITEM.answer] - max(v for j, v in enumerate(letters)
                                                                     if j != ITEM.answer), abs=1e-4)


def test_the_code_cap_fits_the_longest_reference_solution(tiny):
    """#14: a correct answer as long as the longest reference is never cut at max_new_tokens 0 ('auto')."""
    from harness.run.evaluation import code_cap
    from tasks.chat import reply_ids
    from tasks.items import CodeItem

    tok = tiny[1]
    items = [CodeItem(uid=str(k), prompt="Write f.", reference="def f():\n    return " + "1 + " * k + "1",
                      tests="assert f()", source="test") for k in (1, 30, 5)]
    longest = max(len(reply_ids(tok, i.target())) + 1 for i in items)
    assert longest < code_cap(tok, items) <= 1.25 * longest + 1


def test_option_chunks_group_similar_lengths_and_cover_every_row_once(monkeypatch):
    from harness.model import scoring

    lengths = [30, 3, 4, 2, 3, 12, 5, 2, 3, 4, 11, 3]  # one long option per question sets a one-chunk width of 30
    chunks = scoring._option_chunks(lengths)
    assert sorted(k for c in chunks for k in c) == list(range(len(lengths)))
    for c in chunks:
        assert max(lengths[k] for k in c) <= scoring.OPTION_SPREAD * min(lengths[k] for k in c) + 2
    padded_positions = sum(len(c) * max(lengths[k] for k in c) for c in chunks)
    assert padded_positions < 0.4 * len(lengths) * max(lengths)
    monkeypatch.setattr(scoring, "MAX_OPTION_POSITIONS", 8)
    assert all(len(c) * max(lengths[k] for k in c) <= 8 or len(c) == 1 for c in scoring._option_chunks(lengths))
