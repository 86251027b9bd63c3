"""The leaderboard in four formats: Markdown, CSV, LaTeX (booktabs) and a self-contained HTML page.

Every string that comes from a result or a config (labels, methods, descriptions, citations,
sweep names, hardware, protocol reasons) goes through the format's escape function; a CSV cell
that starts with = + - @ (a spreadsheet formula) gets a leading '.
"""
from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from ..store.files import write_text_atomic
from ..store.provenance import SCORE_PACKAGES

# (key of run_metrics.run_row, column header, shown with a sign)
COLUMNS = [("headline", "Headline", True), ("lp_gain", "Domain gain (log-prob)", True),
           ("instruct_change", "Instruct change (log-prob)", True),
           ("overall", "OP", False), ("bwt", "BWT", True), ("fwt", "FWT", True), ("plasticity", "Plasticity", True),
           ("lp_forgetting", "Forgetting (log-prob)", True), ("lp_bwt", "BWT (log-prob)", True),
           ("lp_plasticity", "Plasticity (log-prob)", True),
           ("transfer", "Transfer OP", False), ("general", "General probe", False),
           ("general_retention", "General retention", False),
           ("general_retention_base", "General retention vs base model", False),
           ("stop_rate_change", "Stop-rate change", True),
           ("tail_repetition", "Tail repetition", False), ("gpu_hours", "GPU-hours", False),
           ("cpu_hours", "CPU-hours", False), ("train_tflops", "Train TFLOPs (est.)", False),
           ("trainable_share", "Trainable share", False)]

COSTS = {"train_tflops": "training TFLOPs (est.)", "gpu_hours": "GPU-hours", "cpu_hours": "CPU-hours"}


def cost_key(table: list[dict]) -> str:
    """The cost of the Pareto front: the estimated training TFLOPs where any row has them (a count, not wall
    time, which varies more between days on a shared machine than between methods); else GPU-hours where
    any row has them, else CPU-hours."""
    if any(r.get("train_tflops") is not None for r in table):
        return "train_tflops"
    return "gpu_hours" if any(r["gpu_hours"] is not None for r in table) else "cpu_hours"


NOTE = ("Rows go by Rank (below), then by Headline = Domain gain + Instruct change, in nats per token (higher is "
        "better): "
        "Domain gain is the mean over the stream's domains of the gold answers' log-probability per token after "
        "the last stage minus before the first (what was learned and kept), Instruct change the same for held-out "
        "instruction replies (general ability); a section whose runs lack per-item log-probabilities (result "
        "schema 1) is ranked by OP. Each value: the mean over a method's finished runs (seeds and task orders) "
        "with its 95% interval. [lo, hi]: percentile bootstrap over the items of every task view, with a "
        "Student-t term over the runs (harness.stats); a single run's takes the seed variance pooled over the "
        "rows of several runs, or, where none has several, is its items' alone; ± h: Student-t over runs only, where runs lack "
        "per-item records or for costs (none for a single run, marked !). Rank: 1 + the number of methods "
        "significantly better on the ranked score (paired bootstrap on the same items, Welch's t over the runs, "
        "Holm-corrected), so "
        "methods that cannot be told apart share a rank; without per-item records, by Welch's t over runs, "
        "so single-run rows share rank 1. vs full: the paired difference of the ranked score from full fine-tuning, its interval "
        "and Holm-corrected p, 'sig.' below 0.05; Forgetting vs full: the same on Forgetting (log-prob), where a "
        "method that mitigates forgetting is below 0. OP/BWT/FWT/plasticity: accuracy on recall (learned items "
        "asked again); the log-prob columns: the same on the gold answers' log-probability per token; "
        "Transfer OP on held-out items. Pareto (*): no other row has a higher-or-equal ranked score at "
        "lower-or-equal training cost: the estimated training TFLOPs, tokens x (4 x all parameters + 2 x "
        "trainable ones), a count that timing noise cannot move (hours beside it; runs without the counts use "
        "GPU-hours, else CPU-hours). Only runs of the same protocol and package versions are ranked together.")
SHORT = {"gpu_hours", "cpu_hours", "train_tflops", "trainable_share"}

