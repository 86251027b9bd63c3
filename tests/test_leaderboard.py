"""The leaderboard on a synthetic result set written in the test: every format's numbers (mean,
95% t-interval), ranking, Pareto marking, protocol sections, and hostile strings in each format."""
import csv
import html
import io
import itertools
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from scipy.stats import ttest_ind
from synthetic_runs import CHECKSUMS, PACKAGES, coin_flip_runs, synthetic_run, use_stored_metrics

from harness.report import leaderboard, tables
from harness.store.store import Store

T_975_2 = 4.302652729749464  # Student t, 97.5% quantile, 2 degrees of freedom (printed tables: 4.303)
SCRIPT = "<script>alert(1)</script>"
TEX = r"\input{/etc/passwd} & $x$ % # ~ ^ | *y* _z_"
PWN = '<img src=x onerror="window.__pwned=1">'
BASE, AFTER1 = [0.3, 0.4], [0.6, 0.4]
LORA = {"lr": 0.0009, "r": 8, "target_modules": ["q_proj", "v_proj"], "use_dora": False}
FULL_FINAL = ([0.5, 0.7], [0.6, 0.7], [0.4, 0.6])  # OP 0.60, 0.65, 0.50; BWT -0.1, 0.0, -0.2


def _R(final):
    return [BASE, AFTER1, list(final)]


def _runs():
    runs = []
    for seed, (final, gpu) in enumerate(zip(FULL_FINAL, (2.0, 2.2, 2.4))):
        runs.append(synthetic_run("full", seed, _R(final), synthetic_metrics={"gpu_hours": gpu}))
    for seed in range(3):
        runs.append(synthetic_run("lora", seed, _R([0.4, 0.5]), method="lora", method_config=LORA, synthetic_metrics={
            "gpu_hours": 0.5, "general_retention": 0.9, "tail_repetition": 0.1, "stop_rate_change": -0.25}))
    failed = synthetic_run("lora", 3, _R([0.4, 0.5]), method="lora", status="failed", method_config=LORA)
    failed["stages"] = failed["stages"][:1]
    runs.append(failed)
    for seed, gpu in enumerate((3.0, 3.2)):
        runs.append(synthetic_run("slow", seed, _R([0.4, 0.4]), synthetic_metrics={"gpu_hours": gpu}))
    runs.append(synthetic_run(SCRIPT, 0, _R([0.5, 0.6]), description=f"=HYPERLINK(\"http://evil\") {PWN}",
                              citation="@import | `x` [a](javascript:alert(2))",
                              method_config={"note": f"{SCRIPT} | {PWN}", "=cmd": "-1"}))
    running = synthetic_run(TEX, 0, _R([0.5, 0.6]), status="running")
    running["stages"] = running["stages"][:2]
    runs.append(running)
    runs.append(synthetic_run("full", 0, _R([0.5, 0.7]), model="tiny2",
                              checksums={**CHECKSUMS, "mmlu/test/a.csv": "2" * 64}))
    return runs


@pytest.fixture
def board(tmp_path, monkeypatch):
    use_stored_metrics(monkeypatch)
    store = Store(tmp_path / "results")
    for run in _runs():
        store.save_run(run)
    md = leaderboard.write(tmp_path / "results", tmp_path / "out")
    return {ext: (tmp_path / "out" / f"leaderboard.{ext}").read_text() for ext in ("md", "csv", "tex", "html")} | {
        "md_path": md, "dir": tmp_path}


def _hand_ci(xs):
    return statistics.mean(xs), T_975_2 * statistics.stdev(xs) / math.sqrt(len(xs))


OP_MEAN, OP_HALF = _hand_ci([0.6, 0.65, 0.5])
BWT_MEAN, BWT_HALF = _hand_ci([-0.1, 0.0, -0.2])


