"""Weights between HF ``LlamaForCausalLM`` folders and the trainer's megatron ``GPTModel``.

Name and layout mapping (megatron local/torch spec names; the TE spec fuses the two norms into the
following linear layers, ``linear_qkv.layer_norm_weight`` and ``linear_fc1.layer_norm_weight``):

==========================================  ==================================================
megatron                                    HF Llama
==========================================  ==================================================
embedding.word_embeddings.weight [Vp, h]    model.embed_tokens.weight [V, h] (+ tag row, padding)
decoder.layers.i.input_layernorm.weight     model.layers.i.input_layernorm.weight
...self_attention.linear_qkv.weight         q_proj, k_proj, v_proj, interleaved per KV group:
                                            [g0: q heads of g0, k, v | g1: ... ]
...self_attention.linear_proj.weight        o_proj
decoder.layers.i.pre_mlp_layernorm.weight   post_attention_layernorm
...mlp.linear_fc1.weight [2f, h]            [gate_proj; up_proj]
...mlp.linear_fc2.weight                    down_proj
decoder.final_layernorm.weight              model.norm.weight
(output layer tied to the embedding)        lm_head.weight (tied)
==========================================  ==================================================

Both sides use the rotate-half RoPE convention, so q/k rows need no permutation. Under tensor
parallelism column-parallel weights (qkv, fc1, embedding) are split along rows and row-parallel
weights (proj, fc2) along columns; fc1 is split as gate and up halves separately because megatron
keeps ``[gate_r; up_r]`` on TP rank r.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trainer.model import Arch, arch_from_hf_config

_LOCAL_NORM_TO_TE = {
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}


def read_hf_folder(hf_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json as a dict and all safetensors weights of an HF folder."""
    from safetensors.torch import load_file

    hf_dir = Path(hf_dir)
    cfg_path = hf_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{hf_dir}: no config.json (expected an HF Llama folder)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("model_type") not in ("llama", "mistral", None) and "Llama" not in str(cfg.get("architectures")):
        raise ValueError(f"{cfg_path}: model_type {cfg.get('model_type')!r} is not a Llama-shaped model")
    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{hf_dir}: no *.safetensors weights")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(str(f)))
    return cfg, weights


def _pad_embedding(emb: torch.Tensor, vocab_size: int, padded: int) -> torch.Tensor:
    """Grow an embedding to ``padded`` rows. Rows for new real tokens (e.g. the tag token added to
    the tokenizer) start at the mean embedding, a common neutral choice; padding rows are zero."""
    out = torch.zeros(padded, emb.shape[1], dtype=emb.dtype)
    n = min(emb.shape[0], vocab_size)
    out[:n] = emb[:n]
    if vocab_size > emb.shape[0]:
        out[emb.shape[0] : vocab_size] = emb.mean(dim=0, keepdim=True)
    return out


def hf_to_megatron_full(
    arch: Arch, weights: dict[str, torch.Tensor], vocab_size: int, padded_vocab: int
) -> dict[str, torch.Tensor]:
    """Full (TP=1) megatron state dict with *global* layer indices from HF Llama weights."""
    g, hd = arch.num_query_groups, arch.head_dim
    qpg = arch.num_attention_heads // g
    h = arch.hidden_size
    out = {
        "embedding.word_embeddings.weight": _pad_embedding(
            weights["model.embed_tokens.weight"], vocab_size, padded_vocab
        ),
        "decoder.final_layernorm.weight": weights["model.norm.weight"],
    }
    for i in range(arch.num_layers):
        p = f"model.layers.{i}."
        q = weights[p + "self_attn.q_proj.weight"].view(g, qpg * hd, h)
        k = weights[p + "self_attn.k_proj.weight"].view(g, hd, h)
        v = weights[p + "self_attn.v_proj.weight"].view(g, hd, h)
        m = f"decoder.layers.{i}."
        out[m + "input_layernorm.weight"] = weights[p + "input_layernorm.weight"]
        out[m + "self_attention.linear_qkv.weight"] = torch.cat([q, k, v], dim=1).reshape(-1, h)
        out[m + "self_attention.linear_proj.weight"] = weights[p + "self_attn.o_proj.weight"]
        out[m + "pre_mlp_layernorm.weight"] = weights[p + "post_attention_layernorm.weight"]
        out[m + "mlp.linear_fc1.weight"] = torch.cat(
            [weights[p + "mlp.gate_proj.weight"], weights[p + "mlp.up_proj.weight"]], dim=0
        )
        out[m + "mlp.linear_fc2.weight"] = weights[p + "mlp.down_proj.weight"]
    return out


