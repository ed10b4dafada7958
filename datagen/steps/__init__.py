"""datatrove pipeline steps of datagen, one concern each, usable in any datatrove pipeline.

Document metadata they share: ``source`` and ``line`` (where a record came from), ``quarantine``
(reason a reader could not use a record) and ``raw`` (its first characters), ``safety_score``,
``route``, ``bucket`` and ``harm_tags`` (number of injected tags).
"""

from datagen.steps.filters import (
    FILTERS,
    ExactDedupFilter,
    LanguageIDFilter,
    build_filter,
    build_quality_filters,
    check_filter,
)
from datagen.steps.quarantine import QuarantineStep
from datagen.steps.readers import QuarantiningJsonlReader, QuarantiningParquetReader, QuarantiningWarcReader
from datagen.steps.route import PendingWriter, Router, TagInjector
from datagen.steps.score import SafetyScorer
from datagen.steps.tokenize import BucketTokenWriter, TokenizeToBuckets, write_documents

__all__ = [
    "QuarantiningJsonlReader",
    "QuarantiningParquetReader",
    "QuarantiningWarcReader",
    "QuarantineStep",
    "FILTERS",
    "LanguageIDFilter",
    "ExactDedupFilter",
    "build_filter",
    "check_filter",
    "build_quality_filters",
    "SafetyScorer",
    "Router",
    "TagInjector",
    "PendingWriter",
    "TokenizeToBuckets",
    "BucketTokenWriter",
    "write_documents",
]