def test_t_interval_matches_a_hand_computation():
    mean, half, n = leaderboard.mean_ci([0.6, 0.65, 0.5, None])
    assert n == 3 and mean == pytest.approx(OP_MEAN) and half == pytest.approx(OP_HALF, rel=1e-9)
    assert OP_HALF == pytest.approx(0.18973, abs=1e-5)
    assert leaderboard.mean_ci([0.4]) == (0.4, None, 1)
    assert leaderboard.mean_ci([0.1, 0.1, 0.1]) == (0.1, 0.0, 3)
    assert leaderboard.mean_ci([None]) == (None, None, 0)


def _md_table(md, section, after=None):
    """Rows (lists of cells) of the first Markdown table of the section-th section, or of the first one after the
    text `after`; escaped pipes stay inside cells."""
    text = md.split("\n## ")[section + 1]
    if after:
        text = text[text.index(after):]
    lines = list(itertools.takewhile(lambda line: line.startswith("|"),
                                     itertools.dropwhile(lambda line: not line.startswith("|"), text.splitlines())))
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[2:]]


def test_markdown_golden(board):
    rows = _md_table(board["md"], 0)
    head = tables.HEADERS
    by_label = {r[1]: dict(zip(head, r)) for r in rows}
    assert [r[1] for r in rows] == ["full", "&lt;script&gt;alert(1)&lt;/script&gt;", "lora", "slow",
                                    tables.md_escape(TEX)]
    full = by_label["full"]
    assert full["Rank"] == "1" and full["OP"] == f"{OP_MEAN:.3f} ± {OP_HALF:.3f}" == "0.583 ± 0.190"
    assert full["BWT"] == f"{BWT_MEAN:+.3f} ± {BWT_HALF:.3f}"
    assert full["GPU-hours"] == f"{2.2:.3g} ± {_hand_ci([2.0, 2.2, 2.4])[1]:.3g}" and full["CPU-hours"] == "–"
    assert full["Seeds"] == "3" and full["Pareto"] == "\\*" and full["Status"] == "ok"
    lora = by_label["lora"]
    assert lora["OP"] == "0.450 ± 0.000" and lora["Status"] == "1 failed" and lora["Pareto"] == "\\*"
    assert lora["General retention"] == "0.900 ± 0.000" and lora["Stop-rate change"] == "-0.250 ± 0.000"
    assert lora["Tail repetition"] == "0.100 ± 0.000"
    assert by_label["slow"]["Pareto"] == "" and by_label["slow"]["Rank"] == "2"  # dominated by lora
    # schema-1 rank bands, Welch's t over runs: lora's 3 equal runs above slow's 2 equal ones separate them; full's
    # spread (0.6, 0.65, 0.5) separates it from neither (p 0.053 against slow), and a single run from none
    assert [by_label[k]["Rank"] for k in ("full", "lora", "&lt;script&gt;alert(1)&lt;/script&gt;")] == ["1"] * 3
    single = by_label["&lt;script&gt;alert(1)&lt;/script&gt;"]
    assert single["Seeds"] == "1 !" and single["OP"] == "0.550" and single["Pareto"] == "–"  # no cost measured
    unfinished = rows[-1]
    assert unfinished[0] == "–" and unfinished[-1] == "1 unfinished" and unfinished[2] == "–"
    assert all(len(r) == len(head) for r in rows)  # no string broke out of its cell
    assert "Student-t over runs only" in board["md"]
    settings = _md_table(board["md"], 0, after=tables.SETTINGS)  # each row's method config, as its runs stored it
    assert all(len(r) == 2 for r in settings)  # the hostile config stays in its cell
    by_label = dict(settings)
    assert by_label["lora"] == tables.md_escape('lr 0.0009, r 8, target_modules ["q_proj", "v_proj"], use_dora false')
    assert by_label["full"] == "–" and "&lt;script&gt;" in by_label["&lt;script&gt;alert(1)&lt;/script&gt;"]


