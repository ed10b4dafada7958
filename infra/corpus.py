"""The corpus folder that ``datagen run`` writes and the trainer reads (paths: ``infra.folders.CorpusFolder``).

```
corpus/
  manifest.json      format version, tokenizer (path, sha256, vocab size, eos id, tag token + id),
                     buckets (documents, tokens), resolved datagen config, code version
  tokenizer/         the tokenizer used (HF tokenizer folder)
  shards/<bucket>/   index.json (merged) + one MDS folder per writer rank
  quarantine/        what could not be used: one JSON line each (source, line, reason, raw)
  stats.json         counts per step, bucket and reason; the balance check
  logs/              datatrove logging folder (completions make re-runs resume)
```

Every MDS sample is one *document*: ``tokens`` (uint32 array, EOS appended), ``id`` (str) and
``score`` (int, the safety score 0-5, -1 when unknown). Packing into fixed-length training samples is
the trainer's job (it knows the sequence length and can then mix buckets by exact token counts).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infra.folders import code_version

FORMAT_VERSION = 1
TAG_TOKEN = "<potentially unsafe content>"
BUCKETS = ("raw", "tagged", "rephrased", "refusal", "moral", "aligned")
MDS_COLUMNS = {"tokens": "ndarray:uint32", "id": "str", "score": "int"}


class CorpusError(ValueError):
    """A corpus folder that cannot be used; the message names the folder and what is wrong."""


@dataclass
class TokenizerInfo:
    path: str = "tokenizer"  # relative to the corpus folder
    sha256: str = ""  # of tokenizer.json
    vocab_size: int = 0  # len(tokenizer), added tokens included
    eos_id: int = 0
    tag_token: str = TAG_TOKEN
    tag_id: int = -1


@dataclass
class BucketInfo:
    documents: int = 0
    tokens: int = 0


@dataclass
class Manifest:
    format_version: int = FORMAT_VERSION
    tokenizer: TokenizerInfo = field(default_factory=TokenizerInfo)
    buckets: dict[str, BucketInfo] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    code_version: dict = field(default_factory=lambda: dict(code_version()))  # of the code that wrote it

    def save(self, corpus_dir: str | Path) -> None:
        path = Path(corpus_dir) / "manifest.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False))
        os.replace(tmp, path)

    @classmethod
    def load(cls, corpus_dir: str | Path) -> Manifest:
        path = Path(corpus_dir) / "manifest.json"
        if not path.is_file():
            raise CorpusError(f"{corpus_dir}: no manifest.json (is this a folder written by `datagen run`?)")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}: not valid JSON: {e}") from None
        if raw.get("format_version") != FORMAT_VERSION:
            raise CorpusError(f"{path}: format_version {raw.get('format_version')!r}, this code reads {FORMAT_VERSION}")
        return cls(
            format_version=raw["format_version"],
            tokenizer=TokenizerInfo(**raw.get("tokenizer", {})),
            buckets={k: BucketInfo(**v) for k, v in raw.get("buckets", {}).items()},
            config=raw.get("config", {}),
            code_version=raw.get("code_version", {}),
        )


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bucket_dir(corpus_dir: str | Path, bucket: str) -> Path:
    return Path(corpus_dir) / "shards" / bucket


def rank_dir(corpus_dir: str | Path, bucket: str, rank: int) -> Path:
    return bucket_dir(corpus_dir, bucket) / f"rank_{rank:05d}"


class BucketShardWriter:
    """One MDS writer for (bucket, rank). ``merge_bucket_index`` joins the ranks afterwards.

    The rank folder is removed first so that a re-run of a failed task never duplicates samples.
    """

    def __init__(
        self, corpus_dir: str | Path, bucket: str, rank: int, compression: str | None = None, size_limit: int = 1 << 26
    ):
        import shutil

        from streaming import MDSWriter

        self.out = rank_dir(corpus_dir, bucket, rank)
        if self.out.exists():
            shutil.rmtree(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._writer = MDSWriter(
            out=str(self.out), columns=MDS_COLUMNS, compression=compression, size_limit=size_limit, exist_ok=False
        )
        self.documents = 0
        self.tokens = 0

    def write(self, tokens, doc_id: str, score: int) -> None:
        arr = np.asarray(tokens, dtype=np.uint32)
        self._writer.write({"tokens": arr, "id": str(doc_id), "score": int(score)})
        self.documents += 1
        self.tokens += int(arr.size)

    def close(self) -> None:
        self._writer.finish()


def merge_bucket_index(corpus_dir: str | Path, bucket: str) -> int:
    """Merge the per-rank MDS indexes of a bucket into ``shards/<bucket>/index.json``.

    Returns the number of samples. Rank folders without an index (empty ranks) are skipped.
    """
    from streaming.base.util import merge_index

    bdir = bucket_dir(corpus_dir, bucket)
    ranks = sorted(p for p in bdir.glob("rank_*") if (p / "index.json").is_file())
    if not ranks:
        return 0
    # merge_index moves its result into place and fails when an earlier merge left an index there
    (bdir / "index.json").unlink(missing_ok=True)
    # streaming's list form wants the index.json files themselves (folders fail with IsADirectoryError)
    merge_index([str(p / "index.json") for p in ranks], str(bdir), keep_local=True, download_timeout=60)
    index = json.loads((bdir / "index.json").read_text())
    return sum(s["samples"] for s in index["shards"])


def open_bucket(corpus_dir: str | Path, bucket: str):
    """A ``streaming.StreamingDataset`` over one bucket's local shards (random access ``ds[i]``)."""
    from streaming import StreamingDataset

    bdir = bucket_dir(corpus_dir, bucket)
    if not (bdir / "index.json").is_file():
        raise CorpusError(f"{corpus_dir}: bucket '{bucket}' has no shards/{bucket}/index.json")
    return StreamingDataset(local=str(bdir), shuffle=False, batch_size=1)
