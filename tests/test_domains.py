"""Domains as data (tasks/domain_spec.py): the built-in files, the GSM8K math domain, a user's own files
(JSONL, CSV, TRACE) named in a stream, and the errors a bad file gets."""
import glob
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.errors import ConfigError, DataError
from harness.spec import config, protocol
from harness.spec.config import Budget
from tasks import answers
from tasks.data import DataSource
from tasks.items import GenItem, MCItem
from tasks.registry import load_stream

ROOT = Path(__file__).resolve().parent.parent
BUDGET = Budget(learn_items=3, transfer_items=2, code_items=2, heldout_items=0)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_builtin_domain_files_draw_the_items_of_the_stored_reference_runs(source):
    """The four domains became YAML files; a stored run's items (uids, in order) are what they draw."""
    run = json.loads(Path(sorted(glob.glob(str(ROOT / "results/reference/quick-demo/runs/*.json")))[0]).read_text())
    cfg = config.load("quick")
    tasks, _ = load_stream(source, list(cfg.stream), [], cfg.budget, cfg.data_seed)
    for task in tasks:
        for view, items in task.views.items():
            assert [i.uid for i in items] == run["stages"][0]["scores"][task.name][view]["items"]["uid"], \
                (task.name, view)


def test_math_domain_is_gsm8k_scored_on_the_final_number(source):
    tasks, _ = load_stream(source, ["math"], [], BUDGET, 1234)
    math = tasks[0]
    assert math.kind == "gen" and len(math.learn) == 2 and len(math.views["transfer"]) == 2
    assert all(i.uid.startswith("math/learn/") for i in math.learn)
    assert all(i.uid.startswith("math/transfer/") for i in math.views["transfer"])
    for item in math.learn + math.views["transfer"]:
        assert isinstance(item, GenItem) and item.answer.lstrip("-").replace(".", "").isdigit()
        assert answers.matches("last_number", item.reference, item.answer)  # the reference solution is right
        assert not answers.matches("last_number", item.reference + " so 1 more: " + item.answer + "1", item.answer)
    assert {"gsm8k/train.jsonl", "gsm8k/test.jsonl"} <= set(source.checksums)


@pytest.mark.parametrize("reply, reference, right", [
    ("She makes $18 a day.", "9 * 2 = 18\n#### 18", True),
    ("The total is 1,000 dollars.", "#### 1000", True),
    ("18.0", "#### 18", True),
    ("It is 18, not 19.", "#### 18", False),  # the last number counts
    ("no number here", "#### 18", False),
])
def test_last_number_scorer(reply, reference, right):
    assert answers.matches("last_number", reply, answers.answer("last_number", reference)) is right


def test_exact_match_ignores_case_and_spacing_only():
    assert answers.matches("exact_match", "  Positive\n", answers.answer("exact_match", "positive"))
    assert not answers.matches("exact_match", "positive.", answers.answer("exact_match", "positive"))


MC_DOMAIN = """name: trivia
kind: multiple_choice
source:
  pool: rows.jsonl
fields: {question: q, options: choices, answer: gold}
template: "Trivia: {q}"
"""


def mc_rows(n=8):
    return "".join(json.dumps({"q": f"question {i}?", "choices": [f"a{i}", f"b{i}", f"c{i}"],
                               "gold": ["A", 1, f"c{i}"][i % 3]}) + "\n" for i in range(n))


def card(tmp_path, stream, extra=""):
    return write(tmp_path / "cards" / "card.yaml", f"model: tiny\nstream: {stream}\nmethods: [full]\n"
                 f"budget: {{learn_items: 3, transfer_items: 2, code_items: 2, heldout_items: 0}}\n{extra}")


