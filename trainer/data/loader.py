"""Batches for the training loop: the curriculum mix over MDS buckets, and chat SFT data.

Both loaders implement ``BatchLoader``, the interface the training loop uses. They produce, for
one data-parallel rank, ``next_batch()`` dicts with ``tokens``
(``LongTensor[global_batch_size / dp_size, seq_length + 1]``), ``loss_mask``
(``FloatTensor[..., seq_length]``, aligned with the labels ``tokens[:, 1:]``), ``bucket_counts``
(samples per bucket in the whole global batch), ``step`` (0-based index of this global batch) and
``samples`` (this rank's ``(bucket, packed sample index)`` pairs, row by row).
Their whole state is a small JSON-serialisable dict, so a resumed run continues with exactly the
samples the uninterrupted run would have seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from infra.config import ConfigError
from infra.corpus import CorpusError, Manifest
from infra.log import get_logger
from trainer.data.curriculum import CurriculumConfig, MixScheduler
from trainer.data.mds import MDSBucketReader
from trainer.data.packing import PackedBucket
from trainer.data.sft import SFTDataset
from trainer.data.shuffle import epoch_permutation

__all__ = ["BatchLoader", "CurriculumLoader", "SFTLoader", "STATE_VERSION"]

log = get_logger(__name__)
STATE_VERSION = 1
# A scheduled epoch count may exceed a whole number by float noise (a target of 120.00000000000001
# samples of a 120-sample bucket); this much is not a second pass.
_EPOCH_TOL = 1e-9


@runtime_checkable
class BatchLoader(Protocol):
    """What the training loop needs from a data loader.

    Attributes:
        cumulative_tokens: tokens drawn from each bucket over all ranks so far (``seq_length`` per
            sample); SFT reports one bucket, ``sft``.
        heldout_buckets: buckets with held-out validation samples (empty: no validation data).
    """

    @property
    def cumulative_tokens(self) -> dict[str, int]: ...

    @property
    def heldout_buckets(self) -> list[str]: ...

    def next_batch(self) -> dict:
        """This rank's slice of the next global batch (see the module docstring for the keys)."""

    def state_dict(self) -> dict:
        """JSON-serialisable data state, identical on every rank."""

    def load_state_dict(self, d: dict) -> None:
        """Continue from a ``state_dict()`` of a previous run."""

    def phase_at(self, step: int) -> int:
        """Index of the curriculum phase in force at the start of global batch ``step`` (0-based)."""

    def phase_weights(self, phase: int) -> dict[str, float]:
        """Bucket weights of ``phase``."""

    def heldout_batch(self, bucket: str, multiple_of: int = 1) -> dict:
        """This rank's share of ``bucket``'s held-out samples (``tokens``, ``loss_mask``, ``samples``)."""


def _check_dp(global_batch_size: int, dp_rank: int, dp_size: int) -> int:
    if dp_size < 1 or not 0 <= dp_rank < dp_size:
        raise ValueError(f"dp_rank must be in [0, dp_size), got dp_rank={dp_rank}, dp_size={dp_size}")
    if global_batch_size < 1 or global_batch_size % dp_size:
        raise ValueError(f"global_batch_size ({global_batch_size}) must be a positive multiple of dp_size ({dp_size})")
    return global_batch_size // dp_size


