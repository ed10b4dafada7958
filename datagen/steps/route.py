"""Routing by safety score, harmfulness-tag injection, and the hand-over to the LLM stage."""

from __future__ import annotations

from collections import Counter

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.writers.jsonl import JsonlWriter

from datagen.steps.counting import flush_counts
from datagen.tagging import inject_tags_counted, neutralize_literal_tags

PENDING_ROUTES = ("rephrase", "refusal")


class Router(PipelineStep):
    """Set ``metadata["route"]`` from ``safety_score``: raw (< rephrase_min), rephrase, refusal (>= refusal_min).

    Raw documents get ``metadata["bucket"] = "raw"``. Counts documents per route; every document
    reaching this step is a *kept* document for the balance check.

    Args:
        rephrase_min: lowest score routed to rephrasing.
        refusal_min: lowest score routed to refusal dialogues / moral education.
    """

    name = "🔀 Route"
    type = "🔀 - ROUTER"

    def __init__(self, rephrase_min: int = 1, refusal_min: int = 4):
        super().__init__()
        self.rephrase_min = rephrase_min
        self.refusal_min = refusal_min

    def route(self, score: int) -> str:
        if score >= self.refusal_min:
            return "refusal"
        if score >= self.rephrase_min:
            return "rephrase"
        return "raw"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        counts: Counter = Counter()
        try:
            for doc in data:
                route = self.route(int(doc.metadata["safety_score"]))
                doc.metadata["route"] = route
                doc.metadata["bucket"] = "raw" if route == "raw" else None
                counts["kept"] += 1
                counts[f"route_{route}"] += 1
                yield doc
        finally:
            flush_counts(self, counts)


def document_record(writer, doc) -> dict:
    """The line datatrove's JSONL writer writes for ``doc`` (its non-empty fields text, id, media, metadata)
    without its deep copy of every document (``dataclasses.asdict``); documents with media go that way."""
    if doc.media:
        return writer._default_adapter(doc)
    return {k: v for k, v in (("text", doc.text), ("id", doc.id), ("metadata", doc.metadata)) if v}


class _UncountedJsonlWriter(JsonlWriter):
    """datatrove's JSONL writer without its per-document stats: those of a writer inside a step are never
    saved (``PendingWriter`` counts what it writes itself)."""

    def stat_update(self, *labels, value: int = 1, unit: str | None = None):
        pass

    def update_doc_stats(self, document):
        pass


class PendingWriter(PipelineStep):
    """Write documents of the LLM routes (untagged text) to ``<folder>/<route>/<rank>.jsonl``.

    Each line is a datatrove document: text, id, metadata (safety_score, route, source, ...). The
    documents flow on unchanged.

    Args:
        output_folder: the corpus ``pending`` folder.
        routes: routes written here.
    """

    name = "📨 Pending for LLM stage"
    type = "💽 - WRITER"

    def __init__(self, output_folder, routes: tuple[str, ...] = PENDING_ROUTES):
        super().__init__()
        self.output_folder = output_folder
        self.routes = tuple(routes)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        # mode "wt": a re-run task rewrites its own file, so pending documents are never duplicated
        with _UncountedJsonlWriter(
            self.output_folder, output_filename="${route}/${rank}.jsonl", compression=None, adapter=document_record
        ) as w:
            counts: Counter = Counter()
            try:
                for doc in data:
                    route = doc.metadata.get("route")
                    if route in self.routes:
                        w.write(doc, rank)
                        counts[f"pending_{route}"] += 1
                    yield doc
            finally:
                flush_counts(self, counts)


class TagInjector(PipelineStep):
    """Algorithm 1: in documents with ``safety_score >= min_score``, insert the tag before each word
    with probability ``p`` and send them to the ``tagged`` bucket (other documents pass unchanged).

    Literal tag strings in any document's text are broken up first (counted as ``literal_tags``)
    so that only injected tags become the special token.

    Args:
        p: per-word probability (paper: 0.05).
        min_score: lowest safety score that is tagged (>= 1).
        seed: run seed; draws depend only on (seed, document id).
        bucket: bucket of tagged documents.
    """

    name = "🏷 Harmfulness tags"
    type = "✂️ - FORMATTER"

    def __init__(self, p: float = 0.05, min_score: int = 1, seed: int = 1234, bucket: str = "tagged"):
        super().__init__()
        if min_score < 1:
            raise ValueError("min_score must be >= 1: score-0 text is never tagged")
        self.p = p
        self.min_score = min_score
        self.seed = seed
        self.bucket = bucket

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        counts: Counter = Counter()
        try:
            for doc in data:
                doc.text, n_lit = neutralize_literal_tags(doc.text)
                counts["literal_tags"] += n_lit
                if int(doc.metadata["safety_score"]) >= self.min_score:
                    with self.track_time():
                        doc.text, n, words = inject_tags_counted(doc.text, self.p, self.seed, doc.id)
                    doc.metadata["harm_tags"] = n
                    doc.metadata["bucket"] = self.bucket
                    counts["tagged_documents"] += 1
                    # per document: datatrove's stats keep their spread (tags per document)
                    self.stat_update("tags", value=n)
                    self.stat_update("tag_words", value=words)
                yield doc
        finally:
            flush_counts(self, counts)
