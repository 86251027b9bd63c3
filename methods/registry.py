"""One registry for methods: built-ins by name, the `clbench.methods` entry-point group,
and one-off files as `path/to/file.py:ClassName`."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from importlib.metadata import entry_points
from pathlib import Path

from harness.core.errors import ConfigError
from harness.core.suggest import did_you_mean

from .base import Method

BUILTIN = {
    "full": "methods.full:FullFineTune",
    "lora": "methods.lora:LoRA",
    "lora_all_r64": "methods.lora:LoRAAllR64",
    "freeze": "methods.freeze:Freeze",
    "replay": "methods.replay:Replay",
    "l2sp": "methods.l2sp:L2SP",
    "ewc": "methods.ewc:EWC",
    "distill": "methods.distill:Distill",
    "llama_pro": "methods.llama_pro:LlamaPro",
    "qlora": "methods.qlora:QLoRA",
    "prompt_tuning": "methods.prompt_learning:PromptTuning",
    "prefix_tuning": "methods.prompt_learning:PrefixTuning",
    "p_tuning_v2": "methods.prompt_learning:PTuningV2",
    "latent_replay": "methods.latent_replay:LatentReplay",
    "sdft": "methods.sdft:SDFT",
    "olora": "methods.olora:OLoRA",
    "moe_lora": "methods.moe_lora:MoELoRA",
    "selective_tokens": "methods.selective_tokens:SelectiveTokens",
}
ENTRY_POINT_GROUP = "clbench.methods"
MAX_FILE_BYTES = 1 << 20  # the most of a method file read to name its classes


def _load_target(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _from_file(spec: str, where: str):
    path_s, _, cls_name = spec.rpartition(":")
    path = Path(path_s)
    if not path.is_file():
        raise ConfigError(f"{where}: method file {path} not found")
    mod_spec = importlib.util.spec_from_file_location(f"clbench_user_method_{abs(hash(str(path.resolve())))}", path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[mod_spec.name] = module  # dataclasses with string annotations look their module up here
    try:
        mod_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[mod_spec.name]
        raise ConfigError(f"{where}: importing {path} failed: {type(e).__name__}: {e}") from e
    if not hasattr(module, cls_name):
        classes = [n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, Method) and v is not Method]
        raise ConfigError(f"{where}: {path} has no class '{cls_name}'; {did_you_mean(cls_name, classes)}")
    return getattr(module, cls_name)


def available() -> dict[str, str]:
    """name -> import target of every method reachable by name."""
    found = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def check_name(name: str, where: str = "method") -> None:
    """A clear error for a name that is neither registered nor 'file.py:Class' (nothing is imported)."""
    if name.endswith(".py"):
        classes, why = _classes_in(Path(name))
        listed = why or "its classes: " + ", ".join(classes)
        fix = f"'{name}:{classes[0]}'" if len(classes) == 1 else f"'{name}:ClassName' ({listed})"
        raise ConfigError(f"{where}: '{name}' names a file, not the class in it; give it as {fix}")
    if ".py:" not in name and name not in (known := available()):
        raise ConfigError(f"{where}: unknown method '{name}'; {did_you_mean(name, known)}")


def _classes_in(path: Path) -> tuple[list[str], str | None]:
    """The top-level classes a method file defines, read with `ast` (the file is not run), or why there are none."""
    import ast

    if not path.is_file():
        return [], f"{path} is not a file"
    try:
        with path.open("rb") as f:
            tree = ast.parse(f.read(MAX_FILE_BYTES + 1)[:MAX_FILE_BYTES])
    except (SyntaxError, ValueError, RecursionError, MemoryError, OSError) as e:
        return [], f"its classes cannot be read: {type(e).__name__}"
    names = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    return names, None if names else "it defines no class"


def load_class(name: str, where: str = "method"):
    """What a registered name or 'file.py:Class' points at, not yet checked to be a Method."""
    if ".py:" in name:
        return _from_file(name, where)
    known = available()
    if name not in known:
        check_name(name, where)  # raises: the one message for a name neither registered nor a file
    return _load_target(known[name])


def resolve_method(name: str, where: str = "method"):
    """The Method class for a registered name or 'file.py:Class'; a clear error otherwise."""
    cls = load_class(name, where)
    if not (inspect.isclass(cls) and issubclass(cls, Method)):
        raise ConfigError(f"{where}: {name} is not a subclass of methods.base.Method")
    return cls
