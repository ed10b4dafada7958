"""What makes a checkpoint folder trustworthy before anything in it is loaded.

* **Checksums.** ``manifest.json`` lists every file of the checkpoint with its size and SHA-256; it is
  written last, before the folder is renamed into place. ``verify_files`` checks a share of the files
  (each rank hashes ``files[rank::world]``, so a large checkpoint is hashed in parallel).
* **No code from a checkpoint.** The formats megatron and torch write hold pickles in three places:
  the dist-checkpoint ``.metadata`` (read by torch with ``pickle.load``), the non-tensor items inside
  ``*.distcp`` shards (read with ``torch.load(weights_only=False)``) and ``common.pt``.
  ``check_pickles`` reads each of them first with an unpickler that can only build the classes those
  formats use (``.metadata``) or with ``torch.load(weights_only=True)`` (the rest); a file that asks for
  anything else is refused before megatron opens it. The trainer's own per-rank state (RNG, data
  loader) is JSON.
* **``latest``** may only name a checkpoint folder of the same ``checkpoints/`` folder.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
RANK_STATE_VERSION = 1
ITER_RE = re.compile(r"^iter_(\d{7})$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the folder and the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file that asks to build objects no checkpoint of this trainer holds."""


# ----------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_files(ckpt_dir: Path) -> list[str]:
    """Relative paths of every file in ``ckpt_dir`` except the manifest, sorted."""
    return sorted(str(p.relative_to(ckpt_dir)) for p in ckpt_dir.rglob("*") if p.is_file() and p.name != MANIFEST)


def hash_share(ckpt_dir: Path, files: list[str], rank: int, world: int) -> dict:
    """``{path: {"bytes", "sha256"}}`` for this rank's share ``files[rank::world]``."""
    out = {}
    for rel in files[rank::world]:
        p = ckpt_dir / rel
        out[rel] = {"bytes": p.stat().st_size, "sha256": file_digest(p)}
    return out


def write_manifest(ckpt_dir: Path, entries: dict) -> None:
    data = {"version": MANIFEST_VERSION, "files": dict(sorted(entries.items()))}
    (ckpt_dir / MANIFEST).write_text(json.dumps(data, indent=1) + "\n")


def read_manifest(ckpt_dir: Path) -> dict | None:
    """The manifest's ``files``; None when the checkpoint has none (written before checksums existed)."""
    path = ckpt_dir / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        files = data["files"]
        if data.get("version") != MANIFEST_VERSION or not isinstance(files, dict):
            raise ValueError(f"unknown manifest version {data.get('version')!r}")
        for rel, e in files.items():
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise ValueError(f"entry {rel!r} is outside the checkpoint")
            if not (isinstance(e.get("bytes"), int) and isinstance(e.get("sha256"), str)):
                raise ValueError(f"entry {rel!r} lacks bytes/sha256")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable checksum manifest ({e})") from e
    return files


def verify_share(ckpt_dir: Path, files: dict, rank: int, world: int) -> list[str]:
    """Problems found in this rank's share of the manifest's files (empty when all match)."""
    problems = []
    for rel in sorted(files)[rank::world]:
        want, p = files[rel], ckpt_dir / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif p.stat().st_size != want["bytes"]:
            problems.append(f"{rel}: {p.stat().st_size} bytes, the manifest says {want['bytes']}")
        elif file_digest(p) != want["sha256"]:
            problems.append(f"{rel}: SHA-256 differs from the manifest (corrupted)")
    return problems


# ----------------------------------------------------------------------------------------------
# Pickles megatron and torch read
# ----------------------------------------------------------------------------------------------

