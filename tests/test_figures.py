"""`clbench figures` on a synthetic store: every file is written, non-empty, PNGs at the stated size;
a figure whose metric no run measured is skipped with a printed note."""
import pytest
from PIL import Image
from synthetic_runs import synthetic_run, use_stored_metrics

from harness import cli
from harness.report import figures
from harness.store.store import Store

HOSTILE = r"<b>$\frac{1}{0$ & %s"  # mathtext would fail on it: labels are plain text


def _store(root, measured: bool):
    store = Store(root)
    for i, label in enumerate(["full", "lora", HOSTILE]):
        for seed in range(2):
            R = [[0.3, 0.4], [0.6 - 0.1 * i, 0.4], [0.5 + 0.05 * seed, 0.7 - 0.1 * i]]
            extra = {"gpu_hours": 1.0 + i + 0.1 * seed, "general_retention": 0.9 - 0.05 * seed,
                     "tail_repetition": 0.1 * i} if measured else dict.fromkeys(
                ("gpu_hours", "cpu_hours", "general_retention", "tail_repetition"))
            store.save_run(synthetic_run(label, seed, R, synthetic_metrics=extra, items=20,
                                         method="full" if label == "full" else "lora"))
    return root


def test_every_figure_in_pdf_and_png_at_its_size(tmp_path, monkeypatch, capsys):
    use_stored_metrics(monkeypatch)
    results = _store(tmp_path / "results", measured=True)
    assert cli.main(["figures", "--results", str(results), "--out", str(tmp_path / "fig")]) == 0
    assert "note:" not in capsys.readouterr().out
    for name, (w, h) in figures.FIGURES.items():
        pdf, png = tmp_path / "fig" / f"{name}.pdf", tmp_path / "fig" / f"{name}.png"
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000
        with Image.open(png) as im:
            # the stated width; the stated height, or more where a legend of long labels needs rows
            assert im.size[0] == round(w * figures.DPI) and im.size[1] >= round(h * figures.DPI)
            assert len(im.convert("L").getcolors(256)) > 10  # something was drawn
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == sorted(
        [*(f"{n}.{ext}" for n in figures.FIGURES for ext in ("pdf", "png")), "README.md"])
    captions = (tmp_path / "fig" / "README.md").read_text()
    assert "6 finished runs of 3 methods, tiny on stem → humanities" in captions
    assert all(f"`{n}.png`" in captions for n in figures.FIGURES)
    # drawn again from the same runs: the same bytes (a PDF carried its creation time, so every redraw of the
    # committed figures showed as a change)
    drawn = {p.name: p.read_bytes() for p in (tmp_path / "fig").iterdir()}
    assert cli.main(["figures", "--results", str(results), "--out", str(tmp_path / "fig")]) == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "fig").iterdir()} == drawn


def test_unmeasured_figures_are_skipped_with_a_note(tmp_path, monkeypatch, capsys):
    use_stored_metrics(monkeypatch)
    results = _store(tmp_path / "results", measured=False)
    assert cli.main(["figures", "--results", str(results), "--out", str(tmp_path / "fig")]) == 0
    out = capsys.readouterr().out
    assert "note: retention_repetition: skipped" in out and "note: cost_vs_score: skipped" in out
    assert "overlapping" not in out
    assert "note: stability_plasticity: no run measured GPU-hours or CPU-hours" in out
    written = sorted(p.stem for p in (tmp_path / "fig").glob("*.png"))
    assert written == ["accuracy_matrices", "forgetting_curves", "stability_plasticity", "versus_full"]


def test_an_empty_store_says_so(tmp_path):
    paths, notes = figures.write(tmp_path, tmp_path / "fig")
    assert paths == [] and "no finished runs" in notes[0]


@pytest.mark.parametrize("points, front", [
    ([(0, 0), (1, 1), (2, 0.5), (0.5, 2)], [(0.5, 2), (1, 1), (2, 0.5)]),
    ([(1, 1), (1, 1)], [(1, 1), (1, 1)]),
])
def test_front_keeps_the_undominated_points(points, front):
    assert figures._front(points) == front


