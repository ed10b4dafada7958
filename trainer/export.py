"""``python -m trainer export-hf CKPT OUT``: a trainer checkpoint as an HF Llama folder.

The checkpoint (any TP/PP/DP layout it was saved with) is loaded into a TP=1, PP=1 model in a world
of one process, converted with ``trainer.hf_convert`` and written with its tokenizer, so transformers,
vLLM and lm-eval load ``OUT`` directly. The embedding's padding rows are dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from infra.folders import RunFolder
from infra.log import get_logger
from trainer.model import Arch

log = get_logger(__name__)


def export_state_dict(
    sd: dict[str, torch.Tensor],
    arch: Arch,
    vocab_size: int,
    tokenizer,
    out: str | Path,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a full (TP=1) megatron state dict as an HF folder."""
    from trainer.hf_convert import megatron_full_to_hf, write_hf_folder

    hf = megatron_full_to_hf(arch, sd, vocab_size)
    return write_hf_folder(out, arch, hf, tokenizer, dtype=dtype)


def _find_tokenizer(ckpt_dir: Path) -> Path:
    # a checkpoint folder is run_dir/checkpoints/iter_XXXXXXX: the run folder is two levels up
    for cand in (ckpt_dir / "tokenizer", RunFolder(ckpt_dir.parent.parent).tokenizer):
        if (cand / "tokenizer_config.json").is_file() or (cand / "tokenizer.json").is_file():
            return cand
    raise FileNotFoundError(
        f"{ckpt_dir}: no tokenizer found (looked in the checkpoint folder and the run folder's tokenizer/)"
    )


def export_hf(checkpoint: str | Path, out: str | Path, dtype: str = "float32") -> Path:
    """Export a run folder's latest checkpoint (or a given ``iter_XXXXXXX`` folder) to ``out``.

    Args:
        checkpoint: run folder, its ``checkpoints/`` folder or one checkpoint folder.
        out: the HF folder to write (replaced atomically if it exists).
        dtype: ``float32`` or ``bfloat16`` weights in the written safetensors.
    """
    from infra.tokenizer import load_tokenizer
    from trainer.checkpoint import load_model_weights, resolve_checkpoint
    from trainer.distributed import init_distributed, shutdown
    from trainer.model import build_gpt, transformer_config

    ckpt_dir = resolve_checkpoint(checkpoint)
    state = json.loads((ckpt_dir / "trainer_state.json").read_text())
    arch = Arch(**state["arch"])
    init_distributed(tp=1, pp=1)
    try:
        # the local spec runs everywhere; its sharded keys equal the TE spec's, so any run loads
        config = transformer_config(arch, tp=1, pp=1, dtype=torch.float32, spec="local")
        # padded_vocab is the embedding's global row count, which a TP=1 model holds whole
        model = build_gpt(config, arch, "local", int(state["padded_vocab"]), state.get("seq_length", 2048))
        load_model_weights(ckpt_dir, model)
        sd = {k: v.float() for k, v in model.state_dict().items() if v is not None and not k.endswith("_extra_state")}
    finally:
        shutdown()
    tokenizer = load_tokenizer(_find_tokenizer(ckpt_dir), add_tag=True)
    if len(tokenizer) != state["vocab_size"]:
        raise ValueError(
            f"{ckpt_dir}: tokenizer has {len(tokenizer)} tokens, the checkpoint's model was trained "
            f"for {state['vocab_size']}"
        )
    out = export_state_dict(
        sd, arch, state["vocab_size"], tokenizer, out, dtype=torch.bfloat16 if dtype == "bfloat16" else torch.float32
    )
    log.info("exported %s (step %d) -> %s", ckpt_dir, state["step"], out)
    return out