# header -> (which way is better: "higher", "lower" or None, its definition): the Markdown legend, the HTML
# tooltips and the direction of the HTML's first sort
HELP = {
    "Rank": ("lower", "1 + the number of methods significantly better on the ranked score (paired bootstrap, Holm)"),
    "Method": (None, "the row's label, with its description and citation"),
    "Headline": ("higher", "Domain gain + Instruct change, nats per token: learned and kept, and general ability"),
    "Domain gain (log-prob)": ("higher", "mean over the domains of the gold answers' log-probability per token after "
                               "the last stage minus the base model's"),
    "Instruct change (log-prob)": ("higher", "held-out instruction replies' log-probability per token after the last "
                                   "stage minus the base model's"),
    "OP": ("higher", "mean recall accuracy (learned items asked again) over the domains after the last stage"),
    "BWT": ("higher", "mean over earlier domains of final minus just-learned recall accuracy; below 0: forgetting"),
    "FWT": ("higher", "mean accuracy on a domain just before training on it minus the baseline's"),
    "Plasticity": ("higher", "mean recall accuracy gained on a domain by training on it"),
    "Forgetting (log-prob)": ("lower", "mean over earlier domains of the drop of the gold answers' log-probability "
                              "per token from its best after learning to the end; the forgetting measure"),
    "BWT (log-prob)": ("higher", "BWT on the log-probability matrix, nats per token"),
    "Plasticity (log-prob)": ("higher", "plasticity on the log-probability matrix, nats per token"),
    "Transfer OP": ("higher", "OP on held-out items of each domain, never trained on"),
    "General probe": ("higher", "accuracy of the general probe (MMLU social sciences + other) after the last stage"),
    "General retention": ("higher", "mean over accuracy probes of final / baseline accuracy (baseline: the prepared "
                          "model); 1 = kept"),
    "General retention vs base model": ("higher", "the same against the unprepared base model"),
    "Stop-rate change": (None, "share of open prompts answered with an end of turn, last stage minus stage 0 (the "
                         "prepared model): no better direction, length collapse shows as > 0, run-on as < 0"),
    "Tail repetition": ("lower", "share of repeated n-grams in the last tokens of open answers"),
    "GPU-hours": ("lower", "GPU time of the trained stages"),
    "CPU-hours": ("lower", "CPU time of the trained stages x threads"),
    "Train TFLOPs (est.)": ("lower", "trained tokens x (4 x all parameters + 2 x trainable ones) / 1e12"),
    "Trainable share": (None, "trainable / all parameters"),
    "vs full": ("higher", "paired difference of the ranked score from full fine-tuning: 95% interval, Holm p"),
    "Forgetting vs full": ("lower", "paired difference of Forgetting (log-prob) from full: below 0 forgets less"),
    "Seeds": (None, "finished runs (seeds and task orders); ! a single run"),
    "Pareto": (None, "* no other row has a ranked score >= at a training cost <=; – left off the front: no score "
                     "or cost, unranked, or costs as reported (Status)"),
    "Status": (None, "failed, unfinished or unverified runs of the row (unverified: scored by the method's own "
                     "confined process, as its model does not fit the base architecture; shown, never ranked); "
                     "costs as reported: a submitted method's trained tokens and trainable parameters are its own "
                     "report, which the harness cannot count in its confined process, so its Train TFLOPs and "
                     "Trainable share are shown as reported and take no place on the Pareto front"),
}
ARROW = {"higher": " ↑", "lower": " ↓", None: ""}


def _num(key: str, x: float | None, signed: bool) -> str:
    if x is None:
        return "–"
    if key in SHORT:
        return f"{x:.3g}"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _value(row: dict, key: str, signed: bool, pm: str = " ± ") -> str:
    text = _num(key, row[key], signed)
    if row[key] is not None and key in row["interval"]:
        lo, hi = row["interval"][key]
        return f"{text} [{_num(key, lo, signed)}, {_num(key, hi, signed)}]"
    half = row["ci"][key]
    return text if half is None else text + pm + _num(key, half, False)


def _versus(row: dict, field: str = "vs_reference") -> str:
    """The row's paired difference from the reference row on the ranked score (`vs_reference`) or the forgetting
    measure (`forgetting_vs_reference`), its interval and Holm-corrected p."""
    v = row[field]
    if not v:
        return "–"
    mark = ", sig." if v["significant"] else ""
    return f"[{v['diff_lo']:+.3f}, {v['diff_hi']:+.3f}] p {v['p_holm']:.3g}{mark}"


