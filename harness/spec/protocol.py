"""The protocol card: what every row of a leaderboard shares, named and versioned.

A preset file (harness/spec/presets/<name>.yaml) is the protocol card: model, precision, device,
stream (the task order), extra task orders, probes, seeds, scorer, budgets and data seed. Its
`methods` and `resources` are not part of it (they are what is compared, and how fast it
runs). The version is a content hash over the card's parsed fields plus a digest of the items the
stream and probes read, as parsed (every field of every item of every view, but the file and line
it came from), so changing any budget, seed, task, the order, the model, or what a question, option,
answer, test or reference says changes it; comments, the card's name, and where the items were read
from do not: the hub's copy and a local copy of the same questions make one protocol. The SHA-256 of
every data file read (and of every user domain file) is stored beside it, in each run's provenance,
to say which files those were. Every run stores `protocol: {name, version}`, and runs under
different versions are never ranked together.
"""
from __future__ import annotations

import dataclasses

import yaml

from tasks.data import DataSource
from tasks.registry import load_stream

from .config import SweepConfig
from .spec import content_hash

NOT_PROTOCOL = ("name", "methods", "resources", "data_dir", "save_models", "tracking", "domains")  # domains: paths
# (what their items say is in the items digest)


def card(cfg: SweepConfig) -> dict:
    """The protocol fields of a sweep config, defaults filled in."""
    d = dataclasses.asdict(cfg)
    return {k: v for k, v in d.items() if k not in NOT_PROTOCOL}


def _loaded(cfg: SweepConfig):
    """The stream's tasks and probes, and the DataSource that read them (its checksums)."""
    source = DataSource(cfg.data_dir)
    tasks, probes = load_stream(source, list(cfg.stream), list(cfg.probes), cfg.budget, cfg.data_seed, cfg.domains)
    return tasks, probes, source


def data_checksums(cfg: SweepConfig) -> dict[str, str]:
    """SHA-256 of every data file (or hub split) the stream and probes read, checked against the manifest."""
    return dict(sorted(_loaded(cfg)[2].checksums.items()))


def items_digest(tasks, probes) -> str:
    """A digest of what the items say: every field of every item of every view, in order, but `source` (the file
    and line, or hub split, it was read from)."""
    def said(item) -> dict:
        return {k: v for k, v in dataclasses.asdict(item).items() if k != "source"}

    return content_hash({t.name: {view: [said(i) for i in items] for view, items in t.views.items()}
                         for t in [*tasks, *probes]})


def version(cfg: SweepConfig, digest: str | None = None) -> str:
    """The protocol version: the card's fields and the items digest (computed from the data when not given)."""
    digest = items_digest(*_loaded(cfg)[:2]) if digest is None else digest
    return content_hash({"card": card(cfg), "items": digest})


def stamp(cfg: SweepConfig) -> dict:
    """What every result of a sweep stores as `protocol`."""
    return {"name": cfg.name, "version": version(cfg)}


def version_of(run: dict) -> str | None:
    """The protocol version a stored run ran under (None for runs from before protocol cards)."""
    return (run.get("protocol") or {}).get("version")


def show(cfg: SweepConfig) -> str:
    """The card as YAML, with its version, the items digest it covers and the data files they were read from."""
    tasks, probes, source = _loaded(cfg)
    digest = items_digest(tasks, probes)
    doc = {"protocol": cfg.name, "version": version(cfg, digest), "card": card(cfg), "items_digest": digest,
           "data_checksums": dict(sorted(source.checksums.items()))}
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)
