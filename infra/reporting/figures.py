"""The figures of every report, defined once (evalkit's results and comparisons, the run report, the
safety trajectories, the toy study). Each function returns a matplotlib figure; ``Page.figure`` embeds
it.

Conventions every figure keeps:

* a rate is drawn with its 95% interval and labelled with the counts it rests on (``n``, and how many
  outputs were judged when that is fewer);
* a value that is not there is drawn as a visible "missing" marker, never as a bar or point at 0;
* legends sit outside the plotting area, never over bars or lines;
* layer axes have integer ticks; curves against tokens seen mark the curriculum's phase boundaries.

A *rate* is a dict such as evalkit's headline entries (``value`` or ``asr``, ``ci95`` / ``value_ci95`` /
``asr_ci95``, ``n``, ``judged``, ``unparsed``, ``errors``), a ``Rate``, or a plain number (no interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "Rate",
    "as_rate",
    "plt",
    "rate_bars",
    "grouped_bars",
    "layer_curves",
    "curves",
    "matrix",
    "count_label",
    "MISSING_COLOR",
]

MISSING_COLOR = "#8a8a8a"
_STYLE = {
    "figure.dpi": 110,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titlesize": 10,
    "legend.fontsize": 8,
    "legend.frameon": False,
}


def plt():
    """matplotlib's pyplot on the Agg backend with the reports' style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    pyplot.rcParams.update(_STYLE)
    return pyplot


def _f(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


@dataclass
class Rate:
    """A value with its interval and counts; ``value`` None: missing."""

    value: float | None
    lo: float | None = None
    hi: float | None = None
    n: int | None = None
    judged: int | None = None
    unparsed: int | None = None
    errors: int | None = None

    @property
    def missing(self) -> bool:
        return self.value is None

    def counts(self) -> str:
        """``n=6`` or ``5/6 judged``: what the value rests on ('' when unknown)."""
        if self.n is None:
            return ""
        if self.judged is None or self.judged == self.n:
            return f"n={self.n}"
        return f"{self.judged}/{self.n} judged"

    def label(self, digits: int = 2) -> str:
        if self.missing:
            return "missing"
        c = self.counts()
        return f"{self.value:.{digits}f}" + (f"\n{c}" if c else "")


def as_rate(v) -> Rate:
    """A ``Rate`` from a rate dict, a number, a ``Rate`` or None (missing)."""
    if isinstance(v, Rate):
        return v
    if isinstance(v, dict):
        x = _f(v.get("value", v.get("asr", v.get("rate"))))
        ci = v.get("ci95") or v.get("value_ci95") or v.get("asr_ci95") or [None, None]
        lo, hi = (_f(c) for c in (list(ci) + [None, None])[:2])
        judged = v.get("judged", v.get("parsed"))
        return Rate(x, lo, hi, v.get("n"), judged, v.get("unparsed"), v.get("errors"))
    return Rate(_f(v))


def count_label(v: float) -> str:
    """A count as a short label: 950, 12k, 1.5M, 2B."""
    a = abs(v)
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.3g}"


def _err(rates: list[Rate]) -> tuple[list[list[float]], bool]:
    lo = [0.0 if r.missing or r.lo is None else max(0.0, r.value - r.lo) for r in rates]
    hi = [0.0 if r.missing or r.hi is None else max(0.0, r.hi - r.value) for r in rates]
    return [lo, hi], any(r.lo is not None and not r.missing for r in rates)


def _missing_marker(ax, x: float, y0: float, span: float, width: float) -> None:
    """An outlined, hatched stub with the word "missing": visibly no value (and not a 0)."""
    ax.bar(
        [x], [span * 0.12], width, bottom=y0, fill=False, hatch="///", edgecolor=MISSING_COLOR, linewidth=0.8, zorder=3
    )
    ax.text(
        x, y0 + span * 0.14, "missing", rotation=90, ha="center", va="bottom", fontsize=7, color=MISSING_COLOR,
        style="italic",
    )  # fmt: skip