def _status(row: dict) -> str:
    parts = [f"{row['failed']} failed" if row["failed"] else "", f"{row['running']} unfinished" if row["running"] else "",
             f"{row['unverified']} unverified" if row.get("unverified") else "",
             "costs as reported" if row.get("costs_reported") else ""]
    return ", ".join(p for p in parts if p) or "ok"


def _problems(row: dict) -> int:
    """What the Status column sorts by: how many of its flags the row carries (0: ok)."""
    return row["failed"] + row["running"] + (row.get("unverified") or 0) + bool(row.get("costs_reported"))


def _seeds(row: dict) -> str:
    return f"{row['seeds']} !" if row["seeds"] == 1 else str(row["seeds"])


def _pareto(row: dict) -> str:
    return {True: "*", False: "", None: "–"}[row["pareto"]]


def _title(section: dict) -> str:
    cost = COSTS[cost_key(section["rows"])]
    facts = dict(section.get("facts", []))
    key = f"{facts['Model']} on {facts['Stream']}" if facts else section["key"][:16]
    kind = "Ranked" if section["reason"] is None else "Not ranked with the first"
    ranked = {"headline": "Headline", "overall": "OP"}[section["rows"][0]["ranked_by"]] if section["rows"] else "OP"
    finished = any(r["seeds"] for r in section["rows"])
    why = ("" if ranked != "OP" else " (its runs lack the Headline's log-probabilities: result schema 1)" if finished
           else " (no run has finished)")
    return f"{kind}: {key}; by {ranked}{why}; Pareto: {ranked} vs {cost}"


def stack_line(section: dict) -> str:
    """The versions of the packages that can change a score, which every run of the section shares."""
    return "Packages: " + ", ".join(f"{name} {v or 'not recorded'}" for name, v in section["stack"].items())


def _header_line(header: dict, escape) -> str:
    skipped = header.get("skipped") or []
    return (f"Sweeps: {escape(', '.join(header['sweeps']) or '–')}; "
            f"hardware: {escape('; '.join(header['hardware']) or '–')}; {header['runs']} run files." +
            (f" Not on this board: {len(skipped)} run file(s) that cannot be read, "
             f"{escape('; '.join(skipped[:5]) + (f'; {len(skipped) - 5} more' if len(skipped) > 5 else ''))} "
             "(`clbench validate` names each)." if skipped else ""))


HEADERS = ["Rank", "Method", *[name for _, name, _ in COLUMNS], "vs full", "Forgetting vs full", "Seeds", "Pareto", "Status"]


def shown(header: str) -> str:
    """A header with its better-direction arrow."""
    return header + ARROW[HELP[header][0]]


def follows_line(section: dict) -> str:
    """'What Headline follows ...': the ranked score's correlation with learning and keeping (leaderboard.follows),
    '' where the section has none."""
    follows = section.get("follows") or {}
    if not follows or not section["rows"]:
        return ""
    names = {k: name for k, name, _ in COLUMNS}
    ranked = names[section["rows"][0]["ranked_by"]]
    any_ = next(iter(follows.values()))

    def r(x):
        return "–" if x is None else f"{x:+.3f}"

    parts = [f"{names[k]} {r(v['runs'])} ({r(v['means'])})" for k, v in follows.items()]
    kept = " and ".join(names[k] for k in follows if k != "plasticity")
    test = ", with its own test in Forgetting vs full" if "lp_forgetting" in follows else ""
    return (f"What {ranked} follows (Pearson's r over the ranked rows' {any_['n_runs']} runs; in brackets over their "
            f"{any_['n_rows']} means): " + ", ".join(parts) + f". Near +1 with Plasticity, {ranked} ranks what was "
            f"learned; what was kept is {kept or 'not measured here'}{test}.")


