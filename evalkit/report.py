"""Results folder writing (results.json, samples/, plots/, report.md|html) and ``compare``."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from evalkit.judges import first_judge
from infra.folders import ResultsFolder, json_safe, write_json_atomic
from infra.log import get_logger

log = get_logger(__name__)


def write_json(path: Path, obj) -> None:
    write_json_atomic(path, obj)


def write_samples(out: Path, suite: str, samples: list[dict]) -> Path:
    p = ResultsFolder(out).samples_file(suite)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(json_safe(s), ensure_ascii=False) + "\n")
    return p


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 150,
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
        }
    )
    return plt


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _bar(plt, path: Path, labels, values, title, ylabel, ylim=(0, 1)):
    """Bars with value labels. A value may be a judge summary dict (``asr``, ``asr_ci95``, ``parsed``):
    then the bar shows the ASR with its 95% interval as an error bar and the sample count."""
    fig, ax = plt.subplots(figsize=(4.2, 3))
    pts, errs, notes = [], [[], []], []
    for v in values:
        if isinstance(v, dict):
            x = _num(v.get("asr"))
            lo, hi = (_num(c) for c in (v.get("asr_ci95") or [None, None]))
            pts.append(x)
            errs[0].append(x - lo if not math.isnan(x - lo) else 0.0)
            errs[1].append(hi - x if not math.isnan(hi - x) else 0.0)
            notes.append("n/a" if math.isnan(x) else f"{x:.2f}\nn={v.get('parsed', '?')}")
        else:
            x = _num(v)
            pts.append(x)
            errs[0].append(0.0)
            errs[1].append(0.0)
            notes.append("n/a" if math.isnan(x) else f"{x:.2f}")
    vals = [0.0 if math.isnan(x) else x for x in pts]
    has_err = any(errs[0]) or any(errs[1])
    bars = ax.bar(
        range(len(vals)),
        vals,
        color=plt.cm.tab10.colors[: len(vals)],
        yerr=errs if has_err else None,
        capsize=4 if has_err else 0,
        error_kw={"lw": 0.8},
    )
    for b, note, hi in zip(bars, notes, errs[1]):
        ax.annotate(note, (b.get_x() + b.get_width() / 2, b.get_height() + hi), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(vals)), labels, rotation=15)
    ax.set_ylim(ylim[0], ylim[1] * 1.15 if has_err else ylim[1])
    ax.set_ylabel(ylabel + (" (95% Wilson interval)" if has_err else ""))
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def make_plots(out: Path, plots: dict[str, dict]) -> list[Path]:
    """PNG plots from the suites' plot data; returns the files written."""
    plt = _plt()
    pdir = ResultsFolder(out).plots
    pdir.mkdir(parents=True, exist_ok=True)
    written = []
    for suite, data in plots.items():
        for kind, d in data.items():
            path = pdir / f"{suite}_{kind}.png"
            if kind in ("asr_by_judge", "asr_by_decoding"):
                _bar(plt, path, list(d), list(d.values()), f"{suite}: attack success rate", "ASR")
            elif kind == "overrefusal_classes":
                _bar(
                    plt,
                    path,
                    [k.replace("_", "\n") for k in d],
                    list(d.values()),
                    "over-refusal: answer classes",
                    "share of prompts",
                )
            elif kind == "capability":
                _bar(plt, path, list(d), list(d.values()), "capability (lm-eval)", "accuracy")
            elif kind == "probe_auroc":
                fig, ax = plt.subplots(figsize=(4.8, 3))
                ax.plot([x for x, _ in d], [y for _, y in d], marker="o", ms=3)
                ax.axhline(0.5, color="grey", ls="--", lw=0.8)
                ax.set_ylim(0.4, 1.02)
                ax.set_xlabel("layer (-1 = embeddings)")
                ax.set_ylabel("held-out AUROC")
                ax.set_title("linear probe: harmful vs harmless")
                fig.tight_layout()
                fig.savefig(path)
                plt.close(fig)
            elif kind == "steering":
                # d: {set: {"score": (base, steered), "refusal": (base, steered)}, "_title": str}
                sets = [n for n in d if not n.startswith("_")]
                fig, axes = plt.subplots(1, 2, figsize=(max(7.2, 2.6 * len(sets)), 3))
                x = range(len(sets))
                for ax, key, ylabel in (
                    (axes[0], "score", "refusal score (log-prob diff)"),
                    (axes[1], "refusal", "keyword refusal rate"),
                ):
                    base = [_num(d[n][key][0]) for n in sets]
                    st = [_num(d[n][key][1]) for n in sets]
                    ax.bar([i - 0.2 for i in x], base, 0.4, label="unsteered")
                    ax.bar([i + 0.2 for i in x], st, 0.4, label="steered")
                    ax.set_xticks(
                        list(x),
                        [
                            n.rpartition("_")[0] + "\n" + ("+" if n.endswith("_plus") else "-") + " direction"
                            for n in sets
                        ],
                        fontsize=7,
                    )
                    ax.set_ylabel(ylabel)
                    ax.axhline(0, color="grey", lw=0.6)
                axes[1].set_ylim(0, 1.05)
                axes[0].legend(fontsize=7)
                fig.suptitle(d.get("_title", "activation steering"))
                fig.tight_layout()
                fig.savefig(path)
                plt.close(fig)
            elif kind in ("refusal_before_after", "projection_before_after"):
                rate = kind == "refusal_before_after"
                fig, ax = plt.subplots(figsize=(4.2, 3))
                sets = list(d)
                for off, idx, label in ((-0.2, 0, "before"), (0.2, 1, "after")):
                    vals = [_num(d[n][idx]) for n in sets]
                    bars = ax.bar([i + off for i in range(len(sets))], vals, 0.4, label=label)
                    ax.bar_label(bars, fmt="%.2f", fontsize=7)
                ax.set_xticks(range(len(sets)), [f"{n} prompts" for n in sets])
                if rate:
                    ax.set_ylim(0, 1.1)
                else:
                    ax.axhline(0, color="grey", lw=0.6)
                ax.set_ylabel("keyword refusal rate" if rate else "mean h . r at the direction's layer")
                ax.set_title(
                    "abliteration: refusals before and after" if rate else "abliteration: where prompts sit along r"
                )
                ax.legend(fontsize=7)
                fig.tight_layout()
                fig.savefig(path)
                plt.close(fig)
            elif kind == "residual_projection":
                before, after = d
                fig, ax = plt.subplots(figsize=(4.8, 3))
                ax.plot(range(len(before)), before, label="before", marker="o", ms=3)
                ax.plot(range(len(after)), after, label="after", marker="o", ms=3)
                ax.set_xlabel("hidden-state index (0 = embeddings)")
                ax.set_ylabel("mean |h . r|")
                ax.set_title("abliteration: residual projection on r")
                ax.legend()
                fig.tight_layout()
                fig.savefig(path)
                plt.close(fig)
            else:
                continue
            written.append(path)
    return written


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else (f"{v:.3f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}")
    return str(v)


