"""The run report: ``python -m trainer report RUN_DIR`` writes ``RUN_DIR/report.html`` (self-contained)
and ``RUN_DIR/report.md`` (figures in ``RUN_DIR/report_plots/``).

What it shows, from the run folder's own files (``config.yaml``, ``metrics.jsonl``, ``segments.jsonl``
and the checkpoints' ``trainer_state.json`` / ``ranks/rank_00000.json``; JSON and YAML only, nothing is
executed):

* the training loss (and each bucket's validation loss) against tokens seen, with the curriculum's
  phase boundaries and the resumes marked;
* the cumulative share of tokens drawn from each bucket against the share the curriculum schedules;
* throughput (tokens/s) per step;
* epochs per bucket (passes over its training samples, from the newest checkpoint's data state): a
  bucket read more than ``REUSE_EPOCHS`` times, or beyond the curriculum's own limit, is flagged.

It can be written while the run is training (it reads what is there) and at its end.
"""

from __future__ import annotations

import json
from pathlib import Path

from infra.folders import FolderError, RunFolder
from infra.log import get_logger
from infra.reporting import figures as F
from infra.reporting.page import Page
from infra.reporting.runs import RunSchedule, list_checkpoints, read_json_lines, read_metrics, read_schedule

log = get_logger(__name__)

REUSE_EPOCHS = 4.0  # more passes than this over a bucket are flagged (repeated data stops helping)
_SMOOTH_SHARE = 0.02  # running mean of the loss over ~2% of the records


def _running_mean(xs: list[float], k: int) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


def _segments(folder: RunFolder) -> list[dict]:
    return read_json_lines(folder.segments)


def data_state(ckpt_dir: Path) -> dict | None:
    """The loader's saved state in a checkpoint (``ranks/rank_00000.json`` ``data``), or None."""
    p = Path(ckpt_dir) / "ranks" / "rank_00000.json"
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    data = d.get("data") if isinstance(d, dict) else None
    return data if isinstance(data, dict) else None


