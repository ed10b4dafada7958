"""The folders the packages hand each other, defined once: corpus, run, results.

```
corpus/   (datagen run -> trainer)         run/   (trainer -> export, evalkit)   results/   (evalkit run)
  manifest.json   format + code version      run.json        format + code        results.json  format + code
  datagen_config.yaml                        config.yaml     resolved config      config.yaml
  tokenizer/                                 tokenizer/                           samples/<suite>.jsonl
  shards/<bucket>/index.json                 checkpoints/iter_*/ + latest         plots/*.png
  quarantine/  dropped/  pending/            metrics.jsonl  segments.jsonl        report.html  report.md
  stats.json   logs/                         tensorboard/                         errors.log  skipped.jsonl
                                             hf/             HF export
```

Each class only names paths; what a file holds is defined beside the code that writes it
(``infra.corpus.Manifest``, ``trainer.checkpoint``, ``evalkit.run``). Every folder records the code
version that wrote it (``code_version()``: package version and, in a git checkout, the commit).
A reader that meets a newer ``format_version`` than it knows stops with a ``FolderError``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
from pathlib import Path

from infra.paths import REPO_ROOT

__all__ = [
    "FolderError",
    "code_version",
    "CorpusFolder",
    "RunFolder",
    "ResultsFolder",
    "write_json_atomic",
    "json_safe",
    "RUN_FORMAT_VERSION",
    "RESULTS_FORMAT_VERSION",
]

RUN_FORMAT_VERSION = 1
RESULTS_FORMAT_VERSION = 1
PACKAGE = "safety-pretraining"


class FolderError(ValueError):
    """A folder that is not what a step expects; the message names the folder and the file."""


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """``{"package", "version", "git_sha", "git_dirty"}`` of the code running now.

    The version comes from the installed distribution; the commit from ``git`` when the packages run
    from a checkout (``None`` otherwise, e.g. in a container built from a wheel).
    """
    from importlib import metadata

    try:
        version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        version = None
    sha, dirty = None, None
    if (REPO_ROOT / ".git").exists():
        try:
            sha = (
                subprocess.run(
                    ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
                ).stdout.strip()
                or None
            )
            status = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            )
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            sha, dirty = None, None
    return {"package": PACKAGE, "version": version, "git_sha": sha, "git_dirty": dirty}


def json_safe(x):
    """``x`` with NaN and infinities as null (``json.dumps`` would write NaN tokens, which are not JSON)."""
    if isinstance(x, float):
        return None if (math.isnan(x) or math.isinf(x)) else x
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_json_atomic(path: str | Path, data) -> None:
    """Write JSON (``json_safe``) through a temporary file and a rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _check_version(path: Path, found, known: int) -> None:
    if not isinstance(found, int) or found > known:
        raise FolderError(f"{path}: format_version {found!r}, this code reads up to {known}")


class _Folder:
    """A folder of a known layout: ``root`` and, in the subclasses, the names of what lies in it."""

    __slots__ = ("root",)

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.root == self.root

    def __hash__(self) -> int:
        return hash((type(self), self.root))


class CorpusFolder(_Folder):
    """What ``datagen run`` writes; the schema of ``manifest.json`` is ``infra.corpus.Manifest``."""

    manifest = property(lambda self: self.root / "manifest.json")
    config = property(lambda self: self.root / "datagen_config.yaml")
    tokenizer = property(lambda self: self.root / "tokenizer")
    shards = property(lambda self: self.root / "shards")
    quarantine = property(lambda self: self.root / "quarantine")
    dropped = property(lambda self: self.root / "dropped")
    pending = property(lambda self: self.root / "pending")
    stats = property(lambda self: self.root / "stats.json")
    logs = property(lambda self: self.root / "logs")

    def bucket(self, name: str) -> Path:
        return self.shards / name

    def is_corpus(self) -> bool:
        return self.manifest.is_file()


class RunFolder(_Folder):
    """What ``trainer train|sft`` writes; ``export-hf`` and evalkit read it."""

    info = property(lambda self: self.root / "run.json")
    config = property(lambda self: self.root / "config.yaml")
    tokenizer = property(lambda self: self.root / "tokenizer")
    checkpoints = property(lambda self: self.root / "checkpoints")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    segments = property(lambda self: self.root / "segments.jsonl")  # one line per start (trainer.segments)
    tensorboard = property(lambda self: self.root / "tensorboard")
    hf = property(lambda self: self.root / "hf")
    hf_steps = property(lambda self: self.root / "hf_steps")  # export.hf_at_saves: hf_steps/iter_XXXXXXX

    def has_hf(self) -> bool:
        return (self.hf / "config.json").is_file()

    def hf_at_step(self, step: int) -> Path:
        """The HF export written with the checkpoint of ``step`` (``export.hf_at_saves``)."""
        return self.hf_steps / f"iter_{step:07d}"

    def hf_step_exports(self) -> dict[int, Path]:
        """Every complete HF export of ``hf_steps/`` by step (those with a ``config.json``)."""
        out = {}
        for d in sorted(self.hf_steps.glob("iter_*")) if self.hf_steps.is_dir() else []:
            if (d / "config.json").is_file() and d.name[5:].isdigit():
                out[int(d.name[5:])] = d
        return out

    def is_run(self) -> bool:
        return self.config.is_file() and (self.checkpoints.is_dir() or self.info.is_file())

    def write_info(self, **extra) -> None:
        """``run.json``: format version, code version and what the caller adds (mode, world size)."""
        write_json_atomic(self.info, {"format_version": RUN_FORMAT_VERSION, "code_version": code_version(), **extra})

    def read_info(self) -> dict:
        if not self.info.is_file():
            return {}
        try:
            d = json.loads(self.info.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise FolderError(f"{self.info}: not valid JSON: {e}") from None
        _check_version(self.info, d.get("format_version"), RUN_FORMAT_VERSION)
        return d


class ResultsFolder(_Folder):
    """What ``evalkit run`` writes; ``evalkit compare`` and the reports read it."""

    results = property(lambda self: self.root / "results.json")
    config = property(lambda self: self.root / "config.yaml")
    samples = property(lambda self: self.root / "samples")
    plots = property(lambda self: self.root / "plots")
    report_html = property(lambda self: self.root / "report.html")
    report_md = property(lambda self: self.root / "report.md")
    errors_log = property(lambda self: self.root / "errors.log")
    skipped = property(lambda self: self.root / "skipped.jsonl")

    def samples_file(self, suite: str) -> Path:
        return self.samples / f"{suite}.jsonl"

    def write_results(self, results: dict) -> dict:
        """``results.json`` with ``format_version`` and ``code_version`` first; returns what was written."""
        out = {
            "format_version": RESULTS_FORMAT_VERSION,
            "code_version": code_version(),
            **{k: v for k, v in results.items() if k not in ("format_version", "code_version")},
        }
        write_json_atomic(self.results, out)
        return out

    def read_results(self) -> dict:
        if not self.results.is_file():
            raise FolderError(f"{self.root}: no results.json (is this a folder written by `evalkit run`?)")
        try:
            d = json.loads(self.results.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise FolderError(f"{self.results}: not valid JSON: {e}") from None
        # folders written before results carried a version read as version 1
        _check_version(self.results, d.get("format_version", 1), RESULTS_FORMAT_VERSION)
        return d
