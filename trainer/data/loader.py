"""Batches for the training loop: the curriculum mix over MDS buckets, and chat SFT data.

Both loaders produce, for one data-parallel rank, ``next_batch()`` dicts with ``tokens``
(``LongTensor[global_batch_size / dp_size, seq_length + 1]``), ``loss_mask``
(``FloatTensor[..., seq_length]``, aligned with the labels ``tokens[:, 1:]``), ``bucket_counts``
(samples per bucket in the whole global batch) and ``step`` (0-based index of this global batch).
Their whole state is a small JSON-serialisable dict, so a resumed run continues with exactly the
samples the uninterrupted run would have seen.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from infra.corpus import CorpusError, Manifest
from infra.log import get_logger
from trainer.data.curriculum import CurriculumConfig, MixScheduler
from trainer.data.mds import MDSBucketReader
from trainer.data.packing import PackedBucket

__all__ = ["CurriculumLoader", "SFTLoader", "STATE_VERSION"]

log = get_logger(__name__)
STATE_VERSION = 1


def _check_dp(global_batch_size: int, dp_rank: int, dp_size: int) -> int:
    if dp_size < 1 or not 0 <= dp_rank < dp_size:
        raise ValueError(f"dp_rank must be in [0, dp_size), got dp_rank={dp_rank}, dp_size={dp_size}")
    if global_batch_size < 1 or global_batch_size % dp_size:
        raise ValueError(f"global_batch_size ({global_batch_size}) must be a positive multiple of "
                         f"dp_size ({dp_size})")
    return global_batch_size // dp_size


def _epoch_permutation(seed: int, stream: str, epoch: int, n: int) -> np.ndarray:
    # crc32 rather than hash(): Python salts str hashes per process
    return np.random.default_rng([seed, zlib.crc32(stream.encode()), epoch]).permutation(n)


def _check_state_header(loader, d: dict, kind: str, where: str) -> None:
    """Refuse a saved data state of another kind/version or another seed, sequence length or batch size."""
    if d.get("version") != STATE_VERSION or d.get("kind") != kind:
        raise ValueError(f"{where}: version/kind {d.get('version')!r}/{d.get('kind')!r}, "
                         f"expected {STATE_VERSION}/{kind!r}")
    for key in ("seed", "seq_length", "global_batch_size"):
        if d.get(key) != getattr(loader, key):
            raise ValueError(f"{where}: saved with {key}={d.get(key)}, this run has {getattr(loader, key)}")


class _EpochCursor:
    """Walks a stream of ``n`` items through seeded per-epoch permutations."""

    def __init__(self, name: str, n: int, seed: int):
        self.name, self.n, self.seed = name, n, seed
        self.epoch = 0
        self.position = 0
        self.received = 0
        self._perm: np.ndarray | None = None

    def take(self, count: int) -> list[int]:
        out = []
        while count:
            if self.position == self.n:
                self.epoch += 1
                self.position = 0
                self._perm = None
                log.info("'%s' exhausted after %d samples: starting epoch %d (reshuffled)",
                         self.name, self.n, self.epoch)
            if self._perm is None:
                self._perm = _epoch_permutation(self.seed, self.name, self.epoch, self.n)
            k = min(count, self.n - self.position)
            out.extend(int(i) for i in self._perm[self.position: self.position + k])
            self.position += k
            self.received += k
            count -= k
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "received": self.received}

    def load(self, d: dict, where: str) -> None:
        epoch, position, received = int(d["epoch"]), int(d["position"]), int(d["received"])
        if not 0 <= position <= self.n or epoch * self.n + position != received:
            raise ValueError(f"{where}: inconsistent data state {d} for {self.n} samples per epoch")
        self.epoch, self.position, self.received = epoch, position, received
        self._perm = None


class CurriculumLoader:
    """Exact curriculum mixing over a corpus folder's MDS buckets, sharded over data-parallel ranks.

    Args:
        corpus_dir: folder written by ``datagen run`` (``manifest.json`` + ``shards/<bucket>/``).
        curriculum: phases of bucket weights; buckets with zero weight in every phase are not opened
            (they may be absent from the corpus).
        seq_length: tokens per sample the model sees; samples carry ``seq_length + 1`` tokens.
        global_batch_size: samples per optimizer step over all data-parallel ranks.
        train_steps: steps in the run; phase starts are fractions of
            ``train_steps * global_batch_size * seq_length`` tokens.
        seed: seeds the per-bucket epoch permutations and the order inside each global batch.
        dp_rank, dp_size: this rank takes the fixed slice ``[dp_rank * L, (dp_rank + 1) * L)`` of each
            global batch, ``L = global_batch_size / dp_size``.
        expected_vocab_size: the model tokenizer's size (``len(tokenizer)``, added tokens included; not
            the padded embedding size); must equal the manifest's.
        expected_tokenizer_sha256: sha256 of the model's ``tokenizer.json``; must equal the manifest's.

    Raises:
        infra.corpus.CorpusError: a bucket is missing, empty, shorter than one sample, or written with
            another tokenizer; the message names the corpus folder and the bucket.
    """

    def __init__(self, corpus_dir, curriculum: CurriculumConfig, seq_length: int, global_batch_size: int,
                 train_steps: int, seed: int, dp_rank: int = 0, dp_size: int = 1,
                 expected_vocab_size: int | None = None, expected_tokenizer_sha256: str | None = None):
        self.corpus_dir = Path(corpus_dir)
        self.local_batch_size = _check_dp(global_batch_size, dp_rank, dp_size)
        self.seq_length = int(seq_length)
        self.global_batch_size = int(global_batch_size)
        self.train_steps = int(train_steps)
        self.seed = int(seed)
        self.dp_rank, self.dp_size = int(dp_rank), int(dp_size)
        self.curriculum = curriculum
        self.manifest = Manifest.load(self.corpus_dir)
        self._check_tokenizer(expected_vocab_size, expected_tokenizer_sha256)
        self.scheduler = MixScheduler(curriculum, train_steps, global_batch_size)
        self.buckets = list(self.scheduler.buckets)
        vocab = self.manifest.tokenizer.vocab_size or None
        self.packed: dict[str, PackedBucket] = {}
        for b in self.buckets:
            self.packed[b] = self._open_bucket(b, vocab)
        self._cursors = {b: _EpochCursor(b, len(self.packed[b]), self.seed) for b in self.buckets}
        self.step = 0
        log.info("curriculum loader: %s", ", ".join(
            f"{b}={len(self.packed[b])} samples/epoch" for b in self.buckets))

    # -- start-up checks
    def _check_tokenizer(self, vocab_size: int | None, sha256: str | None) -> None:
        tok = self.manifest.tokenizer
        if vocab_size is not None and tok.vocab_size != vocab_size:
            raise CorpusError(f"{self.corpus_dir}: corpus tokenizer has {tok.vocab_size} tokens, the model's has "
                              f"{vocab_size} (pass len(tokenizer), not the padded embedding size); every bucket "
                              "of this corpus was tokenized with another vocabulary")
        if sha256 is not None and tok.sha256 != sha256:
            raise CorpusError(f"{self.corpus_dir}: corpus tokenizer sha256 {tok.sha256[:12] or '(none)'}... differs "
                              f"from the model's {sha256[:12]}...: the buckets were tokenized with another tokenizer")

    def _open_bucket(self, b: str, vocab: int | None) -> PackedBucket:
        info = self.manifest.buckets.get(b)
        if info is None:
            raise CorpusError(f"{self.corpus_dir}: the curriculum gives bucket '{b}' a weight but the corpus has no "
                              f"such bucket (manifest.json lists: {', '.join(self.manifest.buckets) or 'none'})")
        reader = MDSBucketReader(self.corpus_dir, b)
        if len(reader) == 0:
            raise CorpusError(f"{self.corpus_dir}: bucket '{b}' is empty (no documents in shards/{b}/)")
        packed = PackedBucket(reader, self.seq_length, vocab)
        if info.documents and (info.documents != len(reader) or info.tokens != packed.total_tokens):
            raise CorpusError(f"{self.corpus_dir}: bucket '{b}': manifest.json says {info.documents} documents / "
                              f"{info.tokens} tokens, shards/{b}/ holds {len(reader)} / {packed.total_tokens}")
        if len(packed) == 0:
            raise CorpusError(f"{self.corpus_dir}: bucket '{b}' holds {packed.total_tokens} tokens, fewer than one "
                              f"sample of seq_length + 1 = {self.seq_length + 1}")
        return packed

    # -- batches
    @property
    def cumulative_tokens(self) -> dict[str, int]:
        """Tokens (``seq_length`` per sample) drawn from each bucket over all ranks so far."""
        return {b: c.received * self.seq_length for b, c in self._cursors.items()}

    def next_batch(self) -> dict:
        """This rank's slice of the next global batch (see the module docstring for the keys)."""
        import torch

        g = self.step
        counts = self.scheduler.counts({b: c.received for b, c in self._cursors.items()}, g)
        items: list[tuple[str, int]] = []
        # every rank walks all buckets' cursors so that the states stay identical; only indices
        for b in self.buckets:
            items.extend((b, i) for i in self._cursors[b].take(counts[b]))
        # shuffle inside the global batch so that every rank's slice mixes the buckets
        order = np.random.default_rng([self.seed, 0x6d6978, g]).permutation(len(items))
        lo = self.dp_rank * self.local_batch_size
        mine = [items[j] for j in order[lo: lo + self.local_batch_size]]
        tokens = np.stack([self.packed[b].sample(i) for b, i in mine]).astype(np.int64)
        self.step += 1
        return {"tokens": torch.from_numpy(tokens),
                # numpy, not torch.ones: torch's thread pool costs tens of ms on busy shared CPUs
                "loss_mask": torch.from_numpy(np.ones((len(mine), self.seq_length), dtype=np.float32)),
                "bucket_counts": counts,
                "step": g}

    # -- checkpointing
    def state_dict(self) -> dict:
        """JSON-serialisable data state (a few integers per bucket); identical on every rank."""
        return {"version": STATE_VERSION, "kind": "curriculum", "step": self.step, "seed": self.seed,
                "seq_length": self.seq_length, "global_batch_size": self.global_batch_size,
                "train_steps": self.train_steps,
                "buckets": {b: dict(c.state(), samples_per_epoch=c.n) for b, c in self._cursors.items()}}

    def load_state_dict(self, d: dict) -> None:
        """Continue from ``state_dict()`` of a previous run (any dp_size: the state is global)."""
        where = "curriculum data state"
        _check_state_header(self, d, "curriculum", where)
        if d.get("train_steps") != self.train_steps:
            log.warning("%s: saved with train_steps=%s, now %d: phase boundaries move", where,
                        d.get("train_steps"), self.train_steps)
        saved = d.get("buckets", {})
        if set(saved) != set(self._cursors):
            raise ValueError(f"{where}: saved for buckets {sorted(saved)}, the curriculum now uses "
                             f"{sorted(self._cursors)}")
        for b, c in self._cursors.items():
            if saved[b].get("samples_per_epoch") != c.n:
                raise ValueError(f"{where}: bucket '{b}' had {saved[b].get('samples_per_epoch')} samples per "
                                 f"epoch, the corpus now gives {c.n} (corpus changed?)")
            c.load(saved[b], f"{where}, bucket '{b}'")
        step = int(d["step"])
        if sum(c.received for c in self._cursors.values()) != step * self.global_batch_size:
            raise ValueError(f"{where}: buckets received {sum(c.received for c in self._cursors.values())} samples, "
                             f"step {step} x global_batch_size {self.global_batch_size} expected")
        self.step = step