def test_a_stream_names_a_users_domain_file_relative_to_its_card(tmp_path, data_dir):
    write(tmp_path / "cards" / "mine" / "trivia.yaml", MC_DOMAIN)
    write(tmp_path / "cards" / "mine" / "rows.jsonl", mc_rows())
    cfg = config.load(str(card(tmp_path, "[stem, ./mine/trivia.yaml]", f"data_dir: {data_dir}")))
    assert cfg.stream == ["stem", "trivia"]  # results and boards name the task, never a path
    assert cfg.domains == {"trivia": str((tmp_path / "cards" / "mine" / "trivia.yaml").resolve())}
    src = DataSource(cfg.data_dir)
    tasks, _ = load_stream(src, cfg.stream, [], cfg.budget, cfg.data_seed, cfg.domains)
    trivia = tasks[1]
    assert trivia.kind == "mc" and len(trivia.learn) == 3 and len(trivia.views["transfer"]) == 2
    for item in trivia.learn + trivia.views["transfer"]:
        assert isinstance(item, MCItem) and item.question.startswith("Trivia: question ")
        i = int(item.uid.rsplit("/", 1)[1])
        assert item.answer == [0, 1, 2][i % 3]  # a letter, an index and an option's text
    assert {"domain:trivia", "domain:trivia/pool"} <= set(src.checksums)


def test_a_domain_files_content_is_part_of_the_protocol_version_and_its_path_is_not(tmp_path, data_dir):
    for folder in ("a", "b"):
        write(tmp_path / folder / "cards" / "trivia.yaml", MC_DOMAIN)
        write(tmp_path / folder / "cards" / "rows.jsonl", mc_rows())
    extra = f"data_dir: {data_dir}"
    va, vb = (protocol.version(config.load(str(card(tmp_path / f, "[stem, ./trivia.yaml]", extra))))
              for f in ("a", "b"))
    assert va == vb  # the same files in another folder: one protocol
    write(tmp_path / "b" / "cards" / "trivia.yaml", MC_DOMAIN.replace("Trivia: {q}", "Quiz: {q}"))
    assert protocol.version(config.load(str(card(tmp_path / "b", "[stem, ./trivia.yaml]", extra)))) != va