def test_eighteen_methods_each_look_different_and_no_text_overlaps(tmp_path, monkeypatch, capsys):
    """As in the all-methods board: 18 methods, some with identical results. Each has its own colour + marker +
    line style (told apart in greyscale too), and no drawn text overlaps another in any figure."""
    looks = [figures._look(i) for i in range(18)]
    assert len({tuple(sorted(look.items())) for look in looks}) == 18
    by_colour = {}
    for look in looks:
        by_colour.setdefault(look["color"], []).append((look["marker"], look["linestyle"]))
    assert all(len({m for m, _ in v}) == len(v) == len({ls for _, ls in v}) for v in by_colour.values())
    use_stored_metrics(monkeypatch)
    store = Store(tmp_path / "results")
    for i in range(18):
        R = [[0.3, 0.4], [0.6 - 0.02 * (i % 9), 0.4], [0.5, 0.7 - 0.02 * (i % 9)]]  # pairs of identical results
        store.save_run(synthetic_run("full" if i == 0 else f"method_with_a_long_name_{i}", 0, R, items=20,
                                     method="full" if i == 0 else "lora", synthetic_metrics={
                                         "gpu_hours": 1.0 + i, "general_retention": 0.9, "tail_repetition": 0.1}))
    assert cli.main(["figures", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "fig")]) == 0
    out = capsys.readouterr().out
    assert "overlapping" not in out, out
    assert (tmp_path / "fig" / "versus_full.png").exists()


def test_the_overlap_check_sees_overlapping_text():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "one label")
    ax.text(0.52, 0.5, "another label")
    assert figures.text_overlaps(fig) == [("one label", "another label")]
    plt.close(fig)


def test_many_methods_get_legends_below_and_taller_figures(tmp_path, monkeypatch, recwarn):
    """18 methods, as in the all-methods board: in-panel legends had covered the data and collapsed
    the constrained layout (matplotlib warned); legends go below and the figures grow."""
    use_stored_metrics(monkeypatch)
    store = Store(tmp_path / "results")
    for i in range(18):
        R = [[0.3, 0.4], [0.6 - 0.02 * i, 0.4], [0.5, 0.7 - 0.02 * i]]
        store.save_run(synthetic_run(f"method_{i}", 0, R, synthetic_metrics={
            "gpu_hours": 1.0 + i, "general_retention": 0.9, "tail_repetition": 0.1}))
    assert cli.main(["figures", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "fig")]) == 0
    assert not [w for w in recwarn if "constrained_layout" in str(w.message)]
    for name in ("forgetting_curves", "stability_plasticity", "cost_vs_score"):
        with Image.open(tmp_path / "fig" / f"{name}.png") as im:
            assert im.size[1] > round(figures.FIGURES[name][1] * figures.DPI), name


def test_equal_values_with_no_spread_get_a_readable_axis(tmp_path, monkeypatch):
    """Two methods with the same tail repetition up to float rounding and no spread: the panel shows a visible
    range around the value, not autoscaling's '1e-8+9.23077e-1' offset."""
    use_stored_metrics(monkeypatch)
    runs = [synthetic_run(label, seed, [[0.3, 0.4], [0.6, 0.4], [0.5, 0.7]], method=label,
                          synthetic_metrics={"general_retention": 0.9, "tail_repetition": 12 / 13 + 1e-9 * (label == "lora")})
            for label in ("full", "lora") for seed in range(2)]
    from harness.report import leaderboard

    table = leaderboard.sections(runs)[0]["rows"]
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, out, name, notes: drawn.append(fig) or [])
    figures.retention_repetition(table, tmp_path, [], [])
    ax = drawn[0].axes[1]
    drawn[0].canvas.draw()
    lo, hi = ax.get_ylim()
    assert hi - lo >= 0.05 and lo < 12 / 13 < hi
    assert ax.yaxis.get_major_formatter().get_offset() == ""


def _drawn(monkeypatch):
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, out, name, notes: drawn.append(fig) or [])
    return drawn


