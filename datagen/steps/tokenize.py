"""Tokenize documents and write them into MDS buckets (shared by stage 1 and the LLM stage)."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from datagen.tagging import neutralize_literal_tags
from infra.corpus import BucketShardWriter, rank_dir


class FastTokenizer:
    """A tokenizer folder read with ``tokenizers`` alone: its ``tokenizer.json`` (what transformers'
    ``save_pretrained`` wrote from the backend, so the same ids as the HF tokenizer loaded from the
    folder) and the EOS token its ``tokenizer_config.json`` names. Loads in a fraction of the time of
    ``AutoTokenizer.from_pretrained``, which every task and the final stage would otherwise pay.

    ``load(folder)`` returns None when the folder lacks either file or names no EOS token in the
    vocabulary; callers then load the HF tokenizer.
    """

    def __init__(self, backend, eos_token: str):
        self.backend_tokenizer = backend
        self.eos_token = eos_token
        self.eos_token_id = backend.token_to_id(eos_token)
        self.split_special_tokens = False  # transformers' default: special tokens in text stay tokens

    @classmethod
    def load(cls, folder: str | Path) -> FastTokenizer | None:
        import json

        from tokenizers import Tokenizer

        folder = Path(folder)
        try:
            cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        eos = cfg.get("eos_token") if isinstance(cfg, dict) else None
        if isinstance(eos, dict):  # an AddedToken as older configs store it
            eos = eos.get("content")
        if not isinstance(eos, str) or cfg.get("split_special_tokens") or not (folder / "tokenizer.json").is_file():
            return None
        fast = cls(Tokenizer.from_file(str(folder / "tokenizer.json")), eos)
        return fast if fast.eos_token_id is not None else None

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)


def load_fast_or_hf(folder: str | Path):
    """``FastTokenizer.load(folder)``, or the HF tokenizer where that cannot read the folder."""
    fast = FastTokenizer.load(folder)
    if fast is not None:
        return fast
    from infra.tokenizer import load_tokenizer

    return load_tokenizer(folder)


def _backend_for_ids(tok):
    """The ``tokenizers.Tokenizer`` behind an HF fast tokenizer, set up to give exactly the ids of
    ``tok(texts, add_special_tokens=False)`` (no truncation or padding, its special-token splitting), or
    None. Its ``encode_batch_fast`` skips the character offsets, which the corpus does not keep."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    backend.encode_special_tokens = bool(getattr(tok, "split_special_tokens", False))
    return backend


