"""Safety classifiers measured on data they never saw, side by side, with scoring throughput.

    python bench/classifier.py [--backends majority,fasttext,embedding,finetune] [--out FILE]
                               [--finetune-params JSON] [--throughput-docs 400]

Training data: the shipped public set ``datagen/data/safety_labels/train.jsonl.gz`` (sources and
licences in its README). Every figure is taken on texts outside the classifier's training data:

* ``heldout``: the 20% split of the training set that ``train-classifier`` holds out (same sources);
* ``xstest``: XSTest v2's 450 prompts (200 clearly harmful requests scored >= 3 expected, 250 harmless
  prompts that only look dangerous, 0 expected); an evaluation benchmark, never trained on;
* ``inaugural``: 300 passages of US inaugural addresses (ordinary prose, 0 expected);
* ``default_corpus``: the embedded demo corpus (318 project-written documents, reference labels);
* ``without:<source>``: a classifier trained with one source left out, scored on all of that source
  (davidson: tweets, openai_moderation: OpenAI's moderation test set, hh_rlhf_red_team: red-team
  requests), so that toxic and harmful text from a source it never saw is measured too.

Every rate carries k, n and a Wilson 95% interval; macro-F1 a bootstrap interval. The majority class
of the training labels is the baseline, in the same run. Throughput: documents/s on one core (torch
and fastText restricted to one thread) scoring the same documents with each backend.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PROGRESS", "0")

DATA = Path(__file__).resolve().parent.parent / "datagen" / "data" / "safety_labels"
LEAVE_OUT = ("davidson", "openai_moderation", "hh_rlhf_red_team")
SUMMARY_KEYS = ("macro_f1", "recall_ge1", "recall_ge3", "fpr_score0")


class Majority:
    """Predicts the most common training label."""

    backend = "majority"

    def __init__(self, scores: list[int]):
        self.value = max(sorted(set(scores)), key=scores.count)

    def predict(self, texts):
        return [self.value] * len(texts)


ORIGINAL_ENCODE: list = []


def memoise_encoder() -> None:
    """Frozen-encoder embeddings depend only on the text: compute each once per run."""
    import numpy as np

    import datagen.classifier as clf

    original, cache = clf.encode_texts, {}
    ORIGINAL_ENCODE.append(original)

    def cached(model_name, texts, batch_size=32):
        todo = [t for t in dict.fromkeys(texts) if (model_name, t) not in cache]
        if todo:
            for t, v in zip(todo, original(model_name, todo, batch_size)):
                cache[(model_name, t)] = v
        return np.stack([cache[(model_name, t)] for t in texts]) if texts else np.zeros((0, 384), np.float32)

    clf.encode_texts = cached


def evaluation_sets() -> dict[str, tuple[list[str], list[int]]]:
    from datagen.classifier import read_labels
    from infra.paths import default_corpus

    return {
        "xstest": read_labels(DATA / "eval" / "xstest.jsonl.gz"),
        "inaugural": read_labels(DATA / "eval" / "inaugural.jsonl.gz"),
        "default_corpus": read_labels(default_corpus()),
    }


def summary(m: dict) -> dict:
    out = {"n": m["n"], "macro_f1": m["macro_f1"], "macro_f1_ci95": m["macro_f1_ci95"]}
    for k in ("recall_ge1", "recall_ge3", "fpr_score0", "fpr_ge3_score0"):
        out[k] = m["rates"][k]
    out["confusion_matrix"] = m["confusion_matrix"]
    return out


def train(backend: str, work: Path, exclude: list[str], params: dict) -> tuple[object, dict]:
    from datagen.classifier import TrainClassifierConfig, load_classifier, train_classifier

    if backend == "majority":
        from datagen.classifier import read_labels

        _, scores = read_labels(DATA / "train.jsonl.gz", exclude_sources=exclude)
        return Majority(scores), {}
    out = work / f"{backend}-{'-'.join(exclude) or 'all'}"
    t0 = time.perf_counter()
    meta = train_classifier(
        TrainClassifierConfig(
            labels=str(DATA / "train.jsonl.gz"),
            output=str(out),
            backend=backend,
            exclude_sources=exclude,
            params=params,
        )
    )
    meta["train_seconds"] = time.perf_counter() - t0
    return load_classifier(out), meta


def throughput(model, texts: list[str]) -> dict:
    """Documents/s scoring ``texts`` on one thread, with the encoder cache of this run switched off."""
    import torch

    import datagen.classifier as clf

    cached, threads = clf.encode_texts, torch.get_num_threads()
    if ORIGINAL_ENCODE:
        clf.encode_texts = ORIGINAL_ENCODE[0]
    torch.set_num_threads(1)
    try:
        model.predict(texts[:8])  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        model.predict(texts)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        clf.encode_texts = cached
        torch.set_num_threads(threads)
    words = sum(len(t.split()) for t in texts)
    return {"docs": len(texts), "words": words, "docs_per_s_one_core": len(texts) / wall, "cpu_s": cpu, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="majority,fasttext,embedding")
    ap.add_argument("--finetune-params", default="{}", help="JSON params of the finetune backend")
    ap.add_argument("--embedding-params", default="{}", help="JSON params of the embedding backend")
    ap.add_argument("--throughput-docs", type=int, default=400)
    ap.add_argument("--no-leave-out", action="store_true", help="skip the leave-one-source-out runs")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--quiet", action="store_true", help="with --out: do not print the JSON")
    args = ap.parse_args()

    from datagen.classifier import classification_metrics, predict_all, read_labels

    memoise_encoder()
    sets = evaluation_sets()
    params = {"finetune": json.loads(args.finetune_params), "embedding": json.loads(args.embedding_params)}
    speed_texts = (sets["inaugural"][0] + sets["xstest"][0] + sets["default_corpus"][0])[: args.throughput_docs]
    res = {"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu_count": os.cpu_count(), "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            row: dict = {}
            model, meta = train(backend, Path(tmp), [], params.get(backend, {}))
            if meta:
                row["heldout"] = summary(meta["metrics"])
                row["train_seconds"] = meta["train_seconds"]
                row["params"] = meta["params"]
            for name, (texts, scores) in sets.items():
                row[name] = summary(classification_metrics(scores, predict_all(model, texts)))
            if not args.no_leave_out:
                for src in LEAVE_OUT:
                    m, _ = train(backend, Path(tmp), [src], params.get(backend, {}))
                    texts, scores = read_labels(DATA / "train.jsonl.gz", sources=[src])
                    row[f"without:{src}"] = summary(classification_metrics(scores, predict_all(m, texts)))
            if backend != "majority":
                row["throughput"] = throughput(model, speed_texts)
            res["backends"][backend] = row
            brief = {
                k: {m: (v[m]["rate"] if isinstance(v.get(m), dict) else v.get(m)) for m in SUMMARY_KEYS}
                for k, v in row.items()
                if isinstance(v, dict) and "n" in v
            }
            print(backend, json.dumps(brief), row.get("throughput"), file=sys.stderr, flush=True)
    text = json.dumps(res, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    if not args.quiet:
        print(text)


if __name__ == "__main__":
    main()