def _check_state_header(loader, d: dict, kind: str, where: str) -> None:
    """Refuse a saved data state of another kind/version or another seed, sequence length or batch size."""
    if d.get("version") != STATE_VERSION or d.get("kind") != kind:
        raise ValueError(
            f"{where}: version/kind {d.get('version')!r}/{d.get('kind')!r}, expected {STATE_VERSION}/{kind!r}"
        )
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
                log.warning(
                    "bucket '%s' exhausted after %d samples: pass %d over it begins (reshuffled; %d samples "
                    "drawn from it so far, %.2f epochs)",
                    self.name,
                    self.n,
                    self.epoch + 1,
                    self.received,
                    self.received / self.n,
                )
            if self._perm is None:
                self._perm = epoch_permutation(self.seed, self.name, self.epoch, self.n)
            k = min(count, self.n - self.position)
            out.extend(int(i) for i in self._perm[self.position : self.position + k])
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
        heldout_per_bucket: packed samples held out for validation at the end of every active bucket
            (the last ones in the bucket's stream); they are never trained on, and the training
            permutations run over the samples before them. 0 (the default): nothing is held out and
            the sample order is that of a loader without this option.

    Raises:
        infra.corpus.CorpusError: a bucket is missing, empty, shorter than one sample (after the
            held-out samples), or written with another tokenizer; the message names the corpus folder
            and the bucket.
        infra.config.ConfigError: the schedule would read a bucket more often than the curriculum's
            ``max_epochs`` / ``bucket_max_epochs`` allow (checked here, before any step).
    """

    def __init__(
        self,
        corpus_dir,
        curriculum: CurriculumConfig,
        seq_length: int,
        global_batch_size: int,
        train_steps: int,
        seed: int,
        dp_rank: int = 0,
        dp_size: int = 1,
        expected_vocab_size: int | None = None,
        expected_tokenizer_sha256: str | None = None,
        heldout_per_bucket: int = 0,
    ):
        if heldout_per_bucket < 0:
            raise ValueError(f"heldout_per_bucket must be >= 0, got {heldout_per_bucket}")
        self.heldout_per_bucket = int(heldout_per_bucket)
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
        self._cursors = {b: _EpochCursor(b, self._training_samples(b), self.seed) for b in self.buckets}
        self._check_epochs()
        self.step = 0
        held = f" ({self.heldout_per_bucket} per bucket held out for validation)" if self.heldout_per_bucket else ""
        log.info(
            "curriculum loader: %s%s", ", ".join(f"{b}={self._cursors[b].n} samples/epoch" for b in self.buckets), held
        )

    # -- start-up checks
    def _check_tokenizer(self, vocab_size: int | None, sha256: str | None) -> None:
        tok = self.manifest.tokenizer
        if vocab_size is not None and tok.vocab_size != vocab_size:
            raise CorpusError(
                f"{self.corpus_dir}: corpus tokenizer has {tok.vocab_size} tokens, the model's has "
                f"{vocab_size} (pass len(tokenizer), not the padded embedding size); every bucket "
                "of this corpus was tokenized with another vocabulary"
            )
        if sha256 is not None and tok.sha256 != sha256:
            raise CorpusError(
                f"{self.corpus_dir}: corpus tokenizer sha256 {tok.sha256[:12] or '(none)'}... differs "
                f"from the model's {sha256[:12]}...: the buckets were tokenized with another tokenizer"
            )

    def _open_bucket(self, b: str, vocab: int | None) -> PackedBucket:
        info = self.manifest.buckets.get(b)
        if info is None:
            raise CorpusError(
                f"{self.corpus_dir}: the curriculum gives bucket '{b}' a weight but the corpus has no "
                f"such bucket (manifest.json lists: {', '.join(self.manifest.buckets) or 'none'})"
            )
        reader = MDSBucketReader(self.corpus_dir, b)
        if len(reader) == 0:
            raise CorpusError(f"{self.corpus_dir}: bucket '{b}' is empty (no documents in shards/{b}/)")
        packed = PackedBucket(reader, self.seq_length, vocab)
        if info.documents and (info.documents != len(reader) or info.tokens != packed.total_tokens):
            raise CorpusError(
                f"{self.corpus_dir}: bucket '{b}': manifest.json says {info.documents} documents / "
                f"{info.tokens} tokens, shards/{b}/ holds {len(reader)} / {packed.total_tokens}"
            )
        if len(packed) == 0:
            raise CorpusError(
                f"{self.corpus_dir}: bucket '{b}' holds {packed.total_tokens} tokens, fewer than one "
                f"sample of seq_length + 1 = {self.seq_length + 1}"
            )
        return packed

    def _training_samples(self, b: str) -> int:
        n, k = len(self.packed[b]), self.heldout_per_bucket
        if n - k < 1:
            raise CorpusError(
                f"{self.corpus_dir}: bucket '{b}' holds {n} packed samples of seq_length + 1 = "
                f"{self.seq_length + 1} tokens; holding out {k} for validation "
                "(validation.samples_per_bucket) leaves none to train on"
            )
        return n - k

    def _check_epochs(self) -> None:
        """Refuse a schedule that reads a bucket more often than the curriculum allows; warn above one
        pass when it sets no limit. Epochs are counted over the samples that can be trained on."""
        total = self.train_steps * self.global_batch_size
        for b in self.buckets:
            per_epoch = self._cursors[b].n
            scheduled = self.scheduler.target(b, total)
            epochs = scheduled / per_epoch
            limit = self.curriculum.epoch_limit(b)
            held = f", {self.heldout_per_bucket} more held out for validation" if self.heldout_per_bucket else ""
            what = (
                f"bucket '{b}': {self.train_steps} steps x {self.global_batch_size} samples schedule "
                f"{scheduled:.0f} samples ({scheduled * self.seq_length:.0f} tokens) from it, {epochs:.2f} "
                f"epochs of its {per_epoch} packed samples ({per_epoch * self.seq_length} tokens{held})"
            )
            if limit is not None and epochs > limit + _EPOCH_TOL:
                key = f"bucket_max_epochs.{b}" if b in self.curriculum.bucket_max_epochs else "max_epochs"
                raise ConfigError(
                    f"{self.corpus_dir}: {what}, more than curriculum {key}={limit:g} allows; add "
                    "documents to the bucket, lower its weight, shorten the run or raise the limit"
                )
            # every rank builds a loader; one warning per bucket from the first data-parallel rank is enough
            if limit is None and epochs > 1 + _EPOCH_TOL and self.dp_rank == 0:
                log.warning("%s: %s (the curriculum sets no max_epochs)", self.corpus_dir, what)

    # -- schedule
    def phase_at(self, step: int) -> int:
        return self.scheduler.phase_index(step)

    def phase_weights(self, phase: int) -> dict[str, float]:
        return dict(self.curriculum.phases[phase].weights)

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
        order = np.random.default_rng([self.seed, 0x6D6978, g]).permutation(len(items))
        lo = self.dp_rank * self.local_batch_size
        mine = [items[j] for j in order[lo : lo + self.local_batch_size]]
        tokens = np.stack([self.packed[b].sample(i) for b, i in mine]).astype(np.int64)
        self.step += 1
        return {
            "tokens": torch.from_numpy(tokens),
            # numpy, not torch.ones: torch's thread pool costs tens of ms on busy shared CPUs
            "loss_mask": torch.from_numpy(np.ones((len(mine), self.seq_length), dtype=np.float32)),
            "bucket_counts": counts,
            "step": g,
            "samples": mine,
        }

    # -- held-out validation samples
    @property
    def heldout_buckets(self) -> list[str]:
        return list(self.buckets) if self.heldout_per_bucket else []

    def heldout_ids(self, bucket: str) -> range:
        """Packed sample indices of ``bucket`` held out for validation (empty when none are)."""
        n = len(self.packed[bucket])
        return range(n - self.heldout_per_bucket, n)

    def heldout_batch(self, bucket: str, multiple_of: int = 1) -> dict:
        """This rank's share of ``bucket``'s held-out samples, for a validation forward pass.

        The held-out samples are split into ``dp_size`` consecutive slices of equal length (the last
        ones may be shorter or empty); every rank pads its slice to the same number of rows, a
        multiple of ``multiple_of`` (the micro-batch size), with rows whose ``loss_mask`` is 0, so
        that all ranks run the same micro-batches of the same shape and every sample counts once.
        """
        import torch

        ids = list(self.heldout_ids(bucket))
        if not ids:
            raise ValueError(f"bucket '{bucket}': no held-out samples (heldout_per_bucket=0)")
        per_rank = -(-len(ids) // self.dp_size)
        rows = -(-per_rank // multiple_of) * multiple_of
        mine = ids[self.dp_rank * per_rank : (self.dp_rank + 1) * per_rank]
        packed = self.packed[bucket]
        # padding repeats a real sample (valid token ids); its zero mask keeps it out of the loss
        tokens = np.stack([packed.sample(i) for i in mine] + [packed.sample(ids[0])] * (rows - len(mine)))
        mask = np.zeros((rows, self.seq_length), dtype=np.float32)
        mask[: len(mine)] = 1.0
        return {
            "tokens": torch.from_numpy(tokens.astype(np.int64)),
            "loss_mask": torch.from_numpy(mask),
            "samples": [(bucket, i) for i in mine],
        }

    # -- checkpointing
    def state_dict(self) -> dict:
        """JSON-serialisable data state (a few integers per bucket); identical on every rank."""
        return {
            "version": STATE_VERSION,
            "kind": "curriculum",
            "step": self.step,
            "seed": self.seed,
            "seq_length": self.seq_length,
            "global_batch_size": self.global_batch_size,
            "train_steps": self.train_steps,
            "heldout_per_bucket": self.heldout_per_bucket,
            "buckets": {b: dict(c.state(), samples_per_epoch=c.n) for b, c in self._cursors.items()},
        }

    def load_state_dict(self, d: dict) -> None:
        """Continue from ``state_dict()`` of a previous run (any dp_size: the state is global)."""
        where = "curriculum data state"
        _check_state_header(self, d, "curriculum", where)
        if d.get("train_steps") != self.train_steps:
            log.warning(
                "%s: saved with train_steps=%s, now %d: phase boundaries move",
                where,
                d.get("train_steps"),
                self.train_steps,
            )
        # states written before validation existed held nothing out
        if d.get("heldout_per_bucket", 0) != self.heldout_per_bucket:
            raise ValueError(
                f"{where}: saved with {d.get('heldout_per_bucket', 0)} samples per bucket held out "
                f"for validation, this run holds out {self.heldout_per_bucket} "
                "(validation.samples_per_bucket, 0 when validation is off): the training samples "
                "of every bucket would differ"
            )
        saved = d.get("buckets", {})
        if set(saved) != set(self._cursors):
            raise ValueError(
                f"{where}: saved for buckets {sorted(saved)}, the curriculum now uses {sorted(self._cursors)}"
            )
        for b, c in self._cursors.items():
            if saved[b].get("samples_per_epoch") != c.n:
                raise ValueError(
                    f"{where}: bucket '{b}' had {saved[b].get('samples_per_epoch')} samples per "
                    f"epoch, the corpus now gives {c.n} (corpus changed?)"
                )
            c.load(saved[b], f"{where}, bucket '{b}'")
        step = int(d["step"])
        if sum(c.received for c in self._cursors.values()) != step * self.global_batch_size:
            raise ValueError(
                f"{where}: buckets received {sum(c.received for c in self._cursors.values())} samples, "
                f"step {step} x global_batch_size {self.global_batch_size} expected"
            )
        self.step = step


class SFTLoader:
    """Chat SFT batches with an assistant-only loss mask; a ``BatchLoader`` like ``CurriculumLoader``
    with one phase and one bucket, ``sft``, and no held-out samples.

    Args:
        jsonl_path: chat JSONL, one ``{"messages": [...]}`` per line (see ``trainer.data.sft``).
        tokenizer: a tokenizer object or a path for ``infra.tokenizer.load_tokenizer``.
        seq_length: tokens per sample the model sees (longer conversations are cut).
        global_batch_size, dp_rank, dp_size: as for ``CurriculumLoader``.
        seed: seeds the per-epoch order.
    """

    def __init__(
        self,
        jsonl_path,
        tokenizer,
        seq_length: int,
        global_batch_size: int,
        seed: int,
        dp_rank: int = 0,
        dp_size: int = 1,
    ):
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

    @property
    def heldout_buckets(self) -> list[str]:
        return []

    def phase_at(self, step: int) -> int:
        return 0

    def phase_weights(self, phase: int) -> dict[str, float]:
        return {"sft": 1.0}

    def heldout_batch(self, bucket: str, multiple_of: int = 1) -> dict:
        raise ValueError("SFT runs hold no samples out for validation")

    def next_batch(self) -> dict:
        import torch

        g = self.step
        idx = self._cursor.take(self.global_batch_size)
        lo = self.dp_rank * self.local_batch_size
        mine = idx[lo : lo + self.local_batch_size]
        rows = [self.dataset[i] for i in mine]
        self.step += 1
        return {
            "tokens": torch.from_numpy(np.stack([r["tokens"] for r in rows])),
            "loss_mask": torch.from_numpy(np.stack([r["loss_mask"] for r in rows])),
            "bucket_counts": {"sft": self.global_batch_size},
            "step": g,
            "samples": [("sft", i) for i in mine],
        }

    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "kind": "sft",
            "step": self.step,
            "seed": self.seed,
            "seq_length": self.seq_length,
            "global_batch_size": self.global_batch_size,
            "buckets": {"sft": dict(self._cursor.state(), samples_per_epoch=self._cursor.n)},
        }

    def load_state_dict(self, d: dict) -> None:
        where = "SFT data state"
        _check_state_header(self, d, "sft", where)
        s = d["buckets"]["sft"]
        if s.get("samples_per_epoch") != self._cursor.n:
            raise ValueError(
                f"{where}: saved for {s.get('samples_per_epoch')} conversations, the file now gives {self._cursor.n}"
            )
        self._cursor.load(s, where)
        self.step = int(d["step"])
