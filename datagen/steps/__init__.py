"""datatrove pipeline steps of datagen, one concern each, usable in any datatrove pipeline.

Document metadata they share: ``source`` and ``line`` (where a record came from), ``quarantine``
(reason a reader could not use a record) and ``raw`` (its first characters), ``safety_score``,
``route``, ``bucket`` and ``harm_tags`` (number of injected tags).
"""

from datagen.steps.filters import ExactDedupFilter, LanguageIDFilter, build_quality_filters
from datagen.steps.quarantine import QuarantineStep
from datagen.steps.readers import QuarantiningJsonlReader, QuarantiningParquetReader, QuarantiningWarcReader
from datagen.steps.route import PendingWriter, Router, TagInjector
from datagen.steps.score import SafetyScorer
from datagen.steps.tokenize import BucketTokenWriter, TokenizeToBuckets, write_documents

__all__ = ["QuarantiningJsonlReader", "QuarantiningParquetReader", "QuarantiningWarcReader", "QuarantineStep",
           "LanguageIDFilter", "ExactDedupFilter", "build_quality_filters", "SafetyScorer", "Router",
           "TagInjector", "PendingWriter", "TokenizeToBuckets", "BucketTokenWriter", "write_documents"]