def _ylim(ax, ylim, values: list[float]) -> tuple[float, float]:
    if ylim is not None:
        lo, hi = ylim
    else:
        vals = [v for v in values if v is not None] or [0.0, 1.0]
        lo, hi = min(0.0, min(vals)), max(0.0, max(vals))
        if hi == lo:
            hi = lo + 1.0
    ax.set_ylim(lo, lo + (hi - lo) * 1.28)  # room for the labels above the bars
    ax.set_yticks([t for t in ax.get_yticks() if lo - 1e-9 <= t <= hi + 1e-9])  # no ticks above the scale
    return lo, hi - lo


def rate_bars(bars: dict, title: str, ylabel: str = "", ylim=(0.0, 1.0), interval_note: bool = True,
              threshold: tuple[float, str] | None = None, digits: int = 2):  # fmt: skip
    """One bar per entry with its 95% interval and its counts above it; a missing entry is a hatched
    "missing" stub. ``threshold``: (value, label) drawn as a dashed line (e.g. a reuse limit)."""
    pyplot = plt()
    labels = list(bars)
    rates = [as_rate(v) for v in bars.values()]
    fig, ax = pyplot.subplots(figsize=(max(4.2, 0.95 * len(labels) + 1.6), 3.2))
    err, has_err = _err(rates)
    tops = [r.hi if r.hi is not None else r.value for r in rates]
    y0, span = _ylim(ax, ylim, tops + ([threshold[0]] if threshold else []))
    colors = [pyplot.cm.tab10.colors[i % 10] for i in range(len(rates))]
    xs = list(range(len(rates)))
    present = [i for i, r in enumerate(rates) if not r.missing]
    ax.bar(
        [xs[i] for i in present],
        [rates[i].value for i in present],
        0.7,
        color=[colors[i] for i in present],
        yerr=[[err[0][i] for i in present], [err[1][i] for i in present]] if has_err else None,
        capsize=4 if has_err else 0,
        error_kw={"lw": 0.9},
        zorder=2,
    )
    for i, r in enumerate(rates):
        if r.missing:
            _missing_marker(ax, xs[i], y0, span, 0.7)
            continue
        top = r.value + err[1][i]
        ax.annotate(
            r.label(digits), (xs[i], top), ha="center", va="bottom", fontsize=7, xytext=(0, 2),
            textcoords="offset points",
        )  # fmt: skip
    if threshold:
        ax.axhline(threshold[0], color="#b00020", ls="--", lw=0.9, label=threshold[1], zorder=1)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_xticks(xs, labels, rotation=15 if max((len(s) for s in labels), default=0) > 8 else 0)
    ax.set_ylabel(ylabel)
    note = "\nerror bars: 95% Wilson interval" if has_err and interval_note else ""
    ax.set_title(title + note)
    fig.tight_layout()
    return fig


