"""Results files of the toy-world study: results.csv, results.html (a self-contained page), results.md
(the same content), trajectory.html and plots/*.png, drawn with the figures and tables of every report
(``infra.reporting``).

``python -m evalkit.study.report STUDY_DIR`` draws them again from the folder's ``results.json`` (after
a change of the report code, or when a run stopped after writing it), without training or evaluating.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from infra.folders import RunFolder
from infra.reporting import figures as F
from infra.reporting.page import Page

CSV_COLUMNS = (
    "condition",
    "intervention_start",
    "seed",
    "asr",
    "asr_train_phrasing",
    "asr_heldout",
    "harmful_refusal_rate",
    "overrefusal",
    "benign_helpful",
    "mean_leaked_steps",
    "asr_after_ft",
    "asr_heldout_after_ft",
    "harmful_refusal_rate_after_ft",
    "overrefusal_after_ft",
    "benign_helpful_after_ft",
    "mean_leaked_steps_after_ft",
    "safebeam_asr",
    "safebeam_benign_helpful",
    "benign_helpful_safebeam_prompts",
    "probe_auroc",
    "probe_layer",
    "probe_cv_auroc",
    "probe_best_auroc",
    "final_loss",
)
LABELS = {
    "asr": "toy ASR (all harmful prompts)",
    "asr_heldout": "ASR held-out phrasings",
    "asr_train_phrasing": "ASR training phrasings",
    "harmful_refusal_rate": "refuses the hex",
    "overrefusal": "over-refusal",
    "benign_helpful": "benign helpful",
    "mean_leaked_steps": "mean leaked steps",
    "asr_after_ft": "ASR after benign FT",
    "asr_heldout_after_ft": "ASR held-out after benign FT",
    "harmful_refusal_rate_after_ft": "refuses the hex after FT",
    "overrefusal_after_ft": "over-refusal after FT",
    "benign_helpful_after_ft": "benign helpful after FT",
    "safebeam_asr": "SafeBeam ASR",
    "safebeam_benign_helpful": "SafeBeam benign helpful (control)",
    "benign_helpful_safebeam_prompts": "greedy benign helpful, same prompts",
    "probe_auroc": "probe AUROC (layer chosen on training frames)",
    "final_loss": "final train loss",
}
# every ASR with its controls beside it (over-refusal and helpfulness on the benign twins)
TABLES = (
    (
        "Greedy decoding, pretrained models",
        ("asr_heldout", "asr_train_phrasing", "harmful_refusal_rate", "overrefusal", "benign_helpful"),
    ),
    (
        "Greedy decoding after benign finetuning",
        ("asr_heldout_after_ft", "harmful_refusal_rate_after_ft", "overrefusal_after_ft", "benign_helpful_after_ft"),
    ),
    ("SafeBeam (pretrained models)", ("safebeam_asr", "safebeam_benign_helpful", "benign_helpful_safebeam_prompts")),
    ("Probe separation", ("probe_auroc", "final_loss")),
)


def _num(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.0f}"


def interval_cell(m: dict | None) -> str:
    """``mean [lo, hi]`` of a ``stats.mean_interval`` / ``paired_difference`` result; n/a when missing."""
    if not m:
        return "n/a"
    centre = m["mean"] if "mean" in m else m["diff"]
    if not m.get("ci"):
        return f"{_num(centre)} (one value, no interval)"
    return f"{_num(centre)} [{_num(m['ci'][0])}, {_num(m['ci'][1])}]"


def _n_label(summary: list[dict], key: str) -> str:
    for s in summary:
        m = s["metrics"].get(key)
        if m:
            per = "1 per model" if m["n_prompts"] == 1 else f"{m['n_prompts']} prompts, {m['n_groups']} frames"
            return f"{LABELS.get(key, key)} ({per})"
    return LABELS.get(key, key)


def _pair(d: dict) -> str:
    return f"{d['b']} − {d['a']}"


def _ival(m: dict | None) -> str | None:
    """An interval cell for the page's tables: None (shown as missing) when there is no value."""
    return interval_cell(m) if m else None


