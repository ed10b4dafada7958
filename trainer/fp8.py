"""FP8 training: which recipe can run where, and the torchao path of the ``torch`` spec.

Two back-ends:

``te``     Transformer-Engine (``model.spec=te``): megatron's ``fp8`` / ``fp8_recipe`` config fields;
           recipes ``delayed``, ``tensorwise`` (current scaling), ``blockwise``, ``mxfp8``.
``torchao`` torchao's float8 training (``model.spec=torch``), torchtitan's way: the four matmuls of
           every transformer layer (QKV, attention output, MLP in, MLP out) run through torchao's
           ``Float8Linear`` with dynamic scaling; the embedding and the tied output layer stay in bf16.
           Recipes ``tensorwise`` (e4m3 forward, e5m2 gradients: ``model.fp8=hybrid``) and
           ``rowwise`` (e4m3 throughout, per-row scales: ``model.fp8=e4m3``). The weights stay the
           model's bf16 parameters (DDP buffers, checkpoints and export are unchanged); FP8 is compute
           only and holds no state.

``check_fp8`` is a pure function of (back-end, recipe, format, GPU compute capability, CUDA version,
TE / torchao version, compile) returning an error message or None, so that a recipe the GPU or the
library cannot run stops the run at start with the reason (unit-tested on CPU). The rules follow
Transformer-Engine's own support checks (``check_fp8_support``, ``check_mxfp8_support``,
``check_fp8_block_scaling_support``) and megatron-core 0.16's minimum TE versions per recipe:

* FP8 at all: compute capability >= 9.0 (Hopper and newer), or 8.9 (Ada) with CUDA >= 12.1.
* ``mxfp8``: 10.x / 11.x (Blackwell) only: **refused on Hopper** (9.0) and on 12.x; TE >= 2.1.
* ``blockwise``: compute capability >= 9.0 and CUDA >= 12.9; TE >= 2.3.
* ``tensorwise``: TE >= 2.2. ``delayed``: not under ``torch.compile`` (TE refuses it there).
* torchao ``rowwise``: compute capability >= 9.0 (``torch._scaled_mm`` with per-row scales).
"""

from __future__ import annotations

import types

TE_RECIPES = ("delayed", "tensorwise", "blockwise", "mxfp8")
TORCHAO_RECIPES = {"tensorwise": "hybrid", "rowwise": "e4m3"}  # recipe -> the format it implies
TE_MIN_VERSION = {"delayed": "1.0", "tensorwise": "2.2", "blockwise": "2.3", "mxfp8": "2.1"}


def _version(v: str | None) -> tuple[int, ...] | None:
    if not v:
        return None
    out = []
    for part in v.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
        if not part.isdigit():
            break
    return tuple(out)


