"""``python -m trainer report RUN_DIR`` on a real run folder (the session's reference run): loss with the
curriculum's phase boundaries, token share per bucket against the schedule, tokens/s, epochs per bucket
(a bucket read many times flagged), checked in headless Chromium."""

import json
import shutil

import pytest

from infra.reporting.browser import chromium, render, screenshot_path
from trainer.__main__ import main


def test_run_report_of_a_real_run(reference_run, tmp_path, capsys):
    # training wrote the report into its run folder when it ended (logging.report_at_end)
    at_end = (reference_run / "report.md").read_text()
    assert "## Loss" in at_end and (reference_run / "report.html").is_file()
    out = tmp_path / "report"
    assert main(["report", str(reference_run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    md = (out / "report.md").read_text()
    for heading in ("## Summary", "## Loss", "## Bucket mix", "## Throughput", "## Curriculum", "## Checkpoints"):
        assert heading in md
    assert (out / "report_plots" / "bucket_share.png").is_file()
    records = [json.loads(x) for x in (reference_run / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    total = sum(last["bucket_tokens"].values())
    for b, t in last["bucket_tokens"].items():  # the table holds what metrics.jsonl says
        assert f"| {b} | {t} | {t / total:.3f} |" in md
    if chromium() is None:
        pytest.skip("Chromium not installed (scripts/setup.sh --slurm)")
    seen = render(out / "report.html", screenshot=screenshot_path("run_report"))
    assert not seen.broken
    assert {i["name"] for i in seen.images} == {"loss", "bucket_share", "bucket_epochs", "tokens_per_s"}
    phase_row = f"1\t25%\t{round(0.25 * last['step'])}\t"  # the tiny runs' curriculum: phase 1 from 25%
    for text in (phase_row, f"step {last['step']} of {last['step']}", "scheduled share so far", "No warnings"):
        assert text in seen.text
    assert '{"' not in seen.text


def test_a_bucket_read_many_times_is_flagged(reference_run, tmp_path):
    from trainer.report import REUSE_EPOCHS, write_run_report

    run = tmp_path / "run"  # the run's JSON and YAML files only: the report reads nothing else
    for p in reference_run.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".jsonl", ".yaml") and "tokenizer" not in p.parts:
            dest = run / p.relative_to(reference_run)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dest)
    latest = sorted((run / "checkpoints").glob("iter_*"))[-1] / "ranks" / "rank_00000.json"
    state = json.loads(latest.read_text())
    per_epoch = state["data"]["buckets"]["refusal"]["samples_per_epoch"]
    state["data"]["buckets"]["refusal"]["received"] = int(per_epoch * (REUSE_EPOCHS + 2))  # as if read 6 times
    latest.write_text(json.dumps(state))
    md = write_run_report(run).with_suffix(".md").read_text()
    assert f"bucket refusal was read {REUSE_EPOCHS + 2:.1f} times" in md
    refusal_row = next(ln for ln in md.splitlines() if ln.startswith("| refusal |"))
    assert refusal_row.endswith("| REUSED |") and f"| {REUSE_EPOCHS + 2:.3f} |" in refusal_row
    assert not any(ln.endswith("| REUSED |") for ln in md.splitlines() if ln.startswith("| raw |"))


def test_report_of_a_folder_that_is_no_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    from trainer.report import write_run_report

    assert write_run_report(tmp_path, on_error="log") is None  # the end of training never fails on it