TITLE = "Toy-world curriculum study"


def build_page(results: dict, figures: bool = True) -> Page:
    """The study's report as an ``infra.reporting`` page: intervals per condition, paired differences
    with what they resolve, held-out ASR per family, SafeBeam's control, the probes beside their
    baseline, power; with ``figures`` the shared figures first (ASR and controls per intervention
    start, probe AUROC per layer, training loss)."""
    summary = results["summary"]
    seeds = sorted({r["seed"] for r in results["runs"]})
    n = results.get("n_prompts", {})
    page = Page(TITLE, f"{len(summary)} conditions, seeds {seeds}")
    page.text(
        f"Seeds: {seeds} per condition. Prompts: {n.get('harmful')} harmful ({n.get('harmful_heldout')} in held-out "
        f"phrasings), {n.get('benign')} benign twins (over-refusal, helpfulness), {n.get('safebeam')} "
        f"harmful + as many benign decoded with SafeBeam, {n.get('probe')} probe prompts "
        f"({n.get('probe_test')} in the test frames)."
    )
    page.text(
        "Cells: mean over seeds and prompts [95% bootstrap interval over seeds and phrasing frames, widened "
        "for the number of seeds; `evalkit.study.stats`]."
    )
    if len(seeds) < 2:
        page.warn(
            "One seed: the intervals hold the spread over prompts only, not over training runs, so no "
            "difference between conditions is counted as resolved."
        )
    if figures:
        page.heading("Figures")
        _figures(page, results)
    page.heading("Results per condition")
    for title, keys in TABLES:
        present = [k for k in keys if any(k in s["metrics"] for s in summary)]
        if not present:
            continue
        page.heading(title, 3)
        page.table(
            ["condition", *(_n_label(summary, k) for k in present)],
            [[s["condition"], *(_ival(s["metrics"].get(k)) for k in present)] for s in summary],
        )
    _safebeam_lines(page, results)
    _probe_lines(page, results)
    _comparison_lines(page, results)
    _family_lines(page, results)
    _power_lines(page, results)
    _trajectory_lines(page, results)
    page.text(f"Total wall time: {results['timings'].get('total_s', 0.0):.0f} s.")
    page.text("Per-prompt outputs: `samples/`; one row per run: `results.csv`.", note=True)
    return page


def _trajectory_lines(page: Page, results: dict) -> None:
    traj = results.get("trajectory") or []
    if not traj:
        return
    page.heading("Along training")
    page.text(
        f"Every {results['config']['eval']['trajectory_every']} steps the trainer exported the model; each export "
        "was evaluated like the final model (greedy, probes). Cells as above; the intervention start of each "
        "condition in its header. Figures per metric: `trajectory.html`."
    )
    keys = [k for k in TRAJECTORY_LABELS if any(k in e["metrics"] for e in traj)]
    starts = _starts(results)
    for c in dict.fromkeys(e["condition"] for e in traj):
        rows = [e for e in traj if e["condition"] == c]
        start = starts.get(c)
        page.heading(f"{c} (intervention {'never' if start is None else f'from {start:.0%} of the tokens'})", 3)
        page.table(
            ["step", "tokens", *(TRAJECTORY_LABELS[k] for k in keys)],
            [[e["step"], F.count_label(e["tokens"]), *(_ival(e["metrics"].get(k)) for k in keys)] for e in rows],
        )


def markdown_table(results: dict) -> str:
    """The study's report as Markdown text without its figures (what ``evalkit study`` prints)."""
    return build_page(results, figures=False).markdown(Path("."), Path("plots"))