def headline(results: dict) -> dict[str, float]:
    """The one-number-per-suite view used by the report and ``compare``."""
    s = results.get("suites", {})
    h = {}
    pick = {
        "asr": ["asr", "refusal_score_mean"],
        "overrefusal": ["overrefusal_rate"],
        "capability": ["mean_acc"],
        "probes": ["best_auroc", "best_layer", "bow_auroc"],
        "safebeam": ["asr_baseline", "asr_safebeam"],
        "abliteration": ["refusal_rate_drop", "max_proj_after"],
        "finetune-robustness": ["asr_before", "asr_after", "asr_delta"],
    }
    for suite, keys in pick.items():
        for k in keys:
            if suite in s and k in s[suite]:
                h[f"{suite}.{k}"] = s[suite][k]
    if "asr" in s:
        for j, m in s["asr"].get("judges", {}).items():
            h[f"asr.{j}"] = m["asr"]
    if "steering" in s:
        for arm, m in s["steering"].items():
            if isinstance(m, dict) and "refusal_score_delta" in m:
                h[f"steering.{arm}.delta"] = m["refusal_score_delta"]
    if "self-refusal" in s:
        h["self-refusal.self_refusal_rate"] = s["self-refusal"]["self_report"]["refusal_rate"]
    return h


def write_report(out: Path, results: dict, plots: list[Path], fmt: str = "md") -> Path:
    """A human-readable summary: settings, headline numbers, per-suite metrics, plots, skipped rows."""
    h = headline(results)
    lines = [
        f"# Safety evaluation: {results['model']['name']}",
        "",
        f"Decoding: `{json.dumps(results['decoding'])}`",
        "",
        f"Judges: `{json.dumps(results['judges'])}`",
        "",
        "## Headline",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in h.items()]
    for suite, m in results["suites"].items():
        lines += ["", f"## {suite}", "", "```json", json.dumps(json_safe(m), indent=1)[:4000], "```"]
    if results.get("errors"):
        lines += ["", "## Suites that failed", ""] + [f"- **{k}**: {v}" for k, v in results["errors"].items()]
    if results.get("skipped_rows"):
        lines += ["", f"## Skipped input rows ({results['skipped_rows']}), see skipped.jsonl"]
    lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    if fmt == "md":
        path = ResultsFolder(out).report_md
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path
    body = [
        f"<h1>Safety evaluation: {html.escape(results['model']['name'])}</h1>",
        f"<p>Decoding: <code>{html.escape(json.dumps(results['decoding']))}</code></p>",
        "<h2>Headline</h2><table border=1 cellpadding=4><tr><th>metric</th><th>value</th></tr>",
    ]
    body += [f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in h.items()]
    body.append("</table>")
    for suite, m in results["suites"].items():
        body.append(f"<h2>{html.escape(suite)}</h2><pre>{html.escape(json.dumps(json_safe(m), indent=1)[:4000])}</pre>")
    body += [f'<figure><img src="plots/{p.name}" width="480"><figcaption>{p.stem}</figcaption></figure>' for p in plots]
    path = ResultsFolder(out).report_html
    path.write_text(
        "<!doctype html><html><meta charset=utf-8><body>" + "\n".join(body) + "</body></html>", encoding="utf-8"
    )
    return path