def test_protocol_sections(board):
    md = board["md"]
    assert md.count("## ") == 2
    assert "## Ranked: tiny on stem → humanities;" in md  # titled by what was benchmarked, not a hash
    assert "## Not ranked with the first: tiny2 on stem → humanities;" in md
    other = _md_table(md, 1)
    assert [(r[0], r[1]) for r in other] == [("1", "full")]  # ranked only within its own protocol
    reason = next(line for line in md.split("## Not ranked")[1].splitlines() if line.startswith("differs from"))
    assert "model ('tiny2' vs 'tiny')" in reason and "data checksums (mmlu/test/a.csv)" in reason
    assert "budget" not in reason  # only what differs is named


def test_run_without_a_protocol_key_joins_its_spec_protocol(monkeypatch):
    use_stored_metrics(monkeypatch)
    runs = [synthetic_run("full", 0, _R([0.5, 0.7])), synthetic_run("full", 1, _R([0.5, 0.7]), status="failed")]
    del runs[1]["stage0_key"]  # failed before its data was loaded
    secs = leaderboard.sections(runs)
    assert len(secs) == 1 and secs[0]["rows"][0]["failed"] == 1 and secs[0]["rows"][0]["seeds"] == 1


def test_runs_of_another_package_stack_rank_apart_and_the_board_names_the_package(monkeypatch):
    """#21: transformers 5.24 changed prefix tuning's generations; its runs must not rank beside 5.23's."""
    use_stored_metrics(monkeypatch)
    newer = {**PACKAGES, "transformers": "5.24.0"}
    runs = [synthetic_run("full", 0, _R([0.5, 0.7])), synthetic_run("full", 1, _R([0.5, 0.7])),
            synthetic_run("lora", 0, _R([0.4, 0.5]), method="lora", packages=newer)]
    secs = leaderboard.sections(runs)
    assert [[r["label"] for r in s["rows"]] for s in secs] == [["full"], ["lora"]]
    assert "transformers version ('5.24.0' vs '5.23.0')" in secs[1]["reason"]
    assert "torch version" not in secs[1]["reason"]
    md = tables.markdown(secs, leaderboard.header(runs))
    assert "Packages: torch 2.13.0+cpu, transformers 5.23.0, peft 0.21.2" in md
    assert "transformers 5.24.0" in md
    rows = list(csv.DictReader(io.StringIO(tables.csv_text(secs, leaderboard.header(runs)))))
    assert [(r["label"], r["transformers_version"]) for r in rows] == [("full", "5.23.0"), ("lora", "5.24.0")]


def test_csv_half_width_only_where_the_board_shows_one():
    """Where a value has an interval that resamples the items, the CSV's `_ci95` is empty, as the Markdown
    shows no `± h` there: a seeds-only half-width beside it (7x narrower on the standard board's headline)
    would be read as the value's uncertainty."""
    runs = coin_flip_runs("full", "full", 3, p=0.6, items=40)
    section = leaderboard.sections(runs)[0]
    row = next(r for r in csv.DictReader(io.StringIO(tables.csv_text([section], leaderboard.header(runs)))))
    assert "overall" in section["rows"][0]["interval"] and row["overall_lo"] and row["overall_hi"]
    assert row["overall_ci95"] == "" and row["headline_ci95"] == ""
    shown = {k for k, _, _ in tables.COLUMNS if row[f"{k}_ci95"]}
    assert shown and shown == {k for k, _, _ in tables.COLUMNS
                               if k not in section["rows"][0]["interval"] and section["rows"][0]["ci"][k] is not None}


def test_cpu_only_runs_rank_on_cpu_hours(monkeypatch):
    use_stored_metrics(monkeypatch)
    runs = [synthetic_run("a", 0, _R([0.5, 0.7]), synthetic_metrics={"cpu_hours": 1.0}),
            synthetic_run("b", 0, _R([0.4, 0.4]), synthetic_metrics={"cpu_hours": 2.0})]
    secs = leaderboard.sections(runs)
    assert leaderboard.cost_key(secs[0]["rows"]) == "cpu_hours"
    assert [(r["label"], r["pareto"], r["gpu_hours"]) for r in secs[0]["rows"]] == [("a", True, None), ("b", False, None)]
    assert "; by OP (its runs lack the Headline's log-probabilities: result schema 1); Pareto: OP vs CPU-hours" in \
        tables.markdown(secs, leaderboard.header(runs))  # the section says why it is not ranked by the Headline


