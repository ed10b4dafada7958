"""Corpus-wide dedup with datatrove's own multi-stage pipelines, wired for ``datagen run``.

Exact dedup (``filters.exact_dedup`` with ``filters.dedup_scope: corpus``) and MinHash near-dedup
(``filters.near_dedup.enabled``) each run as datatrove stages before stage 1:

```
dedup_exact_sig      N tasks   read -> quarantine -> filters -> ExactDedupSignature
dedup_exact_find     1 task    ExactFindDedups                     (corpus/dedup/exact/)
dedup_near_sig       N tasks   read -> quarantine -> filters [-> exact filter] -> MinhashDedupSignature
dedup_near_buckets   B tasks   MinhashDedupBuckets (one task per MinHash band)
dedup_near_cluster   1 task    MinhashDedupCluster                 (corpus/dedup/near/)
stage 1              N tasks   read -> quarantine -> filters -> exact filter -> near filter -> score...
```

datatrove's dedup filters name documents by (task, position in the task's stream), so every stage that
computes signatures runs exactly the steps stage 1 runs before the filter (same reader, same tasks,
same quarantine and filters, without their side outputs). The kept documents are therefore the same
whatever ``executor.tasks`` is, up to which member of a near-duplicate cluster stays.
"""

from __future__ import annotations

from datatrove.data import Document
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupFilter
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupFilter
from datatrove.utils.typeshelper import StatHints


def dedup_text(doc: Document) -> str:
    """What exact dedup compares: the text with runs of whitespace collapsed."""
    return " ".join(doc.text.split())


def exact_config() -> ExactDedupConfig:
    return ExactDedupConfig(content_getter=dedup_text)


def minhash_config(ngrams: int, buckets: int, hashes_per_bucket: int, seed: int) -> MinhashConfig:
    return MinhashConfig(n_grams=ngrams, num_buckets=buckets, hashes_per_bucket=hashes_per_bucket, seed=seed)


class _ReasonCounter:
    """Adds ``dropped_<reason>`` beside datatrove's ``dropped`` counter, as datagen's filters count."""

    reason = "duplicate"

    def stat_update(self, *labels, value: int = 1, unit: str | None = None):
        super().stat_update(*labels, value=value, unit=unit)
        if StatHints.dropped in labels:
            super().stat_update(f"dropped_{self.reason}", value=value, unit=unit)


class CorpusExactDedupFilter(_ReasonCounter, ExactDedupFilter):
    """datatrove's ExactDedupFilter over the duplicates ExactFindDedups found in the whole corpus."""

    name = "🫂 Exact dedup (corpus)"
    reason = "duplicate"


class CorpusNearDedupFilter(_ReasonCounter, MinhashDedupFilter):
    """datatrove's MinhashDedupFilter: removes all but one document of every near-duplicate cluster."""

    name = "🫂 MinHash near-dedup (corpus)"
    reason = "near_duplicate"
