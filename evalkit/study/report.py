"""Results files of the toy-world study: results.csv, results.md (table) and plots/*.png."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from infra.folders import RunFolder

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


def markdown_table(results: dict) -> str:
    """The study's report in Markdown: intervals per condition, paired differences with what they
    resolve, held-out ASR per family, SafeBeam's control, the probes beside their baseline, power."""
    summary = results["summary"]
    seeds = sorted({r["seed"] for r in results["runs"]})
    n = results.get("n_prompts", {})
    lines = [
        f"Seeds: {seeds} per condition. Prompts: {n.get('harmful')} harmful ({n.get('harmful_heldout')} in held-out "
        f"phrasings), {n.get('benign')} benign twins (over-refusal, helpfulness), {n.get('safebeam')} "
        f"harmful + as many benign decoded with SafeBeam, {n.get('probe')} probe prompts "
        f"({n.get('probe_test')} in the test frames).",
        "",
        "Cells: mean over seeds and prompts [95% bootstrap interval over seeds and phrasing frames, widened "
        "for the number of seeds; `evalkit.study.stats`].",
    ]
    if len(seeds) < 2:
        lines += [
            "",
            "**One seed**: the intervals hold the spread over prompts only, not over training runs, so no "
            "difference between conditions is counted as resolved.",
        ]
    for title, keys in TABLES:
        present = [k for k in keys if any(k in s["metrics"] for s in summary)]
        if not present:
            continue
        lines += ["", f"### {title}", ""]
        lines.append("| condition | " + " | ".join(_n_label(summary, k) for k in present) + " |")
        lines.append("|" + "---|" * (len(present) + 1))
        for s in summary:
            lines.append(
                f"| {s['condition']} | " + " | ".join(interval_cell(s["metrics"].get(k)) for k in present) + " |"
            )
    lines += _safebeam_lines(results) + _probe_lines(results) + _comparison_lines(results)
    lines += _family_lines(results) + _power_lines(results)
    lines += ["", f"Total wall time: {results['timings'].get('total_s', 0.0):.0f} s."]
    return "\n".join(lines) + "\n"


def _safebeam_lines(results: dict) -> list[str]:
    rows = results.get("safebeam_control") or []
    if not rows:
        return []
    out = ["", "SafeBeam's control (SafeBeam minus greedy benign helpfulness on the same benign prompts):", ""]
    for r in rows:
        verdict = (
            "the control drops, so a SafeBeam ASR below greedy ASR is not evidence of steering: the decoding "
            "also breaks benign answers"
            if r["control_drops"]
            else "no resolved drop of the control"
        )
        out.append(
            f"- {r['condition']}: {r['safebeam_benign_helpful']:.3f} vs {r['greedy_benign_helpful']:.3f}, "
            f"difference {interval_cell(r)}: {verdict}."
        )
    return out


def _probe_lines(results: dict) -> list[str]:
    rows = results.get("probe") or []
    if not rows:
        return []
    bow = results.get("bag_of_words_probe_auroc")
    out = [
        "",
        f"Probe prompts name the hex and a benign spell and ask for one of them; every harmful prompt has a "
        f"benign twin with the same words, so the bag-of-words baseline (same prompts, same split) is at "
        f"{bow:.3f}.",
        "",
    ]
    for r in rows:
        out.append(
            f"- {r['condition']}: probe AUROC {interval_cell(r)} against bag of words {bow:.3f}: "
            + (
                "above the baseline (interval excludes it)"
                if r["above_baseline"]
                else "no interval with one seed"
                if r["n_seeds"] < 2
                else "not resolved above it"
            )
            + "."
        )
    return out


def _comparison_lines(results: dict) -> list[str]:
    comps = results.get("comparisons") or []
    if not comps:
        return []
    out = [
        "",
        "### Paired differences (same seeds, same prompts)",
        "",
        "| pair | metric | difference [95% interval] | permutation p (smallest possible) | resolved |",
        "|---|---|---|---|---|",
    ]
    for d in sorted(comps, key=lambda d: (not d["primary"], d["metric"] != "asr_heldout", d["metric"])):
        out.append(
            f"| {_pair(d)} | {LABELS.get(d['metric'], d['metric'])}{' (primary)' if d['primary'] else ''} | "
            f"{interval_cell(d)} | {d['p']:.3f} ({d['min_p']:.3f}) | {'yes' if d['resolved'] else 'no'} |"
        )
    prim = [d for d in comps if d["primary"]]
    res = [f"{_pair(d)} on {LABELS[d['metric']]} ({interval_cell(d)})" for d in prim if d["resolved"]]
    unres = [f"{_pair(d)} on {LABELS[d['metric']]}" for d in prim if not d["resolved"]]
    sec = [d for d in comps if not d["primary"]]
    out += [
        "",
        "Resolved (interval excludes 0), primary metrics: " + ("; ".join(res) if res else "none") + ".",
        "",
        "Not resolved, primary metrics: " + ("; ".join(unres) if unres else "none") + ".",
        "",
        f"Secondary metrics: {sum(d['resolved'] for d in sec)} of {len(sec)} differences resolved; with that many "
        f"comparisons about {0.05 * len(sec):.1f} would be by chance at the 5% level, so read them as leads.",
    ]
    return out


