"""The leaderboard: one row per method variant, from the stored run files alone."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from . import metrics
from .store import Store, write_text_atomic

COLUMNS = [("overall", "OP"), ("bwt", "BWT"), ("fwt", "FWT"), ("plasticity", "Plasticity"),
           ("transfer", "Transfer OP"), ("general", "General probe")]


def run_row(run: dict) -> dict:
    """Metrics of one finished run."""
    tasks = list(run["spec"]["stream"])
    stages = run["stages"]
    row = metrics.summary(stages, tasks, "recall")
    row["transfer"] = metrics.overall(metrics.matrix(stages, tasks, "transfer"))
    probes = stages[-1]["probes"]
    row["general"] = probes["general"]["heldout"]["score"] if "general" in probes else None
    return row


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def rows(runs: list[dict]) -> list[dict]:
    """Aggregate runs by method label (mean over seeds); failed runs are rows with status, no score."""
    groups = defaultdict(list)
    for run in runs:
        groups[run["spec"]["label"]].append(run)
    out = []
    for label, group in groups.items():
        finished = [r for r in group if r["status"] == "finished"]
        row = {"label": label, "method": group[0]["spec"]["method"], "seeds": len(finished),
               "failed": len(group) - len(finished) - sum(r["status"] == "running" for r in group),
               "running": sum(r["status"] == "running" for r in group)}
        per_run = [run_row(r) for r in finished]
        for key, _ in COLUMNS:
            row[key] = _mean(p[key] for p in per_run)
        trainable = [r.get("trainable_params", 0) / r["total_params"] for r in finished if r.get("total_params")]
        row["trainable_share"] = _mean(trainable)
        out.append(row)
    out.sort(key=lambda r: (r["overall"] is None, -(r["overall"] or 0)))
    return out


def _fmt(x, signed=False):
    if x is None:
        return "–"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def markdown(table: list[dict], header: str = "") -> str:
    lines = [header, ""] if header else []
    names = ["Rank", "Method", *[c for _, c in COLUMNS], "Trainable", "Seeds", "Status"]
    lines.append("| " + " | ".join(names) + " |")
    lines.append("|" + "|".join(["---"] * len(names)) + "|")
    for rank, r in enumerate(table, start=1):
        status = "ok" if not r["failed"] and not r["running"] else \
            ", ".join(s for s in (f"{r['failed']} failed" if r["failed"] else "",
                                  f"{r['running']} unfinished" if r["running"] else "") if s)
        cells = [str(rank) if r["overall"] is not None else "–", _escape_md(r["label"])]
        cells += [_fmt(r[k], signed=k in ("bwt", "fwt", "plasticity")) for k, _ in COLUMNS]
        cells += [_fmt(r["trainable_share"]), str(r["seeds"]), status]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _escape_md(s: str) -> str:
    return s.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def write(results_dir, out_dir=None) -> Path:
    store = Store(results_dir)
    runs = store.runs()
    table = rows(runs)
    sweeps = sorted({r.get("sweep", "") for r in runs} - {""})
    machines = sorted({(r.get("provenance", {}).get("machine") or {}).get("cpu") or "?" for r in runs})
    header = (f"# clbench leaderboard\n\nSweeps: {', '.join(sweeps) or '–'}; machines: {', '.join(machines)}. "
              "OP/BWT/FWT/plasticity on recall (learned items asked again), Transfer OP on held-out items; "
              "mean over seeds.")
    out = Path(out_dir or results_dir) / "leaderboard.md"
    write_text_atomic(out, markdown(table, header))
    return out