def test_a_section_of_failed_runs_says_none_finished_not_that_they_are_old(monkeypatch):
    use_stored_metrics(monkeypatch)
    failed = synthetic_run("lora", 0, _R([0.5, 0.7]), method="lora", status="failed")
    failed["stages"] = failed["stages"][:1]
    text = tables.markdown(leaderboard.sections([failed]), leaderboard.header([failed]))
    assert "; by OP (no run has finished); Pareto" in text and "result schema 1" not in text.split("## ")[1]


def test_a_row_scored_by_its_own_method_is_shown_but_never_ranked(monkeypatch):
    """A submitted method whose model does not fit the base architecture is scored in its own process: what it
    says it scored cannot take a rank, the Pareto front or a difference from full."""
    use_stored_metrics(monkeypatch)
    runs = [synthetic_run("full", s, _R([0.5, 0.6]), synthetic_metrics={"cpu_hours": 1.0}) for s in (0, 1)]
    runs += [synthetic_run("mine", s, _R([0.99, 0.99]), method="mine.py:Mine", synthetic_metrics={"cpu_hours": 1.0})
             for s in (0, 1)]
    for r in runs[2:]:
        r["verified"], r["unverified"] = False, "its model's weights differ in name or shape"
    table = leaderboard.rows(runs)
    mine = next(r for r in table if r["label"] == "mine")
    assert mine["overall"] == pytest.approx(0.99) and mine["unverified"] == 2
    assert (mine["rank"], mine["pareto"], mine["vs_reference"]) == (None, None, None)
    full = next(r for r in table if r["label"] == "full")
    assert (full["rank"], full["pareto"]) == (1, True)  # not dominated by numbers nobody checked


def test_csv_golden_and_formula_injection(board):
    rows = list(csv.DictReader(io.StringIO(board["csv"])))
    full = next(r for r in rows if r["label"] == "full" and r["ranked"] == "True")
    assert float(full["overall"]) == pytest.approx(OP_MEAN, abs=1e-6)
    assert float(full["overall_ci95"]) == pytest.approx(OP_HALF, abs=1e-6)
    assert float(full["bwt_ci95"]) == pytest.approx(BWT_HALF, abs=1e-6)
    assert (full["rank"], full["seeds"], full["pareto"], full["cpu_hours"]) == ("1", "3", "True", "")
    assert [r["pareto"] for r in rows if r["ranked"] == "True"] == ["True", "", "True", "False", ""]
    hostile = next(r for r in rows if r["label"] == SCRIPT)
    assert hostile["description"].startswith("'=HYPERLINK") and hostile["citation"].startswith("'@import")
    assert hostile["overall_ci95"] == "" and hostile["seeds"] == "1"
    assert json.loads(next(r for r in rows if r["label"] == "lora")["method_config"]) == LORA
    assert json.loads(hostile["method_config"])["=cmd"] == "-1"
    other = next(r for r in rows if r["ranked"] == "False")
    assert other["rank"] == "1" and "model ('tiny2' vs 'tiny')" in other["reason"]
    for line in board["csv"].splitlines()[1:]:
        for cell in next(csv.reader([line])):
            assert cell[:1] not in ("=", "+", "@") and not (cell.startswith("-") and not _is_number(cell))


