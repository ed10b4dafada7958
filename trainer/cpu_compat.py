"""Make megatron-core 0.16 run on CPU over gloo. Active only when CUDA is absent.

megatron-core assumes a GPU in a handful of places that the trainer's CPU path reaches (tests, CI,
the CPU benchmark). Instead of patching each call site, this module redirects the few CUDA entry
points those sites go through:

* ``device='cuda'`` / ``device=<int>`` tensor literals, ``Tensor.cuda()`` and ``Tensor.to('cuda')``
  (grad scaler, optimizer buffers, grad-norm clipping, dist_checkpointing exchange, loss counters):
  a ``TorchFunctionMode`` rewrites the device to CPU. Torch function modes are the documented
  interception point for factory functions and tensor methods, so no megatron file is edited.
* ``Tensor.type()`` equality checks against ``'torch.cuda.FloatTensor'`` and friends in the
  mixed-precision and distributed optimizers: the same mode reports CPU tensors with their CUDA
  type names.
* ``torch.cuda.current_device()`` returns ``0`` (then mapped to CPU by the mode);
  ``torch.cuda.synchronize()`` (checkpoint save, parallel_state) is a no-op.
* ``model_parallel_cuda_manual_seed``: the caller passes ``inference_rng_tracker=True`` on CPU (a
  tracker whose ``fork()`` does not touch CUDA RNG state). Dropout is 0 in every preset, so this
  changes no number; CPU RNG is seeded with ``torch.manual_seed``.

The model config must also set ``use_cpu_initialization=True``, ``gradient_accumulation_fusion=False``
and all bias/softmax/rope fusions off (``trainer.model`` does this when CUDA is absent), and
dist_checkpointing needs ``psutil`` installed (without it the save waits forever).

``enable()`` is idempotent and does nothing when CUDA is available, unless ``force=True``
(``train.device=cpu`` on a CUDA machine): then ``torch.cuda.is_available()`` also reports False and
``torch.cuda.device_count()`` 0, so that megatron and the trainer take their CPU paths.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

_ENABLED = False
_MODE: _CudaToCpuMode | None = None


def _is_cuda_device(dev) -> bool:
    if isinstance(dev, bool):
        return False
    if isinstance(dev, int):
        return True  # an integer device index always means a CUDA device in torch
    if isinstance(dev, str):
        return dev.startswith("cuda")
    if isinstance(dev, torch.device):
        return dev.type == "cuda"
    return False


_CUDA_TYPE_NAMES = {
    torch.float32: "torch.cuda.FloatTensor",
    torch.float16: "torch.cuda.HalfTensor",
    torch.bfloat16: "torch.cuda.BFloat16Tensor",
    torch.float64: "torch.cuda.DoubleTensor",
    torch.int64: "torch.cuda.LongTensor",
    torch.int32: "torch.cuda.IntTensor",
    torch.uint8: "torch.cuda.ByteTensor",
    torch.bool: "torch.cuda.BoolTensor",
}


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA device requests to CPU; reports CPU tensors with CUDA type names."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = _CUDA_TYPE_NAMES.get(args[0].dtype)
            if name is not None:
                return name
        if func is torch.Tensor.to:
            args = tuple("cpu" if (i > 0 and _is_cuda_device(a)) else a for i, a in enumerate(args))
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs["device"] = "cpu"
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        return func(*args, **kwargs)


def enable(force: bool = False) -> bool:
    """Install the CPU redirections once per process. Returns True when they are active."""
    global _ENABLED, _MODE
    if _ENABLED:
        return True
    if force:
        torch.cuda.is_available = lambda: False
        torch.cuda.device_count = lambda: 0
    elif torch.cuda.is_available():
        return False
    torch.cuda.current_device = lambda: 0
    torch.cuda.synchronize = lambda *a, **k: None
    _MODE = _CudaToCpuMode()
    _MODE.__enter__()  # stays on the torch-function mode stack for the life of the process
    _ENABLED = True
    return True


def enabled() -> bool:
    return _ENABLED
