"""Look at a report page the way a reader does: headless Chromium renders it, takes a screenshot and
says, from inside the page, whether every image decoded and what text is visible.

    seen = render(Path("results/report.html"), screenshot=Path("/tmp/report.png"))
    seen.images, seen.broken, seen.text

``render`` works on a copy of the page with a small script appended that, once the page has loaded,
records each ``<img>``'s ``naturalWidth`` and the page's visible text (``innerText``) in an element
that ``--dump-dom`` prints. Chromium is ``/usr/bin/chromium`` unless ``CHROMIUM`` names another
binary; ``scripts/setup.sh --slurm`` installs it on Debian (as root). Tests take screenshots when
``REPORT_SCREENSHOTS`` names a folder (``screenshot_path``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from html import unescape
from pathlib import Path

__all__ = ["chromium", "render", "Seen", "screenshot_path"]

_PROBE = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var out = {images: imgs.map(function (i) {
    return {name: i.getAttribute("data-name") || i.getAttribute("alt") || "", width: i.naturalWidth,
            height: i.naturalHeight, complete: i.complete, shown: i.getBoundingClientRect().width};
  }), text: document.body.innerText, title: document.title};
  var pre = document.createElement("pre");
  pre.id = "__seen__";
  pre.style.display = "none";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
]


def chromium() -> str | None:
    """The Chromium binary, or None when it is not installed."""
    cand = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
    if Path(cand).is_file() and os.access(cand, os.X_OK):
        return cand
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot_path(name: str) -> Path | None:
    """``$REPORT_SCREENSHOTS/<name>.png`` when that variable names a folder (to look at the pages the
    tests render), else None (no screenshot: one browser start less)."""
    d = os.environ.get("REPORT_SCREENSHOTS")
    return Path(d) / f"{name}.png" if d else None


@dataclass
class Seen:
    """What the browser showed: each image (name, natural width/height, displayed width), the visible
    text, and the screenshot when one was asked for."""

    images: list[dict]
    text: str
    title: str
    screenshot: Path | None

    @property
    def broken(self) -> list[str]:
        """Images that did not decode (natural width 0) or take no room on the page."""
        return [i["name"] for i in self.images if not i["width"] or not i["shown"]]


def _run(binary: str, args: list[str], profile: str, timeout: int) -> subprocess.CompletedProcess:
    cmd = [binary, *_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def render(page: Path, screenshot: Path | None = None, width: int = 1280, height: int = 3000,
           timeout: int = 90) -> Seen:  # fmt: skip
    """Render ``page`` in headless Chromium; raise RuntimeError when Chromium is missing or fails."""
    binary = chromium()
    if binary is None:
        raise RuntimeError("Chromium not found (/usr/bin/chromium; scripts/setup.sh installs it as root)")
    page = Path(page).resolve()
    with tempfile.TemporaryDirectory(prefix="report-view-") as tmp:
        probe = Path(tmp) / page.name
        text = page.read_text(encoding="utf-8")
        cut = text.rfind("</body>")
        probe.write_text((text[:cut] + _PROBE + text[cut:]) if cut >= 0 else text + _PROBE, encoding="utf-8")
        url = probe.as_uri()
        proc = _run(binary, ["--dump-dom", url], str(Path(tmp) / "profile-dom"), timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"chromium --dump-dom {page} exited {proc.returncode}: {proc.stderr[-2000:]}")
        start = proc.stdout.find('<pre id="__seen__"')
        if start < 0:
            raise RuntimeError(f"chromium rendered {page} but the page never finished loading")
        body = proc.stdout[proc.stdout.index(">", start) + 1 : proc.stdout.index("</pre>", start)]
        seen = json.loads(unescape(body))
        shot = None
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            shot.parent.mkdir(parents=True, exist_ok=True)
            # the screenshot is of the page itself (no probe), as a reader opens it
            proc = _run(
                binary,
                [f"--screenshot={shot}", f"--window-size={width},{height}", page.as_uri()],
                str(Path(tmp) / "profile-shot"),
                timeout,
            )
            if proc.returncode != 0 or not shot.is_file():
                raise RuntimeError(f"chromium --screenshot {page} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return Seen(seen["images"], seen["text"], seen["title"], shot)
