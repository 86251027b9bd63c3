"""Reading a YAML file someone else wrote (a sweep config, a domain file): bounded in size and nesting, no
aliases, refused in one line naming the file."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from .errors import ConfigError

MAX_YAML_BYTES = 1 << 20  # a sweep config is a few hundred bytes
MAX_YAML_DEPTH = 32


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (a 400-byte alias bomb expands to gigabytes) and with a
    nesting bound (thousands of levels end in a RecursionError)."""

    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(f"{self.name}: line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not "
                              "allowed in a config; write the value out")
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise ConfigError(f"{self.name}: line {event.start_mark.line + 1}: nested deeper than "
                                  f"{MAX_YAML_DEPTH} levels; a config is a few levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        """A mapping, refused where a key appears twice (PyYAML keeps the last silently: `budget: {epochs: 4,
        epochs: 1}` ran 1 epoch without a word)."""
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # a list or mapping as a key: the config's checks name it
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise ConfigError(f"{self.name}: line {key_node.start_mark.line + 1}: the key {key!r} appears "
                                      "twice in one mapping; keep one")
                seen.add(key)
        return super().construct_mapping(node, deep)


# YAML 1.1 reads a float written without a dot (1e-4, the way a learning rate is written) as a string
_BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                     re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_yaml(text: str, name: str):
    """`text` as YAML under the bounds of a config file (no aliases, no duplicate keys, MAX_YAML_DEPTH), refused
    in one line that starts with `name`."""
    loader = _BoundedLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigError(f"{name}: not valid YAML: {' '.join(str(e).split())}") from None
    except ValueError as e:  # an integer of more digits than Python converts (4300)
        raise ConfigError(f"{name}: a value cannot be read: {str(e)[:120]}") from None
    finally:
        loader.dispose()


def read_yaml(path: Path):
    """A config file's YAML, refused in one line naming the file when it is missing, not a regular file, too
    large, not UTF-8, not YAML, aliased or nested too deep."""
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file; give the path of a YAML file")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes; a config is at most {MAX_YAML_BYTES} bytes")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    return parse_yaml(text, str(path))
