"""The results folder's files besides results.json: samples/, plots/, ``report.html`` and ``report.md``.

``report.html`` is one self-contained page (figures embedded, no file beside it needed): the
warnings, skipped input rows and failed suites first; the headline table (value, 95% interval, n,
judged, unparsed, errors of every judge); one section per suite with its figures first, then a compact
table, the per-category breakdown where the prompts carry a category, the judge-agreement matrix,
the human-label validation when labels were given and a few example outputs (judge disagreements
first); the settings last (model, decoding, judges, data files with their sha256, code version).
``report.md`` holds the same content and links the figures in ``plots/``.

Figures and page come from ``infra.reporting`` (one implementation for every report of the project).
``evalkit compare`` lives in ``evalkit.compare``; ``compare`` here is kept for callers of the old name.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from infra.folders import ResultsFolder, json_safe, write_json_atomic
from infra.intervals import wilson_interval
from infra.log import get_logger
from infra.reporting import figures as F
from infra.reporting.page import MISSING, Page
from infra.reporting.runs import read_json_lines

log = get_logger(__name__)

DATA_FILES = "data_files.json"  # sha256 of every prompt/label file a run read (written with the report)
EXAMPLES_PER_SUITE = 4
EXAMPLE_CHARS = 600
SKIPPED_SHOWN = 20
CATEGORY_KEYS = ("category", "SemanticCategory", "Category", "risk_area", "types_of_harm")


def write_json(path: Path, obj) -> None:
    write_json_atomic(path, obj)


def write_samples(out: Path, suite: str, samples: list[dict]) -> Path:
    p = ResultsFolder(out).samples_file(suite)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(json_safe(s), ensure_ascii=False) + "\n")
    return p


def read_samples(out: Path, suite: str) -> list[dict]:
    """``samples/<suite>.jsonl`` (empty when absent; a line that is not a JSON object is skipped)."""
    return read_json_lines(ResultsFolder(out).samples_file(suite))


# -- numbers as text ------------------------------------------------------------------------------
def _num(v) -> float:
    return float("nan") if v is None else float(v)


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


def _value(v, digits: int = 3) -> str | None:
    """A number as table text; None / NaN: missing."""
    if isinstance(v, bool) or v is None:
        return None if v is None else str(v)
    if isinstance(v, (int, float)):
        x = float(v)
        if math.isnan(x) or math.isinf(x):
            return None
        if isinstance(v, int):
            return str(v)
        return f"{x:.{digits}f}" if abs(x) >= 10 ** (-digits) or x == 0 else f"{x:.2e}"
    return str(v)


def _ci(r: F.Rate) -> str:
    return "" if r.lo is None or r.hi is None or r.missing else f"[{r.lo:.2f}, {r.hi:.2f}]"


def rate_cell(v) -> str | None:
    """``0.333 [0.10, 0.70]`` plus ``, 5/6 judged`` when fewer than all were judged; None: missing."""
    r = F.as_rate(v)
    if r.missing:
        return None
    text = f"{r.value:.3f}" + (f" {_ci(r)}" if _ci(r) else "")
    if r.n is not None and r.judged is not None and r.judged != r.n:
        text += f", {r.judged}/{r.n} judged"
    return text


def rate_of(summary: dict | None, key: str) -> dict | None:
    """A rate (value, ci95, counts) out of a judge summary's ``key`` (``asr``, ``any_refusal``, a class)."""
    if not isinstance(summary, dict) or key not in summary:
        return None
    ci = summary.get(f"{key}_ci95") or (summary.get("refusal_ci95") if key == "refusal_rate" else None)
    out = {"value": summary[key], "ci95": ci}
    return out | {k: summary[k] for k in ("n", "judged", "unparsed", "errors") if k in summary}


def count_rate(k: int, judged: int, n: int | None = None, unparsed: int = 0, errors: int = 0) -> dict:
    """k of ``judged`` as a rate with its Wilson interval and counts."""
    lo, hi = wilson_interval(k, judged) if judged else (None, None)
    return {
        "value": k / judged if judged else None,
        "ci95": [lo, hi],
        "n": judged if n is None else n,
        "judged": judged,
        "unparsed": unparsed,
        "errors": errors,
        "k": k,
    }


# -- the headline -----------------------------------------------------------------------------------
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


def _judge_parts(suite: str, m: dict) -> list[tuple[str, dict]]:
    """(title, metrics) of every judged block of a suite: itself and its stages (before/after, ...)."""
    parts = [(suite, m)] + [
        (f"{suite} ({k})", m[k]) for k in ("baseline", "safebeam", "before", "after") if isinstance(m.get(k), dict)
    ]
    return [(t, mm) for t, mm in parts if isinstance(mm.get("judges"), dict) and mm["judges"]]


def _judge_key(judges: dict) -> str:
    return "asr" if "asr" in next(iter(judges.values())) else "any_refusal"


