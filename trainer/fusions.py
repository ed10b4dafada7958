"""megatron-core's fused kernels on the trainer's path, each enabled only where it exists.

``model.fusions.<name>``: ``null`` (the default) turns a fusion on where it is available on this
device and spec, ``true`` requires it (a clear error at start when it is not available), ``false``
turns it off. On the CPU every fusion is off (megatron's fused paths need CUDA).

========================  ==========================================  =========================================
fusion                    what it fuses                               needs
========================  ==========================================  =========================================
gradient_accumulation     weight-gradient GEMM accumulating straight  apex's ``fused_weight_gradient_mlp_cuda``
                          into the fp32 main_grad buffer              (megatron's linear layers, every spec)
rope                      rotary embedding of q and k                 Transformer-Engine (its fused RoPE)
cross_entropy             vocab-parallel cross-entropy in one kernel  CUDA (megatron's native implementation,
                                                                      compiled by torch.compile)
swiglu                    SiLU(gate) * up of the MLP                  CUDA (megatron's ``bias_swiglu``)
========================  ==========================================  =========================================

``resolve_fusions`` is a pure function of the config, the device, the spec and what is installed
(unit-tested on CPU); ``installed_fusion_libraries`` looks at this machine.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from infra.config import ConfigError

FUSIONS = ("gradient_accumulation", "rope", "cross_entropy", "swiglu")


@dataclass(frozen=True)
class Installed:
    """Optional libraries the fusions need: apex's fused weight-gradient extension, Transformer-Engine."""

    apex_wgrad: bool = False
    te: bool = False


def installed_fusion_libraries() -> Installed:
    return Installed(
        apex_wgrad=importlib.util.find_spec("fused_weight_gradient_mlp_cuda") is not None,
        te=importlib.util.find_spec("transformer_engine") is not None,
    )


def _why_unavailable(name: str, on_gpu: bool, spec: str, have: Installed) -> str | None:
    if not on_gpu:
        return "needs CUDA (this run is on the CPU)"
    if name == "gradient_accumulation" and not have.apex_wgrad:
        return "needs apex built with its CUDA extensions (module fused_weight_gradient_mlp_cuda), not installed"
    if name == "rope" and not have.te:
        return "needs Transformer-Engine's fused RoPE (pip install 'transformer-engine[pytorch]'), not installed"
    return None


def resolve_fusions(requested: dict[str, bool | None], on_gpu: bool, spec: str, have: Installed) -> dict[str, bool]:
    """``TransformerConfig`` keyword arguments for the fusions; ConfigError for one that is required
    (``true``) but unavailable, with the reason."""
    unknown = sorted(set(requested) - set(FUSIONS))
    if unknown:
        raise ConfigError(f"key 'model.fusions': unknown fusion(s) {unknown}; known: {list(FUSIONS)}")
    on: dict[str, bool] = {}
    for name in FUSIONS:
        want = requested.get(name)
        why = _why_unavailable(name, on_gpu, spec, have)
        if want and why:
            raise ConfigError(f"key 'model.fusions.{name}' is true but the fusion {why}; set it to null or false")
        on[name] = bool(want if want is not None else why is None)
    return {
        "gradient_accumulation_fusion": on["gradient_accumulation"],
        "apply_rope_fusion": on["rope"],
        "cross_entropy_loss_fusion": on["cross_entropy"],
        "cross_entropy_fusion_impl": "native",
        "bias_activation_fusion": on["swiglu"],
    }
