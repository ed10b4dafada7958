"""HTML main-text extraction that writes what it could not extract aside, like every datagen filter."""

from __future__ import annotations

from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.writers.disk_base import DiskWriter

# datatrove's extractor counters for a document it does not pass on -> the reason datagen records
_DROPS = {"dropped": "empty_extraction", "timeout": "timeout", "clean_error": "error", "broken_process": "error"}


class TrafilaturaWithDropped(Trafilatura):
    """datatrove's Trafilatura step; every page it drops (nothing extracted, timeout, error) goes to
    ``exclusion_writer`` with its original HTML and ``metadata["filter_reason"]``."""

    name = "⛏ Trafilatura (dropped pages written)"

    def __init__(self, exclusion_writer: DiskWriter | None = None, **kwargs):
        super().__init__(**kwargs)
        self.exclusion_writer = exclusion_writer
        self._writer = None
        self._current = None

    def run(self, data, rank: int = 0, world_size: int = 1):
        if self.exclusion_writer is None:
            yield from super().run(data, rank, world_size)
            return

        def remember():
            for doc in data:
                self._current = (doc, doc.text)
                yield doc

        self._rank = rank
        with self.exclusion_writer as writer:
            self._writer = writer
            yield from super().run(remember(), rank, world_size)
        self._writer = None

    def stat_update(self, *labels, value: int = 1, unit: str | None = None):
        super().stat_update(*labels, value=value, unit=unit)
        reason = next((_DROPS[lab] for lab in labels if lab in _DROPS), None)
        if reason is not None and self._writer is not None and self._current is not None:
            doc, html = self._current
            doc.text = html
            doc.metadata["filter_reason"] = reason
            self._writer.write(doc, rank=self._rank)