def _task_forgetting_rows(section: dict) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(tasks, [(label, cells)]) of the per-task forgetting table; no tasks when no row has it."""
    tasks = []
    for r in section["rows"]:
        tasks += [t for t in r.get("task_forgetting", {}) if t not in tasks]

    def cell(r, t):
        if t not in r.get("task_forgetting", {}):
            return "–"
        lo_hi = r.get("task_forgetting_interval", {}).get(t)
        return f"{r['task_forgetting'][t]:+.3f}" + (f" [{lo_hi[0]:+.3f}, {lo_hi[1]:+.3f}]" if lo_hi else "")

    return tasks, [(r["label"], [cell(r, t) for t in tasks]) for r in section["rows"]]


TASK_FORGETTING = ("Per-task forgetting (log-prob, nats per token, lower is better; mean over the row's runs, "
                   "with its 95% interval over the items and runs where every run of the row has per-item records "
                   "and trains the task before its last stage)")
SETTINGS = "Settings (each row's method config, defaults included, as its run files store it)"


def settings_text(config: dict) -> str:
    """'lr 0.0009, r 8, target_modules ["q_proj", "v_proj"]': each setting with its value, numbers to 3 digits."""
    def value(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v) if isinstance(v, (int, str)) and not isinstance(v, bool) else json.dumps(v, sort_keys=True)

    return ", ".join(f"{k} {value(v)}" for k, v in config.items())


def _settings_rows(section: dict) -> list[tuple[str, str]]:
    """(label, settings) of every row; none when no row stores a config."""
    rows = [(r["label"], settings_text(r.get("settings") or {})) for r in section["rows"]]
    return rows if any(text for _, text in rows) else []


# Markdown --------------------------------------------------------------------------------------

def md_escape(s: str) -> str:
    s = " ".join(str(s).splitlines())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "".join("\\" + c if c in "\\`*_[]|" else c for c in s)


def markdown(sections: list[dict], header: dict) -> str:
    lines = ["# clbench leaderboard", "", _header_line(header, md_escape), "", NOTE, "",
             "| Column | Better | Definition |", "|---|---|---|",
             *[f"| {md_escape(k)} | {v[0] or '–'} | {md_escape(v[1])} |" for k, v in HELP.items()]]
    if not sections:
        lines += ["", "No runs."]
    for section in sections:
        lines += ["", f"## {md_escape(_title(section))}", ""]
        lines += [f"- **{k}**: {md_escape(v)}" for k, v in section.get("facts", [])]
        lines += ["", md_escape(stack_line(section)), ""]
        if section["reason"]:
            lines += [md_escape(section["reason"]), ""]
        lines.append("| " + " | ".join(md_escape(shown(h)) for h in HEADERS) + " |")
        lines.append("|" + "|".join(["---"] * len(HEADERS)) + "|")
        for r in section["rows"]:
            cells = [str(r["rank"] or "–"), md_escape(r["label"]), *[_value(r, k, s) for k, _, s in COLUMNS],
                     md_escape(_versus(r)), md_escape(_versus(r, "forgetting_vs_reference")),
                     _seeds(r), _pareto(r).replace("*", "\\*"), _status(r)]
            lines.append("| " + " | ".join(cells) + " |")
        if follows := follows_line(section):
            lines += ["", md_escape(follows)]
        tasks, rows = _task_forgetting_rows(section)
        if tasks:
            lines += ["", f"{TASK_FORGETTING}:", "", "| Method | " + " | ".join(md_escape(t) for t in tasks) + " |",
                      "|" + "|".join(["---"] * (len(tasks) + 1)) + "|",
                      *["| " + md_escape(label) + " | " + " | ".join(c) + " |" for label, c in rows]]
        if settings := _settings_rows(section):
            lines += ["", f"{SETTINGS}:", "", "| Method | Settings |", "|---|---|",
                      *[f"| {md_escape(label)} | {md_escape(text) or '–'} |" for label, text in settings]]
    return "\n".join(lines) + "\n"


# CSV -------------------------------------------------------------------------------------------

def csv_cell(s: str) -> str:
    s = str(s)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def _csv_num(x: float | None) -> str:
    return "" if x is None else f"{x:.6f}"


def _csv_versus(row: dict, field: str) -> list:
    v = row[field]
    return [_csv_num(v["diff_lo"]), _csv_num(v["diff_hi"]), _csv_num(v["p_holm"]), v["significant"]] if v else [""] * 4


def csv_text(sections: list[dict], header: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["protocol", "ranked", "reason", "rank", "label", "method",
                *[c for k, _, _ in COLUMNS for c in (k, f"{k}_ci95", f"{k}_lo", f"{k}_hi")],
                *[f"{prefix}vs_full_{x}" for prefix in ("", "forgetting_") for x in ("lo", "hi", "p_holm", "significant")],
                "seeds", "failed", "unfinished", "unverified", "costs_reported", "pareto", "description", "citation",
                *[f"{name}_version" for name in SCORE_PACKAGES], "method_config"])
    for section in sections:
        for r in section["rows"]:
            w.writerow([csv_cell(section["key"]), section["reason"] is None, csv_cell(section["reason"] or ""),
                        r["rank"] or "", csv_cell(r["label"]), csv_cell(r["method"]),
                        *[_csv_num(v) for k, _, _ in COLUMNS
                          for v in (r[k], None if k in r["interval"] else r["ci"][k],
                                    *(r["interval"].get(k) or (None, None)))],
                        *_csv_versus(r, "vs_reference"), *_csv_versus(r, "forgetting_vs_reference"),
                        r["seeds"], r["failed"], r["running"], r["unverified"], r["costs_reported"],
                        "" if r["pareto"] is None else r["pareto"],
                        csv_cell(r["description"]), csv_cell(r["citation"]),
                        *[csv_cell(section["stack"][name] or "") for name in SCORE_PACKAGES],
                        csv_cell(json.dumps(r.get("settings") or {}, sort_keys=True))])
    return buf.getvalue()


# LaTeX -----------------------------------------------------------------------------------------

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
        "–": "--"}  # the en dash of an empty cell: LaTeX's own, for a setup that does not read UTF-8


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(c, c) for c in " ".join(str(s).splitlines()))


def latex(sections: list[dict], header: dict) -> str:
    out = [r"% clbench leaderboard; needs \usepackage{booktabs}", "% " + _header_line(header, tex_escape),
           "% " + tex_escape(NOTE)]
    for section in sections:
        out += ["", "% " + tex_escape(_title(section)) + (": " + tex_escape(section["reason"])
                                                            if section["reason"] else ""),
                "% " + tex_escape(stack_line(section)),
                r"\begin{tabular}{rl" + "r" * len(COLUMNS) + "llrcl}", r"\toprule",
                " & ".join(tex_escape(h) for h in HEADERS) + r" \\", r"\midrule"]
        for r in section["rows"]:
            cells = [str(r["rank"] or "--"), tex_escape(r["label"]),
                     *["--" if r[k] is None else "$" + _value(r, k, s, r" \pm ").replace("inf", r"\infty") + "$"
                       for k, _, s in COLUMNS],
                     tex_escape(_versus(r)), tex_escape(_versus(r, "forgetting_vs_reference")),
                     str(r["seeds"]) + (r"$^{\dagger}$" if r["seeds"] == 1 else ""),
                     {True: r"$\star$", False: "", None: "--"}[r["pareto"]], tex_escape(_status(r))]
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        if follows := follows_line(section):
            out.append("% " + tex_escape(follows))
    out.append(r"% $^{\dagger}$ a single run: a [lo, hi] interval resamples its items alone, and no $\pm$ interval "
               r"(over runs) is given; $\star$ on the Pareto front, -- left off it (no score or cost, unranked, or "
               r"costs as reported)")
    return "\n".join(out) + "\n"


# HTML ------------------------------------------------------------------------------------------

def h(s) -> str:
    return html.escape(str(s), quote=True)


_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px;margin-bottom:2em}
th,td{padding:3px 7px;border-bottom:1px solid #ddd;text-align:right;vertical-align:top}
th{cursor:pointer;background:#f3f3f3;user-select:none;position:sticky;top:0;z-index:1}
th[data-dir=asc]::after{content:" (sorted, ascending)";font-weight:normal}
th[data-dir=desc]::after{content:" (sorted, descending)";font-weight:normal}td.m{text-align:left;max-width:26em}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}dl.facts dt{font-weight:bold}
dl.facts dd{margin:0}
.d{color:#555;font-size:11px}.c{color:#777;font-size:11px;font-style:italic}.note{max-width:60em;color:#444}"""

