"""One completion marker for every step that reuses earlier output.

A step that may be skipped on a second run (a trained tokenizer or classifier, an HF export, a
finetune, a demo or study step) describes what its output depends on as named *parts*: the config
it ran with, the files and folders it read, the command. ``Marker`` stores the fingerprint of each
part beside the output when the step succeeds; on the next run ``Marker.check`` compares part by
part, so a rerun can say *why* it reruns ("input 'data' changed", "no marker").

```python
m = Marker(out_dir, "export")
parts = {"checkpoint": path_fingerprint(ckpt, content=False), "config": value_fingerprint(cfg)}
if not m.check(parts).current:
    m.clear()
    ...  # do the work into out_dir
    m.write(parts)
```

Fingerprints:
* ``value_fingerprint``: sha256 of a JSON-able value (dicts in sorted key order).
* ``path_fingerprint(p)``: sha256 of a file's bytes, or of a folder's files (relative names and
  their sha256, marker files left out). ``content=False`` hashes names, sizes and modification times
  instead: cheap for multi-GB checkpoints, and any rewrite of a file changes it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from infra.folders import code_version, write_json_atomic
from infra.log import get_logger

__all__ = ["Marker", "MarkerCheck", "value_fingerprint", "path_fingerprint", "MARKER_SUFFIX"]

MARKER_SUFFIX = ".done.json"
log = get_logger(__name__)


def value_fingerprint(value) -> str:
    """sha256 of ``value`` as canonical JSON (``str()`` for what JSON cannot hold, e.g. paths)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def path_fingerprint(path: str | Path, content: bool = True) -> str:
    """sha256 of a file or folder (see the module doc); a missing path fingerprints as ``"missing"``.

    With ``content``, a file's fingerprint is the sha256 of its bytes (``infra.corpus.file_sha256``)
    and a folder's the sha256 of its sorted ``name:sha256`` lines.
    """
    from infra.corpus import file_sha256

    p = Path(path)
    if not p.exists():
        return "missing"
    if p.is_file():
        if content:
            return file_sha256(p)
        st = p.stat()
        return hashlib.sha256(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    lines = []
    for f in sorted(p.rglob("*")):
        if not f.is_file() or f.name.endswith(MARKER_SUFFIX):
            continue
        if content:
            lines.append(f"{f.relative_to(p)}:{file_sha256(f)}")
        else:
            st = f.stat()
            lines.append(f"{f.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass
class MarkerCheck:
    current: bool
    reason: str  # why the output cannot be reused ("" when it can)

    def __bool__(self) -> bool:
        return self.current


class Marker:
    """``<folder>/.<name>.done.json``: the parts' fingerprints of the last successful run of a step.

    Args:
        folder: where the marker lives (beside or inside the step's output).
        name: the step's name (one folder may hold the markers of several steps).
    """

    def __init__(self, folder: str | Path, name: str):
        self.path = Path(folder) / f".{name}{MARKER_SUFFIX}"
        self.name = name

    def read(self) -> dict | None:
        try:
            d = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return d if isinstance(d, dict) and isinstance(d.get("parts"), dict) else None

    def check(self, parts: dict[str, str], outputs: list[str | Path] = ()) -> MarkerCheck:
        """Whether the output may be reused: a marker exists, every part is unchanged and every path in
        ``outputs`` still exists."""
        d = self.read()
        if d is None:
            return MarkerCheck(
                False, "no completion marker" if not self.path.exists() else f"unreadable completion marker {self.path}"
            )
        old = d["parts"]
        changed = sorted(k for k in set(old) | set(parts) if old.get(k) != parts.get(k))
        if changed:
            return MarkerCheck(False, "changed since the last run: " + ", ".join(changed))
        missing = [str(o) for o in outputs if not Path(o).exists()]
        if missing:
            return MarkerCheck(False, "output missing: " + ", ".join(missing))
        return MarkerCheck(True, "")

    def reuse(
        self,
        parts: dict[str, str],
        outputs: list[str | Path] = (),
        stale: str | Path | None = None,
        allowed: bool = True,
    ) -> MarkerCheck:
        """``check``, and when the output cannot be reused, clear the marker and remove the ``stale``
        folder (a trainer would resume a stale run from its checkpoints; an old export would be mixed
        with the new one). ``allowed=False`` (a user's ``reuse: false``) never reuses."""
        check = self.check(parts, outputs) if allowed else MarkerCheck(False, "reuse is off")
        if not check:
            self.clear()
            if stale is not None and Path(stale).exists():
                log.info("%s: running %s again (%s)", stale, self.name, check.reason)
                shutil.rmtree(stale)
        return check

    def write(self, parts: dict[str, str], **info) -> None:
        """Record a successful run (``info``: anything worth keeping, e.g. seconds)."""
        write_json_atomic(self.path, {"step": self.name, "parts": parts, "code_version": code_version(), **info})

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    @property
    def fingerprint(self) -> str | None:
        """One fingerprint over every part of the recorded run (chains a later step to this one)."""
        d = self.read()
        return value_fingerprint(d["parts"]) if d else None
