"""Harmfulness-tag injection (Algorithm 1 of Safety Pretraining).

Before each word of an unsafe document, with probability ``p``, the tag token
``infra.corpus.TAG_TOKEN`` is inserted. A *word* is a maximal run of non-whitespace characters.

Placement: the tag goes immediately before the whitespace that precedes the word (or at the very
start for the first word). With byte-level BPE tokenizers the whitespace belongs to the following
word's pre-token, so the word tokenizes exactly as it would untagged: removing the tag ids from the
tagged token sequence gives back the untagged sequence. Words are never split.

The random draws are seeded by ``(seed, sha256(doc_id))`` so that a document is tagged the same way
no matter which task reads it or in which order.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from infra.corpus import TAG_TOKEN

_WORD = re.compile(r"\S+")
# a literal tag string in web text must not turn into the special token at tokenization time
_LITERAL_REPLACEMENT = TAG_TOKEN.replace("<", "< ")


def doc_rng(seed: int, doc_id: str) -> np.random.Generator:
    """A numpy generator determined by the run seed and the document id only."""
    digest = hashlib.sha256(str(doc_id).encode("utf-8")).digest()
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int.from_bytes(digest[:8], "little")])


def neutralize_literal_tags(text: str) -> tuple[str, int]:
    """Break up literal occurrences of the tag string so that only injected tags become the token.

    Returns the text and how many occurrences were changed.
    """
    n = text.count(TAG_TOKEN)
    if n:
        text = text.replace(TAG_TOKEN, _LITERAL_REPLACEMENT)
    return text, n


def inject_tags(text: str, p: float, seed: int, doc_id: str, tag: str = TAG_TOKEN) -> tuple[str, int]:
    """Insert ``tag`` before each word of ``text`` with probability ``p``.

    Args:
        text: the document text (literal tag strings should be neutralised first).
        p: per-word probability, 0 <= p <= 1.
        seed: run-level seed.
        doc_id: document id; with ``seed`` it fixes the draws.
        tag: the tag string (default: the harmfulness tag special token).

    Returns:
        ``(tagged_text, n_tags)``.
    """
    tagged, n_tags, _ = inject_tags_counted(text, p, seed, doc_id, tag)
    return tagged, n_tags


def inject_tags_counted(text: str, p: float, seed: int, doc_id: str, tag: str = TAG_TOKEN) -> tuple[str, int, int]:
    """``inject_tags`` that also returns the number of words (for the realised tag rate)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"tag probability must be in [0, 1], got {p}")
    starts = [m.start() for m in _WORD.finditer(text)]
    if not starts or p == 0.0:
        return text, 0, len(starts)
    hits = np.flatnonzero(doc_rng(seed, doc_id).random(len(starts)) < p)
    if hits.size == 0:
        return text, 0, len(starts)
    pieces = []
    prev = 0
    for i in hits.tolist():
        # insertion point: start of the whitespace run preceding the word
        cut = starts[i]
        while cut > prev and text[cut - 1].isspace():
            cut -= 1
        pieces.append(text[prev:cut])
        pieces.append(tag)
        prev = cut
    pieces.append(text[prev:])
    return "".join(pieces), int(hits.size), len(starts)


def count_words(text: str) -> int:
    """Number of words as ``inject_tags`` counts them."""
    return len(_WORD.findall(text))
