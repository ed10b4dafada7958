"""Seeded per-epoch orders, shared by the pretraining loader and the SFT dataset.

A module of its own so that ``trainer.data.loader`` (which reads SFT data) and ``trainer.data.sft``
(whose ``order()`` exposes the same permutation) both import it without importing each other.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["epoch_permutation"]


def epoch_permutation(seed: int, stream: str, epoch: int, n: int) -> np.ndarray:
    """The permutation of ``range(n)`` that stream ``stream`` (a bucket name, ``"sft"``) uses in ``epoch``."""
    # crc32 rather than hash(): Python salts str hashes per process
    return np.random.default_rng([seed, zlib.crc32(stream.encode()), epoch]).permutation(n)
