"""Each stage's model written as a Hugging Face model folder (safetensors weights, config, tokenizer), so that
lm-eval or any other tool can score it: `save_models: true` in a sweep config (`--set save_models=true`).

A model is written as the base architecture when its weights can be expressed so (full fine-tuning, a peft
model with its adapters merged, a sandboxed method's handed-over weights), else as itself when it is a plain
transformers model with another shape (LLaMA-Pro's deeper stack, its config updated). Either way the folder is
read back and its logits on a probe input compared with the model's; a model that does not survive the round
trip (a router that mixes experts per token cannot be merged into the base weights) is not kept, and the
run file says why.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

FOLDER = "models"


def folder(results_root, run_id: str, stage: int) -> Path:
    return Path(results_root) / FOLDER / run_id / f"stage{stage}"


def save(model, tok, base_config, base_shapes: dict, path: Path) -> str | None:
    """Write `model` to `path`; None, or why it was not kept (the folder is then removed)."""
    from transformers import AutoModelForCausalLM, PreTrainedModel

    from .sandboxed import standard_state

    path.mkdir(parents=True, exist_ok=True)
    state = standard_state(model, base_shapes)
    if state is not None:
        plain = AutoModelForCausalLM.from_config(base_config)
        plain.load_state_dict(state)
        plain.save_pretrained(path, safe_serialization=True)
    elif isinstance(model, PreTrainedModel):
        model.save_pretrained(path, safe_serialization=True)
    else:
        shutil.rmtree(path)
        return f"a {type(model).__name__} is neither the base architecture nor a transformers model"
    tok.save_pretrained(path)
    why = _round_trip(model, path, tok)
    if why:
        shutil.rmtree(path)
    return why


@torch.inference_mode()
def _round_trip(model, path: Path, tok) -> str | None:
    """None when the folder, loaded as transformers would, computes the model's logits."""
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([tok("The quick brown fox jumps over the lazy dog.").input_ids])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        want = model(input_ids=ids.to(device)).logits.float().cpu()
    finally:
        model.train(was_training)
    try:
        got = AutoModelForCausalLM.from_pretrained(path).eval()(input_ids=ids).logits.float()
    except Exception as e:  # a folder transformers cannot load back
        return f"written but not loadable: {type(e).__name__}: {e}"
    if got.shape != want.shape or not torch.allclose(got, want, atol=1e-4, rtol=1e-4):
        return ("written as its weights, it computes other logits (max difference "
                f"{(got - want).abs().max().item() if got.shape == want.shape else 'in shape'}): the method's "
                "model is more than its weights, e.g. a per-token router")
    return None
