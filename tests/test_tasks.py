"""Domain definitions and splits on the real data."""
import dataclasses
import json

from harness.spec.config import Budget
from tasks.mmlu_categories import SUBJECT_CATEGORY
from tasks.registry import builtin, load_stream

LAW_SUBJECTS = ("professional_law", "international_law", "jurisprudence")
MBPP_TRAIN, MBPP_TEST = range(601, 975), range(11, 511)

BUDGET = Budget(learn_items=8, transfer_items=8, code_items=4, heldout_items=3, general_items=8)


def test_builtin_category_map_matches_the_data_folder(data_dir):
    subjects = json.loads((data_dir / "mmlu" / "subjects.json").read_text())["subjects"]
    assert {s: v["category_short"] for s, v in subjects.items()} == SUBJECT_CATEGORY


def test_builtin_domain_files_say_what_the_splits_are():
    assert builtin("law").reader == {"subjects": list(LAW_SUBJECTS)}
    assert builtin("humanities").reader["exclude_subjects"] == list(LAW_SUBJECTS)
    assert builtin("code").reader == {"learn": [MBPP_TRAIN.start, MBPP_TRAIN.stop],
                                       "transfer": [MBPP_TEST.start, MBPP_TEST.stop]}


def test_splits(source):
    tasks, probes = load_stream(source, ["stem", "humanities", "code", "law"], ["general"], BUDGET, 1234)
    by = {t.name: t for t in tasks}
    for name in ("stem", "humanities", "law"):
        t = by[name]
        assert t.views["recall"] == t.learn and len(t.learn) == 8
        assert not {i.uid for i in t.learn} & {i.uid for i in t.views["transfer"]}
    subject = lambda it: it.uid.split("/")[1]  # noqa: E731
    assert all(subject(i) in LAW_SUBJECTS for i in by["law"].learn + by["law"].views["transfer"])
    assert all(SUBJECT_CATEGORY[subject(i)] == "humanities" and subject(i) not in LAW_SUBJECTS
               for i in by["humanities"].learn)
    assert all(SUBJECT_CATEGORY[subject(i)] == "STEM" for i in by["stem"].learn)
    code = by["code"]
    assert all(int(i.uid.split("/")[1]) in MBPP_TRAIN for i in code.learn)
    assert all(int(i.uid.split("/")[1]) in MBPP_TEST for i in code.views["transfer"])
    assert len(code.views["humaneval"]) == 3 and code.views["humaneval"][0].uid.startswith("HumanEval/")
    general = probes[0].views["heldout"]
    assert all(SUBJECT_CATEGORY[subject(i)] in ("social sciences", "other") for i in general)


def test_splits_depend_on_data_seed_only(source):
    a, _ = load_stream(source, ["stem"], [], BUDGET, 1234)
    b, _ = load_stream(source, ["stem"], [], BUDGET, 1234)
    c, _ = load_stream(source, ["stem"], [], BUDGET, 99)
    assert [i.uid for i in a[0].learn] == [i.uid for i in b[0].learn]
    assert [i.uid for i in a[0].learn] != [i.uid for i in c[0].learn]


def test_item_length_cap(source):
    capped = dataclasses.replace(BUDGET, max_item_chars=300)
    tasks, _ = load_stream(source, ["law"], [], capped, 1234)
    for it in tasks[0].learn + tasks[0].views["transfer"]:
        assert len(it.question) + sum(len(o) for o in it.options) <= 300


def test_reference_solutions_pass_their_tests(source):
    from tasks.code_exec import passes

    tasks, _ = load_stream(source, ["code"], [], BUDGET, 1234)
    for view in tasks[0].views.values():
        for item in view:
            assert passes(item.reference, item.tests), item.uid


def test_checksums_recorded_for_every_file_read(source):
    load_stream(source, ["law"], [], BUDGET, 1234)
    assert "mmlu/test/professional_law_test.csv" in source.checksums
    assert all(len(v) == 64 for v in source.checksums.values())