def _family_lines(results: dict) -> list[str]:
    fam = [f for f in results.get("families") or [] if f["metric"] == "asr_heldout"]
    if not fam:
        return []
    families = list(dict.fromkeys(f["family"] for f in fam))
    conds = list(dict.fromkeys(f["condition"] for f in fam))
    out = ["", "### Held-out ASR per family of phrasing (pretrained, greedy)", ""]
    out.append("| condition | " + " | ".join(families) + " |")
    out.append("|" + "---|" * (len(families) + 1))
    cell = {(f["condition"], f["family"]): f for f in fam}
    for c in conds:
        out.append(f"| {c} | " + " | ".join(interval_cell(cell.get((c, f))) for f in families) + " |")
    return out


def _power_lines(results: dict) -> list[str]:
    rows = results.get("power") or []
    if not rows:
        return []
    out = [
        "",
        "### Power (from this run's spread between seeds)",
        "",
        "| metric | sd of per-seed paired differences | difference detectable (80% power, 5% two-sided) "
        "| seeds | smallest permutation p |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {LABELS.get(r['metric'], r['metric'])} | {r['seed_sd_of_differences']:.3f} | "
            f"{r['detectable_difference']:.3f} | {r['n_seeds']} | {r['min_p']:.3f} |"
        )
    return out


def write_csv(results: dict, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in results["runs"]:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})


def _save(fig, ax, path: Path, legend_size: int = 8) -> Path:
    """Legend, grid, tight layout, PNG at 120 dpi; closes the figure and returns the path."""
    import matplotlib.pyplot as plt

    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_all(results: dict, plots: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    written = []
    summary = results["summary"]
    names = [s["condition"] for s in summary]
    x = list(range(len(names)))

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key, label, marker in (
        ("asr_heldout", "ASR held-out (greedy)", "o"),
        ("asr_heldout_after_ft", "ASR held-out after benign FT", "s"),
        ("safebeam_asr", "SafeBeam ASR", "^"),
        ("overrefusal", "over-refusal", "x"),
        ("benign_helpful", "benign helpful", "v"),
        ("safebeam_benign_helpful", "SafeBeam benign helpful (control)", "d"),
    ):
        if not all(key in s["metrics"] for s in summary):
            continue
        ms = [s["metrics"][key] for s in summary]
        ci = [m["ci"] or [m["mean"], m["mean"]] for m in ms]  # one value: no bar
        ax.errorbar(
            x,
            [m["mean"] for m in ms],
            yerr=[[m["mean"] - c[0] for m, c in zip(ms, ci)], [c[1] - m["mean"] for m, c in zip(ms, ci)]],
            marker=marker,
            capsize=3,
            label=label,
        )
    ax.set_xticks(x, [n.replace("from_", "from ") + ("%" if n != "none" else "") for n in names])
    ax.set_xlabel("intervention start (share of the token budget)")
    ax.set_ylabel("rate (95% interval over seeds and prompts)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Toy world: attack success vs intervention start")
    written.append(_save(fig, ax, plots / "asr_vs_start.png", legend_size=7))

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in names:
        rs = [r for r in results["runs"] if r["condition"] == name and r.get("probe_layers")]
        if not rs:
            continue
        layers = [d["layer"] for d in rs[0]["probe_layers"]]
        mean = [sum(r["probe_layers"][i]["auroc"] for r in rs) / len(rs) for i in range(len(layers))]
        ax.plot(layers, mean, marker="o", label=name)
    bow = results.get("bag_of_words_probe_auroc")
    if bow is not None:
        ax.axhline(bow, color="grey", linestyle="--", label="bag of words")
    ax.set_xlabel("layer (-1 = embeddings)")
    ax.set_ylabel("held-out AUROC (harmful vs benign)")
    ax.set_title("Linear probe separation per layer")
    written.append(_save(fig, ax, plots / "probe_auroc_per_layer.png", legend_size=8))

    fig, ax = plt.subplots(figsize=(6.5, 4))
    first_seed = min(r["seed"] for r in results["runs"])
    for r in results["runs"]:
        if r["seed"] != first_seed:
            continue
        mpath = RunFolder(r["run_dir"]).metrics
        if not mpath.is_file():
            continue
        rows = [json.loads(line) for line in mpath.read_text().splitlines() if line.strip()]
        k = max(1, len(rows) // 50)  # running mean over ~2% of the run: single steps are noisy
        losses = [r2["loss"] for r2 in rows]
        smooth = [
            sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1]) for i in range(len(losses))
        ]
        (line,) = ax.plot([r2["tokens"] for r2 in rows], smooth, label=r["condition"])
        if r["intervention_start"]:
            ax.axvline(r["intervention_start"] * rows[-1]["tokens"], color=line.get_color(), linestyle=":", alpha=0.6)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (running mean)")
    ax.set_yscale("log")
    ax.set_title(f"Training loss (seed {first_seed}; dotted: intervention start)")
    written.append(_save(fig, ax, plots / "loss_curves.png", legend_size=8))
    return written


def write_reports(results: dict, out: Path) -> dict:
    """Write results.csv, results.md and plots/ next to results.json; return their paths."""
    out = Path(out)
    write_csv(results, out / "results.csv")
    md = "# Toy-world curriculum study\n\n" + markdown_table(results)
    md += (
        "\nPlots: `plots/asr_vs_start.png`, `plots/probe_auroc_per_layer.png`, `plots/loss_curves.png`. "
        "Per-prompt outputs: `samples/`.\n"
    )
    (out / "results.md").write_text(md)
    plots = plot_all(results, out / "plots")
    return {"csv": out / "results.csv", "md": out / "results.md", "plots": plots}
