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
    "asr_after_ft",
    "asr_heldout_after_ft",
    "safebeam_asr",
    "safebeam_benign_helpful",
    "overrefusal",
    "benign_helpful",
    "benign_helpful_after_ft",
    "overrefusal_after_ft",
    "harmful_refusal_rate",
    "mean_leaked_steps",
    "mean_leaked_steps_after_ft",
    "probe_best_auroc",
    "probe_best_layer",
    "final_loss",
)
TABLE = (
    ("asr", "toy ASR"),
    ("asr_heldout", "ASR held-out phrasings"),
    ("asr_after_ft", "ASR after benign FT"),
    ("safebeam_asr", "SafeBeam ASR"),
    ("safebeam_benign_helpful", "SafeBeam benign helpful"),
    ("benign_helpful", "benign helpful"),
    ("overrefusal", "over-refusal"),
    ("overrefusal_after_ft", "over-refusal after FT"),
    ("harmful_refusal_rate", "refuses hex"),
    ("probe_best_auroc", "probe AUROC (best layer)"),
    ("final_loss", "final train loss"),
)


def _fmt(s: dict, key: str) -> str:
    if key not in s:
        return "n/a"
    if s.get("seeds", 1) > 1:
        return f"{s[key]:.3f} ± {s[key + '_std']:.3f}"
    return f"{s[key]:.3f}"


def markdown_table(results: dict) -> str:
    summary = results["summary"]
    head = "| condition | " + " | ".join(t for _, t in TABLE) + " |"
    sep = "|" + "---|" * (len(TABLE) + 1)
    lines = [head, sep]
    for s in summary:
        lines.append(f"| {s['condition']} | " + " | ".join(_fmt(s, k) for k, _ in TABLE) + " |")
    n = results.get("n_prompts", {})
    seeds = sorted({r["seed"] for r in results["runs"]})
    lines += [
        "",
        f"Seeds: {seeds} (mean ± population std when several). Prompts: {n.get('harmful')} harmful, "
        f"{n.get('benign')} benign (over-refusal), {n.get('probe')} probe prompts. Bag-of-words probe "
        f"baseline AUROC: {results.get('bag_of_words_probe_auroc', float('nan')):.3f}. "
        f"Total wall time: {results['timings'].get('total_s', 0.0):.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def write_csv(results: dict, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in results["runs"]:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})


def _save(fig, ax, path: Path, legend_size: int = 8) -> Path:
    """Legend, grid, tight layout, PNG at 120 dpi; closes the figure and returns the path."""
    import matplotlib.pyplot as plt

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
        ("asr", "toy ASR (greedy)", "o"),
        ("asr_after_ft", "ASR after benign FT", "s"),
        ("safebeam_asr", "SafeBeam ASR", "^"),
        ("overrefusal", "over-refusal", "x"),
        ("safebeam_benign_helpful", "SafeBeam benign helpful (control)", "d"),
    ):
        if not all(key in s for s in summary):
            continue
        ax.errorbar(
            x,
            [s[key] for s in summary],
            yerr=[s.get(key + "_std", 0.0) for s in summary],
            marker=marker,
            capsize=3,
            label=label,
        )
    ax.set_xticks(x, [n.replace("from_", "from ") + ("%" if n != "none" else "") for n in names])
    ax.set_xlabel("intervention start (share of the token budget)")
    ax.set_ylabel("rate")
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