def megatron_full_to_hf(arch: Arch, sd: dict[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    """HF Llama weights from a full (TP=1, all layers) megatron state dict; the padding rows of the
    embedding are dropped (``vocab_size`` = tokenizer length)."""
    g, hd = arch.num_query_groups, arch.head_dim
    qpg = arch.num_attention_heads // g
    h, f = arch.hidden_size, arch.ffn_hidden_size

    def get(name):
        if name in sd:
            return sd[name]
        for local, te in _LOCAL_NORM_TO_TE.items():  # TE-spec state dict names
            if name.endswith(local):
                return sd[name[: -len(local)] + te]
        raise KeyError(name)

    emb = sd["embedding.word_embeddings.weight"][:vocab_size].clone()
    out = {
        "model.embed_tokens.weight": emb,
        "model.norm.weight": sd["decoder.final_layernorm.weight"].clone(),
        "lm_head.weight": emb,
    }
    for i in range(arch.num_layers):
        m = f"decoder.layers.{i}."
        p = f"model.layers.{i}."
        qkv = get(m + "self_attention.linear_qkv.weight").view(g, (qpg + 2) * hd, h)
        out[p + "self_attn.q_proj.weight"] = qkv[:, : qpg * hd].reshape(-1, h).clone()
        out[p + "self_attn.k_proj.weight"] = qkv[:, qpg * hd : (qpg + 1) * hd].reshape(-1, h).clone()
        out[p + "self_attn.v_proj.weight"] = qkv[:, (qpg + 1) * hd :].reshape(-1, h).clone()
        out[p + "self_attn.o_proj.weight"] = get(m + "self_attention.linear_proj.weight").clone()
        out[p + "input_layernorm.weight"] = get(m + "input_layernorm.weight").clone()
        out[p + "post_attention_layernorm.weight"] = get(m + "pre_mlp_layernorm.weight").clone()
        fc1 = get(m + "mlp.linear_fc1.weight")
        out[p + "mlp.gate_proj.weight"] = fc1[:f].clone()
        out[p + "mlp.up_proj.weight"] = fc1[f:].clone()
        out[p + "mlp.down_proj.weight"] = get(m + "mlp.linear_fc2.weight").clone()
    return out


def _tp_slice(name: str, t: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    if size == 1 or t.dim() < 2:
        return t  # norms are replicated
    if name.endswith("linear_fc1.weight"):
        gate, up = t.chunk(2, dim=0)
        return torch.cat([gate.chunk(size, dim=0)[rank], up.chunk(size, dim=0)[rank]], dim=0)
    if name.endswith(("linear_proj.weight", "linear_fc2.weight")):
        return t.chunk(size, dim=1)[rank]
    return t.chunk(size, dim=0)[rank]  # qkv (whole KV groups per rank), embedding rows


@torch.no_grad()
def load_hf_into_model(
    model: torch.nn.Module, hf_dir: str | Path, vocab_size: int, padded_vocab: int, tp_rank: int = 0, tp_size: int = 1
) -> None:
    """Copy an HF Llama folder's weights into this rank's megatron ``GPTModel`` (one PP stage, one TP
    shard). Every model tensor must be covered; a missing or mis-shaped tensor is an error."""
    cfg, weights = read_hf_folder(hf_dir)
    arch = arch_from_hf_config(cfg)
    full = hf_to_megatron_full(arch, weights, vocab_size, padded_vocab)
    target = model.state_dict()
    # Stage-local layer index -> global index (pipeline stages hold a contiguous range of layers).
    local_to_global = {}
    for j, layer in enumerate(model.decoder.layers):
        local_to_global[j] = layer.layer_number - 1
    new_sd = {}
    for name, tensor in target.items():
        if name.endswith("_extra_state") or tensor is None:
            continue
        src_name = name
        if name.startswith("decoder.layers."):
            rest = name[len("decoder.layers.") :]
            j, tail = rest.split(".", 1)
            src_name = f"decoder.layers.{local_to_global[int(j)]}.{tail}"
            if src_name not in full:
                for local, te in _LOCAL_NORM_TO_TE.items():
                    if tail == te:
                        src_name = f"decoder.layers.{local_to_global[int(j)]}.{local}"
        elif name == "output_layer.weight":
            src_name = "embedding.word_embeddings.weight"  # tied; the last PP stage keeps a copy
        if src_name not in full:
            raise KeyError(f"{hf_dir}: no HF weight maps to megatron tensor {name}")
        value = _tp_slice(src_name, full[src_name], tp_rank, tp_size)
        if tuple(value.shape) != tuple(tensor.shape):
            raise ValueError(
                f"{hf_dir}: {name} has shape {tuple(value.shape)} after TP slicing, "
                f"the model expects {tuple(tensor.shape)} (architecture mismatch?)"
            )
        new_sd[name] = value.to(tensor.dtype)
    missing, unexpected = model.load_state_dict(new_sd, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise RuntimeError(f"HF import left tensors unset: missing={missing} unexpected={unexpected}")


def write_hf_folder(
    out_dir: str | Path, arch: Arch, hf_weights: dict[str, torch.Tensor], tokenizer, dtype: torch.dtype = torch.float32
) -> Path:
    """Save an HF ``LlamaForCausalLM`` folder (config, safetensors, tokenizer) that transformers,
    vLLM and lm-eval load. Written to a temporary name and renamed, so a crash leaves no half folder."""
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    vocab = hf_weights["model.embed_tokens.weight"].shape[0]
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.ffn_hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_query_groups,
        head_dim=arch.head_dim,
        hidden_act="silu",
        max_position_embeddings=arch.max_position_embeddings,
        rms_norm_eps=arch.norm_eps,
        rope_theta=arch.rope_theta,
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
    )
    # The rope theta must survive whichever config schema this transformers version writes.
    rp = getattr(config, "rope_parameters", None)
    if isinstance(rp, dict):
        rp["rope_theta"] = arch.rope_theta
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict({k: v.to(dtype) for k, v in hf_weights.items()}, strict=True, assign=True)
    model.tie_weights()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