def bucket_epochs(run_dir: Path, sched: RunSchedule, last: dict | None) -> tuple[dict[str, dict], str]:
    """Per bucket: samples per epoch, samples drawn, epochs; and where the numbers come from."""
    ckpts = list_checkpoints(run_dir)
    state = data_state(ckpts[-1].path) if ckpts else None
    if state and isinstance(state.get("buckets"), dict):
        out = {}
        for b, c in state["buckets"].items():
            n, got = c.get("samples_per_epoch"), c.get("received")
            if isinstance(n, int) and n > 0 and isinstance(got, int):
                out[b] = {"samples_per_epoch": n, "samples": got, "epochs": got / n}
        if out:
            return out, f"data state of checkpoint {ckpts[-1].name} (step {ckpts[-1].step})"
    # no checkpoint yet: the corpus manifest's bucket sizes and the last metrics record
    if last and isinstance(last.get("bucket_tokens"), dict) and sched.corpus:
        from infra.corpus import CorpusError, Manifest

        try:
            manifest = Manifest.load(Path(sched.corpus))
        except (CorpusError, OSError, ValueError):
            return {}, ""
        out = {}
        for b, tok in last["bucket_tokens"].items():
            info = manifest.buckets.get(b)
            if info is None or not info.tokens:
                continue
            n = max(1, (info.tokens - 1) // sched.seq_length)
            out[b] = {"samples_per_epoch": n, "samples": tok // sched.seq_length, "epochs": tok / sched.seq_length / n}
        return out, f"estimated from {sched.corpus}/manifest.json (held-out samples not subtracted)"
    return {}, ""


def build_run_report(run_dir: str | Path) -> Page:
    """The report page of a run folder; ``FolderError`` when it is not one."""
    folder = RunFolder(run_dir)
    sched = read_schedule(folder.root)
    records = read_metrics(folder.root)
    ckpts = list_checkpoints(folder.root)
    info = folder.read_info() if folder.info.is_file() else {}
    cv = info.get("code_version") or {}
    last = records[-1] if records else None
    done = last["step"] if last else 0
    page = Page(
        f"Training run: {folder.root.name}",
        f"`{folder.root}`: step {done} of {sched.train_steps}, "
        f"{F.count_label(last.get('tokens', 0) if last else 0)} of {F.count_label(sched.budget_tokens)} tokens"
        + (f"; code {cv.get('version')} at {str(cv.get('git_sha'))[:10]}" if cv.get("git_sha") else ""),
    )
    if not records:
        page.warn(f"{folder.metrics} holds no records yet: nothing to plot")
    bounds = sched.boundaries()
    resumes = [
        (float(s["step"]) * sched.global_batch_size * sched.seq_length, f"resumed at step {s['step']}")
        for s in _segments(folder)
        if isinstance(s.get("step"), int) and s["step"] > 0
    ]
    marks = {"": bounds} | ({"resumed": resumes} if resumes else {})
    epochs, epochs_from = bucket_epochs(folder.root, sched, last)
    limits = {b: (sched.curriculum.epoch_limit(b) if sched.curriculum else None) for b in epochs}
    flagged = {
        b: e["epochs"]
        for b, e in epochs.items()
        if e["epochs"] > REUSE_EPOCHS or (limits[b] is not None and e["epochs"] > limits[b])
    }
    for b, x in flagged.items():
        page.warn(
            f"bucket {b} was read {x:.1f} times ({epochs[b]['samples']} samples of {epochs[b]['samples_per_epoch']} "
            f"per epoch): above {REUSE_EPOCHS:g} epochs, repeated data adds little and may be memorised"
        )

    page.heading("Summary")
    vals = [r for r in records if isinstance(r.get("loss"), (int, float))]
    tail = vals[-max(1, len(vals) // 10) :] if vals else []
    tps = sorted(r["tokens_per_s"] for r in records if isinstance(r.get("tokens_per_s"), (int, float)))
    mfu = sorted(r["mfu"] for r in records if isinstance(r.get("mfu"), (int, float)))
    val_last = next((r["val_loss"] for r in reversed(records) if isinstance(r.get("val_loss"), dict)), None)
    page.table(
        ["", "value"],
        [
            ["steps", f"{done} of {sched.train_steps}"],
            [
                "tokens seen",
                f"{F.count_label(last.get('tokens', 0)) if last else 0} of {F.count_label(sched.budget_tokens)}",
            ],
            ["batch x sequence", f"{sched.global_batch_size} x {sched.seq_length}"],
            ["last loss", last.get("loss") if last else None],
            [f"mean loss, last {len(tail)} records", sum(r["loss"] for r in tail) / len(tail) if tail else None],
            ["median tokens/s", f"{tps[len(tps) // 2]:,.0f}" if tps else None],
            ["median MFU", mfu[len(mfu) // 2] if mfu else "GPU only"],
            ["checkpoints", ", ".join(str(c.step) for c in ckpts) or "none yet"],
            ["corpus", sched.corpus or ""],
        ]
        + ([["validation loss (last)", ", ".join(f"{b} {v:.4f}" for b, v in val_last.items())]] if val_last else []),
    )

    if vals:
        page.heading("Loss")
        k = max(1, int(len(vals) * _SMOOTH_SHARE))
        raw = [(r["tokens"], r["loss"]) for r in vals]
        series = {"train loss": raw}
        styles = {"train loss": {"alpha": 0.35 if k > 1 else 1.0, "lw": 0.8 if k > 1 else 1.3, "color": "#1f77b4"}}
        if k > 1:
            series[f"running mean ({k} records)"] = list(
                zip([t for t, _ in raw], _running_mean([x for _, x in raw], k))
            )
            styles[f"running mean ({k} records)"] = {"color": "#1f77b4", "lw": 1.6, "marker": ""}
        vb = list(dict.fromkeys(b for r in records if isinstance(r.get("val_loss"), dict) for b in r["val_loss"]))
        for i, b in enumerate(vb):
            series[f"val {b}"] = [
                (r["tokens"], r["val_loss"].get(b)) for r in records if isinstance(r.get("val_loss"), dict)
            ]
            styles[f"val {b}"] = {"ls": "--", "marker": "s", "ms": 3, "color": F.plt().cm.tab10.colors[(i + 1) % 10]}
        page.figure(
            F.curves(series, "loss", "loss (per token)", boundaries=marks, logy=True, styles=styles, band=False),
            "loss",
            "Training loss of every logged step against tokens seen (log scale)"
            + (", its running mean" if k > 1 else "")
            + (" and each bucket's held-out validation loss" if vb else "")
            + "; dotted: curriculum phase starts"
            + (" and resumes" if resumes else "")
            + ".",
        )

    share_recs = [r for r in records if isinstance(r.get("bucket_tokens"), dict) and sum(r["bucket_tokens"].values())]
    if share_recs:
        page.heading("Bucket mix")
        buckets = list(dict.fromkeys(b for r in share_recs for b in r["bucket_tokens"]))
        if sched.curriculum is not None:
            buckets += [b for b in sched.curriculum.active_buckets() if b not in buckets]
        colors = F.plt().cm.tab10.colors
        series, styles = {}, {}
        for i, b in enumerate(buckets):
            series[b] = [
                (r["tokens"], r["bucket_tokens"].get(b, 0) / sum(r["bucket_tokens"].values())) for r in share_recs
            ]
            styles[b] = {"color": colors[i % 10], "lw": 1.8, "marker": "", "alpha": 0.75}
            if sched.curriculum is not None:
                series[f"{b} scheduled"] = [
                    (r["tokens"], sched.scheduled_share(r["tokens"]).get(b, 0.0)) for r in share_recs
                ]
                styles[f"{b} scheduled"] = {"color": colors[i % 10], "ls": "--", "lw": 1.1, "marker": "", "zorder": 3}
        page.figure(
            F.curves(
                series,
                "cumulative token share per bucket",
                "share of tokens so far",
                boundaries={"": bounds},
                ylim=(-0.02, 1.02),
                styles=styles,
            ),  # fmt: skip
            "bucket_share",
            "Share of all tokens so far drawn from each bucket (solid) against the share the curriculum "
            "schedules by then (dashed, same colour); dotted: phase starts.",
        )
        final = share_recs[-1]
        total = sum(final["bucket_tokens"].values())
        want_now = sched.scheduled_share(final["tokens"]) if sched.curriculum else {}
        want_all = sched.scheduled_share(sched.budget_tokens) if sched.curriculum else {}
        rows = []
        for b in buckets:
            e = epochs.get(b, {})
            flag = "REUSED" if b in flagged else ""
            rows.append(
                [
                    b,
                    final["bucket_tokens"].get(b, 0),
                    final["bucket_tokens"].get(b, 0) / total,
                    want_now.get(b),
                    want_all.get(b),
                    e.get("samples_per_epoch"),
                    e.get("epochs"),
                    limits.get(b) if limits.get(b) is not None else "",
                    flag,
                ]
            )
        page.table(
            [
                "bucket",
                "tokens drawn",
                "share so far",
                "scheduled share so far",
                "scheduled share of the run",
                "samples per epoch",
                "epochs",
                "epoch limit",
                "flag",
            ],  # fmt: skip
            rows,
            f"At step {final['step']}; epochs from the {epochs_from or 'metrics (no data state found)'}.",
        )
    if epochs:
        page.figure(
            F.rate_bars(
                {b: e["epochs"] for b, e in epochs.items()},
                "epochs per bucket",
                "passes over the bucket",
                ylim=None,
                threshold=(REUSE_EPOCHS, f"flagged above {REUSE_EPOCHS:g} epochs"),
            ),  # fmt: skip
            "bucket_epochs",
            f"Passes over each bucket's training samples so far ({epochs_from}); above the dashed line a bucket "
            "is flagged as reused many times.",
        )

    tp = [(r["step"], r["tokens_per_s"]) for r in records if isinstance(r.get("tokens_per_s"), (int, float))]
    if tp:
        page.heading("Throughput")
        page.figure(
            F.curves(
                {"tokens/s": tp},
                "throughput",
                "tokens/s",
                xlabel="step",
                boundaries={"resumed": [(x / sched.global_batch_size / sched.seq_length, t) for x, t in resumes]},
            ),  # fmt: skip
            "tokens_per_s",
            "Tokens per second of every logged step (global batch x sequence length / step time)"
            + ("; dotted: resumes" if resumes else "")
            + ".",
        )

    page.heading("Curriculum")
    if sched.curriculum is None:
        page.text("An SFT run: no curriculum.")
    else:
        page.table(
            ["phase", "starts at", "first step", "tokens before it", "weights"],
            [
                [
                    i,
                    f"{p.start:.0%}",
                    round(p.start * sched.train_steps),
                    F.count_label(p.start * sched.budget_tokens),
                    ", ".join(f"{b} {w:g}" for b, w in p.weights.items()),
                ]
                for i, p in enumerate(sched.curriculum.phases)
            ],
            "max epochs: "
            + (f"{sched.curriculum.max_epochs:g}" if sched.curriculum.max_epochs is not None else "no limit")
            + (f"; per bucket: {sched.curriculum.bucket_max_epochs}" if sched.curriculum.bucket_max_epochs else ""),
        )
    if ckpts:
        page.heading("Checkpoints")
        page.table(
            ["checkpoint", "step", "tokens", "manifest sha256"],
            [[c.name, c.step, c.tokens, (c.manifest_sha256 or "")[:16] or None] for c in ckpts],
        )
    return page


def write_run_report(run_dir: str | Path, out: str | Path | None = None, on_error: str = "raise") -> Path | None:
    """Write ``report.html`` and ``report.md`` (figures in ``report_plots/``) into ``out`` (default the run
    folder); returns the HTML file. ``on_error="log"`` logs a failure and returns None instead of
    raising (for the end of a training run, which must not fail on its report)."""
    try:
        folder = RunFolder(run_dir)
        if not folder.config.is_file():
            raise FolderError(f"{folder.root}: no config.yaml (is this a run folder written by `trainer train`?)")
        page = build_run_report(folder.root)
        dest = Path(out) if out is not None else folder.root
        html = dest / "report.html"
        page.write(html, dest / "report.md", dest / "report_plots")
        log.info("run report: %s", html)
        return html
    except Exception as e:
        if on_error != "log":
            raise
        log.error("run report of %s failed: %s", run_dir, e)
        try:
            F.plt().close("all")
        except Exception:  # matplotlib itself may be what is missing
            pass
        return None