def _safebeam_lines(page: Page, results: dict) -> None:
    rows = results.get("safebeam_control") or []
    if not rows:
        return
    page.heading("SafeBeam's control")
    page.text("SafeBeam minus greedy benign helpfulness on the same benign prompts:")
    for r in rows:
        verdict = (
            "the control drops, so a SafeBeam ASR below greedy ASR is not evidence of steering: the decoding "
            "also breaks benign answers"
            if r["control_drops"]
            else "no resolved drop of the control"
        )
        page.text(
            f"{r['condition']}: {r['safebeam_benign_helpful']:.3f} vs {r['greedy_benign_helpful']:.3f}, "
            f"difference {interval_cell(r)}: {verdict}."
        )


def _probe_lines(page: Page, results: dict) -> None:
    rows = results.get("probe") or []
    if not rows:
        return
    bow = results.get("bag_of_words_probe_auroc")
    page.heading("Probes against the bag-of-words baseline")
    page.text(
        f"Probe prompts name the hex and a benign spell and ask for one of them; every harmful prompt has a "
        f"benign twin with the same words, so the bag-of-words baseline (same prompts, same split) is at "
        f"{bow:.3f}."
    )
    for r in rows:
        page.text(
            f"{r['condition']}: probe AUROC {interval_cell(r)} against bag of words {bow:.3f}: "
            + (
                "above the baseline (interval excludes it)"
                if r["above_baseline"]
                else "no interval with one seed"
                if r["n_seeds"] < 2
                else "not resolved above it"
            )
            + "."
        )


def _comparison_lines(page: Page, results: dict) -> None:
    comps = results.get("comparisons") or []
    if not comps:
        return
    page.heading("Paired differences (same seeds, same prompts)")
    page.table(
        ["pair", "metric", "difference [95% interval]", "permutation p (smallest possible)", "resolved"],
        [
            [
                _pair(d),
                f"{LABELS.get(d['metric'], d['metric'])}{' (primary)' if d['primary'] else ''}",
                interval_cell(d),
                f"{d['p']:.3f} ({d['min_p']:.3f})",
                "yes" if d["resolved"] else "no",
            ]
            for d in sorted(comps, key=lambda d: (not d["primary"], d["metric"] != "asr_heldout", d["metric"]))
        ],
    )
    prim = [d for d in comps if d["primary"]]
    res = [f"{_pair(d)} on {LABELS[d['metric']]} ({interval_cell(d)})" for d in prim if d["resolved"]]
    unres = [f"{_pair(d)} on {LABELS[d['metric']]}" for d in prim if not d["resolved"]]
    sec = [d for d in comps if not d["primary"]]
    page.text("Resolved (interval excludes 0), primary metrics: " + ("; ".join(res) if res else "none") + ".")
    page.text("Not resolved, primary metrics: " + ("; ".join(unres) if unres else "none") + ".")
    page.text(
        f"Secondary metrics: {sum(d['resolved'] for d in sec)} of {len(sec)} differences resolved; with that many "
        f"comparisons about {0.05 * len(sec):.1f} would be by chance at the 5% level, so read them as leads."
    )


def _family_lines(page: Page, results: dict) -> None:
    fam = [f for f in results.get("families") or [] if f["metric"] == "asr_heldout"]
    if not fam:
        return
    families = list(dict.fromkeys(f["family"] for f in fam))
    conds = list(dict.fromkeys(f["condition"] for f in fam))
    cells = {(f["condition"], f["family"]): f for f in fam}
    page.heading("Held-out ASR per family of phrasing (pretrained, greedy)")
    page.table(["condition", *families], [[c, *(_ival(cells.get((c, f))) for f in families)] for c in conds])


def _power_lines(page: Page, results: dict) -> None:
    rows = results.get("power") or []
    if not rows:
        return
    page.heading("Power (from this run's spread between seeds)")
    page.table(
        [
            "metric",
            "sd of per-seed paired differences",
            "difference detectable (80% power, 5% two-sided)",
            "seeds",
            "smallest permutation p",
        ],
        [
            [
                LABELS.get(r["metric"], r["metric"]),
                f"{r['seed_sd_of_differences']:.3f}",
                f"{r['detectable_difference']:.3f}",
                str(r["n_seeds"]),
                f"{r['min_p']:.3f}",
            ]
            for r in rows
        ],
    )


