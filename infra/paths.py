"""Where the project keeps what its set-up builds: virtualenvs, prepared models, caches.

Every location can be moved by an environment variable so that clusters can point at shared storage.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Project cache (prepared models, test fixtures): ``SPT_CACHE`` or ``<repo>/.cache``."""
    p = Path(os.environ.get("SPT_CACHE", REPO_ROOT / ".cache"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def vllm_python() -> Path:
    """Python of the separate vLLM virtualenv: ``SPT_VLLM_PYTHON`` or ``<repo>/.venv-vllm/bin/python``."""
    return Path(os.environ.get("SPT_VLLM_PYTHON", REPO_ROOT / ".venv-vllm" / "bin" / "python"))


def smollm2_dir() -> Path:
    """Plain HF Llama folder of SmolLM2-135M-Instruct made by ``python -m infra prepare-model``."""
    return Path(os.environ.get("SPT_SMOLLM2_DIR", cache_dir() / "models" / "smollm2-135m-instruct"))


def default_corpus() -> Path:
    """The embedded default corpus (JSONL with text, id, lang, score) that drives demo and tests."""
    return REPO_ROOT / "datagen" / "data" / "default_corpus.jsonl"
