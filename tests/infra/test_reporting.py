"""infra.reporting: the page (self-contained HTML + the same Markdown), the figures' conventions (a
missing value is never a bar at 0, integer layer ticks, phase boundaries marked), the run-folder
readers, and a real headless Chromium looking at a page."""

import hashlib
import shutil

import pytest
import yaml

from infra.folders import FolderError
from infra.reporting import figures as F
from infra.reporting.browser import chromium, render, screenshot_path
from infra.reporting.page import Page, write_csv
from infra.reporting.runs import list_checkpoints, read_metrics, read_schedule

needs_chromium = pytest.mark.skipif(chromium() is None, reason="Chromium not installed (scripts/setup.sh --slurm)")


def rate(v, lo, hi, n, judged=None):
    return {"value": v, "ci95": [lo, hi], "n": n, "judged": n if judged is None else judged, "unparsed": 0, "errors": 0}


def _filled_bars(ax):
    return [p for p in ax.patches if p.get_fill()]


def test_a_missing_value_is_drawn_as_missing_never_as_zero():
    fig = F.grouped_bars(
        ["keyword", "llm"],
        {"run a": [rate(0.25, 0.1, 0.5, 8), None], "run b": [rate(0.0, 0.0, 0.3, 8), rate(0.5, 0.2, 0.8, 8, 6)]},
        "ASR",
    )
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 3) for p in _filled_bars(ax))
    assert heights == [0.0, 0.25, 0.5]  # three values drawn; the missing one is no bar at all
    stubs = [p for p in ax.patches if not p.get_fill()]
    assert len(stubs) == 1 and stubs[0].get_hatch() == "///"
    texts = [t.get_text() for t in ax.texts]
    assert "missing" in texts and any("6/8 judged" in t for t in texts) and any("n=8" in t for t in texts)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["run a", "run b", "missing (no value)"]
    F.plt().close(fig)
    fig = F.rate_bars({"a": rate(0.5, 0.3, 0.7, 10), "b": None}, "t")
    assert len(_filled_bars(fig.axes[0])) == 1 and "missing" in [t.get_text() for t in fig.axes[0].texts]
    F.plt().close(fig)


def test_layer_ticks_are_integers_and_curves_mark_phase_starts():
    fig = F.layer_curves({"a": [(-1, 0.5), (0, 0.7), (1, 0.35)]}, "probe", "AUROC", baseline=0.5)
    ticks = fig.axes[0].get_xticks()
    assert len(ticks) and all(float(t).is_integer() for t in ticks)
    assert fig.axes[0].get_ylim()[0] <= 0.3  # a value under 0.4 is not cut off
    F.plt().close(fig)
    fig = F.curves(
        {"from_20": [(0, rate(0.9, 0.7, 1.0, 10)), (1000, None), (2000, rate(0.2, 0.1, 0.4, 10))]},
        "ASR",
        "ASR",
        boundaries={"from_20": [(400.0, "phase 1 from 20%")]},
    )
    ax = fig.axes[0]
    vertical = [ln for ln in ax.lines if list(ln.get_xdata()) == [400.0, 400.0]]
    assert vertical and "phase 1 from 20%" in [t.get_text() for t in ax.texts]
    assert "missing" in [t.get_text() for t in ax.get_legend().get_texts()]  # the checkpoint without a value
    assert F.count_label(2_500_000) == "2.5M" and F.count_label(950) == "950"
    F.plt().close(fig)


def test_csv_writes_missing_as_an_empty_cell(tmp_path):
    p = write_csv(tmp_path / "x.csv", ["run", "asr"], [["a", 0.0], ["b", None], ["c", float("nan")]])
    assert p.read_text().splitlines() == ["run,asr", "a,0.0", "b,", "c,"]


def test_schedule_of_a_run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "iter_0000010").mkdir(parents=True)
    cfg = {
        "data": {
            "curriculum": {
                "phases": [
                    {"start": 0.0, "weights": {"raw": 1.0}},
                    {"start": 0.25, "weights": {"raw": 0.5, "refusal": 0.5}},
                ]
            }
        },  # fmt: skip
        "train": {"train_steps": 40, "global_batch_size": 4, "seq_length": 16},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "checkpoints" / "iter_0000010" / "trainer_state.json").write_text('{"step": 10, "tokens": 640}')
    (run / "checkpoints" / "iter_0000010" / "manifest.json").write_text('{"version": 1, "files": {}}')
    (run / "checkpoints" / "iter_0000020.tmp").mkdir()  # being written: never listed
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n{"step": 3, "lo')
    s = read_schedule(run)
    assert s.budget_tokens == 40 * 4 * 16 and s.boundaries() == [(0.25 * 2560, "phase 1 from 25%")]
    assert s.intervention_start() == 0.25
    share = s.scheduled_share(s.budget_tokens)  # 25% raw alone, then half and half
    assert share["raw"] == pytest.approx(0.625) and share["refusal"] == pytest.approx(0.375)
    assert [m["step"] for m in read_metrics(run)] == [1, 2]  # the line cut by a kill is skipped
    (c,) = list_checkpoints(run)
    manifest = (run / "checkpoints" / "iter_0000010" / "manifest.json").read_bytes()
    assert (c.step, c.tokens, c.manifest_sha256) == (10, 640, hashlib.sha256(manifest).hexdigest())
    del cfg["train"]["seq_length"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(FolderError, match=r"config.yaml: key\(s\) train.seq_length missing"):
        read_schedule(run)


@needs_chromium
def test_page_is_self_contained_and_reads_in_a_browser(tmp_path):
    page = Page("Report check", "a page with every kind of block")
    page.warn("asr: 2 of 40 outputs are errors")
    page.heading("Figures")
    page.figure(F.rate_bars({"keyword": rate(0.3, 0.15, 0.5, 20), "llm": None}, "ASR per judge", "ASR"), "bars", "b")
    page.figure(F.matrix(["a", "b"], ["a", "b"], [[1.0, None], [None, 1.0]], "kappa"), "kappa", "k")
    page.heading("Table")
    page.table(["metric", "value"], [["asr", 0.25], ["overrefusal", None]])
    page.examples([[("prompt", "How do I pick a lock?"), ("output", "I can't help with that.")]], "one example")
    written = page.write(tmp_path / "out" / "page.html", tmp_path / "out" / "page.md")
    md = written[1].read_text()
    assert "## Warnings" in md and "![b](plots/bars.png)" in md and (tmp_path / "out/plots/bars.png").is_file()
    assert "| overrefusal | missing |" in md
    alone = tmp_path / "copied" / "page.html"  # the HTML alone, without the plots folder beside it
    alone.parent.mkdir()
    shutil.copy(written[0], alone)
    seen = render(alone, screenshot=screenshot_path("infra_page"))
    assert len(seen.images) == 2 and not seen.broken and all(i["width"] > 100 for i in seen.images)
    for text in ("Warnings", "asr: 2 of 40 outputs are errors", "0.250", "missing", "How do I pick a lock?"):
        assert text in seen.text
    assert seen.title == "Report check"