def test_the_same_questions_read_from_other_bytes_make_one_protocol(tmp_path, data_dir):
    """The version is on what the items say, not on the file's bytes (as the hub's and a local copy differ)."""
    rows = [json.loads(line) for line in mc_rows().splitlines()]
    respaced = "".join(json.dumps(dict(reversed(r.items())), indent=1).replace("\n", "") + "\n" for r in rows)
    for folder, text in (("a", mc_rows()), ("b", respaced)):
        write(tmp_path / folder / "cards" / "trivia.yaml", MC_DOMAIN)
        write(tmp_path / folder / "cards" / "rows.jsonl", text)
    cards = [config.load(str(card(tmp_path / f, "[stem, ./trivia.yaml]", f"data_dir: {data_dir}"))) for f in "ab"]
    assert protocol.data_checksums(cards[0]) != protocol.data_checksums(cards[1])
    assert protocol.version(cards[0]) == protocol.version(cards[1])
    rows[0]["gold"] = "B"  # one answer changed: another protocol
    write(tmp_path / "b" / "cards" / "rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert protocol.version(cards[1]) != protocol.version(cards[0])


def test_csv_options_in_columns_and_separate_learn_and_transfer_files(tmp_path):
    rows = "question,A,B,C,D,answer\n" + "".join(f"q{i},w,x,y,z{i},{'ABCD'[i % 4]}\n" for i in range(5))
    write(tmp_path / "learn.csv", rows)
    write(tmp_path / "test.csv", rows)
    write(tmp_path / "d.yaml", "name: quiz\nkind: multiple_choice\nsource: {learn: learn.csv, transfer: test.csv}\n"
                               "fields: {question: question, options: [A, B, C, D], answer: answer}\n")
    tasks, _ = load_stream(DataSource(None), ["quiz"], [], BUDGET, 0, {"quiz": str(tmp_path / "d.yaml")})
    assert {i.uid.split("/")[1] for i in tasks[0].learn} == {"learn"}
    assert {i.uid.split("/")[1] for i in tasks[0].views["transfer"]} == {"transfer"}
    item = tasks[0].learn[0]
    assert item.options[:3] == ("w", "x", "y") and item.answer == int(item.uid.rsplit("/", 1)[1]) % 4


def test_trace_task_folder(tmp_path):
    """TRACE (Wang et al. 2023) ships each task as a folder of train/eval/test JSON lists of prompt/answer."""
    rows = [{"prompt": f"Stance of text {i}? Answer A, B or C.", "answer": "ABC"[i % 3]} for i in range(6)]
    write(tmp_path / "C-STANCE" / "train.json", json.dumps(rows))
    write(tmp_path / "C-STANCE" / "test.json", json.dumps(rows[:4]))
    write(tmp_path / "cstance.yaml", "name: cstance\nkind: generation\nsource: {trace: ./C-STANCE}\nscorer: exact_match\n")
    src = DataSource(None)
    tasks, _ = load_stream(src, ["cstance"], [], BUDGET, 0, {"cstance": str(tmp_path / "cstance.yaml")})
    item = tasks[0].learn[0]
    assert isinstance(item, GenItem) and item.prompt.startswith("Stance of text") and item.answer in ("a", "b", "c")
    assert item.training_pair() == {"user": item.prompt, "reply": item.reference}
    assert {"domain:cstance/learn", "domain:cstance/transfer"} <= set(src.checksums)


@pytest.mark.parametrize("text, message", [
    ("name: x\nkind: multiple_choice\nsorce: {pool: a.jsonl}\n", "sorce: unknown key; did you mean 'source'"),
    ("name: x\nkind: essay\nsource: {pool: a.jsonl}\n", "kind: 'essay' is not one of"),
    ("name: X y\nkind: generation\n", "name: expected a lower-case name"),
    ("name: x\nkind: generation\nsource: {pool: a.txt}\nfields: {prompt: p, reference: r}\nscorer: exact_match\n",
     "source.pool: 'a.txt' is not one of .jsonl"),
    ("name: x\nkind: generation\nsource: {pool: a.jsonl}\nfields: {prompt: p, reference: r}\nscorer: bleu\n",
     "scorer: 'bleu' is not a scorer; use one of exact_match, last_number"),
    ("name: x\nkind: multiple_choice\nsource: {pool: a.jsonl}\nfields: {question: q, answer: a}\n",
     "fields.options: expected the column holding a list"),
    ("name: x\nkind: generation\nsource: {pool: a.jsonl}\nfields: {prompt: p, reference: r}\nscorer: exact_match\n"
     "template: 'no placeholder'\n", "template: names no {column}; without one"),
    ("name: x\nkind: generation\nsource: {pool: a.jsonl}\nfields: {prompt: p, reference: r}\nscorer: exact_match\n"
     "template: 'Q: {p.__class__}'\n", "template: names no {column} ({p.__class__} is not one: only a plain {column} "
     "is filled in)"),
])
def test_a_bad_domain_file_is_refused_before_any_data_is_read(tmp_path, text, message):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as e:
        config.load(str(card(tmp_path, f"[{path}]")))
    assert str(path) in str(e.value) and message in str(e.value)


def test_a_missing_domain_file_is_named_with_the_config_and_its_stream_entry(tmp_path):
    path = card(tmp_path, "[stem, ./mine/trivia.yaml]")
    with pytest.raises(ConfigError) as e:
        config.load(str(path))
    assert str(e.value) == (f"{path}: stream[1]: {tmp_path / 'cards' / 'mine' / 'trivia.yaml'}: file not found (a "
                            "domain file's path is relative to the config's folder, or to the working directory "
                            "for --set)")


def test_a_users_domain_cannot_take_a_built_in_name(tmp_path):
    write(tmp_path / "rows.jsonl", mc_rows())
    write(tmp_path / "stem.yaml", MC_DOMAIN.replace("name: trivia", "name: stem"))
    with pytest.raises(ConfigError, match="is named 'stem', like the built-in domain"):
        config.load(str(card(tmp_path, "[law, ../stem.yaml]")))


@pytest.mark.parametrize("row, message", [
    ({"q": "?", "choices": ["a", "b"]}, "no column 'gold' (fields.answer)"),
    ({"q": "?", "choices": ["a", "b"], "gold": "E"}, "answer 'E' is neither an option's index"),
    ({"q": "?", "choices": ["a"], "gold": 0}, "fields.options must give 2-10 options"),
])
def test_a_row_that_does_not_fit_names_its_file_line_and_field(tmp_path, row, message):
    write(tmp_path / "rows.jsonl", "".join(json.dumps(row) + "\n" for _ in range(6)))
    domain = write(tmp_path / "trivia.yaml", MC_DOMAIN)
    with pytest.raises(DataError) as e:
        load_stream(DataSource(None), ["trivia"], [], BUDGET, 0, {"trivia": str(domain)})
    assert f"{tmp_path / 'rows.jsonl'}:1" in str(e.value) and message in str(e.value)


def test_a_template_cannot_reach_into_python_objects(tmp_path):
    write(tmp_path / "rows.jsonl", mc_rows())
    domain = write(tmp_path / "trivia.yaml", MC_DOMAIN.replace("Trivia: {q}", "{q} {q.__class__} {q[0]} {q!r}"))
    tasks, _ = load_stream(DataSource(None), ["trivia"], [], BUDGET, 0, {"trivia": str(domain)})
    assert tasks[0].learn[0].question.endswith(" {q.__class__} {q[0]} {q!r}")  # only {column} is filled


@pytest.mark.slow
def test_a_users_domains_run_end_to_end(tmp_path, data_dir):
    """`clbench run` with a stream of a built-in domain, the math domain and a user's file, through Ray."""
    write(tmp_path / "trivia.yaml", MC_DOMAIN)
    write(tmp_path / "rows.jsonl", mc_rows())
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--preset", "tiny", "--results", str(results),
                           "--data", str(data_dir), "--methods", "full", "--set", "stream=[math, ./trivia.yaml]",
                           "--set", "probes=[]", "--set", "budget.max_new_tokens=8"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_file,) = (results / "runs").glob("*.json")
    run = json.loads(run_file.read_text())
    assert run["status"] == "finished" and run["spec"]["stream"] == ["math", "trivia"]
    assert run["spec"]["domains"] == {"trivia": str(tmp_path / "trivia.yaml")}
    assert [s["trained_on"] for s in run["stages"]] == [None, "math", "trivia"]
    for stage in run["stages"]:
        math = stage["scores"]["math"]["recall"]
        assert set(math["items"]) == {"uid", "correct", "truncated", "reference_logprob"}
        assert math["score"] == sum(math["items"]["correct"]) / math["n"]
        assert set(stage["scores"]["trivia"]["transfer"]["items"]) >= {"correct", "gold_logprob"}
    assert "domain:trivia" in run["provenance"]["data_checksums"]
    board = subprocess.run([sys.executable, "-m", "harness.cli", "leaderboard", "--results", str(results)],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert board.returncode == 0, board.stderr[-3000:]


def test_parquet_rows(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    rows = [{"question": f"{i} + {i}?", "solution": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "sums.parquet")
    write(tmp_path / "sums.yaml", "name: sums\nkind: generation\nsource: {pool: sums.parquet}\n"
                                  "fields: {prompt: question, reference: solution}\nscorer: last_number\n")
    tasks, _ = load_stream(DataSource(None), ["sums"], [], BUDGET, 0, {"sums": str(tmp_path / "sums.yaml")})
    for item in tasks[0].learn + tasks[0].views["transfer"]:
        i = int(item.prompt.split(" ")[0])
        assert item.answer == str(2 * i) and item.reference == rows[i]["solution"]


def test_a_hub_source_with_the_hub_off_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write(tmp_path / "hub.yaml", "name: gsm\nkind: generation\nsource:\n  learn: {hub: openai/gsm8k, name: main, split: train}"
                                 "\n  transfer: {hub: openai/gsm8k, name: main, split: test}\n"
                                 "fields: {prompt: question, reference: answer}\nscorer: last_number\n")
    with pytest.raises(DataError, match="reads openai/gsm8k from the hub, which is off .* name that file instead"):
        load_stream(DataSource(None), ["gsm"], [], BUDGET, 0, {"gsm": str(tmp_path / "hub.yaml")})
