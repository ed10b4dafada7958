"""A report page written twice: a self-contained HTML file and the same content as Markdown.

The HTML holds everything it shows: figures are PNGs embedded as ``data:image/png;base64`` URIs and
the style sheet is inline, so the file opens from a copied folder or an e-mail attachment. The
Markdown links the same figures as PNG files beside it. Warnings go into a box at the top of both.

    page = Page("Safety evaluation: from_20")
    page.warn("asr: 2 of 40 outputs are errors")
    page.heading("Headline")
    page.table(["metric", "value", "95% CI", "n"], rows)
    page.figure(fig, "asr_by_judge", "ASR per judge; error bars: 95% Wilson interval")
    page.write(out / "report.html", out / "report.md", out / "plots")

A table cell that is ``None`` reads "missing" (styled as such in HTML): a value that is not there is
never shown as 0.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Page", "MISSING", "write_csv", "cell", "slug"]

MISSING = "missing"

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1b1b1b;margin:0;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:18px 28px 60px;background:#fff}
h1{font-size:1.55em;margin:.3em 0 .1em} h2{font-size:1.25em;margin:1.6em 0 .4em;border-bottom:1px solid #ddd;
padding-bottom:.15em} h3{font-size:1.05em;margin:1.2em 0 .3em}
p.sub{color:#555;margin:.1em 0 1em} p{line-height:1.4}
nav{font-size:.9em;margin:.6em 0 1em;color:#555} nav a{margin-right:.9em;color:#1a5fb4;text-decoration:none}
.warnings{background:#fff4ce;border:1px solid #e0b600;border-left:6px solid #e0b600;padding:.5em 1em;margin:1em 0}
.warnings h2{border:none;margin:.2em 0;font-size:1.1em} .warnings li{margin:.2em 0}
.ok{background:#e8f5e9;border:1px solid #8bc34a;padding:.4em 1em;margin:1em 0}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.88em}
th,td{border:1px solid #cfcfcf;padding:3px 8px;vertical-align:top;overflow-wrap:anywhere}
table{max-width:100%} th,td.num,td.missing{overflow-wrap:normal}
th{background:#eef1f5;text-align:left} tr:nth-child(even) td{background:#f8f9fb}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.missing,span.missing{color:#9a9a9a;font-style:italic}
caption{caption-side:top;text-align:left;color:#444;font-size:.95em;padding:2px 0}
figure{display:inline-block;margin:.4em 1.2em .8em 0;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #e5e5e5} figcaption{font-size:.85em;color:#444;max-width:640px}
.example{border:1px solid #ddd;border-radius:4px;margin:.5em 0;padding:.4em .8em;background:#fcfcfc;font-size:.9em}
.example .label{color:#555;font-weight:600} .example pre{white-space:pre-wrap;margin:.2em 0 .4em;
font-family:inherit;background:#f3f3f3;padding:.3em .5em}
.note{color:#555;font-size:.9em} code{background:#f1f1f1;padding:0 3px}
"""


def slug(text: str) -> str:
    """A lower-case name of letters, digits, ``-`` and ``_`` (anchors, file names)."""
    return re.sub(r"[^a-z0-9_-]+", "-", str(text).lower()).strip("-") or "x"


