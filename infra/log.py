"""Logging and progress bars, set up the same way by every command."""

from __future__ import annotations

import logging
import os
import sys

from tqdm.auto import tqdm

_CONFIGURED = False


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once: ``LOGLEVEL`` env var or ``level`` (default INFO)."""
    global _CONFIGURED
    if _CONFIGURED:
        return
    level = level or os.environ.get("LOGLEVEL", "INFO")
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    _CONFIGURED = True


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def progress(iterable=None, total=None, desc: str = "", unit: str = "it", **kw):
    """A tqdm progress bar on stderr; silent when ``PROGRESS=0`` or stderr is not a terminal in CI."""
    disable = os.environ.get("PROGRESS", "1") == "0"
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr, dynamic_ncols=True, **kw)
