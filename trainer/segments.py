"""What a resumed run may change, and the record of every start of a run folder.

A checkpoint fixes what its past steps meant: the model's shape, the data order (curriculum, seeds,
batch and sequence sizes), the tokenizer. A start that resumes from it with any of these changed
would continue a different experiment under the same name, so it is refused with both values named,
unless the setting is listed in ``resume.allow_changed`` (then the change is recorded). Everything
else (learning-rate schedule, steps, intervals, parallel layout, logging) may change between starts:
the new values are applied and logged.

``run_dir/segments.jsonl`` gets one line per start: when, from which checkpoint and step, what
changed against the previous start (``changed``) and which fixed settings were changed on purpose
(``allowed``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path

from infra.config import ConfigError, flatten, to_dict

# name -> what it fixes; the keys ``resume.allow_changed`` accepts
FIXED = {
    "model.architecture": "the shapes of every saved weight",
    "model.spec": "the layer implementation the weights were saved from",
    "model.vocab": "the embedding's rows (tokenizer length and padding)",
    "tokenizer": "which token every embedding row and every corpus id stands for",
    "data.curriculum": "which bucket each past step drew from",
    "data.seed": "the order of the samples drawn so far",
    "train.seed": "the initialisation and dropout streams",
    "train.seq_length": "the packed samples the data state counts",
    "train.global_batch_size": "the samples per step the data state counts",
    "train.precision": "the weights' and optimizer state's dtypes",
    "train.distributed_optimizer": "the optimizer state's layout",
    "sft.path": "the conversations the data state counts",
}


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 of a tokenizer's vocabulary and special tokens (files may differ in formatting only)."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = sorted(str(t) for t in getattr(tokenizer, "all_special_tokens", []))
    blob = json.dumps({"vocab": vocab, "special": special}, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def fixed_settings(cfg, ms) -> dict:
    """The values of ``FIXED`` for this start (``ms``: the trainer's ModelSetup)."""
    from dataclasses import asdict

    from trainer.config import resolve_curriculum

    curriculum = None
    if not cfg.sft_mode and cfg.data.curriculum is not None:
        curriculum = to_dict(resolve_curriculum(cfg.data.curriculum))
    return {
        "model.architecture": asdict(ms.arch),
        "model.spec": ms.spec,
        "model.vocab": {"tokenizer": ms.vocab_size, "padded": ms.padded_vocab},
        "tokenizer": tokenizer_fingerprint(ms.tokenizer),
        "data.curriculum": curriculum,
        "data.seed": cfg.data.seed,
        "train.seed": cfg.train.seed,
        "train.seq_length": cfg.train.seq_length,
        "train.global_batch_size": cfg.train.global_batch_size,
        "train.precision": str(ms.dtype).replace("torch.", ""),
        "train.distributed_optimizer": cfg.train.distributed_optimizer,
        "sft.path": cfg.sft.path,
    }


def _short(v, limit: int = 240) -> str:
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def differences(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """``(dotted key, old, new)`` for every leaf where two JSON-like trees differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            out += differences(old.get(k, "<absent>"), new.get(k, "<absent>"), key)
        return out
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        old, new = list(old), list(new)
    return [] if old == new else [(prefix, old, new)]


def check_fixed(saved: dict | None, now: dict, allowed: list[str], where: str) -> dict:
    """Compare the fixed settings a checkpoint recorded with this start's.

    Returns ``{name: {"before", "after"}}`` of the changes ``allowed`` accepts; raises ConfigError
    naming each other change with both values. ``saved`` None (a checkpoint written before these
    checks) accepts everything.
    """
    if saved is None:
        return {}
    accepted, refused, names = {}, [], []
    for name in FIXED:
        if name not in saved:
            continue
        diff = differences(saved[name], now.get(name), name)
        if not diff:
            continue
        if name in allowed:
            accepted[name] = {"before": saved[name], "after": now.get(name)}
            continue
        shown = "; ".join(f"{k}: {_short(a)} in the checkpoint, {_short(b)} now" for k, a, b in diff[:4])
        more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
        refused.append(f"{name} changed ({FIXED[name]}): {shown}{more}")
        names.append(name)
    if refused:
        raise ConfigError(
            f"resuming {where}: "
            + " | ".join(refused)
            + ". These settings fix what the saved steps meant. Resume with the checkpoint's values, start a "
            "new run_dir, or accept the change with resume.allow_changed=["
            + ",".join(names)
            + "] (recorded in segments.jsonl)"
        )
    return accepted


def changed_keys(previous: dict | None, current: dict) -> dict:
    """``{dotted key: {"before", "after"}}`` between the previous start's resolved config and this one's."""
    if previous is None:
        return {}
    a, b = flatten(previous), flatten(current)
    return {
        k: {"before": a.get(k, "<absent>"), "after": b.get(k, "<absent>")}
        for k in sorted(set(a) | set(b))
        if a.get(k, "<absent>") != b.get(k, "<absent>") and k != "resume.allow_changed"
    }


def read_previous_config(path: Path) -> dict | None:
    import yaml

    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def append_segment(path: Path, record: dict) -> None:
    rec = {"started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **record}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, default=str) + "\n")
