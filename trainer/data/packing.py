"""Fixed-length training samples cut from one bucket's documents.

The bucket's documents are concatenated in index order (each already ends with EOS) into one token
stream; packed sample ``i`` is the stream's tokens ``[i * seq_length, i * seq_length + seq_length + 1)``:
``seq_length`` inputs plus the next token as the last label, so consecutive samples overlap by one
token and every token of the stream but the last is a training target exactly once per epoch. The
tail that does not fill a whole sample (fewer than ``seq_length`` tokens) is not used in that epoch.

Memory is one int64 per document (the cumulative lengths); tokens are read from the shards on demand.
"""

from __future__ import annotations

import numpy as np

from infra.corpus import CorpusError
from trainer.data.mds import MDSBucketReader

__all__ = ["PackedBucket"]


class PackedBucket:
    """Deterministic packing of one bucket into samples of ``seq_length + 1`` tokens.

    Args:
        reader: the bucket's documents.
        seq_length: tokens per training sample (the model's sequence length).
        vocab_size: when given, every sample read is checked for token ids ``>= vocab_size``.
    """

    def __init__(self, reader: MDSBucketReader, seq_length: int, vocab_size: int | None = None):
        if seq_length < 1:
            raise ValueError(f"seq_length must be >= 1, got {seq_length}")
        self.reader = reader
        self.seq_length = int(seq_length)
        self.vocab_size = vocab_size
        self.cum = np.zeros(len(reader) + 1, dtype=np.int64)
        np.cumsum(reader.doc_lengths, out=self.cum[1:])
        self.total_tokens = int(self.cum[-1])
        self.num_samples = max(0, (self.total_tokens - 1) // self.seq_length)

    def __len__(self) -> int:
        return self.num_samples

    def sample(self, i: int) -> np.ndarray:
        """Packed sample ``i`` as a uint32 array of ``seq_length + 1`` tokens."""
        if not 0 <= i < self.num_samples:
            raise IndexError(f"bucket '{self.reader.bucket}': packed sample {i} out of range [0, {self.num_samples})")
        start = i * self.seq_length
        stop = start + self.seq_length + 1
        out = np.empty(stop - start, dtype=np.uint32)
        doc = int(np.searchsorted(self.cum, start, side="right") - 1)
        filled = 0
        while filled < out.size:
            d0 = int(self.cum[doc])
            lo = start + filled - d0
            hi = min(int(self.cum[doc + 1]), stop) - d0
            piece = self.reader.tokens(doc, lo, hi)
            out[filled : filled + piece.size] = piece
            filled += piece.size
            doc += 1
        if self.vocab_size is not None and out.size and int(out.max()) >= self.vocab_size:
            bad = int(out.max())
            raise CorpusError(
                f"{self.reader.corpus_dir}: bucket '{self.reader.bucket}': token id {bad} in packed "
                f"sample {i} is >= the tokenizer's vocab size {self.vocab_size} (shards written "
                "with another tokenizer?)"
            )
        return out
