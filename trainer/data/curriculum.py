"""Curricula: the exact per-step bucket mix of a curriculum (the schema lives in ``infra.curriculum``).

A curriculum is data (YAML under ``configs/trainer/curricula/``; the format is in ``infra.curriculum``).

The budget is ``train_steps * global_batch_size`` packed samples of ``seq_length`` tokens, so token
fractions and sample fractions are the same thing. The scheduled share of bucket ``b`` after ``s``
samples is the integral of its weight over samples ``[0, s)``: a phase boundary that falls inside a
global batch splits that batch between the two phases.

``MixScheduler`` turns the schedule into integer sample counts per global batch. It hands out the
batch's samples one at a time with Tijdeman's earliest-deadline rule for the "chairman assignment
problem" (R. Tijdeman, Discrete Mathematics 32, 1980): among the buckets that are at least
``eps = 1/(2K-2)`` samples behind their share, the one that would first fall ``1 - eps`` behind gets
the sample. This keeps every bucket's cumulative count within ``1 - eps`` samples (so strictly
less than one sample) of its share at every sample, for any weights that change over time, with
counts that never go negative. (Rounding the cumulative targets independently at every step, by
largest remainders, has the same bound but can take a sample *back* from a bucket when the ranking
of the remainders changes, the Alabama paradox, so it cannot drive a loader.)
"""

from __future__ import annotations

import math

from infra.config import ConfigError
from infra.curriculum import CurriculumConfig, Phase, load_curriculum

__all__ = ["Phase", "CurriculumConfig", "load_curriculum", "MixScheduler", "plan_counts"]


class MixScheduler:
    """Exact integer sample counts per global batch for a curriculum.

    Args:
        curriculum: the schedule (validated here).
        train_steps: number of global batches in the run; phase starts are fractions of
            ``train_steps * global_batch_size`` samples. Steps past the end keep the last phase.
        global_batch_size: samples per global batch.

    The scheduler is stateless: ``counts(received, step)`` depends only on what each bucket has
    received before ``step``, which is what a checkpoint stores.
    """

    def __init__(self, curriculum: CurriculumConfig, train_steps: int, global_batch_size: int):
        curriculum.validate()
        if train_steps < 1 or global_batch_size < 1:
            raise ConfigError(f"train_steps ({train_steps}) and global_batch_size ({global_batch_size}) must be >= 1")
        self.curriculum = curriculum
        self.train_steps = int(train_steps)
        self.global_batch_size = int(global_batch_size)
        self.buckets = curriculum.active_buckets()
        total = float(self.train_steps * self.global_batch_size)
        self._starts = [p.start * total for p in curriculum.phases]
        self._ends = self._starts[1:] + [math.inf]
        # normalise so that the weights of every phase sum to exactly 1 (the bound needs it)
        self._w = []
        for p in curriculum.phases:
            s = sum(p.weights.values())
            self._w.append([p.weights.get(b, 0.0) / s for b in self.buckets])
        k = len(self.buckets)
        self.eps = 1.0 / (2 * k - 2) if k > 1 else 0.0

    # -- the schedule as a function of samples consumed
    def target(self, bucket: str, samples: float) -> float:
        """Scheduled (fractional) number of samples of ``bucket`` among the first ``samples``."""
        i = self.buckets.index(bucket) if bucket in self.buckets else None
        return 0.0 if i is None else self._target(i, samples)

    def _target(self, i: int, x: float) -> float:
        acc = 0.0
        for s, e, w in zip(self._starts, self._ends, self._w):
            if x <= s:
                break
            acc += w[i] * (min(x, e) - s)
        return acc

    def _first_x(self, i: int, y: float) -> float:
        """Smallest sample position x with target_i(x) >= y (inf when never)."""
        if y <= 0:
            return 0.0
        acc = 0.0
        for s, e, w in zip(self._starts, self._ends, self._w):
            wi = w[i]
            if wi > 0:
                gain = wi * (e - s)
                if acc + gain >= y:
                    return s + (y - acc) / wi
                acc += gain
        return math.inf

    def _ceil_unit(self, x: float) -> float:
        if math.isinf(x):
            return math.inf
        # float noise must not push an exact integer up to the next unit
        return float(math.ceil(x - 1e-9 * max(1.0, abs(x))))

    def _ready_and_deadline(self, i: int, c: int) -> tuple[float, float]:
        return (self._ceil_unit(self._first_x(i, c + self.eps)), self._ceil_unit(self._first_x(i, c + 1 - self.eps)))

    def counts(self, received: dict[str, int], step: int) -> dict[str, int]:
        """Samples per bucket in global batch ``step`` (0-based), given the samples each bucket
        received in steps ``0 .. step-1``. Buckets with zero weight everywhere are not listed."""
        bsz = self.global_batch_size
        c = [int(received.get(b, 0)) for b in self.buckets]
        if sum(c) != step * bsz:
            raise ValueError(
                f"data state inconsistent: buckets received {sum(c)} samples before step "
                f"{step}, expected {step * bsz} (= step * global_batch_size)"
            )
        out = [0] * len(self.buckets)
        if len(self.buckets) == 1:
            out[0] = bsz
            return {self.buckets[0]: bsz}
        ready, deadline = zip(*(self._ready_and_deadline(i, ci) for i, ci in enumerate(c)))
        ready, deadline = list(ready), list(deadline)
        for n in range(step * bsz + 1, (step + 1) * bsz + 1):
            best = -1
            for i in range(len(c)):
                if ready[i] <= n and (best < 0 or deadline[i] < deadline[best]):
                    best = i
            if best < 0:  # cannot happen when weights sum to 1; keep the loader going regardless
                best = max(range(len(c)), key=lambda j: self._target(j, n) - c[j])
            c[best] += 1
            out[best] += 1
            ready[best], deadline[best] = self._ready_and_deadline(best, c[best])
        return dict(zip(self.buckets, out))

    def phase_index(self, step: int) -> int:
        """Index of the phase in force at the start of global batch ``step``."""
        x = step * self.global_batch_size
        idx = 0
        for i, s in enumerate(self._starts):
            if x >= s:
                idx = i
        return idx


def plan_counts(curriculum: CurriculumConfig, train_steps: int, global_batch_size: int) -> list[dict[str, int]]:
    """Per-step sample counts for a whole run: ``plan[g][bucket]`` samples of global batch ``g``.

    Exactly what ``CurriculumLoader`` draws. Costs O(train_steps * global_batch_size * buckets)
    Python operations (about a second per million samples); metrics inside a run should read
    ``next_batch()['bucket_counts']`` instead.
    """
    sched = MixScheduler(curriculum, train_steps, global_batch_size)
    received = {b: 0 for b in sched.buckets}
    plan = []
    for g in range(train_steps):
        cnt = sched.counts(received, g)
        for b, n in cnt.items():
            received[b] += n
        plan.append(cnt)
    return plan
