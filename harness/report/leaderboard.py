"""The leaderboard's numbers, from the stored run files alone (method code is never imported).

Runs are grouped by benchmark protocol (`protocol_key`); within a protocol there is one row per
(label, method, method config): the mean over its finished runs (seeds, and task orders of the same
tasks) with a 95% interval (the bootstrap over items and runs of harness.metrics.stats where the runs have
per-item records, else Student-t over runs), ranked in bands by the headline score (OP for runs
without per-item log-probabilities) and listed by band, then by mean, with the Pareto front of that score (higher is better) against
the estimated training FLOPs (lower is better). A submitted method's trained tokens and trainable parameters
are its own report (it trains in a confined process the harness cannot count in), so its FLOPs take no place
on the front. The columns and the output formats are in `tables.py`.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from scipy.stats import t as student_t

from ..metrics import stats
from ..metrics.run_metrics import run_row
from ..spec.protocol import version_of
from ..spec.sandbox import trusted
from ..spec.spec import RunSpec, content_hash, method_identity
from ..store.provenance import cpu_label, score_packages_of
from ..store.store import Store
from . import tables
from .tables import COLUMNS, cost_key

CI_LEVEL = 0.95


def protocol_key(run: dict) -> str | None:
    """The benchmark protocol a run was produced under: only runs with equal keys are ranked
    together. The protocol card's version (harness.spec.protocol: card + items digest) joined with the
    stage-0 key, a hash of spec.protocol() (model, stream as a set, probes, scorer, budgets, data
    seed, device), the resolved precision and the items digest, and with a hash of the run's
    package stack (provenance.score_packages_of): a new transformers can change the numbers, so
    its runs rank apart.
    Without the card's version for runs from before protocol cards. None for a run that failed
    before its data was loaded."""
    version, stage0 = version_of(run), run.get("stage0_key")
    if not stage0:
        return None
    packages = content_hash(score_packages_of(run))[:12]
    return f"{version}/{stage0}/{packages}" if version else f"{stage0}/{packages}"


def mean_ci(values) -> tuple[float | None, float | None, int]:
    """(mean, half-width of the 95% Student-t interval, n) over the values that are not None;
    the half-width is None below two values."""
    xs = [x for x in values if x is not None]
    n = len(xs)
    if not n:
        return None, None, 0
    mean = sum(xs) / n
    if n < 2:
        return mean, None, n
    if min(xs) == max(xs):  # no spread (rounding in the sum must not show as a tiny interval)
        return xs[0], 0.0, n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, float(student_t.ppf(0.5 + CI_LEVEL / 2, n - 1)) * sd / math.sqrt(n), n


def _status(group: list[dict]) -> tuple[int, int]:
    running = sum(r["status"] == "running" for r in group)
    return sum(r["status"] == "failed" for r in group), running


def _info(group: list[dict]) -> dict:
    info = next((r["method_info"] for r in group if r.get("method_info")), {})
    return {"description": info.get("description", ""), "citation": info.get("citation", "")}


def settings(group: list[dict]) -> dict:
    """The row's method config as its runs stored it (one config per row: `method_groups` splits on it); {} where
    a file holds none."""
    config = group[0]["spec"].get("method_config")
    return config if isinstance(config, dict) else {}


HEADLINE = "headline"  # the metric rows are ranked by (harness.metrics.metrics.headline) ...
FALLBACK = "overall"  # ... or, in a section whose runs lack per-item log-probabilities (schema 1), OP
REFERENCE = "full"  # the method every other is compared with (sequential full fine-tuning, the forgetting baseline)
FORGETTING = "lp_forgetting"  # the forgetting measure each method is also compared with full on (lower: less)
FOLLOWED = ("plasticity", "bwt", FORGETTING)  # learning, and keeping: what a ranked score may follow (`follows`)


def method_groups(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs by (label, method, method config): one row each, named by its label, or, where one label covers
    several methods or configs (a config file reusing a name), by the label with the method and a hash of
    its config, so that different methods are never averaged as seeds of one. A method file counts by its
    name and content (`method_identity`), so runs of one submission made in two results folders are one row."""
    variants = defaultdict(list)
    for run in runs:
        spec = run["spec"]
        config = spec.get("method_config")
        variant = content_hash([config, spec["method_sha256"]] if spec.get("method_sha256") else config)
        variants[(spec["label"], method_identity(spec), variant)].append(run)
    per_label = defaultdict(int)
    for label, _, _ in variants:
        per_label[label] += 1
    return {label if per_label[label] == 1 else f"{label} [{method} {variant[:6]}]": group
            for (label, method, variant), group in variants.items()}


