"""Chat-template encoding: prompts for scoring and generation, masked training examples.

A training example is the user turn rendered with the model's chat template plus the
target reply; the loss is on the reply only, and the reply always ends with the
end-of-turn/EOS token, also when the example is cut to fit (a missing EOS teaches a
model never to stop).
"""
from __future__ import annotations

IGNORE = -100


def prompt_ids(tok, user: str) -> list[int]:
    """Token ids of the chat-formatted user turn followed by the assistant header."""
    ids = tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # some versions return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def reply_ids(tok, reply: str) -> list[int]:
    return list(tok(reply, add_special_tokens=False)["input_ids"])


def encode_example(tok, user: str, reply: str, max_length: int) -> dict:
    """{'input_ids', 'labels'}: labels are IGNORE on the prompt, the reply's ids + EOS after it.

    Too long: the prompt is cut from the left (down to half the budget), then the reply
    from the right; the EOS is always the last label.
    """
    prompt = prompt_ids(tok, user)
    reply = reply_ids(tok, reply)
    eos = tok.eos_token_id
    room = max_length - 1  # one slot for EOS
    if len(prompt) + len(reply) > room:
        keep_prompt = max(room - len(reply), room // 2)
        prompt = prompt[-keep_prompt:] if keep_prompt > 0 else []
        reply = reply[: room - len(prompt)]
    reply = reply + [eos]
    return {"input_ids": prompt + reply, "labels": [IGNORE] * len(prompt) + reply}


def encode_pairs(tok, pairs: list[dict], max_length: int) -> list[dict]:
    """encode_example for each {'user', 'reply'} pair; a pair's `mix` name (the share it was mixed in
    from, see harness.run.training.epoch_order) goes with its encoding."""
    return [dict(encode_example(tok, p["user"], p["reply"], max_length), **({"mix": p["mix"]} if p.get("mix") else {}))
            for p in pairs]
