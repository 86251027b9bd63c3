"""Putting adapter modules in place of a model's linear layers (O-LoRA, MoE-LoRA)."""
from __future__ import annotations

from torch import nn

from harness.core.errors import ConfigError


def wrap_linears(model, names: list[str], make) -> list[nn.Module]:
    """Replace every nn.Linear whose attribute name is in `names` by make(linear); return the wrappers."""
    wrapped, linear_names = [], set()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                linear_names.add(child_name)
                if child_name in names:
                    wrapper = make(child)
                    setattr(module, child_name, wrapper)
                    wrapped.append(wrapper)
    if not wrapped:
        raise ConfigError(f"method_config.target_modules: no linear layer named any of {list(names)} in "
                          f"{type(model).__name__}; its linear layers are {sorted(linear_names)}")
    return wrapped
