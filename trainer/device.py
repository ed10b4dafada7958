"""Which device a run trains on (``train.device``): ``auto`` | ``cuda`` | ``cpu``.

A GPU that is expected but cannot be used is an error with the reason, never a quiet CPU run:

* ``cuda``: CUDA must work (a device is visible and a small operation on it succeeds), else the run
  stops before anything is built, naming what failed (torch built without CUDA, a driver older than
  the torch build needs, no visible device, a failing CUDA call).
* ``auto``: CUDA when it works (logged with the device name). Without it, the CPU only when the
  machine shows no NVIDIA GPU at all (no ``/dev/nvidia*``, no driver, or ``CUDA_VISIBLE_DEVICES``
  set empty on purpose); a GPU that is there but unusable is the same error as with ``cuda``.
* ``cpu``: the CPU even where CUDA works (``trainer.cpu_compat`` hides CUDA from megatron).

``resolve_device`` is a pure function of the choice and a ``CudaProbe`` (unit-tested on CPU);
``probe_cuda`` looks at this machine.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from infra.config import ConfigError

CHOICES = ("auto", "cuda", "cpu")


class DeviceError(ConfigError):
    """``train.device`` asks for a device this machine cannot give."""


@dataclass(frozen=True)
class CudaProbe:
    """What this machine says about CUDA.

    Attributes:
        usable: a CUDA device is visible and an operation on it succeeded.
        reason: why it is not usable ('' when it is).
        gpu_present: the machine shows an NVIDIA GPU (device files, driver, or torch's own warning),
            and ``CUDA_VISIBLE_DEVICES`` does not hide all devices on purpose.
        name: the device name when usable.
    """

    usable: bool
    reason: str = ""
    gpu_present: bool = False
    name: str | None = None


def _gpu_files_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def probe_cuda() -> CudaProbe:
    """Probe CUDA once: torch's build, ``torch.cuda.is_available()`` (and the warning it gives when
    the driver is too old), then a small operation on the device."""
    import torch

    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1")
    if torch.version.cuda is None:
        return CudaProbe(False, f"this torch ({torch.__version__}) is built without CUDA", _gpu_files_present())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    said = "; ".join(str(w.message).strip() for w in caught if "cuda" in str(w.message).lower())
    present = not hidden and (_gpu_files_present() or bool(said))
    if not available:
        if hidden:
            why = f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} hides every device"
        else:
            why = said or "torch.cuda.is_available() is False (no visible CUDA device or no NVIDIA driver)"
        return CudaProbe(False, f"{why} (torch {torch.__version__}, CUDA {torch.version.cuda})", present)
    try:
        x = torch.ones(8, device="cuda")
        ok = float((x * 2).sum()) == 16.0
        name = torch.cuda.get_device_name()
    except Exception as e:  # noqa: BLE001 - any CUDA failure makes the device unusable
        return CudaProbe(False, f"a CUDA operation failed: {type(e).__name__}: {e}", True)
    if not ok:
        return CudaProbe(False, "a CUDA operation returned a wrong result", True)
    return CudaProbe(True, "", True, name)


def resolve_device(choice: str, probe: CudaProbe) -> tuple[str, str]:
    """(``"cuda"`` | ``"cpu"``, a log line saying why) for ``train.device=choice``; DeviceError when a
    GPU is expected (``cuda``, or ``auto`` on a machine with a GPU) but CUDA is not usable."""
    if choice not in CHOICES:
        raise DeviceError(f"key 'train.device': expected one of {list(CHOICES)}, got {choice!r}")
    if choice == "cpu":
        return "cpu", "train.device=cpu: training on the CPU"
    if probe.usable:
        return "cuda", f"train.device={choice}: training on CUDA ({probe.name})"
    fix = (
        "Fix the CUDA set-up (a driver at least as new as the torch build needs, a visible device), or "
        "set train.device=cpu to train on the CPU on purpose (slow: fp32 and the local spec)"
    )
    if choice == "cuda":
        raise DeviceError(f"key 'train.device' is cuda but CUDA is not usable: {probe.reason}. {fix}")
    if probe.gpu_present:
        raise DeviceError(
            f"key 'train.device' is auto and this machine has an NVIDIA GPU, but CUDA is not usable: "
            f"{probe.reason}. The run does not fall back to the CPU silently. {fix}"
        )
    return "cpu", f"train.device=auto: no CUDA device ({probe.reason}): training on the CPU"


def select_device(choice: str) -> tuple[str, str]:
    """Resolve ``train.device`` on this machine: (device, the line to log). With the CPU chosen, CUDA
    is hidden from this process and its children (megatron, the export subprocess)."""
    if choice == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        from trainer import cpu_compat

        cpu_compat.enable(force=True)
        return resolve_device("cpu", CudaProbe(False))
    return resolve_device(choice, probe_cuda())
