"""Stratified sampling of the documents ``datagen annotate`` labels (the paper labels ~10K documents).

Documents are grouped into strata by record fields (by default the source and the language); each
stratum keeps a seeded reservoir while the input streams by, so a sample of ``n`` documents from a
large input needs memory for ``n`` documents per stratum, not for the input. The sample is then shared
out over the strata in proportion to their size, with at least ``min_per_stratum`` from each (when
it has them), so that rare sources and languages are labelled too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass
class SampleConfig:
    """How ``annotate`` picks the documents to label.

    Attributes:
        documents: documents to label in total (-1: every document, no sampling).
        stratify_by: record fields whose values form the strata, e.g. ``[source, lang]``. ``source``
            missing from a record is the input file's name; ``lang`` missing is detected with
            fastText lid.176 (the language filter's model); any other missing field is ``unknown``.
        min_per_stratum: documents taken at least from every stratum that has them.
        seed: seed of the reservoirs and of the order of the labelled documents.
    """

    documents: int = -1
    stratify_by: list[str] = field(default_factory=lambda: ["source", "lang"])
    min_per_stratum: int = 5
    seed: int = 0


def allocate(sizes: dict, n: int, minimum: int) -> dict:
    """Documents to take from each stratum: ``n`` in total (or all there are), proportional to
    ``sizes`` after a floor of ``minimum`` per stratum; largest remainders get the rounding."""
    total = sum(sizes.values())
    if n < 0 or n >= total:
        return dict(sizes)
    take = {k: min(v, minimum) for k, v in sizes.items()}
    left = n - sum(take.values())
    if left < 0:  # more strata than documents: the largest strata first
        take = dict.fromkeys(sizes, 0)
        for k in sorted(sizes, key=lambda k: (-sizes[k], str(k)))[:n]:
            take[k] = 1
        return take
    room = {k: sizes[k] - take[k] for k in sizes}
    spare = sum(room.values())
    quota = {k: left * room[k] / spare for k in sizes} if spare else dict.fromkeys(sizes, 0.0)
    for k in sizes:
        take[k] += int(quota[k])
    rest = n - sum(take.values())
    for k in sorted(sizes, key=lambda k: (-(quota[k] - int(quota[k])), str(k))):
        if rest <= 0:
            break
        if take[k] < sizes[k]:
            take[k] += 1
            rest -= 1
    return take


def stratified_sample(items: Iterable, key: Callable, n: int, minimum: int = 5, seed: int = 0) -> tuple[list, dict]:
    """A stratified sample of ``items`` (``key(item)`` gives its stratum) and per-stratum counts
    ``{stratum: {"available": a, "taken": t}}``. Deterministic for the same input order and seed."""
    rng = random.Random(seed)
    reservoirs: dict = {}
    seen: dict = {}
    for item in items:
        k = key(item)
        seen[k] = seen.get(k, 0) + 1
        box = reservoirs.setdefault(k, [])
        if n < 0 or len(box) < n:
            box.append(item)
        else:  # Algorithm R: the i-th item replaces a kept one with probability n / i
            j = rng.randrange(seen[k])
            if j < n:
                box[j] = item
    take = allocate(seen, n, minimum)
    out = []
    for k in sorted(reservoirs, key=str):
        box = reservoirs[k]
        out += box if take[k] >= len(box) else rng.sample(box, take[k])
    counts = {str(k): {"available": seen[k], "taken": min(take[k], len(reservoirs[k]))} for k in sorted(seen, key=str)}
    return out, counts