def _cc(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"


def check_fp8(
    backend: str,
    recipe: str,
    fp8_format: str,
    capability: tuple[int, int] | None,
    cuda_version: str | None,
    library_version: str | None,
    compile_: bool = False,
) -> str | None:
    """None when ``recipe`` can run, else why not (the config keys named).

    Args:
        backend: ``te`` or ``torchao``.
        recipe: ``model.fp8_recipe``.
        fp8_format: ``model.fp8`` (``e4m3`` or ``hybrid``).
        capability: the GPU's compute capability, None without a GPU.
        cuda_version: ``torch.version.cuda``.
        library_version: the installed Transformer-Engine / torchao version, None when not installed.
        compile_: ``model.compile``.
    """
    where = f"model.fp8={fp8_format} model.fp8_recipe={recipe}"
    lib = "Transformer-Engine" if backend == "te" else "torchao"
    if backend not in ("te", "torchao"):
        return f"{where}: unknown FP8 back-end {backend!r}"
    if fp8_format not in ("e4m3", "hybrid"):
        return f"{where}: model.fp8 must be e4m3 or hybrid"
    if backend == "te" and recipe not in TE_RECIPES:
        return f"{where}: the te spec's recipes are {list(TE_RECIPES)}"
    if backend == "torchao":
        if recipe not in TORCHAO_RECIPES:
            return (
                f"{where}: torchao float8 (the torch spec) has the recipes tensorwise (model.fp8=hybrid) "
                "and rowwise (model.fp8=e4m3); delayed, blockwise and mxfp8 are Transformer-Engine recipes "
                "(model.spec=te)"
            )
        if TORCHAO_RECIPES[recipe] != fp8_format:
            return f"{where}: torchao's {recipe} recipe is model.fp8={TORCHAO_RECIPES[recipe]}"
    if library_version is None:
        pkg = "transformer-engine[pytorch]" if backend == "te" else "torchao"
        return f"{where}: {lib} is not installed (pip install {pkg}; see the [gpu] extra)"
    if capability is None:
        return f"{where}: FP8 needs a CUDA GPU (compute capability >= 8.9)"
    cuda = _version(cuda_version) or (0,)
    gpu = f"this GPU (compute capability {_cc(capability)})"
    if capability < (8, 9):
        return f"{where}: FP8 needs compute capability 8.9 or higher; {gpu} has no FP8 tensor cores"
    if capability < (9, 0) and cuda < (12, 1):
        return f"{where}: FP8 on compute capability 8.9 needs CUDA >= 12.1 (torch is built with {cuda_version})"
    if backend == "te":
        need = _version(TE_MIN_VERSION[recipe])
        have = _version(library_version)
        if have is not None and have < need:
            need_s = TE_MIN_VERSION[recipe]
            return f"{where}: the {recipe} recipe needs Transformer-Engine >= {need_s}, found {library_version}"
        if recipe == "mxfp8" and not (10, 0) <= capability < (12, 0):
            arch = "Hopper" if capability[0] == 9 else f"compute capability {_cc(capability)}"
            return (
                f"{where}: MXFP8 needs a Blackwell GPU (compute capability 10.x); {gpu} is {arch}. "
                "On Hopper use model.fp8_recipe=tensorwise, delayed or blockwise"
            )
        if recipe == "blockwise" and (capability < (9, 0) or cuda < (12, 9)):
            return (
                f"{where}: FP8 block scaling needs compute capability >= 9.0 and CUDA >= 12.9 ({gpu}, "
                f"CUDA {cuda_version})"
            )
        if recipe == "delayed" and compile_:
            return f"{where}: Transformer-Engine refuses delayed scaling under torch.compile (model.compile=true)"
    elif recipe == "rowwise" and capability < (9, 0):
        return f"{where}: torchao's rowwise scaling needs compute capability >= 9.0; {gpu}"
    return None


def te_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for name in ("transformer-engine", "transformer_engine", "transformer-engine-torch"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def torchao_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchao")
    except PackageNotFoundError:
        return None


def validate_fp8_on_this_machine(spec: str, fp8_format: str | None, recipe: str, compile_: bool) -> None:
    """Raise ConfigError when ``model.fp8`` cannot run here (no-op when FP8 is off)."""
    if not fp8_format:
        return
    import torch

    from infra.config import ConfigError

    if spec not in ("te", "torch"):
        raise ConfigError(
            f"key 'model.fp8': FP8 needs model.spec=te (Transformer-Engine) or torch (torchao), not {spec}"
        )
    backend = "te" if spec == "te" else "torchao"
    capability = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
    version = te_version() if backend == "te" else torchao_version()
    why = check_fp8(backend, recipe, fp8_format, capability, torch.version.cuda, version, compile_)
    if why:
        raise ConfigError(f"key 'model.fp8': {why}")


# ---------------------------------------------------------------------------------------------
# torchao float8 for the torch spec
# ---------------------------------------------------------------------------------------------


def _torchao_float8():
    try:
        from torchao.float8 import Float8LinearConfig
        from torchao.float8.float8_linear import Float8Linear
    except ImportError as e:
        raise ImportError(
            "model.fp8 with model.spec=torch needs torchao (pip install 'torchao==0.17.0', the version of "
            "the [gpu] extra; offline: see docs/trainer.md, 'Carried wheels')"
        ) from e
    return Float8Linear, Float8LinearConfig


LAYER_LINEARS = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")


def convert_to_float8(gpt, recipe: str = "tensorwise") -> int:
    """Route the four linear layers of every transformer layer of a megatron ``GPTModel`` through
    torchao's ``Float8Linear`` (before DDP wraps the model). Returns how many were converted.

    Each megatron linear keeps its parameter; a ``Float8Linear`` sharing that parameter (not a
    registered submodule, so state dicts are unchanged) does the local matmul, and megatron's
    tensor-parallel communication around it is kept: column-parallel layers all-gather the sequence
    (sequence parallelism) or all-reduce the input gradient (TP without it) through megatron's mapping
    functions, row-parallel layers reduce their output as before.
    """
    from megatron.core.tensor_parallel.mappings import (
        copy_to_tensor_model_parallel_region,
        gather_from_sequence_parallel_region,
    )

    Float8Linear, Float8LinearConfig = _torchao_float8()
    config = Float8LinearConfig.from_recipe_name(recipe)
    decoder = getattr(gpt, "decoder", None)
    if decoder is None:
        raise ValueError("convert_to_float8: expected a megatron GPTModel (with .decoder)")
    n = 0
    for layer in decoder.layers:
        for name, module in layer.named_modules():
            if name.rsplit(".", 1)[-1] not in LAYER_LINEARS:
                continue
            weight = module.weight
            if weight is None or getattr(module, "bias", None) is not None and module.bias.numel():
                raise ValueError(f"convert_to_float8: {name} has no weight or has a bias (the model has none)")
            out_features, in_features = weight.shape
            shell = types.SimpleNamespace(in_features=in_features, out_features=out_features, weight=weight, bias=None)
            f8 = Float8Linear.from_float(shell, config=config)
            if f8.weight is not weight:
                raise RuntimeError("torchao's Float8Linear did not keep the layer's parameter")

            def forward_impl(
                input, weight, bias=None, *, _f8=f8, sequence_parallel=False, allreduce_dgrad=False, tp_group=None, **_
            ):
                if sequence_parallel:
                    input = gather_from_sequence_parallel_region(
                        input, tensor_parallel_output_grad=True, group=tp_group
                    )
                elif allreduce_dgrad:
                    input = copy_to_tensor_model_parallel_region(input, group=tp_group)
                out = _f8(input)
                return out if bias is None else out + bias

            object.__setattr__(module, "_float8_linear", f8)  # not a submodule: no second copy of the weight
            module._forward_impl = forward_impl
            n += 1
    if n == 0:
        raise ValueError("convert_to_float8: no linear layer found to convert")
    return n