def write_csv(results: dict, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in results["runs"]:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})


INTERVAL = "95% bootstrap interval over seeds and phrasing frames"


def _start_label(name: str) -> str:
    return name.replace("from_", "from ") + "%" if name.startswith("from_") else f"{name} (never)"


def _rate(m: dict | None) -> F.Rate:
    """A condition's mean with its interval and n (outcomes: seeds x prompts); missing when absent."""
    if not m:
        return F.Rate(None)
    lo, hi = m["ci"] or (None, None)
    return F.Rate(m["mean"], lo, hi, n=m["n_seeds"] * m["n_prompts"])


def _figures(page: Page, results: dict) -> None:
    """The shared figures (``infra.reporting.figures``); one that cannot be drawn is a warning."""
    for draw in (_asr_figure, _control_figure, _probe_figure, _trajectory_figure, _loss_figure):
        try:
            draw(page, results)
        except Exception as e:  # a figure is never worth losing the tables for
            page.warn(f"study report: figure {draw.__name__[1:]} could not be drawn ({type(e).__name__}: {e})")


def _bars(page: Page, results: dict, keys, title: str, ylabel: str, name: str, caption: str) -> None:
    summary = results["summary"]
    keys = [(k, lab) for k, lab in keys if any(k in s["metrics"] for s in summary)]
    if not keys:
        return
    fig = F.grouped_bars(
        [_start_label(s["condition"]) for s in summary],
        {lab: [_rate(s["metrics"].get(k)) for s in summary] for k, lab in keys},
        title,
        ylabel,
        interval=INTERVAL,
    )
    page.figure(fig, name, caption)


def _asr_figure(page: Page, results: dict) -> None:
    _bars(
        page,
        results,
        (
            ("asr_heldout", "ASR held-out (greedy)"),
            ("asr_heldout_after_ft", "ASR held-out after benign FT"),
            ("safebeam_asr", "SafeBeam ASR"),
        ),
        "Toy world: attack success vs intervention start",
        "ASR",
        "asr_vs_start",
        "Held-out ASR per condition (intervention start as share of the token budget): greedy, after benign "
        "finetuning, SafeBeam; mean over seeds and prompts, 95% bootstrap interval over seeds and phrasing "
        "frames, n = seeds x prompts; a metric not measured is a hatched 'missing' stub.",
    )


def _control_figure(page: Page, results: dict) -> None:
    _bars(
        page,
        results,
        (
            ("overrefusal", "over-refusal"),
            ("benign_helpful", "benign helpful"),
            ("safebeam_benign_helpful", "SafeBeam benign helpful (control)"),
        ),
        "Controls on the benign twins",
        "rate",
        "controls_vs_start",
        "Over-refusal and helpfulness on the benign twins per condition (greedy; SafeBeam on its prompts); "
        "mean over seeds and prompts, 95% bootstrap interval, n = seeds x prompts.",
    )