def _is_number(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def test_latex_golden(board):
    tex = board["tex"]
    assert tex.count(r"\begin{tabular}") == 2 and tex.count(r"\toprule") == 2 and tex.count(r"\bottomrule") == 2
    full = next(line for line in tex.splitlines() if line.startswith("1 & full & "))
    assert f"${OP_MEAN:.3f} \\pm {OP_HALF:.3f}$" in full and full.endswith(r"$\star$ & ok \\")
    assert r"\textless{}script\textgreater{}alert(1)\textless{}/script\textgreater{}" in tex
    assert r"\textbackslash{}input\{/etc/passwd\} \& \$x\$ \% \# \textasciitilde{} \textasciicircum{} | *y* \_z\_" in tex
    assert r"\input" not in tex and "<script>" not in tex
    assert "a single run, no interval" not in tex  # a single run's bootstrap row has one: the items'
    runs = _runs()
    section = leaderboard.sections(runs)[0]  # an unbounded upper end (a retention ratio over a zero baseline)
    section["rows"] = [{**row, "interval": {**row["interval"], "overall": (0.5, math.inf)}} for row in section["rows"]]
    assert r", \infty]$" in tables.latex([section], leaderboard.header(runs))
    body = [line for line in tex.splitlines() if line.endswith(r" \\")]
    assert all(len(re.split(r"(?<!\\)&", line)) == len(tables.HEADERS) for line in body)  # no cell broke out
    assert not [c for c in "".join(body) if not c.isascii()]  # an empty cell's en dash is LaTeX's --: no UTF-8 needed
    if shutil.which("pdflatex"):
        doc = board["dir"] / "doc.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\usepackage[landscape]{geometry}"
                       "\\begin{document}\\tiny\\input{out/leaderboard.tex}\\end{document}\n")
        out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-no-shell-escape", "doc.tex"],
                             cwd=board["dir"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout[-2000:]


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self.imgs = 0, 0

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        self.imgs += tag == "img"


def test_html_golden_and_escaping(board):
    page = board["html"]
    parsed = _Scripts()
    parsed.feed(page)
    assert parsed.scripts == 1 and parsed.imgs == 0  # only the page's own sort script; no injected tag
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and SCRIPT not in page
    assert "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;" in page and PWN not in page
    assert f">{OP_MEAN:.3f} ± {OP_HALF:.3f}</td>" in page and "&#x27;@import | `x` [a](javascript:" not in page
    assert '<div class="c">@import | `x` [a](javascript:alert(2))</div>' in page  # the citation, from the result
    assert "cdn" not in page.lower() and "<link" not in page
    assert '<td class="m">lr 0.0009, r 8, target_modules [&quot;q_proj&quot;, &quot;v_proj&quot;], use_dora false</td>' in page


# A real headless browser ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium + chromium-driver driven by selenium; installed here when missing and root."""
    if not os.path.exists("/usr/bin/chromium") or not os.path.exists("/usr/bin/chromedriver"):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)")
        subprocess.run(["apt-get", "install", "-y", "chromium", "chromium-driver"], check=True,
                       capture_output=True, timeout=600)
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the test extra)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"), options=opts)
    yield driver
    driver.quit()


def test_html_sorts_on_click_and_runs_no_injected_script(board, chromium):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    chromium.get((board["dir"] / "out" / "leaderboard.html").as_uri())
    table = chromium.find_elements(By.CSS_SELECTOR, "table.lb")[0]

    def labels():
        return [td.text.splitlines()[0] for td in table.find_elements(By.CSS_SELECTOR, "tbody td.m")]

    assert labels() == ["full", SCRIPT, "lora", "slow", TEX]  # shown as text, ranked by OP
    facts = chromium.find_elements(By.CSS_SELECTOR, "dl.facts")[0].text
    assert "Model\ntiny" in facts and "Stream\nstem → humanities" in facts  # what was benchmarked, first
    op = next(th for th in table.find_elements(By.TAG_NAME, "th") if th.text == "OP ↑")
    assert "recall accuracy" in op.get_attribute("title")  # each column defines itself
    assert op.value_of_css_property("position") == "sticky"
    op.click()
    assert labels() == ["full", SCRIPT, "lora", "slow", TEX]  # the first click puts the best first
    op.click()
    assert labels() == ["slow", "lora", SCRIPT, "full", TEX]  # then ascending, no OP last
    tail = next(th for th in table.find_elements(By.TAG_NAME, "th") if th.text == "Tail repetition ↓")
    tail.click()
    assert labels()[0] == "lora"  # lower is better: the only row with a tail-repetition value comes first
    next(th for th in table.find_elements(By.TAG_NAME, "th") if th.text == "Method").click()
    assert [x for x in labels() if x[0].isalpha()] == ["full", "lora", "slow"] and labels()[0] != "full"
    assert chromium.execute_script("return window.__pwned === undefined")
    with pytest.raises(NoAlertPresentException):
        chromium.switch_to.alert.text  # noqa: B018  alert(1) never ran
    cell = table.find_element(By.CSS_SELECTOR, "tbody td.m div.d")
    assert cell.text  # the description is shown


