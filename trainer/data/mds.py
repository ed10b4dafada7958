"""Direct, read-only access to one bucket's MDS shards (the corpus folder's ``shards/<bucket>/``).

Why not ``streaming.StreamingDataset``: the trainer needs only random access to local files, and
every StreamingDataset object creates shared-memory segments in /dev/shm and lock files in /tmp,
must not be shared between a main process and workers, and its stale-memory clean-up is
machine-wide (it can delete the segments of other ranks on the same node). The MDS shard layout is
small and fixed, so reading it with ``numpy.memmap`` gives the same documents (a test checks this
against ``infra.corpus.open_bucket``) with no per-node state, and it lets the packer read all
document lengths from the shard headers in one vectorised pass.

Layout of an uncompressed MDS shard (streaming ``mds`` format, version 2)::

    uint32 n | uint32 offsets[n + 1] | config JSON | sample 0 | sample 1 | ...
    sample = uint32 size per variable-size column | column values, in column order

The ``tokens`` column (``ndarray:uint32``) stores ``1 byte (ndim << 2 | shape dtype code)``, the
shape in that dtype, then the values. Compressed shards (``zip_data``) are decompressed into memory
when first used (a few at a time).
"""

from __future__ import annotations

import bisect
import json
import mmap
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np

from infra.corpus import CorpusError, bucket_dir

__all__ = ["MDSBucketReader"]

_SHAPE_BYTES = {0: 1, 1: 2, 2: 4, 3: 8}
_U32 = struct.Struct("<I")
_SHAPE_DTYPES = {0: np.uint8, 1: np.uint16, 2: np.uint32, 3: np.uint64}