def rows(runs: list[dict]) -> list[dict]:
    """One row per method label over `runs` (one protocol), in order of the headline metric, Pareto front marked.
    Each row: label, method, description, citation, settings (the method config its runs stored), seeds, per_run
    (each finished run's ranked scores and the columns of `follows`), failed,
    running, rank, pareto, costs_reported, and per column key the mean, with `ci[key]` its 95% Student-t
    half-width over runs (None below two runs) and, where every run has per-item records, `interval[key]` the 95%
    bootstrap interval over items and runs (harness.metrics.stats); `task_forgetting` {task: mean forgetting on the
    log-probability matrix}, with `task_forgetting_interval` {task: its bootstrap interval}.
    rank: the rank band, 1 + the methods significantly better on the headline metric: with per-item records by
    the paired item bootstrap, without by Welch's t over runs (a single-run row is then told from none).
    `vs_reference`: the paired difference
    from the `full` row on the headline metric, when there is one and per-item records; `forgetting_vs_reference`
    the same on the forgetting measure (FORGETTING), where a method that mitigates forgetting shows a negative
    difference. `costs_reported`: a run of the row is of a submitted method, whose trained tokens and trainable
    parameters (and so its Train TFLOPs and Trainable share) are its own report."""
    groups = method_groups(runs)
    finished = {label: [r for r in group if r["status"] == "finished"] for label, group in groups.items()}
    # a row with a run scored by its own method's child (harness.run.sandboxed) shows those numbers, unranked
    ranked = {label for label, group in finished.items() if group and all(r.get("verified") is not False for r in group)}
    reps = stats.bootstrap({label: finished[label] for label in ranked}, tested=(HEADLINE, FALLBACK, FORGETTING))
    out, values = [], {}
    for label, group in groups.items():
        per_run = values[label] = [run_row(r) for r in finished[label]]
        failed, running = _status(group)
        row = {"label": label, "method": group[0]["spec"]["method"], **_info(group), "settings": settings(group),
               "seeds": len(per_run), "per_run": [{k: p[k] for k in (HEADLINE, FALLBACK, *FOLLOWED)} for p in per_run],
               "failed": failed, "running": running,
               "unverified": sum(r.get("verified") is False for r in finished[label]),
               "costs_reported": any(not trusted(r["spec"]["method"]) for r in group), "ci": {}, "interval": {},
               "task_forgetting_interval": {}, "vs_reference": None,
               "forgetting_vs_reference": None}
        for key, _, _ in COLUMNS:
            row[key], row["ci"][key], _n = mean_ci(p[key] for p in per_run)
        row["task_forgetting"] = _task_forgetting(per_run)
        if reps and label in reps:
            intervals = {key: stats.interval(values) for key, values in reps[label].items()}
            row["interval"] = {key: iv for key, iv in intervals.items()
                               if iv and not key.startswith(stats.TASK_FORGETTING)}
            row["task_forgetting_interval"] = {key[len(stats.TASK_FORGETTING):]: iv for key, iv in intervals.items()
                                               if iv and key.startswith(stats.TASK_FORGETTING)}
        out.append(row)
    key = ranking_key(out)
    _rank(out, reps, key, {label: [p[key] for p in per_run if p[key] is not None] for label, per_run in values.items()
                           if label in ranked})
    # by rank, then by mean: a rank counts the rows significantly better, so a lower mean can rank better
    out.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, r[key] is None, -(r[key] or 0), r["label"]))
    _mark_pareto(out, key, ranked)
    return out


def _pearson(pairs) -> tuple[float | None, int]:
    """(Pearson's r, n) over the pairs of finite values; r None below 3 pairs or where either side is constant."""
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    n = len(pairs)
    if n < 3:
        return None, n
    mx, my = sum(x for x, _ in pairs) / n, sum(y for _, y in pairs) / n
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sxx, syy = sum((x - mx) ** 2 for x, _ in pairs), sum((y - my) ** 2 for _, y in pairs)
    return (sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None), n