def test_a_pareto_front_of_one_point_is_drawn_and_keys_show_each_methods_marker(tmp_path, monkeypatch):
    """One method dominating the rest made a front of one point: a line through it drew nothing, though the
    legend named it; error-bar legend keys hid the marker shapes that tell methods sharing a colour apart."""
    use_stored_metrics(monkeypatch)
    from harness.report import leaderboard

    runs = [synthetic_run(label, 0, [[0.3, 0.4], [0.6 - d, 0.4], [0.5 - d, 0.7 - d]], method=label,
                          synthetic_metrics={"gpu_hours": 1.0 + d})
            for label, d in (("full", 0.0), ("lora", 0.1), ("replay", 0.2))]
    table = leaderboard.sections(runs)[0]["rows"]
    drawn = _drawn(monkeypatch)
    figures.stability_plasticity(table, tmp_path, [], [])
    figures.cost_vs_score(table, tmp_path, [])
    # each figure names its own front: the stability-plasticity one is not the board's Pareto front
    for fig, name in zip(drawn, [figures.BWT_FRONT, "Pareto front"]):
        front = next(line for line in fig.axes[0].get_lines() if line.get_label() == name)
        assert len(front.get_xdata()) == 1 and front.get_marker() == "o"  # one point, ringed
    keys = drawn[1].legends[0].legend_handles
    assert [k.get_marker() for k in keys[:3]] == [figures._look(i)["marker"] for i in range(3)]


def test_a_submitted_methods_reported_cost_is_named_so_in_the_cost_figure(tmp_path, monkeypatch):
    """Its training FLOPs are the method's own report and take no place on the front (leaderboard.rows): its
    point is drawn where the report puts it, and the legend says whose word that is."""
    use_stored_metrics(monkeypatch)
    from harness.report import leaderboard

    runs = [synthetic_run(label, 0, [[0.3, 0.4], [0.6, 0.4], [0.5, 0.7]], method=method)
            for label, method in (("full", "full"), ("mine", "mine.py:Mine"))]
    for run, tokens in zip(runs, (1e9, 1)):
        run.update(total_params=100, trainable_params=10, compute={"train_tokens": tokens})
    drawn = _drawn(monkeypatch)
    figures.cost_vs_score(leaderboard.sections(runs)[0]["rows"], tmp_path, [])
    names = [t.get_text() for t in drawn[0].legends[0].get_texts()]
    assert names == ["full", "mine" + figures.REPORTED, "Pareto front"]
    front = next(line for line in drawn[0].axes[0].get_lines() if line.get_label() == "Pareto front")
    assert list(front.get_xdata()) == [pytest.approx(1e9 * 420 / 1e12)]  # full's point alone


def test_an_unbounded_interval_is_an_arrow_to_the_edge_and_the_caption_says_so(tmp_path, monkeypatch):
    use_stored_metrics(monkeypatch)
    from harness.report import leaderboard

    runs = [synthetic_run("full", s, [[0.3, 0.4], [0.6, 0.4], [0.5, 0.7]], synthetic_metrics={
        "general_retention": 1.2, "tail_repetition": 0.1}) for s in range(2)]
    table = leaderboard.sections(runs)[0]["rows"]
    table[0]["interval"]["general_retention"] = (0.8, float("inf"))
    drawn, remarks = _drawn(monkeypatch), []
    figures.retention_repetition(table, tmp_path, [], remarks)
    arrows = [t for t in drawn[0].axes[0].texts if getattr(t, "arrow_patch", None) is not None]
    assert len(arrows) == 1 and arrows[0].xy[1] == drawn[0].axes[0].get_ylim()[1]
    assert remarks == ["full's general retention (final / base) interval has no upper end (a redrawn baseline "
                       "accuracy of 0): its bar is an arrow to the panel's edge."]


def test_a_forgetting_band_stays_within_what_an_accuracy_can_be(tmp_path, monkeypatch):
    """Two runs at 0.5 and 1.0 give a t-interval far past 1; the panel's fixed scale cut it off unmarked."""
    use_stored_metrics(monkeypatch)
    from harness.report import leaderboard

    runs = [synthetic_run("full", s, [[0.3, 0.4], [v, 0.4], [v, 0.7]]) for s, v in enumerate((0.5, 1.0))]
    section = leaderboard.sections(runs)[0]
    drawn = _drawn(monkeypatch)
    figures.forgetting_curves(section["rows"], figures._matrices(runs, ["stem", "humanities"]), ["stem", "humanities"],
                              tmp_path, [])
    ys = [y for ax in drawn[0].axes[:2] for band in ax.collections for _, y in band.get_paths()[0].vertices]
    assert ys and min(ys) >= 0.0 and max(ys) == 1.0


