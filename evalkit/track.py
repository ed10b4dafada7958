"""``python -m evalkit track RUN_DIR... --suite asr,overrefusal``: safety along a run's checkpoints.

Every complete checkpoint of each run (``checkpoints/iter_*`` with its ``trainer_state.json``; with
``--every N`` only steps that are multiples of N, and the run's final checkpoint) is evaluated with
``evalkit run``'s own code: a trainer checkpoint is exported by ``evalkit.model.resolve_model_dir``
(``trainer export-hf``) into the evaluation's folder, which keeps ``results.json``, ``samples/`` and
the report of that checkpoint.

Evaluations are cached by content: a checkpoint's key is the sha256 of its ``manifest.json`` (which
lists the sha256 of every file; a checkpoint without one is hashed file by file) and the evaluation
folder ``OUT/evals/<key>/`` holds a completion marker with that key and the fingerprint of the
evaluation settings (suites, decoding, judges, data). A rerun, or a pass of ``--follow`` over a run
that is still training, evaluates only what is new; a checkpoint whose suites failed is tried again.

``OUT/trajectory.html`` / ``.md`` / ``.csv`` then show each headline metric against tokens seen, one
line per run (several runs overlay, e.g. the 0/20/60% curricula), with each run's curriculum phase
boundaries as dotted lines and the 95% interval of every rate.

``track(...)`` is the one implementation; ``trajectory_report(...)`` draws the page from evaluated
points (the toy study can hand it its own).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra.folders import ResultsFolder, write_json_atomic
from infra.log import get_logger
from infra.reporting import figures as F
from infra.reporting.page import Page, write_csv
from infra.reporting.runs import Checkpoint, RunSchedule, list_checkpoints, read_schedule, run_complete

log = get_logger(__name__)

MARKER = "track"


@dataclass
class Point:
    """One evaluated checkpoint: where it is in its run and what the evaluation found."""

    run: str
    step: int
    tokens: float
    key: str
    eval_dir: Path
    checkpoint: str
    headline: dict = field(default_factory=dict)
    cached: bool = False
    errors: dict = field(default_factory=dict)


def checkpoint_key(ckpt: Checkpoint) -> str:
    """The checkpoint's content key: sha256 of its manifest (every file's sha256), else of its files."""
    if ckpt.manifest_sha256:
        return ckpt.manifest_sha256
    from infra.marker import path_fingerprint

    log.warning("%s has no manifest.json: hashing its files to key the cache", ckpt.path)
    return path_fingerprint(ckpt.path)


def settings_fingerprint(cfg) -> str:
    """What an evaluation's numbers depend on besides the model: every setting but the model, the
    output folder and the report format."""
    from infra.config import to_dict
    from infra.marker import value_fingerprint

    d = to_dict(cfg)
    for k in ("model", "out", "report"):
        d.pop(k, None)
    return value_fingerprint(d)


def select(ckpts: list[Checkpoint], every: int, final_step: int | None) -> list[Checkpoint]:
    """The checkpoints to evaluate: steps that are multiples of ``every`` and the final one."""
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    return [c for c in ckpts if c.step % every == 0 or (final_step is not None and c.step >= final_step)]


def _tokens(ckpt: Checkpoint, sched: RunSchedule) -> float:
    if isinstance(ckpt.tokens, (int, float)):
        return float(ckpt.tokens)
    return float(ckpt.step * sched.global_batch_size * sched.seq_length)


def evaluate_checkpoint(cfg, ckpt: Checkpoint, out: Path, keep_export: bool = False) -> tuple[Path, bool, dict]:
    """Evaluate ``ckpt`` with ``cfg`` (an ``EvalConfig``) unless ``out/evals/<key>`` already holds this
    evaluation; returns (evaluation folder, whether it was cached, its suite errors)."""
    from evalkit.run import run_eval
    from infra.marker import Marker

    key = checkpoint_key(ckpt)
    folder = Path(out) / "evals" / key[:20]
    marker = Marker(folder, MARKER)
    parts = {"checkpoint": key, "settings": settings_fingerprint(cfg)}
    if marker.check(parts, [ResultsFolder(folder).results]):
        return folder, True, {}
    if folder.exists():
        shutil.rmtree(folder)
    log.info("evaluating %s (step %d) into %s", ckpt.path, ckpt.step, folder)
    t0 = time.perf_counter()
    res = run_eval(dataclasses.replace(cfg, model=str(ckpt.path), out=str(folder)))
    export = folder / f"{ckpt.path.name}-hf"
    if not keep_export and export.is_dir():  # the results stay; the exported weights are large
        shutil.rmtree(export)
        for extra in folder.glob(f"{export.name}.*"):
            extra.unlink(missing_ok=True) if extra.is_file() else shutil.rmtree(extra, ignore_errors=True)
    if res.get("errors"):
        log.warning("%s: suites failed (%s); it is evaluated again next time", ckpt.path, ", ".join(res["errors"]))
    else:
        marker.write(parts, checkpoint=str(ckpt.path), step=ckpt.step, seconds=round(time.perf_counter() - t0, 1))
    return folder, False, res.get("errors") or {}


def _run_names(run_dirs: list[Path]) -> list[str]:
    names = [p.name for p in run_dirs]
    return [p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}" for p in run_dirs]


def track(
    run_dirs: list[str | Path],
    cfg,
    out: str | Path,
    every: int = 1,
    follow: bool = False,
    poll_s: float = 60.0,
    max_wait_s: float | None = None,
    keep_exports: bool = False,
) -> dict:
    """Evaluate the checkpoints of ``run_dirs`` with ``cfg`` (an ``EvalConfig``; its ``suites``, decoding,
    judges, data) into ``out`` and write the trajectory report.

    With ``follow`` the runs are polled every ``poll_s`` seconds until each has its final checkpoint
    evaluated (or ``max_wait_s`` passed): new checkpoints are picked up as they appear.

    Returns ``{"points": [Point], "evaluated": n, "cached": n, "report": html path, "warnings": [...]}``.
    """
    from evalkit.report import headline

    runs = [Path(r) for r in run_dirs]
    if not runs:
        raise ValueError("track: no run folder given")
    scheds = {}
    for r in runs:  # every run folder is read before any work: a wrong path fails now
        scheds[r] = read_schedule(r)
    names = dict(zip(runs, _run_names(runs)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    warnings: list[str] = []
    points: dict[tuple[str, int], Point] = {}
    evaluated = cached = 0
    while True:
        for r in runs:
            sched = scheds[r]
            for c in select(list_checkpoints(r), every, sched.train_steps):
                if (names[r], c.step) in points and points[(names[r], c.step)].key == checkpoint_key(c):
                    continue
                try:
                    folder, hit, errors = evaluate_checkpoint(cfg, c, out, keep_exports)
                except (FileNotFoundError, OSError) as e:  # removed by keep_last while we read it
                    warnings.append(f"{names[r]}: checkpoint {c.name} went away before it was evaluated ({e})")
                    continue
                except Exception as e:  # noqa: BLE001 - a model error: the message names the checkpoint
                    from evalkit.model import ModelError

                    if not isinstance(e, ModelError) or c.path.exists():
                        raise
                    warnings.append(f"{names[r]}: checkpoint {c.name} went away before it was evaluated ({e})")
                    continue
                evaluated += not hit
                cached += hit
                res = ResultsFolder(folder).read_results()
                points[(names[r], c.step)] = Point(
                    names[r],
                    c.step,
                    _tokens(c, sched),
                    checkpoint_key(c),
                    folder,
                    str(c.path),
                    headline(res),
                    hit,
                    errors,
                )
        done = all(
            run_complete(r) and any(p.run == names[r] and p.step >= scheds[r].train_steps for p in points.values())
            for r in runs
        )
        html = trajectory_report(list(points.values()), {names[r]: scheds[r] for r in runs}, out, warnings)
        if not follow or done:
            break
        if max_wait_s is not None and time.monotonic() - t_start > max_wait_s:
            warnings.append(f"stopped following after {max_wait_s:.0f} s: not every run has finished")
            html = trajectory_report(list(points.values()), {names[r]: scheds[r] for r in runs}, out, warnings)
            break
        log.info("track: waiting %.0f s for new checkpoints", poll_s)
        time.sleep(poll_s)
    return {
        "points": sorted(points.values(), key=lambda p: (p.run, p.step)),
        "evaluated": evaluated,
        "cached": cached,
        "report": html,
        "warnings": warnings,
    }


# -- the page ------------------------------------------------------------------------------------------
CSV_HEADER = [
    "run",
    "step",
    "tokens",
    "phase",
    "metric",
    "value",
    "ci95_low",
    "ci95_high",
    "n",
    "judged",
    "unparsed",
    "errors",
    "checkpoint_sha256",
    "eval_dir",
]


def _phase(sched: RunSchedule | None, tokens: float) -> int | None:
    if sched is None or sched.curriculum is None or not sched.budget_tokens:
        return None
    x = tokens / sched.budget_tokens
    phase = 0
    for i, p in enumerate(sched.curriculum.phases):
        if x > p.start or (i == 0):
            phase = i
    return phase


def trajectory_report(
    points: list[Point],
    schedules: dict[str, RunSchedule | None],
    out: str | Path,
    warnings: list[str] | None = None,
    title: str = "Safety along training",
    interval: str = "95% Wilson interval",
    intro: str | None = None,
    evaluations: str | None = None,
) -> Path:
    """``trajectory.html`` / ``.md`` / ``.csv`` of evaluated checkpoints (one line per run and metric
    against tokens seen, phase boundaries dotted); returns the HTML file. ``interval`` names the
    interval the rates carry (the captions say it); ``intro`` replaces the page's first line;
    ``evaluations`` where the evaluations are (default ``out/evals``)."""
    from evalkit.report import rate_cell

    out = Path(out)
    runs = list(dict.fromkeys(p.run for p in points))  # in the order the caller gives them
    page = Page(title, intro or f"{len(points)} evaluated checkpoints of {len(runs)} run(s): " + ", ".join(runs))
    for w in warnings or []:
        page.warn(w)
    for p in points:
        for s, e in p.errors.items():
            page.warn(f"{p.run} step {p.step}: suite {s} failed ({e})")
    keys = list(dict.fromkeys(k for p in points for k in p.headline))
    bounds = {r: (schedules.get(r).boundaries() if schedules.get(r) else []) for r in runs}
    page.heading("Runs")
    page.table(
        ["run", "checkpoints evaluated", "steps", "token budget", "phase starts", "folder of the evaluations"],
        [
            [
                r,
                sum(p.run == r for p in points),
                ", ".join(str(p.step) for p in sorted(points, key=lambda q: q.step) if p.run == r),
                F.count_label(schedules[r].budget_tokens) if schedules.get(r) else None,
                ", ".join(f"{lab} ({F.count_label(x)} tokens)" for x, lab in bounds[r]) or "one phase",
                evaluations or str(out / "evals"),
            ]
            for r in runs
        ],
    )
    page.heading("Trajectories")
    if not points:
        page.text("No checkpoint evaluated yet.")
    for k in keys:
        series = {r: [(p.tokens, p.headline.get(k)) for p in points if p.run == r] for r in runs}
        rated = any(isinstance(p.headline.get(k), dict) for p in points)
        page.figure(
            F.curves(
                series,
                k,
                k.split(".")[-1],
                boundaries=bounds,
                ylim=(-0.02, 1.02) if rated else None,
                dodge=0.006 if len(series) > 1 else 0.0,
                interval=interval,
            ),
            f"trajectory_{k}",
            f"{k} at each evaluated checkpoint against tokens seen"
            + (f", with its {interval}" if rated else "")
            + "; dotted: where a curriculum phase starts; a grey cross on the axis: a checkpoint without the metric.",
        )
    page.heading("Values")
    for r in runs:
        pts = sorted((p for p in points if p.run == r), key=lambda p: p.step)
        page.table(
            ["step", "tokens", "phase", *keys, "evaluation"],
            [
                [
                    p.step,
                    F.count_label(p.tokens),
                    _phase(schedules.get(r), p.tokens),
                    *[
                        rate_cell(p.headline.get(k))
                        if isinstance(p.headline.get(k), dict) or p.headline.get(k) is None
                        else f"{p.headline[k]:.3f}"
                        for k in keys
                    ],
                    "cached" if p.cached else "evaluated now",
                ]
                for p in pts
            ],
            r,
        )
    page.write(out / "trajectory.html", out / "trajectory.md", out / "plots")
    rows = []
    for p in sorted(points, key=lambda p: (p.run, p.step)):
        for k in keys:
            rate = F.as_rate(p.headline.get(k))
            rows.append(
                [
                    p.run,
                    p.step,
                    int(p.tokens),
                    _phase(schedules.get(p.run), p.tokens),
                    k,
                    rate.value,
                    rate.lo,
                    rate.hi,
                    rate.n,
                    rate.judged,
                    rate.unparsed,
                    rate.errors,
                    p.key,
                    str(p.eval_dir),
                ]
            )
    write_csv(out / "trajectory.csv", CSV_HEADER, rows)
    write_json_atomic(out / "trajectory.json", [dataclasses.asdict(p) | {"eval_dir": str(p.eval_dir)} for p in points])
    return out / "trajectory.html"