class MDSBucketReader:
    """Random access to the ``tokens`` of every document of one bucket, in index order.

    Args:
        corpus_dir: the corpus folder.
        bucket: bucket name (``shards/<bucket>/index.json`` must exist).
        max_open: how many shard files to keep mapped at once (file handles are limited).

    Attributes:
        doc_lengths: int64 array, tokens per document (EOS included), in index order.
    """

    def __init__(self, corpus_dir: str | Path, bucket: str, max_open: int = 64):
        self.corpus_dir = Path(corpus_dir)
        self.bucket = bucket
        self.root = bucket_dir(corpus_dir, bucket)
        index_path = self.root / "index.json"
        if not index_path.is_file():
            raise CorpusError(f"{corpus_dir}: bucket '{bucket}' is missing (no shards/{bucket}/index.json)")
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError as e:
            raise CorpusError(f"{index_path}: not valid JSON: {e}") from None
        self._shards = index.get("shards", [])
        self._max_open = max_open
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()
        lengths, first = [], [0]
        for si, shard in enumerate(self._shards):
            self._check_columns(si, shard)
            lengths.append(self._scan_lengths(si))
            first.append(first[-1] + len(lengths[-1]))
        self.doc_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        self._first_doc_list = first  # global index of each shard's first document

    def __len__(self) -> int:
        return int(self.doc_lengths.size)

    def _where(self, si: int) -> str:
        name = (self._shards[si].get("raw_data") or self._shards[si].get("zip_data") or {}).get("basename")
        return f"{self.corpus_dir}: bucket '{self.bucket}', shard {name}"

    def _check_columns(self, si: int, shard: dict) -> None:
        if shard.get("format") != "mds":
            raise CorpusError(f"{self._where(si)}: format {shard.get('format')!r}, expected 'mds'")
        names = shard.get("column_names", [])
        if "tokens" not in names:
            raise CorpusError(f"{self._where(si)}: no 'tokens' column (columns: {names})")
        enc = shard["column_encodings"][names.index("tokens")]
        if enc != "ndarray:uint32":
            raise CorpusError(f"{self._where(si)}: column 'tokens' is {enc!r}, expected 'ndarray:uint32'")
        shard["_tok_col"] = names.index("tokens")
        shard["_var_cols"] = [j for j, s in enumerate(shard["column_sizes"]) if s is None]

    def _buffer(self, si: int) -> np.ndarray:
        buf = self._open.get(si)
        if buf is not None:
            self._open.move_to_end(si)
            return buf
        shard = self._shards[si]
        raw = shard.get("raw_data") or {}
        path = self.root / raw.get("basename", "")
        if raw and path.is_file():
            with open(path, "rb") as f:
                # a plain ndarray over an mmap: np.memmap's subclass slicing costs ~15 us a call
                buf = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), dtype=np.uint8)
        else:
            zipd = shard.get("zip_data") or {}
            zpath = self.root / zipd.get("basename", "")
            if not zipd or not zpath.is_file():
                raise CorpusError(f"{self._where(si)}: shard file not found under {self.root}")
            from streaming.base.compression import decompress

            buf = np.frombuffer(decompress(shard["compression"], zpath.read_bytes()), dtype=np.uint8)
        n = int(buf[:4].view(np.uint32)[0])
        if n != shard.get("samples"):
            raise CorpusError(f"{self._where(si)}: holds {n} samples, index.json says {shard.get('samples')}")
        self._open[si] = buf
        if len(self._open) > self._max_open:
            self._open.popitem(last=False)
        return buf

    def _token_fields(self, si: int, buf: np.ndarray, begin: np.ndarray):
        """Byte offset of the tokens column header and its byte size, for samples starting at byte
        offsets ``begin``."""
        shard = self._shards[si]
        tok_col = shard["_tok_col"]
        var_cols = shard["_var_cols"]
        sizes = shard["column_sizes"]
        heads = {}
        for k, j in enumerate(var_cols):
            idx = begin[:, None] + 4 * k + np.arange(4)
            heads[j] = np.ascontiguousarray(buf[idx]).view(np.uint32).reshape(-1).astype(np.int64)
        pos = begin + 4 * len(var_cols)
        for j in range(tok_col):
            pos = pos + (heads[j] if sizes[j] is None else int(sizes[j]))
        tok_size = heads[tok_col] if sizes[tok_col] is None else np.full_like(pos, sizes[tok_col])
        return pos, tok_size

    def _scan_lengths(self, si: int) -> np.ndarray:
        buf = self._buffer(si)
        n = int(self._shards[si]["samples"])
        if n == 0:
            return np.zeros(0, np.int64)
        begin = np.frombuffer(buf[4 : 4 + 4 * n].tobytes(), dtype=np.uint32).astype(np.int64)
        pos, size = self._token_fields(si, buf, begin)
        head = buf[pos].astype(np.int64)
        if np.any(head >> 2 != 1):
            bad = int(np.flatnonzero(head >> 2 != 1)[0])
            raise CorpusError(f"{self._where(si)}: sample {bad}: 'tokens' is not a 1-D array")
        lengths = np.empty(n, np.int64)
        for code, nbytes in _SHAPE_BYTES.items():
            sel = np.flatnonzero((head & 3) == code)
            if sel.size:
                idx = pos[sel, None] + 1 + np.arange(nbytes)
                lengths[sel] = np.ascontiguousarray(buf[idx]).view(_SHAPE_DTYPES[code]).reshape(-1)
        expected = np.array([1 + _SHAPE_BYTES[int(c)] for c in head & 3]) + 4 * lengths
        if np.any(expected != size):
            bad = int(np.flatnonzero(expected != size)[0])
            raise CorpusError(f"{self._where(si)}: sample {bad}: 'tokens' column size does not match its shape")
        return lengths

    def tokens(self, doc: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Tokens ``[start, stop)`` of document ``doc`` (global index) as a uint32 array (a copy)."""
        si = bisect.bisect_right(self._first_doc_list, doc) - 1
        local = doc - self._first_doc_list[si]
        buf = self._buffer(si)
        shard = self._shards[si]
        pos = _U32.unpack_from(buf, 4 + 4 * local)[0]
        var_cols, sizes = shard["_var_cols"], shard["column_sizes"]
        heads = dict(zip(var_cols, struct.unpack_from(f"<{len(var_cols)}I", buf, pos))) if var_cols else {}
        pos += 4 * len(var_cols)
        for j in range(shard["_tok_col"]):
            pos += heads[j] if sizes[j] is None else int(sizes[j])
        values = pos + 1 + _SHAPE_BYTES[int(buf[pos]) & 3]
        length = int(self.doc_lengths[doc])
        stop = length if stop is None else min(stop, length)
        return (
            buf[values + 4 * start : values + 4 * stop].view(np.uint32).copy()
            if (values % 4 == 0)
            else np.frombuffer(buf[values + 4 * start : values + 4 * stop].tobytes(), dtype=np.uint32)
        )