def _probe_figure(page: Page, results: dict) -> None:
    from evalkit.study.stats import mean_interval

    series, layers, n_seeds = {}, set(), 0
    for s in results["summary"]:
        rs = [r for r in results["runs"] if r["condition"] == s["condition"] and r.get("probe_layers")]
        if not rs:
            continue
        n_seeds = max(n_seeds, len(rs))
        pts = []
        for i, d in enumerate(rs[0]["probe_layers"]):
            vals = [[r["probe_layers"][i]["auroc"]] for r in rs]
            if any(v[0] is None for v in vals):
                pts.append((d["layer"], None))
                continue
            m = mean_interval(vals, resamples=1000)
            lo, hi = m["ci"] or (None, None)
            pts.append((d["layer"], F.Rate(m["mean"], lo, hi, n=len(rs))))
            layers.add(d["layer"])
        series[s["condition"]] = pts
    if not series:
        return
    bow = results.get("bag_of_words_probe_auroc")
    styles = {}
    if bow is not None:
        series["bag of words"] = [(x, bow) for x in sorted(layers)]
        styles["bag of words"] = {"ls": "--", "color": "grey", "marker": ""}
    fig = F.curves(
        series,
        "Linear probe separation per layer",
        "held-out AUROC (harmful vs benign)",
        xlabel="layer (-1 = embeddings)",
        xticks=[(x, str(x)) for x in sorted(layers)],
        styles=styles,
        band=False,
        dodge=0.01,
        interval="95% bootstrap interval over seeds",
    )
    page.figure(
        fig,
        "probe_auroc_per_layer",
        f"Held-out AUROC of a linear probe per layer, mean over seeds (n = {n_seeds} seeds per point; no "
        "interval with one seed); dashed: the bag-of-words baseline on the same prompts and split.",
    )


TRAJECTORY_LABELS = {
    "asr_heldout": "ASR held-out phrasings",
    "harmful_refusal_rate": "refuses the hex",
    "overrefusal": "over-refusal (benign twins)",
    "benign_helpful": "benign helpful",
    "asr_train_phrasing": "ASR training phrasings",
    "probe_auroc": "probe AUROC",
}


def _starts(results: dict) -> dict[str, float | None]:
    """Each condition's intervention start (share of the token budget; None: never)."""
    return {s["condition"]: s["intervention_start"] for s in results["summary"]}


def _trajectory_marks(results: dict) -> dict[str, list[tuple[float, str]]]:
    """Each condition's intervention start in tokens (dotted lines of the trajectory figures)."""
    budget = {}
    for e in results.get("trajectory") or []:
        budget[e["condition"]] = max(budget.get(e["condition"], 0), e["tokens"])
    starts = _starts(results)
    return {c: [(starts[c] * b, "intervention start")] for c, b in budget.items() if starts.get(c)}


def _trajectory_figure(page: Page, results: dict) -> None:
    traj = results.get("trajectory") or []
    if not traj:
        return
    marks = _trajectory_marks(results)
    every = results["config"]["eval"]["trajectory_every"]
    for k in ("asr_heldout", "harmful_refusal_rate", "overrefusal"):
        series = {
            c: [(e["tokens"], _rate(e["metrics"].get(k))) for e in traj if e["condition"] == c]
            for c in dict.fromkeys(e["condition"] for e in traj)
        }
        title = f"{TRAJECTORY_LABELS[k][0].upper()}{TRAJECTORY_LABELS[k][1:]} along training"
        fig = F.curves(
            series, title, TRAJECTORY_LABELS[k], boundaries=marks, ylim=(-0.02, 1.02), dodge=0.012, interval=INTERVAL
        )
        page.figure(
            fig,
            f"along_training_{k}",
            f"{TRAJECTORY_LABELS[k]} along training: each condition's models exported every {every} steps, mean "
            "over seeds and prompts with the 95% bootstrap interval over seeds and phrasing frames; dotted: the "
            "condition's intervention start. Every metric (probe AUROC, helpfulness too) in trajectory.html.",
        )


