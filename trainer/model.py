"""The trainer's model: a megatron-core ``GPTModel`` in the Llama / SmolLM2 shape.

RMSNorm, SwiGLU MLP, rotary position embeddings, no biases, tied input/output embeddings. The
architecture lives in ``PRESETS`` (plain numbers, no parallelism); ``build_model`` turns a preset plus
the parallel and precision settings into megatron objects. Layer-spec choice is in
``trainer.layer_specs``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from infra.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Arch:
    """Architecture numbers of a Llama-shaped decoder (HF names in comments)."""

    num_layers: int  # num_hidden_layers
    hidden_size: int  # hidden_size
    num_attention_heads: int  # num_attention_heads
    num_query_groups: int  # num_key_value_heads
    ffn_hidden_size: int  # intermediate_size
    rope_theta: float = 10000.0  # rope_theta
    norm_eps: float = 1e-5  # rms_norm_eps
    max_position_embeddings: int = 2048

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


PRESETS: dict[str, Arch] = {
    # 2 layers, hidden 64: a CPU training step takes tens of milliseconds; for tests and CI.
    "tiny": Arch(
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        num_query_groups=2,
        ffn_hidden_size=176,
        rope_theta=10000.0,
        max_position_embeddings=4096,
    ),
    # The SmolLM2 family (HuggingFaceTB/SmolLM2-*/config.json).
    "smollm2-135m": Arch(30, 576, 9, 3, 1536, rope_theta=100000.0, max_position_embeddings=8192),
    "smollm2-360m": Arch(32, 960, 15, 5, 2560, rope_theta=100000.0, max_position_embeddings=8192),
    "smollm2-1.7b": Arch(24, 2048, 32, 32, 8192, rope_theta=130000.0, max_position_embeddings=8192),
}


def resolve_arch(preset: str, **overrides) -> Arch:
    """A preset with optional field overrides (None values are ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"model.preset {preset!r} is unknown; presets: {', '.join(PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(PRESETS[preset], **changes)


def arch_of(model_cfg, init_hf: str | Path | None = None) -> Arch:
    """The architecture a run trains: ``init_hf``'s config.json when given, else ``model.preset`` with the
    config's field overrides. One resolution for the trainer and for launch's check before the queue.
    Raises ValueError (unknown preset, unreadable HF config) or OSError."""
    if init_hf:
        import json

        return arch_from_hf_config(json.loads((Path(init_hf) / "config.json").read_text()))
    m = model_cfg
    return resolve_arch(
        m.preset,
        num_layers=m.num_layers,
        hidden_size=m.hidden_size,
        num_attention_heads=m.num_attention_heads,
        num_query_groups=m.num_query_groups,
        ffn_hidden_size=m.ffn_hidden_size,
        rope_theta=m.rope_theta,
    )


def arch_from_hf_config(cfg: dict) -> Arch:
    """Architecture of an HF ``LlamaForCausalLM`` config (dict from config.json)."""
    theta = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    return Arch(
        num_layers=cfg["num_hidden_layers"],
        hidden_size=cfg["hidden_size"],
        num_attention_heads=cfg["num_attention_heads"],
        num_query_groups=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
        ffn_hidden_size=cfg["intermediate_size"],
        rope_theta=float(theta),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
    )


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Round the vocabulary up as megatron does, so every TP shard of the embedding is equal."""
    multiple = divisible_by * tp
    return ((vocab_size + multiple - 1) // multiple) * multiple


def transformer_config(
    arch: Arch,
    *,
    tp: int = 1,
    pp: int = 1,
    dtype: torch.dtype = torch.float32,
    init_std: float = 0.02,
    spec: str = "local",
    fp8: dict | None = None,
    calculate_per_token_loss: bool = True,
    fusions: dict | None = None,
):
    """The megatron ``TransformerConfig`` for an architecture and parallel layout.

    On CPU (no CUDA) the settings megatron needs there are applied: CPU initialisation, no fused
    kernels, no gradient-accumulation fusion. ``fusions`` (``trainer.fusions.resolve_fusions``) turns
    megatron's fused kernels on; without it they stay off (the SwiGLU fusion on with TE on GPU, as
    before).
    """
    from megatron.core.transformer.transformer_config import TransformerConfig

    on_gpu = torch.cuda.is_available()
    kw = dict(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_query_groups,
        ffn_hidden_size=arch.ffn_hidden_size,
        kv_channels=arch.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=arch.norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=init_std,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        sequence_parallel=on_gpu and tp > 1,
        params_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        pipeline_dtype=dtype,
        calculate_per_token_loss=calculate_per_token_loss,
        # the fused kernels need CUDA (and apex/TE); the plain paths are exact on CPU
        use_cpu_initialization=not on_gpu,
        gradient_accumulation_fusion=False,
        bias_activation_fusion=on_gpu and spec == "te",
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        cross_entropy_loss_fusion=False,
    )
    kw.update(fusions or {})
    kw.update(fp8 or {})
    return TransformerConfig(**kw)


def build_gpt(
    config,
    arch: Arch,
    spec_name: str,
    vocab_size: int,
    max_seq_length: int,
    pre_process: bool = True,
    post_process: bool = True,
):
    """Instantiate the megatron ``GPTModel`` (one pipeline stage) for a resolved spec name."""
    from megatron.core.models.gpt import GPTModel

    from trainer.layer_specs import build_layer_spec

    return GPTModel(
        config=config,
        transformer_layer_spec=build_layer_spec(spec_name),
        vocab_size=vocab_size,
        max_sequence_length=max(max_seq_length, arch.max_position_embeddings),
        pre_process=pre_process,
        post_process=post_process,
        parallel_output=True,
        share_embeddings_and_output_weights=True,
        position_embedding_type="rope",
        rotary_base=int(arch.rope_theta) if float(arch.rope_theta).is_integer() else arch.rope_theta,
    )


def count_parameters(arch: Arch, vocab_size: int) -> int:
    """Parameters of the tied model (embeddings counted once)."""
    h, f, L = arch.hidden_size, arch.ffn_hidden_size, arch.num_layers
    kv = arch.num_query_groups * arch.head_dim
    per_layer = h * (h + 2 * kv) + h * h + 3 * h * f + 2 * h
    return L * per_layer + vocab_size * h + h


def flops_per_token(arch: Arch, vocab_size: int, seq_length: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), causal attention counted in full
    as in the PaLM / Megatron MFU convention: 6 * non-embedding matmul params + 6 * logits + attention."""
    h, f, L = arch.hidden_size, arch.ffn_hidden_size, arch.num_layers
    kv = arch.num_query_groups * arch.head_dim
    matmul_params = L * (h * (h + 2 * kv) + h * h + 3 * h * f)
    attn = L * 2 * 2 * seq_length * h  # QK^T and AV, 2 FLOPs per MAC
    return 6.0 * matmul_params + 6.0 * vocab_size * h + 3.0 * attn


