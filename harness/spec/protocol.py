"""The protocol card: what every row of a leaderboard shares, named and versioned.

A preset file (harness/spec/presets/<name>.yaml) is the protocol card: model, precision, device,
stream (the task order), extra task orders, probes, seeds, scorer, budgets and data seed. Its
`methods` and `resources` are not part of it (they are what is compared, and how fast it
runs). The version is a content hash over the card's parsed fields plus the SHA-256 of every
data file the stream reads (and of every user domain file it names), so changing any budget, seed, task, the order, the model or a data
file changes it; comments and the card's name do not. Every run stores
`protocol: {name, version}`, and runs under different versions are never ranked together.
"""
from __future__ import annotations

import dataclasses

import yaml

from tasks.data import DataSource
from tasks.registry import load_stream

from .config import SweepConfig
from .spec import content_hash

NOT_PROTOCOL = ("name", "methods", "resources", "data_dir", "save_models", "tracking", "domains")  # domains: paths
# (the files' digests are in the data checksums)


def card(cfg: SweepConfig) -> dict:
    """The protocol fields of a sweep config, defaults filled in."""
    d = dataclasses.asdict(cfg)
    return {k: v for k, v in d.items() if k not in NOT_PROTOCOL}


def data_checksums(cfg: SweepConfig) -> dict[str, str]:
    """SHA-256 of every data file (or hub split) the stream and probes read, checked against the manifest."""
    source = DataSource(cfg.data_dir)
    load_stream(source, list(cfg.stream), list(cfg.probes), cfg.budget, cfg.data_seed, cfg.domains)
    return dict(sorted(source.checksums.items()))


def version(cfg: SweepConfig, checksums: dict[str, str] | None = None) -> str:
    checksums = data_checksums(cfg) if checksums is None else checksums
    return content_hash({"card": card(cfg), "data": checksums})


def stamp(cfg: SweepConfig) -> dict:
    """What every result of a sweep stores as `protocol`."""
    return {"name": cfg.name, "version": version(cfg)}


def version_of(run: dict) -> str | None:
    """The protocol version a stored run ran under (None for runs from before protocol cards)."""
    return (run.get("protocol") or {}).get("version")


def show(cfg: SweepConfig) -> str:
    """The card as YAML, with its version and the data checksums it covers."""
    checksums = data_checksums(cfg)
    doc = {"protocol": cfg.name, "version": version(cfg, checksums), "card": card(cfg), "data_checksums": checksums}
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)