def test_cli_writes_every_format(board, tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness.cli", "leaderboard", "--results",
                          str(board["dir"] / "results"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "leaderboard.csv", "leaderboard.html", "leaderboard.md", "leaderboard.tex"]


def test_a_renderer_that_fails_leaves_the_last_boards_four_formats_as_they_were(board, monkeypatch):
    """The formats were written one by one: a failure in the fourth left three new files beside an old one."""
    out = board["dir"] / "out"
    before = {p.name: p.read_text() for p in out.iterdir()}

    def fail(sections, header):
        raise RuntimeError("renderer failed")

    monkeypatch.setitem(tables.FORMATS, "leaderboard.html", fail)
    (board["dir"] / "results" / "runs" / next(iter(os.listdir(board["dir"] / "results" / "runs")))).unlink()
    with pytest.raises(RuntimeError):
        leaderboard.write(board["dir"] / "results", out)
    assert {p.name: p.read_text() for p in out.iterdir()} == before


def test_one_label_over_two_methods_makes_two_rows_not_two_seeds(monkeypatch):
    """#14: a config entry {method: freeze, label: full} must not merge into full's row as a second seed."""
    use_stored_metrics(monkeypatch)
    runs = [synthetic_run("full", 0, _R([0.5, 0.7])), synthetic_run("full", 1, _R([0.4, 0.4]), method="freeze")]
    table = leaderboard.sections(runs)[0]["rows"]
    assert sorted((r["label"].split(" [")[0], r["method"], r["seeds"]) for r in table) == \
        [("full", "freeze", 1), ("full", "full", 1)]
    assert all(r["label"].startswith("full [") for r in table)


def test_pareto_uses_the_estimated_training_flops_not_wall_time(monkeypatch):
    """#14: wall time on a shared machine varies more between days than between methods."""
    use_stored_metrics(monkeypatch)
    runs = [synthetic_run("full", 0, _R([0.5, 0.7]), synthetic_metrics={"cpu_hours": 0.1}),
            synthetic_run("lora", 0, _R([0.4, 0.5]), method="lora", synthetic_metrics={"cpu_hours": 0.5})]
    for run, trainable in zip(runs, (100, 1)):
        run.update(total_params=100, trainable_params=trainable, compute={"train_tokens": 1e9})
    table = leaderboard.sections(runs)[0]["rows"]
    by = {r["label"]: r for r in table}
    assert by["full"]["train_tflops"] == pytest.approx(1e9 * (400 + 200) / 1e12)
    assert by["lora"]["train_tflops"] == pytest.approx(1e9 * (400 + 2) / 1e12)
    assert leaderboard.cost_key(table) == "train_tflops"
    assert by["full"]["pareto"] and by["lora"]["pareto"]  # lora is cheaper by count, though slower by the clock


def test_a_submitted_methods_own_cost_report_takes_no_place_on_the_pareto_front(monkeypatch):
    """A submitted method trains in its own confined process and reports its trained tokens and trainable
    parameters itself, which the harness cannot count: a method that says it trained one parameter on one token
    would otherwise take the front on training FLOPs and push the methods that paid for their score off it."""
    use_stored_metrics(monkeypatch)
    runs = [synthetic_run("full", 0, _R([0.5, 0.7])), synthetic_run("lora", 0, _R([0.4, 0.5]), method="lora"),
            synthetic_run("mine", 0, _R([0.5, 0.7]), method="mine.py:Mine")]
    for run, (trainable, tokens) in zip(runs, ((100, 1e9), (1, 1e9), (1, 1))):
        run.update(total_params=100, trainable_params=trainable, compute={"train_tokens": tokens})
    section = leaderboard.sections(runs)[0]
    by = {r["label"]: r for r in section["rows"]}
    assert by["mine"]["train_tflops"] == pytest.approx(1 * 402 / 1e12)  # shown as reported
    assert [by[x]["costs_reported"] for x in ("full", "lora", "mine")] == [False, False, True]
    assert (by["mine"]["pareto"], by["full"]["pareto"], by["lora"]["pareto"]) == (None, True, True)
    assert by["mine"]["rank"] == 1  # its scores are the parent's own evaluation: ranked as any other
    header = {"sweeps": [], "hardware": [], "runs": 3}
    assert "costs as reported" in tables.markdown([section], header)
    rows = list(csv.DictReader(io.StringIO(tables.csv_text([section], {}))))
    assert {r["label"]: r["costs_reported"] for r in rows} == {"full": "False", "lora": "False", "mine": "True"}
    tex = {line.split(" & ")[1]: line.split(" & ")[-2] for line in tables.latex([section], header).splitlines()
           if line.endswith(r" \\") and " & Method & " not in line}
    page = tables.html_page([section], header)
    status = {label: re.findall(r'<td data-v="([^"]*)">', row)[-1]
              for label, row in re.findall(r'<td class="m" data-v="([^"]+)">(.*?)</tr>', page)}
    assert status["mine"] != status["full"] == status["lora"]  # sorting by Status sets the flagged row apart
    assert tex == {"full": r"$\star$", "lora": r"$\star$", "mine": "--"}  # left off the front, not merely behind it
    hours = [synthetic_run("full", 0, _R([0.5, 0.7]), synthetic_metrics={"cpu_hours": 1.0}),
             synthetic_run("mine", 0, _R([0.5, 0.7]), method="mine.py:Mine", synthetic_metrics={"cpu_hours": 0.5})]
    by = {r["label"]: r for r in leaderboard.rows(hours)}  # wall time is the parent's clock: the front may take it
    assert (by["mine"]["pareto"], by["full"]["pareto"]) == (True, False)


def test_two_card_versions_that_differ_only_in_what_runs_do_not_record_say_what_that_is():
    """A card run with other card seeds (--set seeds=[...]) is another version, though its seed-0 run is the same
    experiment: the section's reason names the seeds or task orders instead of 'fields not recorded'."""
    a, b = synthetic_run("full", 0, _R([0.5, 0.7])), synthetic_run("full", 1, _R([0.5, 0.7]))
    a["protocol"], b["protocol"] = {"name": "card", "version": "v-seeds-0"}, {"name": "card", "version": "v-seeds-01"}
    secs = leaderboard.sections([a, b])
    assert len(secs) == 2 and "seeds or task orders" in secs[1]["reason"]


def test_runs_without_per_item_records_rank_by_welch_not_by_their_means(monkeypatch):
    """Schema-1 rows used to rank 1 + the rows with a higher mean: single runs one item apart got ranks 1 and 4.
    Now single-run rows share rank 1, and rows of three runs each are told apart by Welch's t only where it
    separates them (second source: scipy's Welch test)."""
    use_stored_metrics(monkeypatch)
    single = [synthetic_run(label, 0, _R([op, 0.5])) for label, op in (("a", 0.9), ("b", 0.8), ("c", 0.2))]
    assert [r["rank"] for r in leaderboard.rows(single)] == [1, 1, 1]
    seeds = {"hi": (0.90, 0.91, 0.92), "mid": (0.50, 0.52, 0.54), "near": (0.49, 0.60, 0.41)}
    runs = [synthetic_run(label, s, _R([op, 0.5])) for label, ops in seeds.items() for s, op in enumerate(ops)]
    ranks = {r["label"]: r["rank"] for r in leaderboard.rows(runs)}
    values = {label: [(op + 0.5) / 2 for op in ops] for label, ops in seeds.items()}  # OP: mean of the final row
    assert ttest_ind(values["hi"], values["mid"], equal_var=False).pvalue * 3 < 0.05  # Holm's first step
    assert ttest_ind(values["mid"], values["near"], equal_var=False).pvalue > 0.05
    assert ranks == {"hi": 1, "mid": 2, "near": 2}


def test_rows_go_by_rank_then_by_mean(monkeypatch):
    """Rank is 1 + the rows significantly better, so a row with a lower mean can hold a better rank (a single run
    that nothing is told apart from, below a row of three tight seeds that one row beats): the standard-tuned board
    showed lora's rank 7 above olora's 3. Rows now go by rank, and by mean within a rank."""
    use_stored_metrics(monkeypatch)
    seeds = {"hi": (0.90, 0.91, 0.92), "tight": (0.50, 0.51, 0.52), "one": (0.45,)}
    runs = [synthetic_run(label, s, _R([op, 0.5])) for label, ops in seeds.items() for s, op in enumerate(ops)]
    table = leaderboard.rows(runs)
    assert [(r["label"], r["rank"]) for r in table] == [("hi", 1), ("one", 1), ("tight", 2)]
    assert table[1]["overall"] < table[2]["overall"]  # the order is not the means'


def test_the_board_says_what_its_ranked_score_follows(monkeypatch):
    """OP once ranked what was learned (r 0.98 with plasticity) under a name that promised what was kept; each
    section now says how its ranked score correlates with learning and with keeping, over runs and row means
    (checked against numpy), from finished runs only."""
    import numpy as np
    use_stored_metrics(monkeypatch)
    rng = np.random.default_rng(3)
    runs = []
    for m, label in enumerate(("full", "a", "b", "c")):
        for seed in range(2):
            h, pl, bwt, fg = rng.normal(size=4)
            runs.append(synthetic_run(label, seed, _R([0.5, 0.7]), method="full" if m == 0 else label,
                                      synthetic_metrics={"headline": h, "plasticity": h + 0.1 * pl,
                                                         "bwt": bwt, "lp_forgetting": fg}))
    runs.append(synthetic_run("a", 2, _R([0.5, 0.7]), method="a", status="failed",
                              synthetic_metrics={"headline": 9.0, "plasticity": -9.0, "bwt": 0.0, "lp_forgetting": 0.0}))
    section = leaderboard.sections(runs)[0]
    done = [r["synthetic_metrics"] for r in runs if r["status"] == "finished"]
    table = section["rows"]
    for key in ("plasticity", "bwt", "lp_forgetting"):
        got = section["follows"][key]
        assert got["n_runs"] == 8 and got["n_rows"] == 4
        assert got["runs"] == pytest.approx(np.corrcoef([d["headline"] for d in done], [d[key] for d in done])[0, 1])
        assert got["means"] == pytest.approx(np.corrcoef([r["headline"] for r in table], [r[key] for r in table])[0, 1])
    assert section["follows"]["plasticity"]["runs"] > 0.9
    line = tables.follows_line(section)
    assert line.startswith("What Headline follows (Pearson's r over the ranked rows' 8 runs; in brackets over their 4")
    assert f"Plasticity {section['follows']['plasticity']['runs']:+.3f}" in line
    header = leaderboard.header(runs)
    assert tables.md_escape(line) in tables.markdown([section], header)
    assert html.escape(line, quote=True) in tables.html_page([section], header)
    assert "% " + tables.tex_escape(line) in tables.latex([section], header)
    few = leaderboard.sections(runs[:2])[0]  # one row of two runs: nothing to correlate
    assert few["follows"] == {} and tables.follows_line(few) == ""


def test_a_column_that_is_bad_in_both_directions_claims_no_better_one():
    """The stop-rate change rises when answers collapse to a few words and falls when they run on: a board that
    called higher better (an arrow, a best-first sort) would reward length collapse."""
    from harness.report.tables import HELP

    assert HELP["Stop-rate change"][0] is None
    assert "collapse" in HELP["Stop-rate change"][1]
