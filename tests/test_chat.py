"""Loss masking and EOS on real tokenizers: SmolLM2's and the tiny byte-level one."""
import pytest

from tasks.chat import IGNORE, encode_example, prompt_ids


TOKENIZERS = ["tiny", pytest.param("smollm2", marks=pytest.mark.slow)]


@pytest.mark.parametrize("which", TOKENIZERS)
def test_loss_only_on_reply_and_reply_ends_with_eos(which, request):
    tok = request.getfixturevalue(which)[1]
    user, reply = "What is the capital of France?", "Paris"
    enc = encode_example(tok, user, reply, max_length=512)
    prompt = prompt_ids(tok, user)
    assert enc["input_ids"][: len(prompt)] == prompt
    assert all(x == IGNORE for x in enc["labels"][: len(prompt)])
    trained = enc["labels"][len(prompt):]
    assert trained[-1] == tok.eos_token_id
    assert tok.decode(trained[:-1]) == reply
    assert enc["input_ids"][len(prompt):] == trained


@pytest.mark.parametrize("which", TOKENIZERS)
def test_truncated_example_still_ends_with_eos(which, request):
    tok = request.getfixturevalue(which)[1]
    enc = encode_example(tok, "question " * 200, "a long answer " * 200, max_length=64)
    assert len(enc["input_ids"]) == 64
    assert enc["labels"][-1] == tok.eos_token_id
    assert any(x != IGNORE for x in enc["labels"][:-1])  # some reply tokens survive besides the EOS


def test_smollm2_eos_is_end_of_turn(smollm2):
    tok = smollm2[1]
    assert tok.convert_ids_to_tokens(tok.eos_token_id) == "<|im_end|>"
    text = tok.decode(prompt_ids(tok, "hi"))
    assert text.endswith("<|im_start|>assistant\n")