# Everything torch's dist-checkpoint metadata pickles (torch 2.6-2.14); nothing here runs code.
_METADATA_CLASSES = {
    "torch": {"Size", "float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8",
              "bool", "float8_e4m3fn", "float8_e5m2", "strided", "contiguous_format", "preserve_format",
              "channels_last", "channels_last_3d"},
    "torch.serialization": {"_get_layout"},
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "MetadataIndex", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorStorageMetadata",
        "TensorProperties", "StorageMeta", "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.planner": {"SavePlan", "TensorWriteData", "WriteItem", "WriteItemType"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "collections": {"OrderedDict"},
    "builtins": {"set", "frozenset", "tuple", "list", "dict", "slice"},
}  # fmt: skip


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if name in _METADATA_CLASSES.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to build {module}.{name}")


def read_dcp_metadata(path: Path):
    """torch's dist-checkpoint ``.metadata``, read with the restricted unpickler."""
    try:
        with open(path, "rb") as f:
            return _MetadataUnpickler(f).load()
    except pickle.UnpicklingError as e:
        if "refusing" in str(e):
            raise UnsafeCheckpointError(f"{path}: {e}; a dist-checkpoint metadata file never holds it") from e
        raise CheckpointError(f"{path}: unreadable dist-checkpoint metadata ({e})") from e
    except (EOFError, OSError, ValueError, AttributeError, TypeError, IndexError) as e:
        raise CheckpointError(f"{path}: unreadable dist-checkpoint metadata ({type(e).__name__}: {e})") from e


def weights_only_reason(e: Exception) -> str:
    """The line of a weights-only refusal that names what the file asked for."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    named = [ln for ln in lines if "Unsupported" in ln or "GLOBAL" in ln]
    return (named or lines or [type(e).__name__])[0][:300]


def _weights_only(data, where: str):
    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else data
        return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(f"{where}: weights-only reader refused it ({weights_only_reason(e)})") from e
    except Exception as e:  # truncated zip, bad magic...: torch raises many kinds
        raise CheckpointError(f"{where}: unreadable ({type(e).__name__}: {e})") from e


def check_pickles(ckpt_dir: Path) -> None:
    """Read every pickle a megatron dist checkpoint holds in a mode that cannot run code.

    Raises UnsafeCheckpointError for a file that asks for anything else, CheckpointError for a file
    that cannot be read at all. Files are read, nothing is loaded into the model.
    """
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata

    meta_path = ckpt_dir / ".metadata"
    if not meta_path.is_file():
        raise CheckpointError(f"{ckpt_dir}: no .metadata (not a complete dist checkpoint)")
    md = read_dcp_metadata(meta_path)
    if not isinstance(md, Metadata):
        raise CheckpointError(f"{meta_path}: holds a {type(md).__name__}, not dist-checkpoint metadata")
    byte_keys = {k for k, v in md.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata)}
    for index, info in (md.storage_data or {}).items():
        if index.fqn not in byte_keys:
            continue
        rel = Path(info.relative_path)
        if rel.is_absolute() or ".." in rel.parts:
            raise UnsafeCheckpointError(f"{meta_path}: item {index.fqn} points outside the checkpoint ({rel})")
        if getattr(info, "transform_descriptors", None):
            raise CheckpointError(f"{ckpt_dir / rel}: item {index.fqn} is stored transformed (never written here)")
        with open(ckpt_dir / rel, "rb") as f:
            f.seek(info.offset)
            data = f.read(info.length)
        if len(data) != info.length:
            raise CheckpointError(f"{ckpt_dir / rel}: item {index.fqn} is cut short (truncated shard)")
        _weights_only(data, f"{ckpt_dir / rel}, item {index.fqn}")
    common = ckpt_dir / "common.pt"
    if common.exists():
        _weights_only(common, str(common))


# ----------------------------------------------------------------------------------------------
# Per-rank state as JSON
# ----------------------------------------------------------------------------------------------


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def encode_rng(state: dict) -> dict:
    """The RNG states of ``checkpoint.rng_state()`` as JSON values."""
    version, internal, gauss = state["python"]
    name, keys, pos, has_gauss, cached = state["numpy"]
    out = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {"name": name, "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": _b64(state["torch"]),
    }  # fmt: skip
    if "cuda" in state:
        out["cuda"] = _b64(state["cuda"])
    if "tracker" in state:
        out["tracker"] = {k: _b64(v) for k, v in state["tracker"].items()}
    return out


def decode_rng(d: dict) -> dict:
    p, n = d["python"], d["numpy"]
    out = {
        "python": (int(p["version"]), tuple(int(x) for x in p["state"]), p["gauss"]),
        "numpy": (str(n["name"]), np.asarray(n["keys"], dtype=np.uint32), int(n["pos"]), int(n["has_gauss"]),
                  float(n["cached_gaussian"])),
        "torch": _unb64(d["torch"]),
    }  # fmt: skip
    if "cuda" in d:
        out["cuda"] = _unb64(d["cuda"])
    if "tracker" in d:
        out["tracker"] = {k: _unb64(v) for k, v in d["tracker"].items()}
    return out


def rank_state_file(ckpt_dir: Path, rank: int) -> Path:
    return ckpt_dir / "ranks" / f"rank_{rank:05d}.json"


def write_rank_state(path: Path, rng: dict, data: dict | None) -> None:
    try:
        text = json.dumps({"version": RANK_STATE_VERSION, "rng": encode_rng(rng), "data": data})
    except TypeError as e:
        raise CheckpointError(f"{path}: the data loader's state is not JSON ({e})") from e
    path.write_text(text)


def read_rank_state(path: Path) -> tuple[dict, dict | None]:
    """``(rng_state, loader_state)`` of one rank file."""
    try:
        d = json.loads(path.read_bytes().decode("utf-8"))
        if d.get("version") != RANK_STATE_VERSION:
            raise ValueError(f"unknown version {d.get('version')!r}")
        rng = decode_rng(d["rng"])
        random.Random().setstate(rng["python"])  # validates the Mersenne-Twister state's shape
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: missing") from e
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable rank state ({type(e).__name__}: {e})") from e
    return rng, d.get("data")


# ----------------------------------------------------------------------------------------------
# latest
# ----------------------------------------------------------------------------------------------


def read_latest(latest: Path) -> tuple[str | None, str | None]:
    """``(name, problem)``: the checkpoint name ``latest`` holds, or None and why it cannot be used."""
    raw = latest.read_bytes()[:200]
    try:
        name = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, f"holds {len(raw)} bytes that are not text"
    if not ITER_RE.match(name):
        return None, f"holds {name[:80]!r}, not the name of a checkpoint folder beside it (iter_NNNNNNN)"
    return name, None