def grouped_bars(
    groups: list[str],
    series: dict[str, list],
    title: str,
    ylabel: str = "",
    ylim=(0.0, 1.0),
    interval: str = "95% Wilson interval",
):
    """Bars grouped by ``groups`` (x axis), one colour per series (legend outside, right); each value
    a rate (interval drawn) or a number; a missing value is a hatched "missing" stub. ``interval``
    names the intervals in the title."""
    pyplot = plt()
    names = list(series)
    k = max(1, len(names))
    w = 0.8 / k
    fig, ax = pyplot.subplots(figsize=(max(4.8, len(groups) * (0.55 * k + 0.5) + 2.0), 3.4))
    all_rates = {n: [as_rate(v) for v in series[n]] for n in names}
    flat = [r for rs in all_rates.values() for r in rs]
    y0, span = _ylim(ax, ylim, [r.hi if r.hi is not None else r.value for r in flat])
    any_err = False
    for j, name in enumerate(names):
        rates = all_rates[name]
        xs = [g + (j - (k - 1) / 2) * w for g in range(len(groups))]
        err, has_err = _err(rates)
        any_err |= has_err
        present = [i for i, r in enumerate(rates) if not r.missing]
        ax.bar(
            [xs[i] for i in present],
            [rates[i].value for i in present],
            w * 0.92,
            label=name,
            color=pyplot.cm.tab10.colors[j % 10],
            yerr=[[err[0][i] for i in present], [err[1][i] for i in present]] if has_err else None,
            capsize=2.5 if has_err else 0,
            error_kw={"lw": 0.8},
            zorder=2,
        )
        for i, r in enumerate(rates):
            if r.missing:
                _missing_marker(ax, xs[i], y0, span, w * 0.92)
            else:
                c = r.counts()
                ax.annotate(
                    f"{r.value:.2f}" + (f"\n{c}" if c and k <= 4 else ""),
                    (xs[i], r.value + err[1][i]),
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    xytext=(0, 1.5),
                    textcoords="offset points",
                )
    ax.set_xticks(range(len(groups)), groups, rotation=15 if max((len(g) for g in groups), default=0) > 10 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title + (f"\nerror bars: {interval}" if any_err else ""))
    # the legend from patches of each series' colour: a series with no bar at all (every value
    # missing) still gets its own colour, and "missing" is explained once
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=pyplot.cm.tab10.colors[j % 10], label=name) for j, name in enumerate(names)]
    if any(r.missing for r in flat):
        handles.append(Patch(fill=False, hatch="///", edgecolor=MISSING_COLOR, label="missing (no value)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def layer_curves(series: dict[str, list[tuple[int, float]]], title: str, ylabel: str, baseline: float | None = None,
                 baseline_label: str = "", xlabel: str = "layer (-1 = embeddings)", ylim="auroc"):  # fmt: skip
    """One line per series over integer layers (integer ticks only), legend outside. ``ylim``: "auroc"
    (0.4 to 1, lower when a value is lower), None (matplotlib's) or (low, high)."""
    from matplotlib.ticker import MaxNLocator

    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(5.8, 3.2))
    for name, pts in series.items():
        pts = [(int(x), _f(y)) for x, y in pts]
        ax.plot(
            [x for x, y in pts if y is not None], [y for _, y in pts if y is not None], marker="o", ms=3, label=name
        )
    if baseline is not None:
        ax.axhline(baseline, color="grey", ls="--", lw=0.8, label=baseline_label or None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ylim == "auroc":
        vals = [v for pts in series.values() for _, y in pts if (v := _f(y)) is not None]
        ylim = (min([0.4] + [math.floor((v - 0.03) * 10) / 10 for v in vals]), 1.02)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1 or baseline_label:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def curves(
    series: dict[str, list[tuple[float, object]]],
    title: str,
    ylabel: str,
    xlabel: str = "tokens seen",
    boundaries: dict[str, list[tuple[float, str]]] | None = None,
    ylim=None,
    logy: bool = False,
    styles: dict[str, dict] | None = None,
    xticks: list[tuple[float, str]] | None = None,
    band: bool | None = None,
    dodge: float = 0.0,
    interval: str = "95% Wilson interval",
):
    """Lines of (x, value) points; a value that is a rate gets its 95% interval (a band, or error bars
    when there are few points); missing values leave a gap and a grey "missing" cross on the x axis.

    Args:
        boundaries: per series (or under ``""`` for all) the x positions where a curriculum phase
            starts, each with a label; drawn as dotted vertical lines in the series' colour.
        styles: per series extra ``plot`` keywords (``ls``, ``color``).
        xticks: explicit (position, label) ticks (e.g. intervention starts with "never").
        dodge: shift series j by ``(j - (k - 1) / 2) * dodge`` of the x range, so that the error bars
            of series at the same x do not hide each other.
        interval: what the rates' intervals are (named in the title).
    """
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6.4, 3.4))
    colors = {}
    missing_x = []
    any_err = False
    all_x = [float(x) for pts in series.values() for x, _ in pts]
    shift = dodge * ((max(all_x) - min(all_x)) if len(all_x) > 1 else 1.0)
    k = len(series)
    for j, (name, pts) in enumerate(series.items()):
        off = (j - (k - 1) / 2) * shift
        pts = sorted(((float(x) + off, as_rate(v)) for x, v in pts), key=lambda p: p[0])
        style = {"marker": "o", "ms": 3 if len(pts) < 40 else 0, "lw": 1.3} | (styles or {}).get(name, {})
        style.setdefault("color", pyplot.cm.tab10.colors[j % 10])
        colors[name] = style["color"]
        xs = [x for x, r in pts]
        ys = [math.nan if r.missing else r.value for _, r in pts]
        ax.plot(xs, ys, label=name, **style)
        missing_x += [x for x, r in pts if r.missing]
        have = [(x, r) for x, r in pts if not r.missing and r.lo is not None and r.hi is not None]
        if have:
            any_err = True
            use_band = band if band is not None else len(have) > 12
            if use_band:
                ax.fill_between([x for x, _ in have], [r.lo for _, r in have], [r.hi for _, r in have],
                                color=style["color"], alpha=0.15, lw=0)  # fmt: skip
            else:
                ax.errorbar([x for x, _ in have], [r.value for _, r in have],
                            yerr=[[r.value - r.lo for _, r in have], [r.hi - r.value for _, r in have]],
                            fmt="none", ecolor=style["color"], capsize=3, lw=0.9)  # fmt: skip
    if ylim is not None:
        ax.set_ylim(*ylim)
    if logy:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=7)
    labelled = set()
    for name, marks in (boundaries or {}).items():
        color = colors.get(name, "#555555")
        for x, text in marks:
            ax.axvline(x, color=color, ls=":", lw=1.1, alpha=0.85)
            key = (round(x, 6), text)
            if key in labelled:
                continue
            labelled.add(key)
            ax.annotate(text, (x, 1.0), xycoords=("data", "axes fraction"), rotation=90, ha="right", va="top",
                        fontsize=7, color=color, xytext=(-2, -2), textcoords="offset points")  # fmt: skip
    if missing_x:
        y = ax.get_ylim()[0]
        ax.plot(
            missing_x, [y] * len(missing_x), "x", color=MISSING_COLOR, ms=7, mew=1.5, label="missing", clip_on=False
        )
    if xticks:
        ax.set_xticks([p for p, _ in xticks], [t for _, t in xticks])
    elif xlabel.startswith("tokens"):
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: count_label(v)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title + (f"\nbars/bands: {interval}" if any_err else ""))
    if len(series) > 1 or missing_x:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def matrix(rows: list[str], cols: list[str], values: list[list], title: str, vmin: float = -1.0, vmax: float = 1.0,
           cbar_label: str = "", notes: list[list[str]] | None = None):  # fmt: skip
    """A heatmap (e.g. Cohen's kappa between judges) with each value written in its cell (and a note
    below it, e.g. ``n=30``); a missing value is a grey cell reading "missing", never a colour of 0."""
    import numpy as np

    pyplot = plt()
    nr, nc = len(rows), len(cols)
    fig, ax = pyplot.subplots(figsize=(max(3.6, 1.25 * nc + 2.2), max(2.4, 0.62 * nr + 1.3)))
    grid = np.full((nr, nc), np.nan)
    for i in range(nr):
        for j in range(nc):
            v = _f(values[i][j])
            if v is not None:
                grid[i, j] = v
    cmap = pyplot.get_cmap("RdYlGn").with_extremes(bad="#eeeeee")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    for i in range(nr):
        for j in range(nc):
            note = notes[i][j] if notes else ""
            if np.isnan(grid[i, j]):
                text, color, style = "missing" + (f"\n{note}" if note else ""), MISSING_COLOR, "italic"
            else:
                text, color, style = f"{grid[i, j]:.2f}" + (f"\n{note}" if note else ""), "#111111", "normal"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color, style=style)
    ax.set_xticks(range(nc), cols, rotation=20 if max((len(c) for c in cols), default=0) > 8 else 0, ha="right")
    ax.set_yticks(range(nr), rows)
    ax.grid(False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03)
    if cbar_label:
        cb.set_label(cbar_label)
    ax.set_title(title)
    fig.tight_layout()
    return fig
