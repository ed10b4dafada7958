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

import numpy as np

from infra.corpus import TAG_TOKEN

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


def _whitespace_codepoints() -> np.ndarray:
    """Every code point ``str.isspace`` (and so the regex ``\\s``) calls whitespace; none lies above U+3000."""
    return np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


_WS_CODEPOINTS = _whitespace_codepoints()
_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[_WS_CODEPOINTS[_WS_CODEPOINTS < 128]] = True


def word_bounds(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of every word (maximal run of non-whitespace) of ``text``."""
    try:
        space = _ASCII_SPACE[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
    except UnicodeEncodeError:  # one uint32 per code point, so indices are str indices
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        space = np.isin(codes, _WS_CODEPOINTS)
    word = np.zeros(len(space) + 2, dtype=bool)  # padded with a space on either side
    np.logical_not(space, out=word[1:-1])
    edges = np.flatnonzero(word[1:] != word[:-1])  # alternately a word's start and its end
    return edges[0::2], edges[1::2]


def inject_tags_counted(text: str, p: float, seed: int, doc_id: str, tag: str = TAG_TOKEN) -> tuple[str, int, int]:
    """``inject_tags`` that also returns the number of words (for the realised tag rate)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"tag probability must be in [0, 1], got {p}")
    if p == 0.0:
        return text, 0, count_words(text)
    starts, ends = word_bounds(text)
    n_words = len(starts)
    if not n_words:
        return text, 0, 0
    hits = np.flatnonzero(doc_rng(seed, doc_id).random(n_words) < p)
    if hits.size == 0:
        return text, 0, n_words
    # insertion point of word i: the start of the whitespace run before it, i.e. the end of word i - 1
    # (the very start of the text for the first word)
    cuts = np.where(hits > 0, ends[np.maximum(hits - 1, 0)], 0).tolist()
    pieces = []
    prev = 0
    for cut in cuts:
        pieces.append(text[prev:cut])
        pieces.append(tag)
        prev = cut
    pieces.append(text[prev:])
    return "".join(pieces), int(hits.size), n_words


def count_words(text: str) -> int:
    """Number of words as ``inject_tags`` counts them."""
    return len(text.split())  # str.split() splits on exactly the whitespace ``word_bounds`` uses