def compile_layers(gpt, **compile_kwargs) -> int:
    """``torch.compile`` the forward of each transformer layer of a megatron ``GPTModel`` (in place;
    returns how many). Compiling per layer, not the whole model, keeps the module boundaries where
    megatron's DDP hooks act (a bucket's gradient reduce starts when the layer's backward has produced
    its gradients; parameter all-gathers are waited for before the layer runs), so their overlap with
    compute survives, as in torchtitan. Identical layers share one compiled graph."""
    decoder = getattr(gpt, "decoder", None)
    if decoder is None:
        return 0
    for layer in decoder.layers:
        layer.forward = torch.compile(layer.forward, **compile_kwargs)
    return len(decoder.layers)


def hoist_param_gather_hooks(ddp, gpt) -> int:
    """With ``overlap_param_gather``, megatron's DDP registers a forward pre-hook on every submodule
    that waits for its parameters' all-gather; inside a compiled layer those hooks would be traced
    (communication handles break the graph at every linear layer). This replaces, for the modules of
    each compiled layer, the per-module hooks by one pre-hook on the layer that waits for all of the
    layer's buckets before its compiled forward runs (and dispatches the next bucket's gather, as
    megatron's hook does). Returns the number of layers hooked. ``ddp.disable_forward_pre_hook`` is
    not used afterwards (the trainer completes gathers with ``start_param_sync(force_sync=True)``)."""
    if not getattr(ddp, "use_forward_hook", False):
        return 0
    handles = ddp.remove_forward_pre_hook_handles
    skip_next = ddp.ddp_config.align_param_gather
    n = 0
    for layer in gpt.decoder.layers:
        for m in layer.modules():
            h = handles.pop(m, None)
            if h is not None:
                h.remove()

        def hook(module, *unused):
            for p in module.parameters():
                group = ddp.param_to_bucket_group.get(p)
                if group is not None:
                    group.finish_param_sync(skip_next_bucket_dispatch=skip_next)

        handles[layer] = layer.register_forward_pre_hook(hook)
        n += 1
    return n


def mask_padded_vocab(model, vocab_size: int, tp_rank: int = 0, tp_size: int = 1):
    """Give the embedding's padding rows (ids >= ``vocab_size``) a minimal logit; returns the hook's
    handle (None when this rank holds no padding rows or no output layer).

    megatron pads the vocabulary so that TP shards are equal; with tied embeddings those rows would
    otherwise produce real logits (0 for zero rows) that take probability mass in the loss and drift
    in training, although the tokenizer can never emit them and the HF export drops them. Masking them
    keeps the trained distribution equal to the exported one (and an imported HF model's loss equal
    to transformers' loss from the first step).

    The hook fills only the padding columns of the logits in place (``logits[..., start:]``, a view of
    ``batch * seq * padding`` elements) instead of a ``masked_fill`` pass over every logit: the values
    and the gradients are those of the masked_fill (the filled columns pass no gradient), and the
    linear layer's backward does not need its output, so the in-place write is safe for autograd.
    """
    out_layer = getattr(model, "output_layer", None)
    if out_layer is None:
        return None  # not the last pipeline stage
    weight = out_layer.weight if out_layer.weight is not None else model.embedding.word_embeddings.weight
    shard = weight.shape[0]
    start = max(0, min(shard, vocab_size - tp_rank * shard))
    if start == shard:
        return None  # this TP rank holds no padding rows

    def hook(module, inputs, output):
        logits, bias = output
        logits[..., start:].fill_(torch.finfo(logits.dtype).min)
        return logits, bias

    return out_layer.register_forward_hook(hook)