def cell(v, digits: int = 3) -> str | None:
    """A table value as text: numbers rounded, NaN and None as missing (None)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return None
        return f"{v:.{digits}f}" if abs(v) >= 10 ** (-digits) or v == 0 else f"{v:.2e}"
    return str(v)


_NUMERIC = re.compile(r"^[-+]?(\d[\d,]*\.?\d*(e[-+]?\d+)?|\.\d+)(%| s)?$|^\[[-\d., ]+\]$")


def _md_cell(v: str | None) -> str:
    return MISSING if v is None else str(v).replace("|", "\\|").replace("\n", " ")


@dataclass
class _Figure:
    name: str
    png: bytes
    caption: str
    file: Path | None = None  # a PNG that already exists (linked from the Markdown as is)


@dataclass
class Page:
    """Blocks in order; ``write`` renders them as HTML and Markdown."""

    title: str
    subtitle: str = ""
    warnings: list[str] = field(default_factory=list)
    blocks: list[tuple] = field(default_factory=list)
    _names: set = field(default_factory=set)

    # -- content ---------------------------------------------------------------------------------
    def warn(self, text: str) -> None:
        """A line in the warnings box at the top."""
        if text and text not in self.warnings:
            self.warnings.append(str(text))

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, str(text)))

    def text(self, text: str, note: bool = False) -> None:
        """A paragraph (plain text; ``code`` between backticks)."""
        self.blocks.append(("text", str(text), note))

    def table(self, header: list[str], rows: list[list], caption: str = "") -> None:
        """A table; cells are text, numbers (rounded by ``cell``) or None (shown as missing)."""
        norm = [[c if isinstance(c, str) else cell(c) for c in r] for r in rows]
        self.blocks.append(("table", [str(h) for h in header], norm, caption))

    def figure(self, fig, name: str, caption: str, dpi: int = 110) -> None:
        """A matplotlib figure (rendered to PNG and closed), PNG bytes, or a PNG file."""
        name = slug(name)
        while name in self._names:
            name += "_"
        self._names.add(name)
        file = None
        if isinstance(fig, (str, Path)):
            file = Path(fig)
            png = file.read_bytes()
        elif isinstance(fig, bytes):
            png = fig
        else:
            png = figure_png(fig, dpi)
        if png[:8] != b"\x89PNG\r\n\x1a\n":
            raise ValueError(f"figure {name}: not a PNG image")
        self.blocks.append(("figure", _Figure(name, png, caption, file)))

    def examples(self, items: list[list[tuple[str, str]]], caption: str = "") -> None:
        """Example outputs: each item a list of (label, text) pairs (prompt, output, verdicts)."""
        self.blocks.append(("examples", items, caption))

    # -- output ----------------------------------------------------------------------------------
    def html(self) -> str:
        esc = html.escape
        heads = [b for b in self.blocks if b[0] == "heading" and b[1] == 2]
        body = [f"<h1>{esc(self.title)}</h1>"]
        if self.subtitle:
            body.append(f'<p class="sub">{_inline(self.subtitle)}</p>')
        if self.warnings:
            body.append('<div class="warnings" id="warnings"><h2>Warnings</h2><ul>')
            body += [f"<li>{_inline(w)}</li>" for w in self.warnings]
            body.append("</ul></div>")
        else:
            body.append('<div class="ok" id="warnings">No warnings.</div>')
        if len(heads) > 2:
            body.append("<nav>" + "".join(f'<a href="#{slug(h[2])}">{esc(h[2])}</a>' for h in heads) + "</nav>")
        for b in self.blocks:
            kind = b[0]
            if kind == "heading":
                body.append(f'<h{b[1]} id="{slug(b[2])}">{esc(b[2])}</h{b[1]}>')
            elif kind == "text":
                body.append(f'<p class="{"note" if b[2] else ""}">{_inline(b[1])}</p>')
            elif kind == "table":
                _, header, rows, caption = b
                t = ["<table>"]
                if caption:
                    t.append(f"<caption>{_inline(caption)}</caption>")
                t.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
                for r in rows:
                    cells = []
                    for c in r:
                        if c is None:
                            cells.append(f'<td class="missing">{MISSING}</td>')
                        else:
                            cls = ' class="num"' if _NUMERIC.match(c.strip()) else ""
                            cells.append(f"<td{cls}>{esc(c)}</td>")
                    t.append("<tr>" + "".join(cells) + "</tr>")
                t.append("</table>")
                body.append("".join(t))
            elif kind == "figure":
                f = b[1]
                data = base64.b64encode(f.png).decode("ascii")
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{esc(f.caption)}" '
                    f'data-name="{esc(f.name)}"><figcaption>{_inline(f.caption)}</figcaption></figure>'
                )
            elif kind == "examples":
                _, items, caption = b
                if caption:
                    body.append(f'<p class="note">{_inline(caption)}</p>')
                for item in items:
                    parts = "".join(
                        f'<div><span class="label">{esc(k)}</span><pre>{esc(v)}</pre></div>' for k, v in item
                    )
                    body.append(f'<div class="example">{parts}</div>')
        return (
            "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)}</title><style>{_CSS}</style></head>\n<body><main>\n"
            + "\n".join(body)
            + "\n</main></body></html>\n"
        )

    def markdown(self, md_dir: Path, assets: Path) -> str:
        """The Markdown text; figures without a file are written to ``assets`` and linked relative to
        ``md_dir``."""
        lines = [f"# {self.title}", ""]
        if self.subtitle:
            lines += [self.subtitle, ""]
        if self.warnings:
            lines += ["## Warnings", ""] + [f"- **{w}**" for w in self.warnings] + [""]
        for b in self.blocks:
            kind = b[0]
            if kind == "heading":
                lines += ["#" * b[1] + " " + b[2], ""]
            elif kind == "text":
                lines += [("_" + b[1] + "_") if b[2] else b[1], ""]
            elif kind == "table":
                _, header, rows, caption = b
                if caption:
                    lines += [f"_{caption}_", ""]
                lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
                lines.append("")
            elif kind == "figure":
                f = b[1]
                path = f.file
                if path is None:
                    assets.mkdir(parents=True, exist_ok=True)
                    path = assets / f"{f.name}.png"
                    path.write_bytes(f.png)
                rel = _relpath(path, md_dir)
                lines += [f"![{f.caption}]({rel})", "", f"_{f.caption}_", ""]
            elif kind == "examples":
                _, items, caption = b
                if caption:
                    lines += [f"_{caption}_", ""]
                for item in items:
                    for k, v in item:
                        text = str(v).replace("\n", " ")
                        lines.append(f"- **{k}**: {text}")
                    lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def write(self, html_path: Path | None, md_path: Path | None, assets: Path | None = None) -> list[Path]:
        """Write the HTML and/or the Markdown (figures of the Markdown go to ``assets``, default a
        ``plots/`` folder beside it); returns the files written."""
        written = []
        if html_path is not None:
            html_path = Path(html_path)
            html_path.parent.mkdir(parents=True, exist_ok=True)
            html_path.write_text(self.html(), encoding="utf-8")
            written.append(html_path)
        if md_path is not None:
            md_path = Path(md_path)
            md_path.parent.mkdir(parents=True, exist_ok=True)
            md_path.write_text(
                self.markdown(md_path.parent, Path(assets or md_path.parent / "plots")), encoding="utf-8"
            )
            written.append(md_path)
        return written


def _relpath(path: Path, start: Path) -> str:
    import os

    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def _inline(text: str) -> str:
    """Escaped text with ``code`` spans."""
    parts = str(text).split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def figure_png(fig, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes (bounding box fitted, legends outside the axes included); the
    figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    """A CSV file; None and NaN are empty cells (missing), never 0."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if (v is None or (isinstance(v, float) and not math.isfinite(v))) else v for v in r])
    return path