class BucketTokenWriter:
    """Tokenize texts (EOS appended) and write them to ``corpus/shards/<bucket>/rank_<rank>``.

    Use as a context manager. ``reset(buckets)`` removes this rank's folders of those buckets first,
    so that a re-run never leaves samples of an earlier attempt behind.

    Args:
        corpus_dir: corpus folder.
        tokenizer: an HF tokenizer (with the tag token, see ``infra.tokenizer.load_tokenizer``), a
            ``FastTokenizer``, or a tokenizer folder (read with ``load_fast_or_hf``).
        rank: writer rank (one MDS folder per bucket and rank).
        compression: MDS compression (None, "zstd", ...).
    """

    def __init__(self, corpus_dir: str | Path, tokenizer, rank: int, compression: str | None = None):
        if isinstance(tokenizer, (str, Path)):
            tokenizer = load_fast_or_hf(tokenizer)
        self.corpus_dir = Path(corpus_dir)
        self.tok = tokenizer
        self.eos = int(tokenizer.eos_token_id)
        self.rank = rank
        self.compression = compression
        self.writers: dict[str, BucketShardWriter] = {}
        self._backend = _backend_for_ids(tokenizer)

    def reset(self, buckets: Iterable[str]) -> None:
        for b in buckets:
            d = rank_dir(self.corpus_dir, b, self.rank)
            if d.exists():
                shutil.rmtree(d)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        if self._backend is not None:
            ids = [e.ids for e in self._backend.encode_batch_fast(texts, add_special_tokens=False)]
        else:
            ids = self.tok(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        eos = [self.eos]
        return [np.asarray(x + eos, dtype=np.uint32) for x in ids]

    def write_batch(self, items: list[tuple[str, str, int, str]], tagged: list[bool] | None = None) -> int:
        """Write ``(text, id, score, bucket)`` items; texts not marked ``tagged`` get literal tag
        strings broken up first. Returns the number of tokens written."""
        texts = [t if (tagged and tagged[i]) else neutralize_literal_tags(t)[0] for i, (t, *_) in enumerate(items)]
        total = 0
        for arr, (_, doc_id, score, bucket) in zip(self.encode(texts), items):
            w = self.writers.get(bucket)
            if w is None:
                w = self.writers[bucket] = BucketShardWriter(self.corpus_dir, bucket, self.rank, self.compression)
            w.write(arr, doc_id, score)
            total += int(arr.size)
        return total

    def counts(self) -> dict[str, dict[str, int]]:
        return {b: {"documents": w.documents, "tokens": w.tokens} for b, w in self.writers.items()}

    def close(self) -> None:
        for w in self.writers.values():
            w.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_documents(
    corpus_dir: str | Path,
    tokenizer,
    docs: Iterable[tuple[str, str, int, str]],
    rank: int = 0,
    batch_size: int = 256,
    compression: str | None = None,
    reset_buckets: Iterable[str] = (),
) -> dict[str, dict[str, int]]:
    """Tokenize ``(text, id, score, bucket)`` documents into the corpus buckets (EOS appended).

    For the LLM stage: ``write_documents(corpus, tok, [(text, id, score, "rephrased"), ...], rank)``.
    Literal tag strings in the texts are broken up first (only stage 1 injects real tags).
    Call ``infra.corpus.merge_bucket_index`` afterwards (the final stage does it for every bucket).

    Args:
        corpus_dir: corpus folder.
        tokenizer: HF tokenizer object or folder.
        docs: iterable of (text, id, score, bucket).
        rank: writer rank; the folders ``shards/<bucket>/rank_<rank>`` are replaced.
        batch_size: documents per tokenizer call.
        compression: MDS compression.
        reset_buckets: buckets whose rank folder is removed first even if no document goes there.

    Returns:
        ``{bucket: {"documents": n, "tokens": n}}`` written by this call.
    """
    with BucketTokenWriter(corpus_dir, tokenizer, rank, compression) as w:
        w.reset(reset_buckets)
        for batch in batched(docs, batch_size):
            w.write_batch(list(batch))
        return w.counts()


class TokenizeToBuckets(PipelineStep):
    """Tokenize documents that carry ``metadata["bucket"]`` and write them to MDS (one folder per
    bucket and rank). Documents without a bucket pass through unwritten (e.g. awaiting the LLM stage).

    Args:
        corpus_dir: corpus folder (the tokenizer is read from ``<corpus>/tokenizer`` unless given).
        tokenizer_path: HF tokenizer folder; default ``<corpus_dir>/tokenizer``.
        buckets: buckets this step owns; their rank folders are reset at the start of each task.
        batch_size: documents per tokenizer call.
        compression: MDS compression.
    """

    name = "🔤 Tokenize + MDS"
    type = "💽 - WRITER"

    def __init__(
        self,
        corpus_dir: str,
        tokenizer_path: str | None = None,
        buckets: tuple[str, ...] = ("raw", "tagged"),
        batch_size: int = 256,
        compression: str | None = None,
    ):
        super().__init__()
        self.corpus_dir = str(corpus_dir)
        self.tokenizer_path = tokenizer_path or str(Path(corpus_dir) / "tokenizer")
        self.buckets = tuple(buckets)
        self.batch_size = batch_size
        self.compression = compression

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with BucketTokenWriter(self.corpus_dir, self.tokenizer_path, rank, self.compression) as w:
            w.reset(self.buckets)
            for batch in batched(data, self.batch_size):
                todo = [d for d in batch if d.metadata.get("bucket")]
                if todo:
                    with self.track_time("batch"):
                        w.write_batch(
                            [
                                (d.text, d.id, int(d.metadata.get("safety_score", -1)), d.metadata["bucket"])
                                for d in todo
                            ],
                            tagged=["harm_tags" in d.metadata for d in todo],
                        )
                yield from batch
            for b, c in w.counts().items():
                self.stat_update(f"{b}_documents", value=c["documents"])
                self.stat_update(f"{b}_tokens", value=c["tokens"])