_SCRIPT = """document.querySelectorAll("table.lb th").forEach(function(th){th.addEventListener("click",function(){
var body=th.closest("table").tBodies[0],i=th.cellIndex,first=th.dataset.better==="lower"||!th.dataset.better?"asc":"desc",
dir=th.dataset.dir?(th.dataset.dir==="asc"?"desc":"asc"):first;
th.parentNode.querySelectorAll("th").forEach(function(o){delete o.dataset.dir});th.dataset.dir=dir;
function key(tr){var v=tr.cells[i].dataset.v;return v===""?null:(isNaN(v)?v:parseFloat(v));}
Array.from(body.rows).sort(function(a,b){var x=key(a),y=key(b);if(x===null)return y===null?0:1;if(y===null)return -1;
var c=(typeof x==="number"&&typeof y==="number")?x-y:String(x).localeCompare(String(y));return dir==="asc"?c:-c;})
.forEach(function(r){body.appendChild(r);});});});"""


def _td(text: str, sort_value, cls: str = "") -> str:
    v = "" if sort_value is None else sort_value
    return f'<td{" class=" + chr(34) + cls + chr(34) if cls else ""} data-v="{h(v)}">{text}</td>'


def html_page(sections: list[dict], header: dict) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', "<title>clbench leaderboard</title>",
             f"<style>{_STYLE}</style></head><body>", "<h1>clbench leaderboard</h1>",
             f'<p class="note">{_header_line(header, h)}</p>', f'<p class="note">{h(NOTE)} '
             "Click a column header to sort by it, best first (↑ higher is better, ↓ lower); hover it for its definition.</p>"]
    if not sections:
        parts.append("<p>No runs.</p>")
    for section in sections:
        parts.append(f"<h2>{h(_title(section))}</h2>")
        parts.append('<dl class="facts">' + "".join(f"<dt>{h(k)}</dt><dd>{h(v)}</dd>" for k, v in section.get("facts", []))
                     + "</dl>")
        parts.append(f'<p class="note">{h(stack_line(section))}</p>')
        if section["reason"]:
            parts.append(f'<p class="note">{h(section["reason"])}</p>')
        parts.append('<table class="lb"><thead><tr>' + "".join(
            f'<th title="{h(HELP[x][1])}" data-better="{HELP[x][0] or ""}">{h(shown(x))}</th>' for x in HEADERS)
            + "</tr></thead><tbody>")
        for r in section["rows"]:
            method = (f'{h(r["label"])}<div class="d">{h(r["description"])}</div>'
                      f'<div class="c">{h(r["citation"])}</div>')
            cells = [_td(h(r["rank"] or "–"), r["rank"]), _td(method, r["label"], "m"),
                     *[_td(h(_value(r, k, s)), r[k]) for k, _, s in COLUMNS],
                     _td(h(_versus(r)), (r["vs_reference"] or {}).get("diff_lo")),
                     _td(h(_versus(r, "forgetting_vs_reference")), (r["forgetting_vs_reference"] or {}).get("diff_hi")),
                     _td(h(_seeds(r)), r["seeds"]), _td(h(_pareto(r)), {True: 1, False: 0}.get(r["pareto"])),
                     _td(h(_status(r)), _problems(r))]
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
        if follows := follows_line(section):
            parts.append(f'<p class="note">{h(follows)}</p>')
        tasks, rows = _task_forgetting_rows(section)
        if tasks:
            parts.append(f"<details><summary>{h(TASK_FORGETTING)}</summary><table><thead><tr><th>Method</th>"
                         + "".join(f"<th>{h(t)}</th>" for t in tasks) + "</tr></thead><tbody>"
                         + "".join("<tr><td class=\"m\">" + h(label) + "</td>" + "".join(f"<td>{c}</td>" for c in cells)
                                   + "</tr>" for label, cells in rows) + "</tbody></table></details>")
        if settings := _settings_rows(section):
            parts.append(f"<details><summary>{h(SETTINGS)}</summary><table><thead><tr><th>Method</th><th>Settings</th>"
                         "</tr></thead><tbody>" + "".join(f'<tr><td class="m">{h(label)}</td><td class="m">{h(text) or "–"}</td>'
                                                          "</tr>" for label, text in settings) + "</tbody></table></details>")
    parts += [f"<script>{_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


FORMATS = {"leaderboard.md": markdown, "leaderboard.csv": csv_text, "leaderboard.tex": latex,
           "leaderboard.html": html_page}


def write_all(sections: list[dict], header: dict, out_dir: Path) -> Path:
    """Write every format into out_dir, all rendered before any is written (a renderer's failure leaves the last
    board's four as they were, not a new Markdown beside an old HTML); returns the Markdown path."""
    texts = {name: render(sections, header) for name, render in FORMATS.items()}
    for name, text in texts.items():
        write_text_atomic(Path(out_dir) / name, text)
    return Path(out_dir) / "leaderboard.md"
