"""Run a tiny training with torch's read-back entry points wrapped, and write where they were called.

    python tests/trainer/count_host_syncs.py OUT.json CONFIG.yaml key=value ...   (trainer config + overrides)

On a GPU every one of these waits for the device to finish its queued work: ``Tensor.item``,
``Tensor.tolist``, ``float(t)``, ``int(t)``, ``bool(t)``, ``Tensor.cpu``, ``Tensor.numpy``,
``torch.cuda.synchronize`` and ``torch.tensor(..., device=<cuda>)`` (a blocking host-to-device
copy). Each call is recorded with the part of the loop it happened in (``step``: inside
``train_step``; ``flush``: ``flush_window``; ``nan_check``; ``validate``; ``save``; ``loop``: between
them; ``setup`` / ``end``: outside the loop). Calls made from ``torch.optim`` are not counted: torch's
Adam keeps its step count in a CPU tensor on every device (non-capturable mode), so its ``.item()``
reads host memory; nor are the repeated calls that ``trainer.cpu_compat``'s torch-function mode makes
for a call already counted where it was made.

Runs in its own process (the CPU redirections of ``trainer.cpu_compat`` must not leak into pytest).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainer import cpu_compat  # noqa: E402

WHERE = {"phase": "setup", "step": 0}
CALLS: list[tuple[str, str, int, str]] = []


def _caller() -> str:
    f = sys._getframe(2)
    return f"{f.f_code.co_filename}:{f.f_lineno}"


def _caller_counts() -> bool:
    # cpu_compat's torch-function mode calls the method again for a call already counted at its origin
    name = sys._getframe(2).f_code.co_filename
    return "/torch/optim/" not in name and not name.endswith("trainer/cpu_compat.py")


def _is_cuda(dev) -> bool:
    return cpu_compat._is_cuda_device(dev)


def _wrap_method(cls, name: str) -> None:
    orig = getattr(cls, name)

    def wrapper(*args, **kwargs):
        if _caller_counts():
            CALLS.append((WHERE["phase"], name, WHERE["step"], _caller()))
        return orig(*args, **kwargs)

    setattr(cls, name, wrapper)


def _wrap_tensor_factory() -> None:
    orig = torch.tensor

    def tensor(*args, **kwargs):
        if _is_cuda(kwargs.get("device")) and _caller_counts():
            CALLS.append((WHERE["phase"], "torch.tensor(device=cuda)", WHERE["step"], _caller()))
        return orig(*args, **kwargs)

    torch.tensor = tensor


def _wrap_sync() -> None:
    orig = torch.cuda.synchronize

    def synchronize(*args, **kwargs):
        CALLS.append((WHERE["phase"], "torch.cuda.synchronize", WHERE["step"], _caller()))
        return orig(*args, **kwargs)

    torch.cuda.synchronize = synchronize


def _phase(fn, name: str, step_of=None):
    def wrapper(*args, **kwargs):
        WHERE["phase"] = name
        if step_of is not None:
            WHERE["step"] = step_of(*args)
        try:
            return fn(*args, **kwargs)
        finally:
            WHERE["phase"] = "loop" if name != "end" else "end"

    return wrapper


def main() -> None:
    out, config, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    from infra.config import load_config
    from trainer import train as T
    from trainer.config import TrainerConfig

    cpu_compat.enable()
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy"):
        _wrap_method(torch.Tensor, name)
    _wrap_tensor_factory()
    _wrap_sync()

    T.train_step = _phase(T.train_step, "step", step_of=lambda tr, state, *a: state.step + 1)
    T.flush_window = _phase(T.flush_window, "flush")
    T.check_finite_window = _phase(T.check_finite_window, "nan_check")
    T.validate = _phase(T.validate, "validate")
    T.maybe_save = _phase(T.maybe_save, "save")
    T.shutdown = _phase(T.shutdown, "end")
    flushes = []
    flush = T.flush_window

    def counted_flush(tr, state, *args, **kwargs):
        flushes.append(state.step)
        return flush(tr, state, *args, **kwargs)

    T.flush_window = counted_flush

    cfg = load_config(TrainerConfig, config, overrides)
    summary = T.train(cfg)
    WHERE["phase"] = "end"
    by_phase = Counter(c[0] for c in CALLS)
    out.write_text(
        json.dumps(
            {
                "summary": summary,
                "flushes": flushes,
                "by_phase": by_phase,
                "calls": [list(c) for c in CALLS if c[0] not in ("setup", "end")],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
