"""Write unusable records aside (one JSON line each) and count them per reason."""

from __future__ import annotations

import json
from collections import Counter

from datatrove.data import DocumentsPipeline
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep

from datagen.steps.counting import flush_counts


class QuarantineStep(PipelineStep):
    """Quarantine reader placeholders, empty/whitespace-only documents and documents above ``max_chars``.

    Each quarantined record becomes a line ``{"source", "line", "id", "reason", "raw"}`` in
    ``<output_folder>/<rank>.jsonl`` (rewritten from scratch when a task re-runs, so never duplicated).

    Args:
        output_folder: quarantine folder (local path or fsspec URL).
        max_chars: longer documents are quarantined as ``too_long``; <= 0 disables the check.
        raw_cut: characters of the text kept in ``raw``.
    """

    name = "🚧 Quarantine"
    type = "🔻 - FILTER"

    def __init__(self, output_folder, max_chars: int = 1_000_000, raw_cut: int = 500):
        super().__init__()
        self.output_folder = get_datafolder(output_folder)
        self.max_chars = max_chars
        self.raw_cut = raw_cut

    def reason(self, doc) -> str | None:
        """Why ``doc`` cannot be used, or None."""
        if "quarantine" in doc.metadata:
            return doc.metadata["quarantine"]
        if not doc.text.strip():
            return "empty_text"
        if self.max_chars > 0 and len(doc.text) > self.max_chars:
            return "too_long"
        return None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        counts: Counter = Counter()
        with self.output_folder.open(f"{rank:05d}.jsonl", "wt", encoding="utf-8") as out:
            try:
                yield from self._run(data, out, counts)
            finally:
                flush_counts(self, counts)

    def _run(self, data, out, counts: Counter):
        for doc in data:
            counts["total"] += 1
            reason = self.reason(doc)
            if reason is None:
                counts["forwarded"] += 1
                yield doc
                continue
            counts["quarantined"] += 1
            counts[f"quarantined_{reason}"] += 1
            raw = doc.metadata.get("raw", doc.text)
            rec = {
                "source": doc.metadata.get("source"),
                "line": doc.metadata.get("line"),
                "id": doc.id,
                "reason": reason,
                "raw": raw[: self.raw_cut],
            }
            if "raw_base64" in doc.metadata:  # the line's original bytes (not UTF-8)
                rec["raw_base64"] = doc.metadata["raw_base64"]
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