def judge_tables(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per suite with judges: (title, header, rows) of every judge's rate and counts."""
    tables = []
    for suite, m in results.get("suites", {}).items():
        if not isinstance(m, dict):
            continue
        for title, mm in _judge_parts(suite, m):
            judges = mm["judges"]
            key = _judge_key(judges)
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


HEADLINE_HEADER = ["metric", "value", "95% CI", "n", "judged", "unparsed", "errors", "note"]


def headline_rows(results: dict) -> list[list]:
    """One row per headline entry and per judge of every judged suite (value, interval, counts)."""
    rows, seen = [], set()
    for key, v in headline(results).items():
        rows.append(_headline_row(key, v))
        seen.add(key)
    for suite, m in results.get("suites", {}).items():
        if not isinstance(m, dict):
            continue
        for title, mm in _judge_parts(suite, m):
            if title != suite or "headline_judges" not in mm:  # suites whose headline lists its judges
                continue
            rk = _judge_key(mm["judges"])
            for name, j in mm["judges"].items():
                key = f"{suite}.{name}"
                if key not in seen:  # a judge configured with headline: false still gets its row
                    rows.append(_headline_row(key, rate_of(j, rk), "headline: false in judges.use"))
                    seen.add(key)
    return rows


def _headline_row(key: str, v, note: str = "") -> list:
    if isinstance(v, dict) or v is None:
        r = F.as_rate(v)
        warn = (v or {}).get("warning", "") if isinstance(v, dict) else ""
        return [
            key,
            _value(r.value),
            _ci(r),
            _value(r.n),
            _value(r.judged),
            _value(r.unparsed),
            _value(r.errors),
            "; ".join(x for x in (note, warn) if x),
        ]
    return [key, _value(v), "", "", "", "", "", note]


# -- plots of the suites' own plot data (plots/<suite>_<name>.png) ------------------------------------
def _bars_figure(d: dict, ylim=(0.0, 1.0)):
    return F.rate_bars(d["bars"], d.get("title", ""), d.get("ylabel", ""), ylim=ylim)


def _values_figure(d: dict):
    return F.rate_bars(d["bars"], d.get("title", ""), d.get("ylabel", ""), ylim=None)


def _probe_figure(d: dict):
    return F.layer_curves(
        {"held-out AUROC": d["points"]},
        d.get("title", "linear probe: harmful vs harmless"),
        "held-out AUROC",
        baseline=0.5,
        baseline_label="chance",
    )


def _steering_figure(d: dict):
    arms = d["arms"]
    return F.grouped_bars(
        [a.replace("_", " ") for a in arms],
        {k: [arms[a]["refusal"][i] for a in arms] for i, k in enumerate(("unsteered", "steered"))},
        d.get("title", "activation steering"),
        f"refusal rate ({d.get('judge', 'judge')})",
    )


def _before_after_figure(d: dict):
    sets = list(d["sets"])
    return F.grouped_bars(
        [f"{n} prompts" for n in sets],
        {k: [d["sets"][n][i] for n in sets] for i, k in enumerate(("before", "after"))},
        d.get("title", ""),
        d.get("ylabel", ""),
        ylim=(0.0, 1.0) if d.get("rate") else None,
    )


def _projection_figure(d: dict):
    return F.layer_curves(
        {"before": list(enumerate(d["before"])), "after": list(enumerate(d["after"]))},
        "abliteration: residual projection on r",
        "mean |h . r|",
        xlabel="hidden-state index (0 = embeddings)",
        ylim=None,
    )


# plot kind -> figure(data); a suite's plot data names its kind
PLOTS = {
    "rates": _bars_figure,
    "values": _values_figure,
    "probe_layers": _probe_figure,
    "steering": _steering_figure,
    "before_after": _before_after_figure,
    "residual_projection": _projection_figure,
}


def make_plots(out: Path, plots: dict[str, dict]) -> list[Path]:
    """PNG plots from the suites' plot data (``plots/<suite>_<name>.png``); returns the files written. A
    plot that fails is logged and left out: it never costs the results or the report.

    The suites the report has a section for (``SECTIONS``) are skipped: ``write_report`` draws their
    figures from the metrics (intervals, every judge) into the same folder, under the same names."""
    from infra.reporting.page import figure_png

    pdir = ResultsFolder(out).plots
    pdir.mkdir(parents=True, exist_ok=True)
    written = []
    for suite, data in plots.items():
        if suite in SECTIONS:
            continue
        for name, d in data.items():
            path = pdir / f"{suite}_{name}.png"
            render = PLOTS.get(d.get("kind")) if isinstance(d, dict) else None
            if render is None:
                log.warning("plot %s of suite %s has no known kind (%s)", name, suite, ", ".join(PLOTS))
                continue
            try:
                path.write_bytes(figure_png(render(d)))
            except Exception as e:  # noqa: BLE001 - a plot must not lose the report
                log.error("plot %s of suite %s failed: %s", name, suite, e)
                F.plt().close("all")
                continue
            written.append(path)
    return written


# -- provenance -------------------------------------------------------------------------------------
def data_files(results: dict, out: Path | None = None) -> list[dict]:
    """Every prompt / label / finetune data file the run names, with its sha256: read from
    ``data_files.json`` when the report of the run wrote it (the hashes of the files as evaluated),
    else computed now (``hashed_now``)."""
    if out is not None and (Path(out) / DATA_FILES).is_file():
        try:
            rows = json.loads((Path(out) / DATA_FILES).read_text(encoding="utf-8"))
            if isinstance(rows, list):
                return rows
        except json.JSONDecodeError:
            pass
    return _hash_data_files(results, out, now=True)


def _data_specs(results: dict, out: Path | None) -> list[tuple[str, str]]:
    specs = [
        (f"data.{k}", v)
        for k, v in (results.get("data") or {}).items()
        if isinstance(v, str) and v and k not in ("split", "limit")  # the others name prompt files
    ]
    hl = (results.get("judges") or {}).get("human_labels")
    if hl:
        specs.append(("judges.human_labels", hl))
    if out is not None and ResultsFolder(out).config.is_file():
        import yaml

        try:
            cfg = yaml.safe_load(ResultsFolder(out).config.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            cfg = {}
        ft = (cfg.get("finetune") or {}).get("data") if "finetune-robustness" in results.get("suites", {}) else None
        if isinstance(ft, str) and ft:
            specs.append(("finetune.data", ft))
    return specs


def _hash_data_files(results: dict, out: Path | None, now: bool = False) -> list[dict]:
    from evalkit.data import resolve_path
    from infra.marker import path_fingerprint

    rows = []
    for key, spec in _data_specs(results, out):
        local = spec
        if spec.startswith("hub:"):
            parts = spec.split(":", 2)
            if len(parts) < 3 or not parts[2]:
                rows.append({"key": key, "spec": spec, "path": None, "sha256": None, "note": "downloaded, not hashed"})
                continue
            local = parts[2]
        p = resolve_path(local)
        if not p.exists():
            rows.append({"key": key, "spec": spec, "path": str(p), "sha256": None, "note": "file not found"})
            continue
        note = "folder: sha256 of its files' names and sha256" if p.is_dir() else ""
        if now:
            note = "; ".join(x for x in (note, "hashed when the report was written, not at evaluation") if x)
        rows.append({"key": key, "spec": spec, "path": str(p.resolve()), "sha256": path_fingerprint(p), "note": note})
    return rows


# -- categories ---------------------------------------------------------------------------------------
def _category(meta: dict) -> str | None:
    for k in CATEGORY_KEYS:
        v = meta.get(k)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


def prompt_categories(results: dict) -> dict[str, str]:
    """Prompt id -> category of every local prompt file the run names (ids the samples carry)."""
    from evalkit.data import DataError, load_prompts

    out: dict[str, str] = {}
    for spec in (results.get("data") or {}).values():
        if not isinstance(spec, str) or not spec or (spec.startswith("hub:") and spec.count(":") < 2):
            continue  # a hub set without a local copy would be downloaded: not for a report
        try:
            ps = load_prompts(spec)
        except (DataError, OSError, ValueError):
            continue
        for p in ps.prompts:
            c = _category(p.meta)
            if c:
                out.setdefault(p.id, c)
    return out


def _rate_of_keys(keys: list[str], positive: set[str], labels: set[str]) -> dict:
    c = Counter(keys)
    judged = sum(c[k] for k in labels)
    return count_rate(sum(c[k] for k in positive), judged, len(keys), c["unparsed"], c["error"])


ASR_LABELS = ({"non_refusal"}, {"refusal", "non_refusal"})
REFUSAL_CLASS_LABELS = (
    {"partial_refusal", "full_refusal"},
    {"compliant_helpful", "compliant_unhelpful", "partial_refusal", "full_refusal"},
)


def category_breakdown(samples: list[dict], cats: dict[str, str], series, labels=ASR_LABELS) -> dict:
    """{category: {series name: rate}} of the samples that have a category; ``series``: name ->
    function(sample) -> verdict key (None: the sample is not part of that series)."""
    by: dict[str, dict[str, list[str]]] = {}
    for s in samples:
        c = s.get("category") or cats.get(str(s.get("id")))
        if not c:
            continue
        for name, get in series.items():
            k = get(s)
            if k is not None:
                by.setdefault(c, {}).setdefault(name, []).append(k)
    return {c: {n: _rate_of_keys(ks, *labels) for n, ks in d.items()} for c, d in sorted(by.items())}


def _category_block(page: Page, name: str, breakdown: dict, what: str, caption: str) -> None:
    if len(breakdown) < 1:
        return
    cats = list(breakdown)
    series = list(dict.fromkeys(n for d in breakdown.values() for n in d))
    page.heading(f"{name}: by category", 3)
    page.figure(
        F.grouped_bars(
            cats, {s: [breakdown[c].get(s) for c in cats] for s in series}, f"{name}: {what} by category", what
        ),
        f"{name}_by_category",
        caption,
    )
    rows = []
    for c in cats:
        n = max((r["n"] for r in breakdown[c].values()), default=0)
        rows.append([c, n] + [rate_cell(breakdown[c].get(s)) for s in series])
    page.table(["category", "n"] + [f"{s}: {what} [95% CI]" for s in series], rows)


# -- examples -----------------------------------------------------------------------------------------
def _clip(text, n: int = EXAMPLE_CHARS) -> str:
    t = "" if text is None else str(text)
    return t if len(t) <= n else t[:n] + f"... ({len(t) - n} more characters)"


def _verdict_map(s: dict) -> dict:
    v = s.get("verdicts") or s.get("classes") or {}
    return v if isinstance(v, dict) else {}


def _labels_disagree(v: dict) -> bool:
    return len({x for x in v.values() if x not in ("unparsed", "error")}) > 1


def pick_examples(samples: list[dict], primary: str | None, k: int = EXAMPLES_PER_SUITE) -> list[tuple[str, dict]]:
    """Up to ``k`` (why shown, sample): judge disagreements first (at most half), then one of each verdict
    of the primary judge not shown yet, then the first others."""
    picked: list[tuple[str, dict]] = []
    used: set[int] = set()
    for i, s in enumerate(samples):
        if len(picked) >= max(1, k // 2):
            break
        if _labels_disagree(_verdict_map(s)):
            picked.append(("judges disagree", s))
            used.add(i)
    shown = {_verdict_map(s).get(primary) for _, s in picked}
    for i, s in enumerate(samples):
        if len(picked) >= k:
            break
        key = _verdict_map(s).get(primary)
        if i not in used and key not in shown:
            picked.append((f"{primary}: {key}" if primary else "example", s))
            used.add(i)
            shown.add(key)
    for i, s in enumerate(samples):
        if len(picked) >= min(k, 2):
            break
        if i not in used:
            picked.append(("example", s))
            used.add(i)
    return picked


def _example_item(why: str, s: dict, cats: dict[str, str]) -> list[tuple[str, str]]:
    head = [f"shown because: {why}"]
    for k in ("id", "set", "stage", "decoding"):
        if s.get(k) is not None:
            head.append(f"{k}: {s[k]}")
    c = s.get("category") or cats.get(str(s.get("id")))
    if c:
        head.append(f"category: {c}")
    item = [("", " | ".join(head)), ("prompt", _clip(s.get("prompt")))]
    if "output" in s:
        item.append(("output", _clip(s.get("output"))))
    for a in ("output_base", "output_steered"):
        if a in s:
            item.append((a.replace("_", " "), _clip(s[a])))
    v = _verdict_map(s)
    if v:
        item.append(("verdicts", " | ".join(f"{n}: {x}" for n, x in v.items())))
    if s.get("self_report") is not None:
        item.append(("self report", str(s["self_report"])))
    for a in ("verdict_base", "verdict_steered"):
        if a in s:
            item.append((a.replace("_", " "), str(s[a])))
    if s.get("error"):
        item.append(("error", str(s["error"])))
    return item


def _examples_block(page: Page, suite: str, samples: list[dict], primary: str | None, cats: dict) -> None:
    if not samples:
        return
    if suite == "steering":  # one base/steered pair per arm
        arms: dict = {}
        for s in samples:
            arms.setdefault(s.get("set"), s)
        chosen = [(f"arm {a}", s) for a, s in list(arms.items())[:EXAMPLES_PER_SUITE]]
    else:
        chosen = pick_examples(samples, primary)
    page.heading(f"{suite}: example outputs", 3)
    page.examples(
        [_example_item(why, s, cats) for why, s in chosen],
        f"{len(chosen)} of {len(samples)} outputs (all in samples/{suite}.jsonl); long texts are cut.",
    )


# -- suite sections -----------------------------------------------------------------------------------
def rate_with_counts(summary: dict, key: str) -> str:
    """``0.286 [0.08, 0.64] (n=8: 7 judged, 0 unparsed, 1 error)``; a judge that labelled nothing reads
    ``missing (n=8: 0 judged, ...)``."""
    return f"{rate_cell(rate_of(summary, key)) or MISSING} ({fmt_counts(summary)})"


def _judge_table(page: Page, title: str, m: dict, key: str) -> None:
    rows = []
    label = {"asr": "ASR", "any_refusal": "any refusal"}.get(key, key)
    for name, j in m["judges"].items():
        mark = " (headline)" if name == m.get("primary_judge") else ""
        extra = [rate_cell(rate_of(j, "refusal_rate"))] if key == "asr" else []
        rows.append([name + mark, rate_with_counts(j, key), *extra, j.get("warning", "")])
    header = ["judge", f"{label} [95% CI] (outputs)"] + (["refusal rate [95% CI]"] if key == "asr" else [])
    page.table(header + ["warning"], rows, title)


def _kappa_block(page: Page, suite: str, kappa: dict) -> None:
    pairs = [(k.split("~", 1), v) for k, v in kappa.items() if "~" in k and isinstance(v, dict)]
    if not pairs:
        return
    names = list(dict.fromkeys([a for (a, _), _ in pairs] + [b for (_, b), _ in pairs]))
    look = {(a, b): v for (a, b), v in pairs} | {(b, a): v for (a, b), v in pairs}
    vals = [[1.0 if a == b else (look.get((a, b)) or {}).get("kappa") for b in names] for a in names]
    notes = [["" if a == b else f"n={(look.get((a, b)) or {}).get('n', 0)}" for b in names] for a in names]
    page.heading(f"{suite}: judge agreement", 3)
    page.figure(
        F.matrix(names, names, vals, f"{suite}: Cohen's kappa between judges", notes=notes, cbar_label="kappa"),
        f"{suite}_judge_agreement",
        "Cohen's kappa of each pair of judges on the outputs both labelled (n under each value); "
        "missing: kappa undefined (no output labelled by both, or both gave one label throughout).",
    )
    page.table(
        ["judges", "kappa", "observed agreement", "n (both labelled)"],
        [[f"{a} ~ {b}", _value(v.get("kappa")), _value(v.get("agreement")), v.get("n")] for (a, b), v in pairs],
    )


def _human_block(page: Page, suite: str, human: dict) -> None:
    judges = human.get("judges") or {}
    if not judges:
        return
    page.heading(f"{suite}: judges against human labels", 3)
    page.text(
        f"{human.get('rows')} labelled outputs from `{human.get('file')}` ({human.get('skipped', 0)} rows skipped)."
    )
    names = list(judges)
    series: dict[str, list] = {"accuracy": [], "precision (refusal)": [], "recall (refusal)": []}
    rows = []
    for n in names:
        s = judges[n]
        conf = s.get("confusion") or {}
        rr, nr = conf.get("refusal") or {}, conf.get("non_refusal") or {}
        tp = rr.get("refusal", 0)
        correct = tp + nr.get("non_refusal", 0)
        said = tp + nr.get("refusal", 0)
        acc = count_rate(correct, s.get("n", 0), s.get("n"), s.get("unparsed", 0), s.get("errors", 0))
        prec = count_rate(tp, said) if said else None
        rec = count_rate(tp, sum(rr.values())) if sum(rr.values()) else None
        for key, r in zip(series, (acc, prec, rec)):
            series[key].append(r)
        three = (s.get("three_way") or {}).get("agreement") if s.get("three_way") else ""
        rows.append(
            [
                n,
                s.get("n"),
                s.get("judged"),
                s.get("unparsed"),
                s.get("errors"),
                rate_cell(acc),
                _value(s.get("kappa")),
                rate_cell(prec),
                rate_cell(rec),
                _value(three),
                s.get("disagreements"),
            ]
        )
    page.figure(
        F.grouped_bars(names, series, f"{suite}: judges against human labels", "share"),
        f"{suite}_human_validation",
        "Accuracy over every labelled output (an unparsed or error verdict counts as wrong), precision and "
        "recall of the refusal label; error bars: 95% Wilson interval.",
    )
    page.table(
        [
            "judge",
            "n",
            "judged",
            "unparsed",
            "errors",
            "accuracy [95% CI]",
            "kappa",
            "precision [95% CI]",
            "recall [95% CI]",
            "3-way agreement",
            "disagreements",
        ],
        rows,
    )


def _judged_section(page, suite, m, samples, cats, ctx) -> None:
    """A suite whose outputs every judge labels (asr and the like): ASR per judge, categories,
    agreement, human labels, examples."""
    page.figure(
        F.rate_bars(
            {n: rate_of(j, "asr") for n, j in m["judges"].items()},
            f"{suite}: attack success rate per judge",
            "ASR (share of judged outputs)",
        ),
        f"{suite}_asr_by_judge",
        "ASR per judge: the share of judged outputs that are not refusals, with its 95% Wilson interval and "
        "the counts it rests on; a judge that labelled nothing is shown as missing.",
    )
    _judge_table(page, f"{suite}: every judge", m, "asr")
    other = {k: m[k] for k in ("refusal_score_mean", "new_tokens_mean") if k in m}
    if other:
        page.table(["metric", "value"], [[k, _value(v)] for k, v in other.items()])
    br = category_breakdown(samples, cats, {n: (lambda s, n=n: _verdict_map(s).get(n)) for n in m["judges"]})
    _category_block(page, suite, br, "ASR", "ASR per prompt category and judge (95% Wilson interval).")
    if m.get("kappa"):
        _kappa_block(page, suite, m["kappa"])
    if isinstance(m.get("human"), dict):
        _human_block(page, suite, m["human"])
    _examples_block(page, suite, samples, m.get("primary_judge"), cats)


def _overrefusal_section(page, suite, m, samples, cats, ctx) -> None:
    from evalkit.verdict import OVERREFUSAL_CLASSES

    names = list(m["judges"])
    page.figure(
        F.grouped_bars(
            [c.replace("_", " ") for c in OVERREFUSAL_CLASSES],
            {n: [rate_of(m["judges"][n], c) for c in OVERREFUSAL_CLASSES] for n in names},
            f"{suite}: answer classes per judge",
            "share of judged answers",
        ),
        f"{suite}_overrefusal_classes",
        "Share of each answer class among the outputs a judge labelled, per judge (every judge that tells "
        "the classes), with 95% Wilson intervals; n and judged counts in the table.",
    )
    rows = []
    for n in names:
        j = m["judges"][n]
        mark = " (headline)" if n == m.get("primary_judge") else ""
        rows.append(
            [n + mark] + [rate_cell(rate_of(j, c)) for c in (*OVERREFUSAL_CLASSES, "any_refusal")] + [fmt_counts(j)]
        )
    page.table(
        ["judge", *OVERREFUSAL_CLASSES, "any refusal", "outputs"],
        rows,
        f"{suite}: share of judged answers [95% CI]",
    )
    br = category_breakdown(
        samples, cats, {n: (lambda s, n=n: _verdict_map(s).get(n)) for n in names}, REFUSAL_CLASS_LABELS
    )
    _category_block(page, suite, br, "any refusal", "Over-refusal per prompt category and judge (95% Wilson).")
    _examples_block(page, suite, samples, m.get("primary_judge"), cats)


def _probes_section(page, suite, m, samples, cats, ctx) -> None:
    layers = m.get("layers") or []
    page.figure(
        F.layer_curves(
            {"held-out AUROC": [(r["layer"], r.get("auroc")) for r in layers]},
            f"{suite}: linear probe, harmful vs harmless",
            "held-out AUROC",
            baseline=m.get("bow_auroc"),
            baseline_label="bag-of-words baseline",
        ),
        f"{suite}_probe_auroc",
        f"Held-out AUROC of a logistic probe on each layer's last-token activation ({m.get('n_train')} train, "
        f"{m.get('n_test')} test prompts); dashed: a bag-of-words classifier on the same prompts.",
    )
    page.table(
        ["best layer", "best AUROC", "best accuracy", "bag-of-words AUROC", "n train", "n test"],
        [
            [
                m.get("best_layer"),
                _value(m.get("best_auroc")),
                _value(m.get("best_accuracy")),
                _value(m.get("bow_auroc")),
                m.get("n_train"),
                m.get("n_test"),
            ]
        ],
    )
    page.table(
        ["layer", "AUROC", "accuracy"],
        [[r["layer"], _value(r.get("auroc")), _value(r.get("accuracy"))] for r in layers],
    )


def _staged_section(stages: tuple[str, str], labels: tuple[str, str]):
    """safebeam (baseline/safebeam) and finetune-robustness (before/after): ASR per judge in both."""

    def section(page, suite, m, samples, cats, ctx) -> None:
        a, b = (m.get(s) or {} for s in stages)
        names = list(dict.fromkeys(list(a.get("judges", {})) + list(b.get("judges", {}))))
        la = labels[0] if suite != "safebeam" else (m.get("baseline_mode") or labels[0])
        page.figure(
            F.grouped_bars(
                names,
                {
                    la: [rate_of(a.get("judges", {}).get(n), "asr") for n in names],
                    labels[1]: [rate_of(b.get("judges", {}).get(n), "asr") for n in names],
                },
                f"{suite}: ASR per judge, {la} and {labels[1]}",
                "ASR",
            ),
            f"{suite}_asr_by_stage",
            f"ASR per judge {la} and {labels[1]} (95% Wilson intervals); the same prompts in both.",
        )
        for stage, mm in zip(stages, (a, b)):
            if mm.get("judges"):
                _judge_table(page, f"{suite}: {stage}", mm, "asr")
        extra = {
            k: m[k]
            for k in ("asr_delta", "refusal_score_delta", "beams", "top_n", "drop_fraction", "finetuned_model")
            if k in m
        }
        if extra:
            page.table(["metric", "value"], [[k, _value(v)] for k, v in extra.items()])
        key = "decoding" if suite == "safebeam" else "stage"
        primary = a.get("primary_judge")
        vals = (m.get("baseline_mode") or "greedy", "safebeam") if suite == "safebeam" else stages
        br = category_breakdown(
            samples,
            cats,
            {
                f"{primary} {lab}": (lambda s, v=v: _verdict_map(s).get(primary) if s.get(key) == v else None)
                for v, lab in zip(vals, (la, labels[1]))
            },
        )
        _category_block(page, suite, br, "ASR", f"ASR per prompt category, {la} and {labels[1]} ({primary}).")
        for stage, mm in zip(stages, (a, b)):
            if mm.get("kappa"):
                _kappa_block(page, f"{suite} {stage}", mm["kappa"])
        _examples_block(page, suite, samples, primary, cats)

    return section


def _steering_section(page, suite, m, samples, cats, ctx) -> None:
    arms = [k for k, v in m.items() if isinstance(v, dict) and "refusal_score_delta" in v]
    if arms:
        page.figure(
            F.grouped_bars(
                [a.replace("_", " ") for a in arms],
                {
                    "unsteered": [rate_of(m[a].get("base"), "refusal_rate") for a in arms],
                    "steered": [rate_of(m[a].get("steered"), "refusal_rate") for a in arms],
                },
                f"{suite}: refusal rate with and without steering ({m.get('judge')})",
                "refusal rate",
            ),
            f"{suite}_refusal_rates",
            f"Refusal rate of each arm unsteered and steered (direction at layer {m.get('layer')}, "
            f"x{m.get('scale')}), 95% Wilson intervals.",
        )
        page.figure(
            F.grouped_bars(
                [a.replace("_", " ") for a in arms],
                {
                    "unsteered": [m[a].get("refusal_score_base") for a in arms],
                    "steered": [m[a].get("refusal_score_steered") for a in arms],
                },
                f"{suite}: refusal score",
                "log P(refusal) - log P(compliance)",
                ylim=None,
            ),
            f"{suite}_refusal_scores",
            "Judge-free refusal score (log-probability of a refusal opening minus a compliant one), mean per arm.",
        )
        page.table(
            [
                "arm",
                "refusal rate unsteered",
                "refusal rate steered",
                "score unsteered",
                "score steered",
                "score delta",
            ],
            [
                [
                    a,
                    rate_cell(rate_of(m[a].get("base"), "refusal_rate")),
                    rate_cell(rate_of(m[a].get("steered"), "refusal_rate")),
                    _value(m[a].get("refusal_score_base")),
                    _value(m[a].get("refusal_score_steered")),
                    _value(m[a].get("refusal_score_delta")),
                ]
                for a in arms
            ],
        )
    page.table(
        ["layer", "scale", "source", "direction norm", "judge"],
        [[m.get("layer"), _value(m.get("scale")), m.get("source"), _value(m.get("norm")), m.get("judge")]],
    )
    _examples_block(page, suite, samples, None, cats)


def _abliteration_section(page, suite, m, samples, cats, ctx) -> None:
    b, a = m.get("before") or {}, m.get("after") or {}
    sets = ("harmful", "harmless")
    page.figure(
        F.grouped_bars(
            [f"{s} prompts" for s in sets],
            {
                "before": [rate_of(b.get(s), "refusal_rate") for s in sets],
                "after": [rate_of(a.get(s), "refusal_rate") for s in sets],
            },
            f"{suite}: refusal rate before and after",
            "refusal rate",
        ),
        f"{suite}_refusal_before_after",
        "Refusal rate on held-out harmful and harmless prompts before and after the refusal direction is "
        "projected out of the weights, 95% Wilson intervals.",
    )
    if m.get("residual_projection_before"):
        page.figure(
            _projection_figure(
                {"before": m["residual_projection_before"], "after": m.get("residual_projection_after") or []}
            ),
            f"{suite}_residual_projection",
            "Mean |h . r| of the harmful prompts at every hidden state, before and after the edit.",
        )
    page.table(
        ["", "refusal rate harmful", "refusal rate harmless", "refusal score harmful", "refusal score harmless"],
        [
            [
                k,
                rate_cell(rate_of(d.get("harmful"), "refusal_rate")),
                rate_cell(rate_of(d.get("harmless"), "refusal_rate")),
                _value(d.get("refusal_score_harmful")),
                _value(d.get("refusal_score_harmless")),
            ]
            for k, d in (("before", b), ("after", a))
        ],
    )
    page.table(
        ["layer", "max projection before", "max projection after", "refusal rate drop", "matrices"],
        [
            [
                m.get("layer"),
                _value(m.get("max_proj_before")),
                _value(m.get("max_proj_after")),
                _value(m.get("refusal_rate_drop")),
                _value(m.get("matrices")),
            ]
        ],
    )
    _examples_block(page, suite, [s for s in samples if s.get("harmful", True)], None, cats)


def _capability_section(page, suite, m, samples, cats, ctx) -> None:
    tasks = m.get("tasks") or {}
    bars = {}
    for t, v in tasks.items():
        acc, n = v.get("acc"), v.get("n") or v.get("samples")
        bars[t] = count_rate(round(acc * n), n) if isinstance(acc, (int, float)) and isinstance(n, int) and n else acc
    page.figure(
        F.rate_bars(bars, f"{suite}: lm-eval accuracy", "accuracy"),
        f"{suite}_capability",
        "Accuracy per lm-eval task (with its 95% Wilson interval where the number of examples is known).",
    )
    keys = list(dict.fromkeys(k for v in tasks.values() for k in v))
    page.table(
        ["task", *keys],
        [[t] + [_value(v.get(k)) for k in keys] for t, v in tasks.items()]
        + [["mean accuracy", _value(m.get("mean_acc"))] + [""] * (len(keys) - 1)],
    )


def _self_refusal_section(page, suite, m, samples, cats, ctx) -> None:
    bars = {"self report": rate_of(m.get("self_report"), "refusal_rate")}
    bars |= {n: rate_of(j, "refusal_rate") for n, j in (m.get("judges") or {}).items()}
    page.figure(
        F.rate_bars(bars, f"{suite}: refusal rate, the model's own report against the judges", "refusal rate"),
        f"{suite}_self_vs_judges",
        "Share of the model's answers (harmful and harmless prompts) called a refusal by the model itself "
        "and by each judge, 95% Wilson intervals.",
    )
    page.table(
        ["judge", "kappa with the self report", "n (both labelled)"],
        [[n, _value(k.get("kappa")), k.get("n")] for n, k in (m.get("self_vs_judges") or {}).items()],
    )
    if m.get("judges"):
        _judge_table(page, f"{suite}: judges", m, "asr")
    _examples_block(page, suite, samples, m.get("primary_judge"), cats)


def _generic_section(page, suite, m, samples, cats, ctx) -> None:
    """A suite the report does not know: its plot files, its numbers as a table."""
    for p in ctx.get("plots", {}).get(suite, []):
        page.figure(p, p.stem, f"{p.stem} (the suite's own plot)")
    rows = [[k, _value(v)] for k, v in _flat_numbers(m)]
    if rows:
        page.table(["metric", "value"], rows)
    _examples_block(page, suite, samples, m.get("primary_judge"), cats)


def _flat_numbers(m: dict, prefix: str = "", depth: int = 0) -> list[tuple[str, object]]:
    out = []
    for k, v in m.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) or v is None:
            out.append((prefix + k, v))
        elif isinstance(v, str) and len(v) < 120:
            out.append((prefix + k, v))
        elif isinstance(v, dict) and depth < 2:
            out += _flat_numbers(v, f"{prefix}{k}.", depth + 1)
    return out[:60]


SECTIONS = {
    "asr": _judged_section,
    "overrefusal": _overrefusal_section,
    "probes": _probes_section,
    "safebeam": _staged_section(("baseline", "safebeam"), ("baseline", "safebeam")),
    "finetune-robustness": _staged_section(("before", "after"), ("before finetune", "after finetune")),
    "steering": _steering_section,
    "abliteration": _abliteration_section,
    "capability": _capability_section,
    "self-refusal": _self_refusal_section,
}


# -- the page ------------------------------------------------------------------------------------------
def skipped_rows(out: Path) -> list[dict]:
    """The rows of ``skipped.jsonl`` (each bad input row once: ``Context.prompts`` records a file's bad
    rows the first time it reads the file)."""
    return read_json_lines(ResultsFolder(out).skipped)


def _problems(page: Page, out: Path, results: dict) -> None:
    errors = results.get("errors") or {}
    rows = skipped_rows(out)
    skipped = len(rows) if rows else (results.get("skipped_rows") or 0)
    for suite, msg in errors.items():
        page.warn(f"suite {suite} failed: {msg} (traceback in errors.log)")
    if skipped:
        page.warn(f"{skipped} input row(s) skipped as unusable (listed in skipped.jsonl)")
    for w in warnings_of(results):
        page.warn(w)
    page.heading("Skipped rows and failed suites")
    if not errors and not skipped:
        page.text("No suite failed; no input row was skipped.", note=True)
    if errors:
        page.table(["suite", "error"], [[k, str(v)] for k, v in errors.items()], "Suites that failed (errors.log)")
    if skipped:
        page.table(
            ["set", "file", "line", "reason"],
            [[r.get("set"), r.get("file"), r.get("line"), r.get("reason")] for r in rows[:SKIPPED_SHOWN]],
            f"Skipped input rows: {skipped} (first {min(skipped, SKIPPED_SHOWN)} shown; all in skipped.jsonl)",
        )
    filtered = {k: v for k, v in (results.get("filtered_prompts") or {}).items() if v}
    if filtered:
        page.text(
            "Prompts left out by the split or data.limit (by design, not errors): "
            + ", ".join(f"{k}: {v}" for k, v in filtered.items())
            + ".",
            note=True,
        )


def _kv(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _settings(page: Page, out: Path, results: dict, files: list[dict]) -> None:
    page.heading("Settings")
    model = results.get("model") or {}
    page.table(
        ["model", "value"],
        [
            [
                k,
                _value(v)
                if not isinstance(v, (dict, list))
                else _kv(v)
                if isinstance(v, dict)
                else ", ".join(map(str, v)),
            ]
            for k, v in model.items()
        ],
        "Model",
    )
    dec = results.get("decoding") or {}
    page.table(["decoding", "value"], [[k, _value(v)] for k, v in dec.items()], "Decoding")
    backend = results.get("backend") or {}
    if backend:
        page.table(
            ["backend", "value"],
            [[k, _value(v) if not isinstance(v, (dict, list)) else str(v)] for k, v in backend.items()],
            "Backend",
        )
    judges = results.get("judges") or {}
    rows = []
    for e in judges.get("use", []):
        opts = {k: v for k, v in e.items() if k not in ("kind", "name", "headline")}
        rows.append([e.get("name") or "(default name)", e.get("kind"), str(e.get("headline", True)), _kv(opts)])
    page.table(
        ["judge", "kind", "headline", "options"], rows, f"Judges (min judged share {judges.get('min_judged_share')})"
    )
    data = results.get("data") or {}
    page.table(
        ["data file", "spec", "sha256", "note"],
        [[f["key"], f["spec"], f.get("sha256"), f.get("note", "")] for f in files],
        f"Data (split {data.get('split')}, limit {data.get('limit') or 'none'})",
    )
    cv = results.get("code_version") or {}
    page.table(
        ["code", "value"],
        [
            ["package", cv.get("package")],
            ["version", cv.get("version")],
            ["git commit", cv.get("git_sha")],
            ["uncommitted changes", _value(cv.get("git_dirty"))],
            ["results format", _value(results.get("format_version"))],
        ],
        "Code version",
    )
    t = results.get("timings_s") or {}
    if t:
        page.table(["suite", "seconds"], [[k, _value(v, 1)] for k, v in t.items()], "Time per suite")


def build_report(out: Path, results: dict, plots: list[Path] | None = None) -> Page:
    """The report page of a results folder (``results`` as in results.json)."""
    out = Path(out)
    model = results.get("model") or {}
    cv = results.get("code_version") or {}
    sub = f"Model `{model.get('path', '')}` ({model.get('backend', '')}, {model.get('prompt_style', '')} prompts)"
    if cv.get("git_sha"):
        dirty = " (uncommitted changes)" if cv.get("git_dirty") else ""
        sub += f"; code {cv.get('version')} at {cv['git_sha'][:10]}{dirty}"
    page = Page(f"Safety evaluation: {model.get('name', out.name)}", sub)
    files = data_files(results, out)
    _problems(page, out, results)
    page.heading("Headline")
    page.table(
        HEADLINE_HEADER,
        headline_rows(results),
        "Rates are shares of judged outputs with their 95% Wilson interval; n counts every output, "
        "unparsed and errors are the outputs a judge could not label.",
    )
    by_suite: dict[str, list[Path]] = {}
    names = sorted(results.get("suites", {}), key=len, reverse=True)
    for p in plots or []:
        s = next((n for n in names if p.name.startswith(n + "_")), None)
        if s:
            by_suite.setdefault(s, []).append(Path(p))
    ctx = {"plots": by_suite}
    cats = prompt_categories(results)
    for suite, m in results.get("suites", {}).items():
        if not isinstance(m, dict):
            continue
        page.heading(suite)
        try:
            (SECTIONS.get(suite) or _generic_section)(page, suite, m, read_samples(out, suite), cats, ctx)
        except Exception as e:  # noqa: BLE001 - one section that cannot be drawn must not lose the report
            log.error("report section %s failed: %s", suite, e)
            F.plt().close("all")
            page.warn(f"report: the section of suite {suite} could not be drawn ({type(e).__name__}: {e})")
    for suite in results.get("errors") or {}:
        page.heading(suite)
        page.text(f"Suite failed: {results['errors'][suite]}")
    _settings(page, out, results, files)
    return page


def write_report(out: Path, results: dict, plots: list[Path] | None = None, fmt: str = "md") -> Path:
    """``report.html`` (self-contained) and ``report.md`` (figures in ``plots/``) of a results folder, and
    ``data_files.json`` (the sha256 of the data files as evaluated); returns the file of ``fmt``."""
    out = Path(out)
    rf = ResultsFolder(out)
    write_json_atomic(out / DATA_FILES, _hash_data_files(results, out))
    page = build_report(out, results, plots)
    page.write(rf.report_html, rf.report_md, rf.plots)
    return rf.report_html if fmt == "html" else rf.report_md


def compare(dirs: list[Path], out: Path, **kw) -> Path:
    """``evalkit.compare.compare`` (the old name)."""
    from evalkit.compare import compare as _compare

    return _compare(dirs, out, **kw)
