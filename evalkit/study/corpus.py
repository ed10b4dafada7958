"""Build the toy-world corpus folder with datagen's own pieces.

Documents come from ``evalkit.study.toyworld.generate``; the BPE tokenizer is trained with
``datagen.tokenizer_train.train_bpe_tokenizer`` (EOS and the harmfulness tag as special tokens); the
``tagged`` bucket gets Algorithm 1 tags from ``datagen.tagging.inject_tags``; every bucket is tokenized
into MDS shards by ``datagen.steps.tokenize.BucketTokenWriter`` and indexed with
``infra.corpus.merge_bucket_index``. The result is the corpus folder ``datagen run`` writes
(``manifest.json``, ``tokenizer/``, ``shards/<bucket>/``, ``stats.json``), so the trainer reads it as is.
The extra bucket ``unsafe`` (harmful text without tags, the unfiltered web) is declared to the trainer
through the curriculum's ``extra_buckets``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from infra.log import get_logger

log = get_logger(__name__)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON: {e}") from None
    return rows


def build_corpus(
    out_dir: str | Path,
    docs_per_bucket: dict[str, int],
    seed: int = 0,
    vocab_size: int = 1024,
    tag_probability: float = 0.05,
) -> dict:
    """Generate the toy documents and write the corpus folder ``out_dir/corpus``.

    Args:
        out_dir: study data folder; gets ``docs/`` (JSONL per bucket + ``eval/``), ``corpus/``.
        docs_per_bucket: documents per bucket (``raw``, ``unsafe``, ``tagged``, ``rephrased``, ``refusal``,
            ``moral``).
        seed: generator, tokenizer-sample and tag seed.
        vocab_size: BPE vocabulary size (EOS and tag included).
        tag_probability: per-word tag probability p of Algorithm 1 in the ``tagged`` bucket.

    Returns:
        ``{"corpus": path, "docs": {name: path}, "buckets": {bucket: {documents, tokens}}, "tags": n}``.
    """
    from datagen.steps.tokenize import BucketTokenWriter
    from datagen.tagging import inject_tags
    from datagen.tokenizer_train import train_bpe_tokenizer
    from evalkit.study import toyworld
    from infra.corpus import BucketInfo, Manifest, TokenizerInfo, file_sha256, merge_bucket_index
    from infra.tokenizer import load_tokenizer, tag_id

    out = Path(out_dir)
    docs = toyworld.generate(out / "docs", docs_per_bucket, seed=seed)
    corpus = out / "corpus"
    if corpus.exists():
        shutil.rmtree(corpus)
    corpus.mkdir(parents=True)
    buckets = {b: _read_jsonl(docs[b]) for b in docs_per_bucket}
    texts = [r["text"] for rows in buckets.values() for r in rows]
    train_bpe_tokenizer(texts, corpus / "tokenizer", vocab_size=vocab_size)
    tok = load_tokenizer(corpus / "tokenizer", add_tag=True)
    n_tags = 0
    with BucketTokenWriter(corpus, tok, rank=0) as w:
        for bucket, rows in buckets.items():
            items, tagged = [], []
            for r in rows:
                text = r["text"]
                if bucket == "tagged":
                    text, k = inject_tags(text, tag_probability, seed, r["id"])
                    n_tags += k
                items.append((text, r["id"], int(r["score"]), bucket))
                tagged.append(bucket == "tagged")
            for i in range(0, len(items), 256):
                w.write_batch(items[i : i + 256], tagged=tagged[i : i + 256])
        counts = w.counts()
    for b in counts:
        merge_bucket_index(corpus, b)
    manifest = Manifest(
        tokenizer=TokenizerInfo(
            path="tokenizer",
            sha256=file_sha256(corpus / "tokenizer" / "tokenizer.json"),
            vocab_size=len(tok),
            eos_id=int(tok.eos_token_id),
            tag_id=tag_id(tok),
        ),
        buckets={b: BucketInfo(**c) for b, c in counts.items()},
        config={
            "generator": "evalkit.study.toyworld",
            "docs_per_bucket": dict(docs_per_bucket),
            "seed": seed,
            "vocab_size": vocab_size,
            "tag_probability": tag_probability,
        },
    )
    manifest.save(corpus)
    stats = {"buckets": counts, "tags_injected": n_tags}
    (corpus / "stats.json").write_text(json.dumps(stats, indent=2))
    log.info("toy corpus %s: %s", corpus, {b: c["tokens"] for b, c in counts.items()})
    return {"corpus": corpus, "docs": docs, "buckets": counts, "tags": n_tags}