def test_a_figure_that_fails_half_way_leaves_the_one_before_whole(tmp_path, monkeypatch):
    import matplotlib.figure

    use_stored_metrics(monkeypatch)
    results = _store(tmp_path / "results", measured=True)
    out = tmp_path / "fig"
    out.mkdir()
    (out / "accuracy_matrices.pdf").write_bytes(b"%PDF- the figure before")

    def half(self, target, **kw):  # drawn into memory, then written whole: a failure mid-draw leaves no file
        target.write(b"%PDF- half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half)
    with pytest.raises(OSError):
        figures.write(results, out)
    assert (out / "accuracy_matrices.pdf").read_bytes() == b"%PDF- the figure before"
    assert [p.name for p in out.iterdir()] == ["accuracy_matrices.pdf"]  # no half file left beside it


@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_a_figures_folder_that_is_a_link_or_a_file_is_refused_and_nothing_is_written_through_it(tmp_path, kind):
    """A stored `figures` link had every figure and the README written into its target, outside the results."""
    from harness.core.errors import StoreError

    results, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    results.mkdir()
    elsewhere.mkdir()
    (elsewhere / "README.md").write_text("theirs")
    if kind == "symlink":
        (results / "figures").symlink_to(elsewhere)
    else:
        (results / "figures").write_text("a file")
    with pytest.raises(StoreError, match="figures: not a folder of the results' own"):
        figures.write(results)
    assert [p.name for p in elsewhere.iterdir()] == ["README.md"] and (elsewhere / "README.md").read_text() == "theirs"


ALL_METHODS = ["full", "lora", "lora_all_r64", "freeze", "replay", "l2sp", "ewc", "distill", "llama_pro", "qlora",
               "prompt_tuning", "prefix_tuning", "p_tuning_v2", "latent_replay", "sdft", "olora", "moe_lora",
               "selective_tokens"]


def test_the_all_methods_boards_stability_figure_keeps_its_axis_label_inside(tmp_path, monkeypatch, capsys):
    """The 18 built-in methods priced in training TFLOPs: the size key 'Training TFLOPs (est.) 49.1' set the
    legend to one column of 21 rows, the constrained layout squeezed the panel, and the y label ran off the top."""
    use_stored_metrics(monkeypatch)
    store = Store(tmp_path / "results")
    for i, label in enumerate(ALL_METHODS):
        R = [[0.3, 0.4], [0.6 - 0.02 * i, 0.4], [0.5, 0.7 - 0.03 * i]]
        store.save_run(synthetic_run(label, 0, R, items=20, method="full" if i == 0 else "lora", synthetic_metrics={
            "train_tflops": 20.0 + 1.7 * i, "general_retention": 0.9, "tail_repetition": 0.1}))
    assert cli.main(["figures", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "fig")]) == 0
    assert "overlapping" not in capsys.readouterr().out


@pytest.mark.parametrize("text, width, lines", [
    ("selective_tokens (n=1)", 15, ["selective_", "tokens (n=1)"]),
    ("lora_all_r64 (n=3)", 15, ["lora_all_r64", "(n=3)"]),
    ("p_tuning_v2 (n=1)", 8, ["p_", "tuning_", "v2 (n=1)"]),
    ("a_very_long_unbroken_name (n=1)", 8, ["a_very_", "long_", "unbroken_", "name", "(n=1)"]),
    ("full (n=3)", 15, ["full (n=3)"]),
])
def test_a_panel_title_wraps_between_the_words_of_a_method_name(text, width, lines):
    """textwrap.fill split 'selective_tokens (n=1)' into 'selective_token' and 's (n=1)' on the all-methods board."""
    assert figures.wrap_name(text, width).split("\n") == lines
