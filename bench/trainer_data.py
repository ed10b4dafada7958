"""Speed of the trainer's data path on local MDS shards, against StreamingDataset measured in the same run.

Writes a temporary corpus (5 buckets, uint32 documents of 200-4000 tokens), then measures:
  * random access to whole documents: ``MDSBucketReader.tokens(i)`` vs ``StreamingDataset[i]``;
  * packed samples (``seq + 1`` tokens across documents) over our reader vs over StreamingDataset;
  * ``CurriculumLoader.next_batch()`` (packing + exact mixing + tensor assembly), tokens/s;
  * ``MixScheduler.counts`` alone for a 512-sample global batch (its cost per training step).
Prints one JSON object. Usage: ``python bench/trainer_data.py [--docs 3000] [--seq 2048]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def build(root: Path, docs: int) -> dict[str, int]:
    from infra.corpus import BucketInfo, BucketShardWriter, Manifest, TokenizerInfo, merge_bucket_index

    rng = np.random.default_rng(0)
    sizes = {"raw": docs, "rephrased": docs // 4, "refusal": docs // 8, "moral": docs // 8, "tagged": docs // 8}
    infos = {}
    for b, n in sizes.items():
        w = BucketShardWriter(root, b, 0)
        tokens = 0
        for i in range(n):
            d = rng.integers(1, 49000, size=int(rng.integers(200, 4000)), dtype=np.uint32)
            w.write(d, f"{b}-{i}", 0)
            tokens += d.size
        w.close()
        merge_bucket_index(root, b)
        infos[b] = BucketInfo(documents=n, tokens=tokens)
    Manifest(tokenizer=TokenizerInfo(vocab_size=49152, eos_id=0), buckets=infos).save(root)
    return sizes


class _StreamingDocs:
    """The reader interface of ``MDSBucketReader`` on top of ``StreamingDataset`` (the baseline)."""

    def __init__(self, ds, root):
        self.ds, self.corpus_dir, self.bucket = ds, root, "raw"
        self.doc_lengths = np.array([ds[i]["tokens"].size for i in range(len(ds))], dtype=np.int64)

    def __len__(self):
        return len(self.ds)

    def tokens(self, doc, start=0, stop=None):
        return self.ds[doc]["tokens"][start:stop]


def rate(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=3000, help="documents in the raw bucket")
    ap.add_argument("--seq", type=int, default=2048, help="sequence length for the loader")
    ap.add_argument("--steps", type=int, default=20, help="loader steps to time")
    args = ap.parse_args()

    from infra.corpus import open_bucket
    from trainer.data.curriculum import CurriculumConfig, MixScheduler, Phase
    from trainer.data.loader import CurriculumLoader
    from trainer.data.mds import MDSBucketReader
    from trainer.data.packing import PackedBucket

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        build(root, args.docs)
        out["write_s"] = round(time.perf_counter() - t, 2)
        order = np.random.default_rng(1).permutation(args.docs)

        ds = open_bucket(root, "raw")
        out["baseline_streaming_docs_per_s"] = round(rate(lambda: [ds[int(i)]["tokens"] for i in order], args.docs))
        t = time.perf_counter()
        reader = MDSBucketReader(root, "raw")
        out["reader_open_s"] = round(time.perf_counter() - t, 3)
        out["reader_docs_per_s"] = round(rate(lambda: [reader.tokens(int(i)) for i in order], args.docs))
        out["reader_vs_streaming"] = round(out["reader_docs_per_s"] / out["baseline_streaming_docs_per_s"], 2)
        assert all(np.array_equal(reader.tokens(int(i)), ds[int(i)]["tokens"]) for i in order[:50])

        cur = CurriculumConfig(
            [
                Phase(0.0, {"raw": 1.0}),
                Phase(0.2, {"raw": 0.7, "rephrased": 0.15, "refusal": 0.05, "moral": 0.05, "tagged": 0.05}),
            ]
        )
        bsz = 32
        t = time.perf_counter()
        loader = CurriculumLoader(root, cur, args.seq, bsz, args.steps, seed=0)
        out["loader_open_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        for _ in range(args.steps):
            loader.next_batch()
        dt = time.perf_counter() - t
        out["loader_tokens_per_s"] = round(args.steps * bsz * args.seq / dt)

        # the same packed samples (seq tokens + 1, crossing documents) cut from StreamingDataset reads
        base = PackedBucket(_StreamingDocs(ds, root), args.seq)
        ours = PackedBucket(reader, args.seq)
        idx = np.random.default_rng(2).permutation(len(ours))[:2000]
        base_rate = rate(lambda: [base.sample(int(i)) for i in idx], idx.size)
        ours_rate = rate(lambda: [ours.sample(int(i)) for i in idx], idx.size)
        out["baseline_streaming_packed_samples_per_s"] = round(base_rate)
        out["packed_samples_per_s"] = round(ours_rate)
        out["packed_vs_streaming"] = round(ours_rate / base_rate, 2)
        assert all(np.array_equal(base.sample(int(i)), ours.sample(int(i))) for i in idx[:50])

        sched = MixScheduler(cur, 1000, 512)
        received = {b: 0 for b in sched.buckets}
        t = time.perf_counter()
        for g in range(20):
            for b, n in sched.counts(received, g).items():
                received[b] += n
        out["scheduler_ms_per_step_b512"] = round((time.perf_counter() - t) / 20 * 1000, 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
