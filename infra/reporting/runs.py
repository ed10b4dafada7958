"""What the reports read from a run folder (``infra.folders.RunFolder``): the curriculum and the shape
of the run from ``config.yaml``, the metrics records, the complete checkpoints.

Everything here reads JSON and YAML only (``yaml.safe_load``); nothing in a run folder is executed.
``metrics.jsonl`` may hold a record per step or one every ``log_interval`` steps: readers take the
records as they are and never assume one per step.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from infra.config import ConfigError
from infra.curriculum import CurriculumConfig, resolve_curriculum
from infra.folders import FolderError, RunFolder

__all__ = ["RunSchedule", "read_schedule", "find_run", "read_metrics", "list_checkpoints", "run_complete", "Checkpoint"]

_ITER = re.compile(r"^iter_(\d{7})$")


@dataclass
class RunSchedule:
    """A run's curriculum and budget (``train_steps * global_batch_size * seq_length`` tokens)."""

    run_dir: Path
    curriculum: CurriculumConfig | None  # None: an SFT run (no curriculum)
    train_steps: int
    global_batch_size: int
    seq_length: int
    corpus: str | None = None
    log_interval: int | None = None

    @property
    def budget_tokens(self) -> int:
        return self.train_steps * self.global_batch_size * self.seq_length

    def boundaries(self) -> list[tuple[float, str]]:
        """(tokens, label) where each phase after the first starts."""
        if self.curriculum is None:
            return []
        out = []
        for i, p in enumerate(self.curriculum.phases):
            if p.start > 0:
                out.append((p.start * self.budget_tokens, f"phase {i} from {p.start:.0%}"))
        return out

    def scheduled_share(self, tokens: float) -> dict[str, float]:
        """Each bucket's scheduled share of the first ``tokens`` tokens (the integral of its weight)."""
        if self.curriculum is None or tokens <= 0:
            return {}
        x = min(1.0, tokens / self.budget_tokens) if self.budget_tokens else 1.0
        phases = self.curriculum.phases
        acc: dict[str, float] = {}
        for i, p in enumerate(phases):
            end = phases[i + 1].start if i + 1 < len(phases) else 1.0
            if x <= p.start:
                break
            span = min(x, end) - p.start
            total = sum(p.weights.values()) or 1.0
            for b, w in p.weights.items():
                acc[b] = acc.get(b, 0.0) + w / total * span
        return {b: v / x for b, v in acc.items()}

    def intervention_start(self, base: tuple[str, ...] = ("raw",)) -> float | None:
        """Where the first phase that gives weight to a bucket other than ``base`` starts (a fraction of
        the budget); None when no phase does (a base-only run)."""
        if self.curriculum is None:
            return None
        for p in self.curriculum.phases:
            if any(w > 0 and b not in base for b, w in p.weights.items()):
                return p.start
        return None


def read_schedule(run_dir: str | Path) -> RunSchedule:
    """The schedule of a run folder from its ``config.yaml``; ``FolderError`` naming the file and the
    key when it cannot be read."""
    folder = RunFolder(run_dir)
    path = folder.config
    if not path.is_file():
        raise FolderError(f"{folder.root}: no config.yaml (is this a run folder written by `trainer train`?)")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise FolderError(f"{path}: not valid YAML: {e}") from None
    train = cfg.get("train") or {}
    data = cfg.get("data") or {}
    missing = [f"train.{k}" for k in ("train_steps", "global_batch_size", "seq_length") if k not in train]
    if missing:
        raise FolderError(f"{path}: key(s) {', '.join(missing)} missing")
    curriculum = None
    if (cfg.get("sft") or {}).get("path") is None and data.get("curriculum") is not None:
        try:
            curriculum = resolve_curriculum(data["curriculum"], source=f"data.curriculum in {path}")
        except ConfigError as e:
            raise FolderError(f"{path}: {e}") from None
    return RunSchedule(
        folder.root,
        curriculum,
        int(train["train_steps"]),
        int(train["global_batch_size"]),
        int(train["seq_length"]),
        data.get("corpus"),
        train.get("log_interval"),
    )


def find_run(path: str | Path | None, levels: int = 3) -> Path | None:
    """The run folder at ``path`` or up to ``levels`` folders above it (``run/hf``,
    ``run/checkpoints/iter_X``); None when there is none."""
    if not path:
        return None
    p = Path(path)
    for _ in range(levels + 1):
        if RunFolder(p).is_run():
            return p
        if p.parent == p:
            break
        p = p.parent
    return None


def read_json_lines(path: str | Path) -> list[dict]:
    """The JSON objects of a JSONL file in order ([] when the file is absent); a line that is not a JSON
    object (e.g. cut by a kill) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict):
            rows.append(r)
    return rows


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``metrics.jsonl`` in step order (a line cut by a kill is skipped; a step written
    twice keeps its last record)."""
    by_step: dict[int, dict] = {}
    for r in read_json_lines(RunFolder(run_dir).metrics):
        if isinstance(r.get("step"), int):
            by_step[r["step"]] = r
    return [by_step[s] for s in sorted(by_step)]


@dataclass
class Checkpoint:
    """A complete checkpoint: step, tokens trained on, its folder and the sha256 of its manifest (which
    lists every file's sha256: the checkpoint's content)."""

    step: int
    tokens: int | None
    path: Path
    manifest_sha256: str | None

    @property
    def name(self) -> str:
        return self.path.name


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """The run's complete checkpoints (``trainer_state.json`` present; folders being written are named
    ``.tmp`` and never match), oldest first."""
    root = RunFolder(run_dir).checkpoints
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _ITER.match(p.name)
        state_file = p / "trainer_state.json"
        if not m or not state_file.is_file():
            continue
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FolderError(f"{state_file}: not valid JSON: {e}") from None
        manifest = p / "manifest.json"
        sha = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
        out.append(Checkpoint(int(state.get("step", m.group(1))), state.get("tokens"), p, sha))
    return sorted(out, key=lambda c: c.step)


def run_complete(run_dir: str | Path) -> bool:
    """True when the run has a checkpoint at its last step (``train.train_steps`` of config.yaml)."""
    try:
        steps = read_schedule(run_dir).train_steps
    except FolderError:
        return False
    return any(c.step >= steps for c in list_checkpoints(run_dir))