def follows(table: list[dict]) -> dict:
    """What the section's ranked score follows: {column: {runs: r, n_runs, means: r, n_rows}}, Pearson's r of the
    ranked score with plasticity (learning) and with BWT and the forgetting measure (keeping), over the ranked
    rows' finished runs (`per_run`) and over those rows' means; a column without 3 usable pairs either way is left
    out. A score that follows plasticity ranks what was learned, whatever its name (OP did, at 0.98, on the first
    all-methods board)."""
    key = table[0]["ranked_by"] if table else None
    ranked = [r for r in table if r["rank"] is not None]
    out = {}
    for other in FOLLOWED:
        r_runs, n_runs = _pearson((p[key], p[other]) for r in ranked for p in r["per_run"])
        r_means, n_rows = _pearson((r[key], r[other]) for r in ranked)
        if r_runs is not None or r_means is not None:
            out[other] = {"runs": r_runs, "n_runs": n_runs, "means": r_means, "n_rows": n_rows}
    return out


def _task_forgetting(per_run: list[dict]) -> dict:
    """{task: mean over the runs of its forgetting on the log-probability matrix} (tasks trained before the last)."""
    values = {}
    for p in per_run:
        for task, value in (p.get("lp_task_forgetting") or {}).items():
            values.setdefault(task, []).append(value)
    return {task: sum(v) / len(v) for task, v in values.items()}


def _commit(run: dict) -> str:
    git = (run.get("provenance") or {}).get("git")
    if not isinstance(git, dict) or not isinstance(git.get("commit"), str):
        return ""
    return git["commit"][:12] + (" (uncommitted changes)" if git.get("dirty") else "")


def facts(runs: list[dict]) -> list[tuple[str, str]]:
    """What a section benchmarked, from its runs' files: model, stream, budget, scorer, precision, seeds, the
    protocol card and version, the data files and the harness commits."""
    first = runs[0]
    spec = first["spec"]
    orders = sorted({" → ".join(r["spec"]["stream"]) for r in runs})
    budget = ", ".join(f"{k} {v}" for k, v in sorted((spec.get("budget") or {}).items()) if v not in ("", None))
    checksums = (first.get("provenance") or {}).get("data_checksums") or {}
    commits = sorted({_commit(r) for r in runs} - {""})
    card = first.get("protocol") or {}
    out = [("Model", spec.get("model")), ("Stream", "; ".join(orders)), ("Probes", ", ".join(spec.get("probes", []))),
           ("Budget", budget), ("Scorer", spec.get("scorer")), ("Precision", first.get("precision")),
           ("Seeds", ", ".join(str(s) for s in sorted({r["spec"]["seed"] for r in runs}))),
           ("Protocol card", f"{card.get('name', '–')} {card.get('version', '')}".strip()),
           ("Data", f"{len(checksums)} files, sha256 of their checksums {content_hash(checksums)}"),
           ("Commits", ", ".join(commits) or "not recorded")]
    return [(k, str(v)) for k, v in out]


def ranking_key(table: list[dict]) -> str:
    """HEADLINE where any row has it, else FALLBACK."""
    return HEADLINE if any(r.get(HEADLINE) is not None for r in table) else FALLBACK


def _rank(table: list[dict], reps: dict | None, key: str, values: dict[str, list[float]]) -> None:
    """Rank bands from the item bootstrap where every run has per-item records, else from the runs alone
    (`welch_bands`); `values` holds each label's per-run values of `key`."""
    usable = reps if reps and all(key in r for r in reps.values()) else None
    bands = stats.rank_bands(usable, key) if usable else stats.welch_bands(values)
    reference = next((r["label"] for r in table if r["method"] == REFERENCE and r["label"] in (usable or {})), None)
    versus = stats.compare(usable, key, reference) if reference else {}
    forgets = reps if reps and all(FORGETTING in r for r in reps.values()) else None
    forgetting = stats.compare(forgets, FORGETTING, reference) if reference and forgets else {}
    for row in table:
        row["ranked_by"] = key
        row["rank"] = None if row[key] is None else bands.get(row["label"])
        row["vs_reference"] = versus.get(row["label"]) and {"reference": reference, **versus[row["label"]]}
        row["forgetting_vs_reference"] = (forgetting.get(row["label"])
                                          and {"reference": reference, **forgetting[row["label"]]})


