"""`clbench submit`: one method file in, one comparable leaderboard row with provenance out.

    <results>/submissions/<name>/record.json            who, what (file SHA-256), protocol, machine, when, runs, rank
    <results>/submissions/<name>/<sha12>/<file>.py      the exact file that ran (the runs' spec.method points here)

Preflight (nothing written when it fails): the name, ownership of the name, the config overrides
and the interface, every problem reported at once; then, when those pass, a trial on the tiny
model (method_check). Then the protocol card's sweep runs
with this one method under the label <name>, through the normal Ray path. Run ids hash the spec,
which holds the label (the name) and the copy's file name and SHA-256 (not its folder), so a submission's
runs can only ever share a file with the same name's runs of the same file; a name already used by
other runs or by someone else's submission is refused, so no other method's results are touched.
"""
from __future__ import annotations

import dataclasses
import getpass
import hashlib
import re
import shutil
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

from methods.registry import available

from ..core.errors import ConfigError
from ..model.models import check_reachable
from ..report import leaderboard
from ..spec import config, sandbox
from ..spec.protocol import stamp
from ..spec.spec import expand
from ..store.files import write_json_atomic
from ..store.provenance import git_commit, machine, package_versions
from ..store.store import Store
from ..store.submissions import file_copy, read_record, stored_names

MAX_NAME = 64
NAME_CHARS = re.compile(r"[A-Za-z0-9._+-]+")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def name_problems(name: str) -> list[str]:
    """Every reason `name` cannot name a submission (a folder and a leaderboard label)."""
    out = []
    if not name:
        return ["--name is empty; give the submission a name such as my_replay"]
    if "/" in name or "\\" in name:
        out.append(f"--name {name!r} contains a path separator")
    if ".." in name:
        out.append(f"--name {name!r} contains '..'")
    if any(unicodedata.category(c).startswith("C") for c in name):
        out.append(f"--name {name!r} contains control characters")
    if len(name) > MAX_NAME:
        out.append(f"--name is {len(name)} characters long; at most {MAX_NAME}")
    if not out and (not NAME_CHARS.fullmatch(name) or name[0] in ".-"):
        out.append(f"--name {name!r}: use letters, digits and . _ + - only, not starting with . or -")
    return [f"{p}; pick another name, e.g. --name my_method" for p in out]


def _load_overrides(path) -> tuple[dict, list[str]]:
    if not path:
        return {}, []
    p = Path(path)
    if not p.is_file():
        return {}, [f"{p}: config overrides file not found"]
    try:
        data = config.read_yaml(p)
    except ConfigError as e:
        return {}, [str(e)]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return {}, [f"{p}: the top level must be a mapping of the method's config fields, got {type(data).__name__}"]
    return data, []


def _source_file(target: str, described: dict) -> Path | None:
    if ".py:" in target:
        return Path(target.rpartition(":")[0])
    return Path(described["source_file"]) if described.get("source_file") else None


def _record_path(results, name: str) -> Path:
    return Path(results) / "submissions" / name / "record.json"


def _owner_problems(results, name: str, sha: str, author: str, replace: bool,
                    target: str = "") -> tuple[dict | None, list[str]]:
    """(the earlier record this submission replaces or repeats, problems with taking the name).
    An installed package's entry point may be submitted under its own name; no other registered name."""
    path = _record_path(results, name)
    taken_as = stored_names(results).get(name.casefold())
    if taken_as is not None and taken_as != name:
        return None, [f"--name {name!r} differs only in case from the submission {taken_as!r}; pick another name"]
    if path.exists():
        old, why = read_record(path)
        if why:
            return None, [f"{path}: {why}; the name cannot be checked, so it cannot be taken: move that file aside"]
        if old["author"] != author:
            return None, [f"--name {name!r} belongs to {old['author']}'s submission ({path}); pick another name"]
        if old["file"]["sha256"] != sha and not replace:
            return None, [f"--name {name!r} is your earlier submission of another file (sha256 "
                          f"{old['file']['sha256'][:12]}..., {path}); pass --replace to replace it, "
                          "or pick another name"]
        return old, []
    registered = {n.casefold() for n in available()} - ({target.casefold()} if target in available() else set())
    if name.casefold() in registered:
        return None, [f"--name {name!r} is a registered method's name; pick another name"]
    taken = sorted({r["spec"]["method"] for r in Store(results).runs() if r["spec"]["label"].casefold() == name.casefold()})
    if taken:
        return None, [f"--name {name!r} is the label of stored runs of {', '.join(taken)} in {results}/runs; "
                      "pick another name"]
    return None, []