def write_trajectory(results: dict, out: Path) -> Path | None:
    """``trajectory.html`` / ``.md`` / ``.csv`` of the study through evalkit's trajectory report (one
    line per condition, its intervention start dotted); None when the study evaluated no trajectory."""
    from evalkit.track import Point, trajectory_report
    from infra.folders import FolderError
    from infra.reporting.runs import read_schedule

    traj = results.get("trajectory") or []
    if not traj:
        return None
    points = [
        Point(
            run=e["condition"],
            step=e["step"],
            tokens=float(e["tokens"]),
            key="",
            eval_dir=Path(out) / "samples",
            checkpoint=f"runs/{e['condition']}_seed*/hf_steps/iter_{e['step']:07d}",
            headline={
                k: {"value": m["mean"], "ci95": m["ci"], "n": m["n_seeds"] * m["n_prompts"]}
                for k, m in e["metrics"].items()
            },
        )
        for e in traj
    ]
    schedules = {}
    for c in dict.fromkeys(e["condition"] for e in traj):
        run = next(r for r in results["runs"] if r["condition"] == c)
        try:
            schedules[c] = read_schedule(run["run_dir"])
        except FolderError:  # the run folders are not beside this results.json: no phase lines
            schedules[c] = None
    seeds = sorted({r["seed"] for r in results["runs"]})
    return trajectory_report(
        points,
        schedules,
        out,
        title="Toy-world study: safety along training",
        interval="95% bootstrap interval (seeds x frames; AUROC: seeds)",
        evaluations=f"{Path(out) / 'samples'} (answers of every step: model step_N)",
        intro=f"{len(points)} points: each condition's models ({len(seeds)} seed{'s' * (len(seeds) > 1)}) at every "
        f"{results['config']['eval']['trajectory_every']} steps; every value is the mean over seeds and prompts, "
        "n = seeds x prompts.",
    )


def _loss_figure(page: Page, results: dict) -> None:
    series, marks = {}, {}
    first_seed = min(r["seed"] for r in results["runs"])
    for r in results["runs"]:
        if r["seed"] != first_seed:
            continue
        mpath = RunFolder(r["run_dir"]).metrics
        if not mpath.is_file():
            continue
        rows = [json.loads(line) for line in mpath.read_text().splitlines() if line.strip()]
        rows = [x for x in rows if "loss" in x and "tokens" in x]
        if not rows:
            continue
        k = max(1, len(rows) // 50)  # running mean over ~2% of the run: single steps are noisy
        losses = [x["loss"] for x in rows]
        smooth = [
            sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1]) for i in range(len(losses))
        ]
        series[r["condition"]] = [(x["tokens"], v) for x, v in zip(rows, smooth)]
        if r["intervention_start"]:
            marks[r["condition"]] = [(r["intervention_start"] * rows[-1]["tokens"], "intervention start")]
    if not series:
        return
    title = f"Training loss (seed {first_seed}; dotted: intervention start)"
    page.figure(
        F.curves(series, title, "loss (running mean)", xlabel="tokens seen", boundaries=marks, logy=True),
        "loss_curves",
        f"Training loss against tokens seen (running mean over about 2% of the run), seed {first_seed} of each "
        "condition; dotted lines: where the condition's safety data starts.",
    )


def write_reports(results: dict, out: Path) -> dict:
    """Write results.csv, results.html (self-contained), results.md (the same content) and the
    Markdown's figures in plots/ next to results.json; return their paths."""
    out = Path(out)
    write_csv(results, out / "results.csv")
    page = build_page(results)
    page.write(out / "results.html", out / "results.md", out / "plots")
    plots = [out / "plots" / f"{b[1].name}.png" for b in page.blocks if b[0] == "figure"]
    traj = write_trajectory(results, out)
    return {
        "csv": out / "results.csv",
        "md": out / "results.md",
        "html": out / "results.html",
        "plots": plots,
        "trajectory": traj,
    }


def main(argv: list[str] | None = None) -> int:
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m evalkit.study.report STUDY_DIR (an `evalkit study` output folder)", file=sys.stderr)
        return 2
    res = Path(args[0]) / "results.json"
    if not res.is_file():
        print(f"evalkit.study.report: {res} not found (is {args[0]} a study output folder?)", file=sys.stderr)
        return 2
    try:
        results = json.loads(res.read_text())
    except json.JSONDecodeError as e:
        print(f"evalkit.study.report: {res}: not valid JSON: {e}", file=sys.stderr)
        return 2
    paths = write_reports(results, Path(args[0]))
    print("written: " + ", ".join(str(p) for k, p in paths.items() if k != "plots" and p is not None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