def _mark_pareto(table: list[dict], key: str, ranked: set) -> None:
    """row['pareto']: True when no other row has the ranked score `key` >= and cost <= with one strictly
    better; None when the row lacks the score or the cost, is not among the `ranked` labels, or the cost is the
    training FLOPs and the row's are its method's own report (`costs_reported`; hours are the parent's clock)."""
    cost = cost_key(table)
    points = [r for r in table if r[key] is not None and r[cost] is not None and r["label"] in ranked
              and not (cost == "train_tflops" and r["costs_reported"])]
    for r in table:
        r["pareto"] = None
    for r in points:
        r["pareto"] = not any(o[key] >= r[key] and o[cost] <= r[cost] and (o[key] > r[key] or o[cost] < r[cost])
                              for o in points)


def _protocol_fields(run: dict) -> dict:
    """What protocol_key hashes, flattened for the reason two protocols differ."""
    fields = {}
    for name, value in RunSpec.from_dict(run["spec"]).protocol().items():
        if isinstance(value, dict):
            fields.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            fields[name] = value
    fields["resolved precision"] = run.get("precision")
    fields.update({f"{name} version": v for name, v in score_packages_of(run).items()})
    return fields


def protocol_diff(run: dict, reference: dict) -> str:
    """Why `run`'s protocol is not `reference`'s: the differing fields with both values."""
    a, b = _protocol_fields(run), _protocol_fields(reference)
    parts = [f"{k} ({a.get(k)!r} vs {b.get(k)!r})" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
    ca, cb = (r["provenance"].get("data_checksums") or {} for r in (run, reference))
    files = sorted(f for f in ca.keys() | cb.keys() if ca.get(f) != cb.get(f))
    if files:
        parts.append(f"data checksums ({', '.join(files[:5])}{', ...' if len(files) > 5 else ''})")
    return "differs from the ranked protocol in: " + ("; ".join(parts) or UNRECORDED)


# what makes two card versions differ when every field a run file records agrees
UNRECORDED = ("the card's seeds or task orders, which run files do not record (a card run with "
              "--set seeds=[...] is another version; `--seeds` keeps the card's)")


def protocol_groups(runs: list[dict]) -> list[tuple[str, list[dict]]]:
    """Runs split by protocol, [(key, runs)], the ranked protocol (most finished runs) first; a run without a key
    joins the protocol whose spec matches its own. Nothing is computed from the runs' results."""
    by_key = defaultdict(list)
    for run in runs:
        if protocol_key(run) is not None:
            by_key[protocol_key(run)].append(run)
    spec_to_key = {content_hash(RunSpec.from_dict(g[0]["spec"]).protocol()): k for k, g in by_key.items()}
    for run in runs:
        if protocol_key(run) is None:
            spec_hash = content_hash(RunSpec.from_dict(run["spec"]).protocol())
            by_key[spec_to_key.get(spec_hash, f"unkeyed-{spec_hash}")].append(run)
    return sorted(by_key.items(), key=lambda kv: (-sum(r["status"] == "finished" for r in kv[1]), -len(kv[1]), kv[0]))


def sections(runs: list[dict]) -> list[dict]:
    """The board's sections, one per protocol (`protocol_groups`): [{key, reason, stack, facts, rows, follows,
    runs}], the ranked protocol first, reason None for it."""
    ordered = protocol_groups(runs)
    if not ordered:
        return []
    reference = ordered[0][1][0]
    out = []
    for i, (key, group) in enumerate(ordered):
        table = rows(group)
        out.append({"key": key, "reason": None if i == 0 else protocol_diff(group[0], reference),
                    "stack": score_packages_of(group[0]), "facts": facts(group), "rows": table,
                    "follows": follows(table), "runs": group})
    return out


def header(runs: list[dict], skipped: list[tuple[Path, str]] = ()) -> dict:
    """Which sweeps (presets) and hardware produced the runs, and which run files could not be read."""
    sweeps = sorted({r.get("sweep") or "" for r in runs} - {""})
    hardware = set()
    for r in runs:
        m = r["provenance"].get("machine") or {}
        hardware.add(" + ".join(str(x) for x in (cpu_label(m), m.get("gpu")) if x) or "unknown")
    return {"sweeps": sweeps, "hardware": sorted(hardware), "runs": len(runs),
            "skipped": [f"runs/{path.name} ({why})" for path, why in skipped]}


def write(results_dir, out_dir=None) -> Path:
    """Write leaderboard.md, .csv, .tex and .html; returns the Markdown path."""
    skipped = []  # a run file that cannot be read changes the board (a method's row goes): the board says so
    runs = Store(results_dir).runs(skipped)
    return tables.write_all(sections(runs), header(runs, skipped), Path(out_dir or results_dir))
