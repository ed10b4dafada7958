"""The curriculum schema: phases of bucket weights over a run's token budget, defined once.

The trainer mixes by it (``trainer.data.curriculum.MixScheduler``), ``launch sweep`` and the toy
study build their intervention conditions with ``with_intervention``, and a trainer config types
``data.curriculum`` as a path to such a file or the mapping inline. As YAML::

    curriculum:
      phases:
        - start: 0.0                       # fraction of the token budget
          weights: {raw: 1.0}
        - start: 0.2                       # intervention from 20%
          weights: {raw: 0.70, rephrased: 0.15, refusal: 0.05, moral: 0.05, tagged: 0.05}
      max_epochs: 4                        # optional: fail at start when a bucket would repeat more
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from infra.config import ConfigError, build, load_config, load_yaml, to_dict
from infra.corpus import BUCKETS
from infra.paths import REPO_ROOT

__all__ = ["Phase", "CurriculumConfig", "load_curriculum", "resolve_curriculum", "with_intervention", "curriculum_yaml"]

_SUM_TOL = 1e-6


@dataclass
class Phase:
    """One phase of a curriculum.

    Attributes:
        start: where the phase begins, as a fraction of the run's token budget (the first phase
            starts at 0.0; a phase lasts until the next one starts, the last one until the end).
        weights: share of the phase's samples per bucket; non-negative, summing to 1. Buckets not
            named get weight 0 in this phase.
    """

    start: float
    weights: dict[str, float]


@dataclass
class CurriculumConfig:
    """A list of phases and the limits the loader checks when it starts.

    Attributes:
        phases: the phases in order of ``start``.
        extra_buckets: buckets beyond the standard ones (``infra.corpus.BUCKETS``) that a datagen
            config added; any other name is rejected as a typo.
        max_epochs: the most passes over any bucket the run may make; the loader stops before the
            first step when the schedule needs more (null: no limit, a warning above one pass).
        bucket_max_epochs: per-bucket limits that replace ``max_epochs`` for the buckets named.
    """

    phases: list[Phase]
    extra_buckets: list[str] = field(default_factory=list)
    max_epochs: float | None = None
    bucket_max_epochs: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.phases:
            raise ConfigError("curriculum: 'phases' is empty; give at least one phase starting at 0.0")
        known = set(BUCKETS) | set(self.extra_buckets)
        prev = None
        for i, p in enumerate(self.phases):
            name = f"curriculum phases[{i}] (start={p.start})"
            if not math.isfinite(p.start) or not 0.0 <= p.start < 1.0:
                raise ConfigError(f"{name}: start must be a fraction in [0, 1), got {p.start}")
            if i == 0 and p.start != 0.0:
                raise ConfigError(f"{name}: the first phase must start at 0.0")
            if prev is not None and p.start <= prev:
                raise ConfigError(f"{name}: starts must increase strictly (previous phase starts at {prev})")
            prev = p.start
            if not p.weights:
                raise ConfigError(f"{name}: 'weights' is empty")
            for b, w in p.weights.items():
                if b not in known:
                    raise ConfigError(
                        f"{name}: unknown bucket '{b}' (known: {', '.join(sorted(known))}; "
                        "declare added buckets in 'extra_buckets')"
                    )
                if not math.isfinite(w) or w < 0:
                    raise ConfigError(f"{name}: weight of '{b}' must be >= 0, got {w}")
            total = sum(p.weights.values())
            if abs(total - 1.0) > _SUM_TOL:
                raise ConfigError(f"{name}: weights must sum to 1, they sum to {total:.6g}")
        limits = [("curriculum max_epochs", self.max_epochs)] + [
            (f"curriculum bucket_max_epochs.{b}", v) for b, v in self.bucket_max_epochs.items()
        ]
        for key, v in limits:
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{key}: must be > 0, got {v}")
        for b in self.bucket_max_epochs:
            if b not in known:
                raise ConfigError(f"curriculum bucket_max_epochs: unknown bucket '{b}'")

    def active_buckets(self) -> list[str]:
        """Buckets with a positive weight in some phase, in order of first appearance."""
        out: list[str] = []
        for p in self.phases:
            for b, w in p.weights.items():
                if w > 0 and b not in out:
                    out.append(b)
        return out

    def epoch_limit(self, bucket: str) -> float | None:
        """The most passes over ``bucket`` this curriculum allows (None: no limit)."""
        return self.bucket_max_epochs.get(bucket, self.max_epochs)


@dataclass
class _CurriculumFile:
    curriculum: CurriculumConfig


def load_curriculum(path: str | Path, overrides: list[str] | None = None) -> CurriculumConfig:
    """Load a curriculum YAML file (``base:`` inheritance and dotted overrides as everywhere).

    Args:
        path: a file whose top level is either ``curriculum: {phases: ...}`` (the shipped form, which a
            trainer config can inherit with ``base:``) or ``phases: ...`` directly.
        overrides: ``key=value`` strings relative to that top level.
    """
    path = Path(path)
    top = load_yaml(path)  # resolves ``base:`` so that an inherited top level is seen too
    if "curriculum" in top:
        return load_config(_CurriculumFile, path, overrides).curriculum
    return load_config(CurriculumConfig, path, overrides)


def resolve_curriculum(value, source: str = "data.curriculum") -> CurriculumConfig:
    """A ``CurriculumConfig`` from a YAML path (absolute, relative to the working directory or to the
    repository), an inline mapping (``{phases: ...}`` or ``{curriculum: {phases: ...}}``) or a
    ``CurriculumConfig`` (returned as is)."""
    if isinstance(value, CurriculumConfig):
        value.validate()
        return value
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_file() and (REPO_ROOT / path).is_file():
            path = REPO_ROOT / path
        if not path.is_file() and not path.is_absolute():
            # a shipped curriculum (``configs/trainer/curricula/x.yaml`` or ``trainer/curricula/x``) also
            # where the project is installed rather than checked out
            from infra.config import resolve_config_path

            path = resolve_config_path(value)
        if not path.is_file():
            raise ConfigError(f"key '{source}': curriculum file not found: {value}")
        return load_curriculum(path)
    if isinstance(value, dict):
        inner = value.get("curriculum", value)
        return build(CurriculumConfig, inner, source=source)
    raise ConfigError(f"key '{source}': expected a path or a mapping, got {value!r}")


def with_intervention(
    base: dict[str, float], intervention: dict[str, float], start: float | None, like: CurriculumConfig | None = None
) -> CurriculumConfig:
    """The curriculum of one intervention-start condition.

    Args:
        base: the bucket weights before the intervention (raw web data, typically).
        intervention: the weights from ``start`` on.
        start: fraction of the token budget where the intervention begins; ``None``: never (base
            only); ``0``: from the first token (intervention only).
        like: a curriculum whose other settings (extra buckets, epoch limits) the result keeps;
            extra buckets are otherwise the non-standard names the weights use.
    """
    base = {b: float(w) for b, w in base.items() if w > 0}
    inter = {b: float(w) for b, w in intervention.items() if w > 0}
    if start is None:
        phases = [Phase(0.0, base)]
    elif start == 0:
        phases = [Phase(0.0, inter)]
    else:
        phases = [Phase(0.0, base), Phase(float(start), inter)]
    if like is not None:
        out = copy.deepcopy(like)
        out.phases = phases
    else:
        used = sorted({b for p in phases for b in p.weights} - set(BUCKETS))
        out = CurriculumConfig(phases=phases, extra_buckets=used)
    out.validate()
    return out


def curriculum_yaml(curriculum: CurriculumConfig, comment: str = "") -> str:
    """The shipped file form (``curriculum: {phases: ...}``), optionally under a ``# comment`` line."""
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    return head + yaml.safe_dump({"curriculum": to_dict(curriculum)}, sort_keys=False)
