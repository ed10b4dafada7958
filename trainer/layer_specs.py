"""Every layer-spec choice of the trainer, in one module.

Three specs build the same Llama-shaped GPT block (RMSNorm, SwiGLU, RoPE, no biases):

``te``     Transformer-Engine modules (fused LayerNorm+Linear, TE attention, FP8 capable). Needs TE and
           CUDA. TE is imported only here and only when asked for: a TE without CUDA libraries makes
           ``import megatron.core`` crash, so CPU machines must never have it installed.
``torch``  megatron-core's local modules with the core attention replaced by
           ``torch.nn.functional.scaled_dot_product_attention`` (flash / cuDNN / memory-efficient
           kernels on Hopper). For GPUs without TE.
``local``  megatron-core's local spec unchanged (unfused softmax attention). The CPU path.

``auto`` picks the best available: te (CUDA + TE), else torch (CUDA), else local. There is no
control flow inside the specs themselves; ``select_spec`` is the only place that decides.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

SPECS = ("auto", "te", "torch", "local")


_TE_NAMES = ("transformer_engine", "transformer_engine.pytorch", "transformer_engine_torch")
_te_state: dict = {}


def guard_transformer_engine() -> str | None:
    """Import Transformer-Engine once, before megatron does, when it is installed and CUDA exists.

    megatron-core imports TE at module load and only catches ``ImportError``; a TE that is installed
    but broken (a missing ``libcudnn``, a build for another torch or CUDA) raises something else and
    would break every spec, ``local`` and ``torch`` included. When the import fails, TE is hidden
    (``sys.modules[name] = None``: later imports raise ``ImportError``), so megatron takes its path
    without TE, and the error is returned (``model.spec=te`` then names it). Without CUDA, TE is hidden
    without being imported. Returns None when TE is absent or imports."""
    import sys

    if "checked" in _te_state:
        return _te_state["error"]
    error = None
    if importlib.util.find_spec("transformer_engine") is not None:
        if not torch.cuda.is_available():
            error = "no CUDA device (Transformer-Engine is not loaded without one)"
        else:
            try:
                import transformer_engine.pytorch  # noqa: F401
            except Exception as e:  # any failure: megatron must not see a half-imported TE
                error = f"Transformer-Engine is installed but does not import: {type(e).__name__}: {e}"
        if error is not None:
            for name in [n for n in sys.modules if n == "transformer_engine" or n.startswith("transformer_engine")]:
                del sys.modules[name]
            for name in _TE_NAMES:
                sys.modules[name] = None
            if torch.cuda.is_available():
                import logging

                logging.getLogger(__name__).warning("%s; running without it", error)
    _te_state.update(checked=True, error=error)
    return error


def te_available() -> bool:
    """True when Transformer-Engine is installed, imports, and CUDA exists (without CUDA, TE must not load)."""
    return importlib.util.find_spec("transformer_engine") is not None and guard_transformer_engine() is None


def resolve_spec_name(name: str) -> str:
    """Turn ``auto`` into the best available spec and check that an explicit choice can run."""
    if name not in SPECS:
        raise ValueError(f"model.spec must be one of {list(SPECS)}, got {name!r}")
    if name == "auto":
        if te_available():
            return "te"
        return "torch" if torch.cuda.is_available() else "local"
    if name == "te" and not te_available():
        why = _te_state.get("error") or "Transformer-Engine is not installed"
        raise RuntimeError(
            f"model.spec=te needs Transformer-Engine and CUDA ({why}; "
            "pip install 'transformer-engine[pytorch]' on a CUDA machine); "
            "use model.spec=torch or auto"
        )
    return name


class SDPACoreAttention(torch.nn.Module):
    """Core attention computed by PyTorch SDPA, with megatron's ``DotProductAttention`` interface.

    Args:
        config: the model's ``TransformerConfig`` (heads, kv groups, TP size are read from it).
        layer_number: 1-based layer index (unused; part of megatron's interface).
        attn_mask_type: must be causal; padding masks are not needed by a packed-sequence trainer.
        attention_type: ``"self"``.
        attention_dropout: dropout probability (defaults to ``config.attention_dropout``).
        softmax_scale: defaults to 1/sqrt(head_dim), as SDPA does.
        cp_comm_type, pg_collection: accepted for interface compatibility; context parallelism is
            not supported by this module.

    Inputs are megatron's ``[seq, batch, heads, head_dim]`` query and ``[seq, batch, groups, head_dim]``
    key/value; the output is ``[seq, batch, heads * head_dim]`` as the following projection expects.
    """

    def __init__(
        self,
        config,
        layer_number: int,
        attn_mask_type,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection=None,
    ):
        super().__init__()
        from megatron.core.transformer.enums import AttnMaskType

        if attn_mask_type != AttnMaskType.causal:
            raise ValueError(f"SDPACoreAttention supports causal masks only, got {attn_mask_type}")
        if getattr(config, "context_parallel_size", 1) > 1:
            raise ValueError("SDPACoreAttention does not support context parallelism")
        self.config = config
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        self.softmax_scale = softmax_scale

    def forward(
        self, query, key, value, attention_mask=None, attn_mask_type=None, attention_bias=None, packed_seq_params=None
    ):
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("SDPACoreAttention does not support packed sequences or attention bias")
        # [s, b, h, d] -> [b, h, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        kw = dict(
            is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.softmax_scale,
            enable_gqa=q.shape[1] != k.shape[1],
        )
        if q.is_cuda and torch.are_deterministic_algorithms_enabled():
            # flash and memory-efficient attention backward are not deterministic (train.deterministic)
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.MATH):
                out = F.scaled_dot_product_attention(q, k, v, **kw)
        else:
            out = F.scaled_dot_product_attention(q, k, v, **kw)
        s, b = query.shape[0], query.shape[1]
        return out.permute(2, 0, 1, 3).reshape(s, b, -1)


def build_layer_spec(name: str):
    """The megatron ``ModuleSpec`` of one transformer layer for a resolved spec name."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    if name == "te":
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec()
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    if name == "torch":
        spec.submodules.self_attention.submodules.core_attention = SDPACoreAttention
    elif name != "local":
        raise ValueError(f"unknown resolved spec {name!r}")
    return spec


def fp8_config_kwargs(fp8: str | None, recipe: str, spec: str) -> dict:
    """``TransformerConfig`` FP8 fields: Transformer-Engine's FP8 for the te spec; none for the torch
    spec, whose FP8 is torchao's (``trainer.fp8.convert_to_float8``, applied to the built model).

    Args:
        fp8: None (off), ``"e4m3"`` or ``"hybrid"`` (e4m3 forward, e5m2 backward).
        recipe: ``delayed``, ``tensorwise``, ``mxfp8`` or ``blockwise`` (TE recipes), or torchao's
            ``tensorwise`` / ``rowwise``.
        spec: the resolved spec name.
    """
    if not fp8:
        return {}
    if spec == "torch":
        return {}
    if spec != "te":
        raise ValueError(f"model.fp8={fp8!r} needs model.spec=te or torch (resolved spec is {spec!r})")
    return {"fp8": fp8, "fp8_recipe": recipe}