def preflight(target: str, *, name: str | None, author: str, config_path, preset: str, results,
              replace: bool) -> dict:
    """Every check before compute; raises one ConfigError listing every problem. Writes nothing. The method is
    imported and tried only in a confined child process (harness.spec.sandbox), never here."""
    cfg = config.load(preset)
    source = str(config_path or "method config")
    overrides, problems = _load_overrides(config_path)
    described = sandbox.describe(target, overrides, source)
    problems += described["problems"]
    guessed = name is None and not described["name"]  # from the target's text, which may be what is wrong
    name = name if name is not None else (described["name"] or target.rpartition(":")[2])
    if not (guessed and described["problems"]):
        problems += name_problems(name)
    src = _source_file(target, described)
    sha = hashlib.sha256(src.read_bytes()).hexdigest() if src and src.is_file() else ""
    old = None
    if not name_problems(name) and sha:
        old, taken = _owner_problems(results, name, sha, author, replace, target)
        problems += taken
    try:
        check_reachable(cfg.model)
    except ConfigError as e:
        problems.append(str(e))
    if not problems:  # the trial costs seconds: only once every static check passes
        problems += sandbox.describe(target, overrides, source, trial=True, data_dir=cfg.data_dir)["problems"]
    if problems:
        raise ConfigError(f"{target}: preflight found {len(problems)} problem(s); nothing was run or written:\n  - "
                          + "\n  - ".join(problems))
    return {"cfg": cfg, "described": described, "overrides": overrides, "name": name, "src": src, "sha": sha,
            "old": old}


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _drop_earlier(results, old: dict, sha: str) -> None:
    """--replace: the earlier file's runs and copy go, so the name's row holds the new file only. Only paths
    inside the results folder's runs/ and the submission's own folder are touched (checked after resolving), and
    of the runs its record lists only those stored under the submission's name: the record is a file anyone
    could have edited, and a run of another label is not the submission's to delete."""
    if old["file"]["sha256"] == sha:
        return
    store = Store(results)
    for run_id in old.get("run_ids", []):
        path, run = store.run_path(run_id), store.load_run(run_id)
        if _inside(path, store.root / "runs") and run is not None and run.get("spec", {}).get("label") == old["name"]:
            path.unlink(missing_ok=True)
    folder = _record_path(results, old["name"]).parent
    copy = folder / old["file"]["sha256"][:12]
    if copy != folder and _inside(copy, folder):
        shutil.rmtree(copy, ignore_errors=True)


def _store_submission(pre: dict, target: str, author: str, description: str | None, results, started: str):
    """Copy the file into the submission's folder and write its record: (record, the sweep to run)."""
    from ..model.precision import pick_device

    name, described, cfg, src, sha = pre["name"], pre["described"], pre["cfg"], pre["src"], pre["sha"]
    record_path, copy = _record_path(results, name), file_copy(results, name, sha, src.name)
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, copy)
    method = f"{copy.resolve()}:{described['class']}" if ".py:" in target else target
    sweep_cfg = dataclasses.replace(cfg, methods=[config.MethodEntry(method=method, label=name,
                                                                     config=pre["overrides"])])
    if description is None:
        description = described["description"]
    record = {"name": name, "author": author, "description": description,
              "target": target, "class": described["class"], "method": method, "config": pre["overrides"],
              "file": {"source": str(src), "copy": str(copy.relative_to(record_path.parent)), "sha256": sha},
              "protocol": stamp(cfg), "packages": package_versions(), "git": git_commit(),
              "hardware": machine(pick_device(cfg.device)), "submitted_at": started, "preflight_passed_at": _now(),
              "run_ids": [s.run_id for s in expand(sweep_cfg)], "status": "running"}
    write_json_atomic(record_path, record)
    return record, sweep_cfg


def submit(target: str, *, name: str | None = None, author: str | None = None, description: str | None = None,
           config_path=None, preset: str = "quick", results="results", replace: bool = False,
           address: str | None = None, log=print) -> dict:
    """Preflight, run the protocol, store the record, regenerate the leaderboard; the record."""
    from ..sweep.sweep import run_sweep

    started = _now()
    author = author or getpass.getuser()
    pre = preflight(target, name=name, author=author, config_path=config_path, preset=preset, results=results,
                    replace=replace)
    name, sha = pre["name"], pre["sha"]
    log(f"preflight passed: {target} as '{name}' (sha256 {sha[:12]}...)")
    with Store(results).sweep_lock(log, file=".submissions.lock", holder="submission"):
        # checked again under the lock: a submission of the same name may have been stored meanwhile
        old, taken = _owner_problems(results, name, sha, author, replace, target)
        if taken:
            raise ConfigError(f"{target}: " + "; ".join(taken))
        if old:
            _drop_earlier(results, old, sha)
        record, sweep_cfg = _store_submission(pre, target, author, description, results, started)
    run_sweep(sweep_cfg, results, address=address, log=log)
    store = Store(results)
    runs = [store.load_run(i) for i in record["run_ids"]]
    record["status"] = "finished" if all(r and r["status"] == "finished" for r in runs) else "failed"
    record["leaderboard"] = str(leaderboard.write(results))
    ours = set(record["run_ids"])
    section = next((s for s in leaderboard.sections(store.runs()) if ours & {r["run_id"] for r in s["runs"]}), None)
    row = next((r for r in section["rows"] if r["label"] == name), {}) if section else {}
    record["rank"] = row.get("rank")
    record["ranked_rows"] = sum(r["rank"] is not None for r in section["rows"]) if section else 0
    record["protocol_key"] = section and section["key"]  # the leaderboard section the row is ranked in
    record["finished_at"] = _now()
    write_json_atomic(_record_path(results, name), record)
    return record
