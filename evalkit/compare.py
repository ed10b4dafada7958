"""``python -m evalkit compare DIR...``: results folders side by side (``compare.html``, ``compare.md``,
``compare.csv``, ``compare.json``, ``plots/``).

* every headline metric of every run with its 95% interval and counts; a metric a run does not have
  reads "missing" (a hatched "missing" stub in the figures, an empty CSV cell), never 0;
* grouped figures: the headline rates, ASR by judge, ASR before and after benign finetuning,
  over-refusal by judge, probe AUROC per layer;
* ASR and after-finetuning ASR against the intervention start, with intervals, when the runs declare
  one: read from the curriculum of the trained run a results folder evaluated (its ``model.path`` is a
  run folder or lies inside one), or given as ``--start NAME=0.2`` (``never`` for a run without an
  intervention);
* a warning box when the runs differ in their prompt sets (number of prompts, data files' sha256,
  split, limit), decoding, prompt style or judges, and each run's own warnings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evalkit.report import (
    _fmt,
    data_files,
    headline,
    rate_of,
    warnings_of,
)
from infra.folders import FolderError, ResultsFolder, write_json_atomic
from infra.log import get_logger
from infra.reporting import figures as F
from infra.reporting.page import Page, write_csv

log = get_logger(__name__)

NEVER = "never"  # a run whose curriculum never adds a safety bucket
BAR_METRICS = ("asr", "asr_after", "asr_before", "asr_safebeam", "overrefusal_rate", "self_refusal_rate")
IGNORED_DECODING = ("batch_size",)  # how answers are batched does not change them


@dataclass
class Run:
    """One results folder: its name in the tables, results, headline and intervention start."""

    name: str
    dir: Path
    results: dict
    headline: dict
    start: float | str | None = None  # fraction of the budget, NEVER, or None (unknown)
    start_source: str = ""
    files: list[dict] = field(default_factory=list)

    @property
    def start_label(self) -> str:
        if self.start is None:
            return ""
        return NEVER if self.start == NEVER else f"{self.start:.0%}"


def parse_start(text: str) -> float | str:
    """``0.2``, ``20%`` or ``never`` as an intervention start; ValueError naming the text otherwise."""
    t = str(text).strip().lower()
    if t in (NEVER, "none"):
        return NEVER
    try:
        x = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise ValueError(f"intervention start {text!r}: give a fraction (0.2), a percentage (20%) or 'never'") from None
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"intervention start {text!r}: must lie in [0, 1] (a share of the token budget)")
    return x


def parse_starts(items: list[str] | None) -> dict[str, float | str]:
    """``NAME=START`` items (NAME: a results folder's name or path) as a dict."""
    out = {}
    for it in items or []:
        key, sep, val = it.partition("=")
        if not sep or not key:
            raise ValueError(f"--start {it!r}: expected NAME=START, e.g. from_20=0.2 or base=never")
        out[key] = parse_start(val)
    return out


def run_start(results: dict) -> tuple[float | str | None, str]:
    """The intervention start of the trained run a results folder evaluated (from its curriculum) and
    where it came from; (None, reason) when it cannot be told."""
    from infra.reporting.runs import find_run, read_schedule

    path = (results.get("model") or {}).get("path")
    run = find_run(path) if path else None
    if run is None:
        return None, "not a trained run's checkpoint"
    try:
        sched = read_schedule(run)
    except FolderError as e:
        return None, f"run folder unreadable: {e}"
    if sched.curriculum is None:
        return None, f"{run}: no curriculum (an SFT run)"
    s = sched.intervention_start()
    return (NEVER if s is None else s), f"curriculum of {run}"


def _default_name(d: Path) -> str:
    """The folder's name; ``RUN@step N`` for an evaluation ``evalkit track`` wrote (named by content)."""
    from infra.marker import Marker

    info = Marker(d, "track").read() or {}
    ckpt, step = info.get("checkpoint"), info.get("step")
    if isinstance(ckpt, str) and isinstance(step, int):
        return f"{Path(ckpt).parent.parent.name}@step{step}"
    return d.name


def load_runs(dirs: list[Path], starts: dict | None = None) -> list[Run]:
    """The results folders (each must hold results.json) with unique names and their starts."""
    runs = []
    names = [_default_name(Path(d)) for d in dirs]
    for d, base in zip(dirs, names):
        d = Path(d)
        name = base if names.count(base) == 1 else f"{d.parent.name}/{d.name}"
        res = ResultsFolder(d).read_results()
        r = Run(name, d, res, headline(res), files=data_files(res, d))
        given = next((v for k, v in (starts or {}).items() if k in (name, d.name, str(d))), None)
        if given is not None:
            r.start, r.start_source = given, "given on the command line"
        else:
            r.start, r.start_source = run_start(res)
        runs.append(r)
    unknown = set(starts or {}) - {k for r in runs for k in (r.name, r.dir.name, str(r.dir))}
    if unknown:
        raise ValueError(f"--start names {sorted(unknown)} match no results folder ({', '.join(r.name for r in runs)})")
    return runs


# -- differences ---------------------------------------------------------------------------------------
def _suite_n(r: Run) -> dict[str, int]:
    """Outputs per suite (the n of its first rate), what a prompt-set difference shows first."""
    out = {}
    for key, v in r.headline.items():
        suite = key.split(".", 1)[0]
        if isinstance(v, dict) and isinstance(v.get("n"), int) and suite not in out:
            out[suite] = v["n"]
    return out


def _judge_list(r: Run) -> str:
    return "; ".join(
        f"{e.get('name') or e.get('kind')}"
        + (
            f" ({', '.join(f'{k}={v}' for k, v in e.items() if k not in ('kind', 'name', 'headline'))})"
            if len(e) > 1
            else ""
        )
        for e in (r.results.get("judges") or {}).get("use", [])
    )


def differences(runs: list[Run]) -> tuple[list[str], list[list]]:
    """(warnings, side-by-side rows) of what differs between the runs' evaluations."""
    warns, rows = [], []

    def row(what: str, vals: list):
        shown = ["" if v is None else str(v) for v in vals]
        differs = len(set(shown)) > 1
        rows.append([what, *[v if v != "" else None for v in shown], "differs" if differs else ""])
        return differs

    def listing(vals):
        return ", ".join(f"{r.name}: {'none' if v is None else v}" for r, v in zip(runs, vals))

    ns = [_suite_n(r) for r in runs]
    for suite in dict.fromkeys(s for n in ns for s in n):
        vals = [n.get(suite) for n in ns]
        row(f"{suite}: outputs (n)", vals)
        if len({v for v in vals if v is not None}) > 1:  # a run without the suite is no other prompt set
            warns.append(
                f"different prompt sets: suite {suite} rests on {listing([f'n={v}' if v else v for v in vals])}"
            )
    keys = list(dict.fromkeys(f["key"] for r in runs for f in r.files))
    for k in keys:
        shas = [next((f.get("sha256") for f in r.files if f["key"] == k), None) for r in runs]
        specs = [next((f.get("spec") for f in r.files if f["key"] == k), None) for r in runs]
        short = [s[:12] if s else s for s in shas]
        row(f"{k} sha256", short)
        if len({x for x in shas if x}) > 1:  # a run that does not read the file is no other data
            what = [f"{p} sha256 {s}" if p else None for p, s in zip(specs, short)]
            kind = "different prompt sets" if k.startswith("data.") else "different data"
            warns.append(f"{kind}: {k} differs ({listing(what)})")
    for k in ("split", "limit"):
        vals = [(r.results.get("data") or {}).get(k) for r in runs]
        if row(f"data.{k}", vals):
            warns.append(f"different prompt sets: data.{k} differs ({listing(vals)})")
    dec = [r.results.get("decoding") or {} for r in runs]
    diff_dec = []
    for k in dict.fromkeys(k for d in dec for k in d):
        vals = [d.get(k) for d in dec]
        if row(f"decoding.{k}", vals) and k not in IGNORED_DECODING:
            diff_dec.append(f"{k} ({listing(vals)})")
    if diff_dec:
        warns.append("different decoding: " + "; ".join(diff_dec))
    styles = [(r.results.get("model") or {}).get("prompt_style") for r in runs]
    if row("prompt style", styles):
        warns.append(f"different prompt styles (chat requests vs completion starts): {listing(styles)}")
    judges = [_judge_list(r) for r in runs]
    if row("judges", judges):
        warns.append(f"different judges: {listing(judges)}")
    prim = [(r.results.get("suites", {}).get("asr") or {}).get("primary_judge") for r in runs]
    row("asr: headline judge", prim)
    return warns, rows


# -- figures --------------------------------------------------------------------------------------------
def _suite(r: Run, name: str) -> dict:
    m = r.results.get("suites", {}).get(name)
    return m if isinstance(m, dict) else {}


def _figures(page: Page, runs: list[Run], keys: list[str]) -> None:
    names = [r.name for r in runs]
    bar_keys = [k for k in keys if k.split(".")[-1] in BAR_METRICS]
    if bar_keys:
        page.figure(
            F.grouped_bars(
                bar_keys,
                {r.name: [r.headline.get(k) for k in bar_keys] for r in runs},
                "headline rates per run",
                "rate",
            ),
            "compare_metrics",
            "Each suite's headline rate per run, 95% Wilson intervals; a run without the metric shows "
            "a hatched 'missing' stub.",
        )
    judges = list(dict.fromkeys(j for r in runs for j in _suite(r, "asr").get("judges", {})))
    if judges:
        page.figure(
            F.grouped_bars(
                judges,
                {r.name: [rate_of(_suite(r, "asr").get("judges", {}).get(j), "asr") for j in judges] for r in runs},
                "ASR by judge",
                "ASR",
            ),
            "compare_asr_by_judge",
            "ASR of every judge per run (suite asr), 95% Wilson intervals.",
        )
    ft = [r for r in runs if _suite(r, "finetune-robustness")]
    if ft:
        page.figure(
            F.grouped_bars(
                names,
                {
                    lab: [r.headline.get(f"finetune-robustness.{k}") for r in runs]
                    for k, lab in (("asr_before", "before benign finetuning"), ("asr_after", "after benign finetuning"))
                },
                "ASR before and after benign finetuning",
                "ASR",
            ),
            "compare_finetune",
            "ASR (each run's headline judge) before and after benign finetuning, 95% Wilson intervals.",
        )
    oj = list(dict.fromkeys(j for r in runs for j in _suite(r, "overrefusal").get("judges", {})))
    if oj:
        page.figure(
            F.grouped_bars(
                oj,
                {
                    r.name: [rate_of(_suite(r, "overrefusal").get("judges", {}).get(j), "any_refusal") for j in oj]
                    for r in runs
                },
                "over-refusal by judge",
                "partial + full refusal",
            ),
            "compare_overrefusal",
            "Over-refusal (partial or full refusal of benign prompts) per judge and run, 95% Wilson intervals.",
        )
    probes = {r.name: [(x["layer"], x.get("auroc")) for x in _suite(r, "probes").get("layers", [])] for r in runs}
    probes = {k: v for k, v in probes.items() if v}
    if probes:
        page.figure(
            F.layer_curves(
                probes, "probe separation per layer", "held-out AUROC", baseline=0.5, baseline_label="chance"
            ),
            "compare_probes",
            "Held-out AUROC of a linear probe (harmful vs harmless) on each layer, per run.",
        )
    _start_figure(page, runs)


def _start_figure(page: Page, runs: list[Run]) -> None:
    known = [r for r in runs if r.start is not None]
    if not known:
        return
    fracs = sorted({r.start for r in known if r.start != NEVER})
    never_x = (max(fracs) if fracs else 0.0) + 0.2
    xs = {r.name: (never_x if r.start == NEVER else r.start) for r in known}
    first = {r.name: r.headline.get("asr.asr", r.headline.get("finetune-robustness.asr_before")) for r in known}
    series = {"ASR": [(xs[r.name], first[r.name]) for r in known]}
    if any(_suite(r, "finetune-robustness") for r in known):
        series["ASR after benign finetuning"] = [
            (xs[r.name], r.headline.get("finetune-robustness.asr_after")) for r in known
        ]
    ticks = [(x, f"{x:.0%}") for x in fracs] + ([(never_x, NEVER)] if any(r.start == NEVER for r in known) else [])
    page.figure(
        F.curves(
            series,
            "ASR against intervention start",
            "ASR (headline judge)",
            xlabel="intervention start (share of the token budget)",
            ylim=(-0.02, 1.02),
            xticks=ticks,
            band=False,
            dodge=0.012,
        ),
        "compare_asr_vs_start",
        "ASR and after-finetuning ASR of each run at its intervention start ('never': no safety data), "
        "95% Wilson intervals; starts: "
        + ", ".join(f"{r.name} {r.start_label} ({r.start_source})" for r in known)
        + ".",
    )


# -- the report ---------------------------------------------------------------------------------------
CSV_HEADER = [
    "run",
    "folder",
    "intervention_start",
    "metric",
    "value",
    "ci95_low",
    "ci95_high",
    "n",
    "judged",
    "unparsed",
    "errors",
]


def compare(dirs: list[Path], out: Path, starts: dict | None = None) -> Path:
    """``compare.html`` / ``compare.md`` / ``compare.csv`` / ``compare.json`` of results folders ``dirs``
    (``starts``: run name -> intervention start, over what the run folders say); returns compare.md."""
    if not dirs:
        raise ValueError("compare: no results folders given")
    runs = load_runs([Path(d) for d in dirs], starts)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in runs for k in r.headline))
    page = Page("Comparison: " + ", ".join(r.name for r in runs), f"{len(runs)} results folders")
    diff_warns, diff_rows = differences(runs)
    for w in diff_warns:
        page.warn(w)
    for r in runs:
        for w in warnings_of(r.results):
            page.warn(f"{r.name}: {w}")
        for suite, e in (r.results.get("errors") or {}).items():
            page.warn(f"{r.name}: suite {suite} failed: {e}")
    page.heading("Runs")
    page.table(
        ["run", "folder", "model", "intervention start", "start from", "suites", "code"],
        [
            [
                r.name,
                str(r.dir),
                (r.results.get("model") or {}).get("path"),
                r.start_label or None,
                r.start_source,
                ", ".join(r.results.get("suites", {})),
                ((r.results.get("code_version") or {}).get("git_sha") or "")[:10],
            ]
            for r in runs
        ],
    )
    page.heading("Metrics")
    page.table(
        ["metric", *[r.name for r in runs]],
        [[k, *[_fmt(r.headline[k]) if k in r.headline else None for r in runs]] for k in keys],
        "Value [95% interval] (n: judged, unparsed, errors); missing: the run has no such metric.",
    )
    page.heading("Figures")
    try:
        _figures(page, runs, keys)
    except Exception as e:  # noqa: BLE001 - the tables are written whatever happens to a figure
        log.error("compare figures failed: %s", e)
        F.plt().close("all")
        page.warn(f"compare: a figure could not be drawn ({type(e).__name__}: {e})")
    page.heading("Settings side by side")
    page.table(
        ["setting", *[r.name for r in runs], ""],
        diff_rows,
        "Prompt sets (outputs per suite, data files' sha256, split, limit), decoding and judges.",
    )
    page.write(out / "compare.html", out / "compare.md", out / "plots")
    rows = []
    for r in runs:
        for k in keys:
            v = r.headline.get(k)
            rate = F.as_rate(v)
            rows.append(
                [
                    r.name,
                    str(r.dir),
                    r.start,
                    k,
                    rate.value,
                    rate.lo,
                    rate.hi,
                    rate.n,
                    rate.judged,
                    rate.unparsed,
                    rate.errors,
                ]
            )
    write_csv(out / "compare.csv", CSV_HEADER, rows)
    write_json_atomic(
        out / "compare.json",
        {r.name: r.headline for r in runs}
        | {"_starts": {r.name: r.start for r in runs if r.start is not None}}
        | ({"_warnings": page.warnings} if page.warnings else {}),
    )
    return out / "compare.md"
