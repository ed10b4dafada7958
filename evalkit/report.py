"""Results folder writing (results.json, samples/, plots/, report.md|html) and ``compare``."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

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


def _rate_parts(v) -> tuple[float, float, float, str]:
    """(value, lower, upper, note) of a bar: a rate dict (``value`` or ``asr``, its interval and counts)
    or a plain number. Intervals are clipped so that an error bar is never negative."""
    if isinstance(v, dict):
        x = _num(v.get("value", v.get("asr")))
        ci = v.get("value_ci95") or v.get("ci95") or v.get("asr_ci95") or [None, None]
        lo, hi = (_num(c) for c in ci)
        judged = v.get("judged", v.get("parsed"))
        counts = f"n={judged}" if v.get("n") in (None, judged) else f"{judged}/{v.get('n')} judged"
        note = "n/a" if math.isnan(x) else f"{x:.2f}\n{counts}"
        return x, lo, hi, note
    x = _num(v)
    return x, float("nan"), float("nan"), "n/a" if math.isnan(x) else f"{x:.2f}"


def _bars(plt, path: Path, d: dict, ylim=(0, 1)):
    """Bars with value labels; a rate bar shows its 95% interval and how many outputs it rests on."""
    labels, values = list(d["bars"]), list(d["bars"].values())
    fig, ax = plt.subplots(figsize=(max(4.2, 0.9 * len(labels)), 3))
    pts, errs, notes = [], [[], []], []
    for v in values:
        x, lo, hi, note = _rate_parts(v)
        pts.append(x)
        errs[0].append(0.0 if math.isnan(x) or math.isnan(lo) else max(0.0, x - lo))
        errs[1].append(0.0 if math.isnan(x) or math.isnan(hi) else max(0.0, hi - x))
        notes.append(note)
    vals = [0.0 if math.isnan(x) else x for x in pts]
    has_err = any(errs[0]) or any(errs[1])
    bars = ax.bar(
        range(len(vals)),
        vals,
        color=[plt.cm.tab10.colors[i % 10] for i in range(len(vals))],
        yerr=errs if has_err else None,
        capsize=4 if has_err else 0,
        error_kw={"lw": 0.8},
    )
    for b, note, hi in zip(bars, notes, errs[1]):
        ax.annotate(note, (b.get_x() + b.get_width() / 2, b.get_height() + hi), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(vals)), labels, rotation=15)
    ax.set_ylim(ylim[0], ylim[1] * 1.2)
    ax.set_ylabel(d.get("ylabel", ""))
    ax.set_title(d.get("title", path.stem) + ("\nerror bars: 95% Wilson interval" if has_err else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _probe_layers(plt, path: Path, d: dict):
    pts = d["points"]
    fig, ax = plt.subplots(figsize=(4.8, 3))
    ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", ms=3)
    ax.axhline(0.5, color="grey", ls="--", lw=0.8)
    ax.set_ylim(0.4, 1.02)
    ax.set_xlabel("layer (-1 = embeddings)")
    ax.set_ylabel("held-out AUROC")
    ax.set_title("linear probe: harmful vs harmless")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _steering(plt, path: Path, d: dict):
    # d["arms"]: {arm: {"score": (base, steered), "refusal": (base, steered)}}
    arms = d["arms"]
    sets = list(arms)
    fig, axes = plt.subplots(1, 2, figsize=(max(7.2, 2.6 * len(sets)), 3))
    x = range(len(sets))
    for ax, key, ylabel in (
        (axes[0], "score", "refusal score (log-prob diff)"),
        (axes[1], "refusal", f"refusal rate ({d.get('judge', 'judge')})"),
    ):
        base = [_num(arms[n][key][0]) for n in sets]
        st = [_num(arms[n][key][1]) for n in sets]
        ax.bar([i - 0.2 for i in x], [0.0 if math.isnan(v) else v for v in base], 0.4, label="unsteered")
        ax.bar([i + 0.2 for i in x], [0.0 if math.isnan(v) else v for v in st], 0.4, label="steered")
        ax.set_xticks(
            list(x),
            [n.rpartition("_")[0] + "\n" + ("+" if n.endswith("_plus") else "-") + " direction" for n in sets],
            fontsize=7,
        )
        ax.set_ylabel(ylabel)
        ax.axhline(0, color="grey", lw=0.6)
    axes[1].set_ylim(0, 1.05)
    axes[0].legend(fontsize=7)
    fig.suptitle(d.get("title", "activation steering"))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _before_after(plt, path: Path, d: dict):
    fig, ax = plt.subplots(figsize=(4.2, 3))
    sets = list(d["sets"])
    for off, idx, label in ((-0.2, 0, "before"), (0.2, 1, "after")):
        vals = [_num(d["sets"][n][idx]) for n in sets]
        bars = ax.bar(
            [i + off for i in range(len(sets))], [0.0 if math.isnan(v) else v for v in vals], 0.4, label=label
        )
        ax.bar_label(bars, labels=["n/a" if math.isnan(v) else f"{v:.2f}" for v in vals], fontsize=7)
    ax.set_xticks(range(len(sets)), [f"{n} prompts" for n in sets])
    if d.get("rate"):
        ax.set_ylim(0, 1.1)
    else:
        ax.axhline(0, color="grey", lw=0.6)
    ax.set_ylabel(d.get("ylabel", ""))
    ax.set_title(d.get("title", path.stem), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _residual_projection(plt, path: Path, d: dict):
    before, after = d["before"], d["after"]
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


# plot kind -> renderer(plt, path, data); a suite's plot data names its kind
PLOTS = {
    "rates": _bars,
    "values": _bars,
    "probe_layers": _probe_layers,
    "steering": _steering,
    "before_after": _before_after,
    "residual_projection": _residual_projection,
}


def make_plots(out: Path, plots: dict[str, dict]) -> list[Path]:
    """PNG plots from the suites' plot data; returns the files written. A plot that fails is logged and
    left out: it never costs the results or the report."""
    plt = _plt()
    pdir = ResultsFolder(out).plots
    pdir.mkdir(parents=True, exist_ok=True)
    written = []
    for suite, data in plots.items():
        for name, d in data.items():
            path = pdir / f"{suite}_{name}.png"
            render = PLOTS.get(d.get("kind")) if isinstance(d, dict) else None
            if render is None:
                log.warning("plot %s of suite %s has no known kind (%s)", name, suite, ", ".join(PLOTS))
                continue
            try:
                render(plt, path, d)
            except Exception as e:  # noqa: BLE001 - a plot must not lose the report
                log.error("plot %s of suite %s failed: %s", name, suite, e)
                plt.close("all")
                continue
            written.append(path)
    return written


def _fmt(v) -> str:
    if isinstance(v, dict):
        return fmt_rate(v)
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else (f"{v:.3f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}")
    return "n/a" if v is None else str(v)


def fmt_counts(r: dict) -> str:
    """``n=40: 38 judged, 1 unparsed, 1 error`` of a rate or judge summary."""
    if "n" not in r:
        return ""
    e = r.get("errors", 0)
    judged, unparsed = r.get("judged", r["n"]), r.get("unparsed", 0)
    return f"n={r['n']}: {judged} judged, {unparsed} unparsed, {e} error{'s' if e != 1 else ''}"


def fmt_rate(r: dict) -> str:
    """A rate with its interval and the counts it rests on."""
    v = _num(r.get("value"))
    if math.isnan(v):
        text = "n/a"
    else:
        ci = r.get("ci95") or [None, None]
        text = f"{v:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if None not in ci and not math.isnan(_num(ci[0])) else "")
    counts = fmt_counts(r)
    return f"{text} ({counts})" if counts else text


def headline_value(v):
    """The number of a headline entry (a rate's value, else the number itself)."""
    return v.get("value") if isinstance(v, dict) else v


def headline(results: dict) -> dict:
    """The headline of each suite (``Suite.headline``), as ``suite.key`` -> number or rate (a dict with
    ``value``, ``ci95``, ``n``, ``judged``, ``unparsed``, ``errors``): the view of the report and ``compare``."""
    from evalkit.registry import SUITES
    from evalkit.suites import as_suite

    h: dict = {}
    for suite, metrics in results.get("suites", {}).items():
        if suite not in SUITES or not isinstance(metrics, dict):
            continue
        try:
            entries = as_suite(suite, SUITES.get(suite)).headline(metrics)
        except (KeyError, TypeError) as e:  # results of an older format: show what can be shown
            log.warning("no headline for suite %s: %s", suite, e)
            continue
        for k, v in entries.items():
            if v is not None:
                h[f"{suite}.{k}"] = v
    return h


def warnings_of(results: dict) -> list[str]:
    """Every suite's warnings (judges that labelled too few outputs, outputs that were errors)."""
    out = []
    for suite, m in results.get("suites", {}).items():
        if isinstance(m, dict):
            out += [f"{suite}: {w}" for w in m.get("warnings", [])]
    return out


def judge_tables(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per suite with judges: (title, header, rows) of every judge's rate and counts."""
    tables = []
    for suite, m in results.get("suites", {}).items():
        if not isinstance(m, dict):
            continue
        parts = [(suite, m)] + [
            (f"{suite} ({k})", m[k]) for k in ("baseline", "safebeam", "before", "after") if isinstance(m.get(k), dict)
        ]
        for title, mm in parts:
            judges = mm.get("judges")
            if not isinstance(judges, dict) or not judges:
                continue
            key = "asr" if "asr" in next(iter(judges.values())) else "any_refusal"
            rows = []
            for name, j in judges.items():
                mark = " (headline)" if name == mm.get("primary_judge") else ""
                rows.append(
                    [
                        name + mark,
                        _fmt(j.get(key)),
                        "[" + ", ".join(_fmt(c) for c in j.get(f"{key}_ci95") or []) + "]",
                        str(j.get("n")),
                        str(j.get("judged")),
                        str(j.get("unparsed")),
                        str(j.get("errors")),
                        j.get("warning", ""),
                    ]
                )
            label = "ASR" if key == "asr" else "any refusal"
            tables.append((title, ["judge", label, "95% CI", "n", "judged", "unparsed", "errors", "warning"], rows))
    return tables


def write_report(out: Path, results: dict, plots: list[Path], fmt: str = "md") -> Path:
    """A human-readable summary: settings, warnings, headline numbers with their counts, every judge's
    counts, per-suite metrics, plots, skipped rows."""
    h = headline(results)
    warns = warnings_of(results)
    lines = [
        f"# Safety evaluation: {results['model']['name']}",
        "",
        f"Decoding: `{json.dumps(results['decoding'])}`",
        "",
        f"Judges: `{json.dumps(results['judges'])}`",
        "",
    ]
    if warns:
        lines += ["## Warnings", ""] + [f"- **{w}**" for w in warns] + [""]
    lines += ["## Headline", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in h.items()]
    for title, header, rows in judge_tables(results):
        lines += ["", f"### Judges: {title}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
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
    esc = html.escape
    body = [
        f"<h1>Safety evaluation: {esc(results['model']['name'])}</h1>",
        f"<p>Decoding: <code>{esc(json.dumps(results['decoding']))}</code></p>",
        f"<p>Judges: <code>{esc(json.dumps(results['judges']))}</code></p>",
    ]
    if warns:
        body.append("<h2>Warnings</h2><ul>" + "".join(f"<li><b>{esc(w)}</b></li>" for w in warns) + "</ul>")
    body.append("<h2>Headline</h2><table border=1 cellpadding=4><tr><th>metric</th><th>value</th></tr>")
    body += [f"<tr><td>{esc(k)}</td><td>{esc(_fmt(v))}</td></tr>" for k, v in h.items()]
    body.append("</table>")
    for title, header, rows in judge_tables(results):
        body.append(f"<h3>Judges: {esc(title)}</h3><table border=1 cellpadding=4><tr>")
        body.append("".join(f"<th>{esc(c)}</th>" for c in header) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
        body.append("</table>")
    for suite, m in results["suites"].items():
        body.append(f"<h2>{esc(suite)}</h2><pre>{esc(json.dumps(json_safe(m), indent=1)[:4000])}</pre>")
    if results.get("errors"):
        body.append("<h2>Suites that failed</h2><ul>")
        body += [f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in results["errors"].items()]
        body.append("</ul>")
    body += [f'<figure><img src="plots/{p.name}" width="480"><figcaption>{p.stem}</figcaption></figure>' for p in plots]
    path = ResultsFolder(out).report_html
    path.write_text(
        "<!doctype html><html><meta charset=utf-8><body>" + "\n".join(body) + "</body></html>", encoding="utf-8"
    )
    return path


def compare(dirs: list[Path], out: Path) -> Path:
    """Table (Markdown) and plots across results folders, e.g. the 0/20/60% intervention runs. Every rate
    is shown with its interval and counts; each folder's warnings are listed."""
    rows = []
    for d in dirs:
        r = ResultsFolder(d).read_results()
        rows.append((Path(d).name, r, headline(r)))
    keys = sorted({k for _, _, h in rows for k in h})
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Comparison", "", "| metric | " + " | ".join(n for n, _, _ in rows) + " |", "|---|" + "---|" * len(rows)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(_fmt(h[k]) if k in h else "n/a" for _, _, h in rows) + " |")
    warns = [(n, w) for n, r, _ in rows for w in warnings_of(r)]
    if warns:
        lines += ["", "## Warnings", ""] + [f"- **{n}**: {w}" for n, w in warns]
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
        try:
            fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(bar_keys) * len(rows) / 2), 3.2))
            w = 0.8 / len(rows)
            for i, (name, _r, h) in enumerate(rows):
                parts = [_rate_parts(h.get(k)) if k in h else (float("nan"),) * 3 + ("",) for k in bar_keys]
                vals = [0.0 if math.isnan(p[0]) else p[0] for p in parts]
                err = [
                    [0.0 if math.isnan(p[1]) or math.isnan(p[0]) else max(0.0, p[0] - p[1]) for p in parts],
                    [0.0 if math.isnan(p[2]) or math.isnan(p[0]) else max(0.0, p[2] - p[0]) for p in parts],
                ]
                has_err = any(err[0]) or any(err[1])
                ax.bar(
                    [j + i * w for j in range(len(bar_keys))],
                    vals,
                    w,
                    label=name,
                    yerr=err if has_err else None,
                    capsize=2,
                    error_kw={"lw": 0.7},
                )
            ax.set_xticks([j + 0.4 - w / 2 for j in range(len(bar_keys))], bar_keys, rotation=20, fontsize=7)
            ax.set_ylim(0, 1.05)
            ax.legend(fontsize=7)
            ax.set_title("models compared (rates: 95% Wilson interval)")
            fig.tight_layout()
            written.append(pdir / "compare_metrics.png")
            fig.savefig(written[-1])
        except Exception as e:  # noqa: BLE001 - the table is written whatever happens to the plot
            log.error("compare plot failed: %s", e)
        finally:
            plt.close("all")
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
    write_json(
        out / "compare.json",
        {n: h for n, _, h in rows} | ({"_warnings": [f"{n}: {w}" for n, w in warns]} if warns else {}),
    )
    return path