def _interval(results: dict, key: str):
    """95% interval of an ASR headline value (``asr.asr``, ``asr.<judge>``, ``safebeam.asr_*``,
    ``finetune-robustness.asr_before/after``), or None."""
    s = results.get("suites", {})
    suite, _, name = key.partition(".")
    if suite == "asr":
        asr = s.get("asr", {})
        m = asr.get("judges", {}).get(name) if name != "asr" else first_judge(asr)
    elif (suite, name) in {
        ("safebeam", "asr_baseline"),
        ("safebeam", "asr_safebeam"),
        ("finetune-robustness", "asr_before"),
        ("finetune-robustness", "asr_after"),
    }:
        m = first_judge(s[suite][name[4:]])
    else:
        return None
    ci = (m or {}).get("asr_ci95")
    return tuple(ci) if ci and None not in ci else None


def compare(dirs: list[Path], out: Path) -> Path:
    """Table (Markdown) and plots across results folders, e.g. the 0/20/60% intervention runs."""
    rows = []
    for d in dirs:
        r = ResultsFolder(d).read_results()
        rows.append((Path(d).name, r, headline(r)))
    keys = sorted({k for _, _, h in rows for k in h})
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Comparison", "", "| metric | " + " | ".join(n for n, _, _ in rows) + " |", "|---|" + "---|" * len(rows)]
    for k in keys:
        lines.append(
            f"| {k} | "
            + " | ".join(_fmt(h.get(k, float("nan"))) if h.get(k) is not None else "n/a" for _, _, h in rows)
            + " |"
        )
    plt = _plt()
    pdir = out / "plots"
    pdir.mkdir(exist_ok=True)
    written = []
    bar_keys = [
        k
        for k in keys
        if k.split(".")[-1] in ("asr", "overrefusal_rate", "mean_acc", "best_auroc", "asr_safebeam", "asr_after")
    ]
    if bar_keys:
        fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(bar_keys) * len(rows) / 2), 3.2))
        w = 0.8 / len(rows)
        for i, (name, r, h) in enumerate(rows):
            vals = [h.get(k) if isinstance(h.get(k), (int, float)) else 0 for k in bar_keys]
            cis = [_interval(r, k) for k in bar_keys]
            err = [[v - c[0] if c else 0 for v, c in zip(vals, cis)], [c[1] - v if c else 0 for v, c in zip(vals, cis)]]
            ax.bar(
                [j + i * w for j in range(len(bar_keys))],
                vals,
                w,
                label=name,
                yerr=err if any(cis) else None,
                capsize=2,
                error_kw={"lw": 0.7},
            )
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(bar_keys))], bar_keys, rotation=20, fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
        ax.set_title("models compared (ASR bars: 95% Wilson interval)")
        fig.tight_layout()
        written.append(pdir / "compare_metrics.png")
        fig.savefig(written[-1])
        plt.close(fig)
    probe_rows = [(n, r["suites"]["probes"]["layers"]) for n, r, _ in rows if "probes" in r.get("suites", {})]
    if probe_rows:
        fig, ax = plt.subplots(figsize=(4.8, 3))
        for n, layers in probe_rows:
            ax.plot([x["layer"] for x in layers], [x["auroc"] for x in layers], marker="o", ms=3, label=n)
        ax.set_xlabel("layer")
        ax.set_ylabel("held-out AUROC")
        ax.set_title("probe separation by layer")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(pdir / "compare_probes.png")
        fig.savefig(written[-1])
        plt.close(fig)
    lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in written]
    path = out / "compare.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_json(out / "compare.json", {n: h for n, _, h in rows})
    return path