class SFTLoader:
    """Chat SFT batches with an assistant-only loss mask; same interface as ``CurriculumLoader``.

    Args:
        jsonl_path: chat JSONL, one ``{"messages": [...]}`` per line (see ``trainer.data.sft``).
        tokenizer: a tokenizer object or a path for ``infra.tokenizer.load_tokenizer``.
        seq_length: tokens per sample the model sees (longer conversations are cut).
        global_batch_size, dp_rank, dp_size: as for ``CurriculumLoader``.
        seed: seeds the per-epoch order.
    """

    def __init__(self, jsonl_path, tokenizer, seq_length: int, global_batch_size: int, seed: int,
                 dp_rank: int = 0, dp_size: int = 1):
        from trainer.data.sft import SFTDataset

        self.local_batch_size = _check_dp(global_batch_size, dp_rank, dp_size)
        self.dataset = SFTDataset(jsonl_path, tokenizer, seq_length, seed)
        self.seq_length = int(seq_length)
        self.global_batch_size = int(global_batch_size)
        self.seed = int(seed)
        self.dp_rank, self.dp_size = int(dp_rank), int(dp_size)
        self._cursor = _EpochCursor("sft", len(self.dataset), self.seed)
        self.step = 0

    @property
    def cumulative_tokens(self) -> dict[str, int]:
        return {"sft": self._cursor.received * self.seq_length}

    def next_batch(self) -> dict:
        import torch

        g = self.step
        idx = self._cursor.take(self.global_batch_size)
        lo = self.dp_rank * self.local_batch_size
        rows = [self.dataset[i] for i in idx[lo: lo + self.local_batch_size]]
        self.step += 1
        return {"tokens": torch.from_numpy(np.stack([r["tokens"] for r in rows])),
                "loss_mask": torch.from_numpy(np.stack([r["loss_mask"] for r in rows])),
                "bucket_counts": {"sft": self.global_batch_size},
                "step": g}

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "kind": "sft", "step": self.step, "seed": self.seed,
                "seq_length": self.seq_length, "global_batch_size": self.global_batch_size,
                "buckets": {"sft": dict(self._cursor.state(), samples_per_epoch=self._cursor.n)}}

    def load_state_dict(self, d: dict) -> None:
        where = "SFT data state"
        _check_state_header(self, d, "sft", where)
        s = d["buckets"]["sft"]
        if s.get("samples_per_epoch") != self._cursor.n:
            raise ValueError(f"{where}: saved for {s.get('samples_per_epoch')} conversations, the file now "
                             f"gives {self._cursor.n}")
        self._cursor.load(s, where)
        self.step = int(d["step"])
