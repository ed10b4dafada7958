"""The pieces that keep the training step free of host synchronisation.

A CUDA step that reads a value back (``.item()``, ``float(t)``, ``bool(t)``, ``torch.cuda.synchronize``)
waits for the GPU to drain its queue; the host then launches the next step's kernels into an idle
GPU. The loop therefore keeps every per-step number on the device and reads them back once per
``train.log_interval`` steps (megatron-LM's practice):

* ``optimizer_step``: megatron's optimizer step with the gradient norm and the clipping computed on
  the device. megatron-core's own ``step()`` reads the norm back (``.item()``) to decide whether to
  clip, and without Transformer-Engine or apex its norm helper converts every gradient's norm to a
  Python float. Here the clip factor ``min(1, clip / (norm + 1e-6))`` is applied as a tensor; the
  arithmetic is megatron's (fp32 squared norm summed over the group, square root in fp64, factor in
  fp64 rounded to fp32 for the multiply, a factor of 1 leaves the gradients unchanged), so the numbers
  equal megatron's.
* ``finalize_model_grads``: megatron's gradient finalisation (DP reduce, embedding and layer-norm
  reductions) with the per-token scaling ``1 / num_tokens`` applied as a tensor; megatron's own tests
  ``if num_tokens > 0`` on the host.
* ``StepClock``: CUDA events around each step (read when the window is flushed), ``perf_counter`` on
  the CPU, where compute is synchronous anyway.
* ``reduce_window``: one all-reduce and one device-to-host copy for a window of steps: every step's
  (loss sum, token count) and the stop flag (a SIGTERM on any rank stops all of them at the same step).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


def _sub_optimizers(optimizer) -> list:
    subs = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    return [o for o in subs if not getattr(o, "is_stub_optimizer", False)]


def _grad_group(optimizer):
    if hasattr(optimizer, "chained_optimizers"):
        if len(optimizer.chained_optimizers) > 1 and not optimizer.grads_states_parallel_group_is_shared():
            return None
        return optimizer.get_grad_stats_parallel_group()
    return optimizer.get_grad_stats_parallel_group()


def supports_device_step(optimizer) -> bool:
    """True when ``optimizer_step`` can replace megatron's ``step()`` for this optimizer (one gradient
    group, gradients in ``param.grad``: every configuration the trainer builds)."""
    subs = _sub_optimizers(optimizer)
    if _grad_group(optimizer) is None:
        return False
    return all(not getattr(o.config, "use_precision_aware_optimizer_no_fp8_or_ds_fp8", False) for o in subs)


@torch.no_grad()
def device_grad_norm(grads: list[torch.Tensor], group, device) -> torch.Tensor:
    """Global L2 norm of ``grads`` over ``group`` as an fp64 0-dim tensor on ``device`` (no host sync)."""
    if grads:
        local = torch.nn.utils.get_total_norm(grads, norm_type=2.0).float() ** 2
    else:
        local = torch.zeros((), dtype=torch.float32, device=device)
    local = local.reshape(1)
    if dist.is_initialized():
        dist.all_reduce(local, op=dist.ReduceOp.SUM, group=group)
    return local[0].double().sqrt()


@torch.no_grad()
def optimizer_step(optimizer, clip_grad: float, device) -> tuple[bool, torch.Tensor]:
    """megatron's ``optimizer.step()`` without reading anything back from the device.

    Returns (update applied, global gradient norm as an fp64 device tensor). The update is refused
    (False) only when megatron's loss scaler found inf/nan (fp16, which the trainer does not use).
    """
    if optimizer.prepare_grads():
        return False, torch.full((), float("nan"), dtype=torch.float64, device=device)
    subs = _sub_optimizers(optimizer)
    grads = [g for o in subs for g in o.get_main_grads_for_grad_norm()]
    norm = device_grad_norm(grads, _grad_group(optimizer), device)
    if clip_grad > 0.0:
        for o in subs:
            # min(1, clip / (norm + 1e-6)) as a tensor: megatron's factor, without its `if factor < 1`
            torch.nn.utils.clip_grads_with_norm_(o.get_parameters(), clip_grad, norm)
    ok = optimizer.step_with_ready_grads()
    return ok, norm


def finalize_model_grads(model: list, num_tokens: torch.Tensor | None = None, pg_collection=None, **kwargs) -> None:
    """megatron's ``finalize_model_grads`` (the ``config.finalize_model_grads_func`` its schedules
    call), with the division by the global token count done on the device: the count is broadcast
    from the last pipeline stage and summed over DP as megatron does, and the factor is
    ``1 / num_tokens`` (fp32) where it is positive, 1 otherwise (megatron skips the scaling then)."""
    from megatron.core import parallel_state as ps
    from megatron.core.distributed import finalize_model_grads as megatron_finalize

    megatron_finalize(model, None, pg_collection=pg_collection, **kwargs)
    if num_tokens is None:
        return
    from megatron.core.distributed.finalize_model_grads import get_pp_last_rank

    if pg_collection is not None:
        pp_group, dp_cp_group = pg_collection.pp, pg_collection.dp_cp
    else:
        pp_group = ps.get_pipeline_model_parallel_group()
        dp_cp_group = ps.get_data_parallel_group(with_context_parallel=True)
    dist.broadcast(num_tokens, src=get_pp_last_rank(pp_group), group=pp_group)
    dist.all_reduce(num_tokens, group=dp_cp_group)
    scaling = torch.where(num_tokens > 0, 1.0 / num_tokens, torch.ones((), device=num_tokens.device))
    for chunk in model:
        chunk.scale_gradients(scaling)


class StepClock:
    """Step timing that reads nothing back until ``seconds`` (CUDA events), or ``perf_counter``."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def mark(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def seconds(self, start, end) -> float:
        if self.cuda:
            end.synchronize()  # already complete once the window's values were read back
            return start.elapsed_time(end) / 1000.0
        return end - start


@dataclass
class WindowTotals:
    """What one flush reads back for a window of steps."""

    losses: list[float]
    grad_norms: list[float | None]
    stop: bool


def reduce_window(
    loss_parts: list[torch.Tensor], grad_norms: list[torch.Tensor | None], stop_local: bool, device, world_size: int
) -> WindowTotals:
    """Mean per-token loss of every step of a window (summed over the ranks that hold losses: each
    part is this rank's [loss sum, token count] in fp64, zeros where the rank holds none), the grad
    norms, and whether any rank asked to stop: one all-reduce and one device-to-host copy."""
    k = len(loss_parts)
    flag = torch.full((1, 2), 1.0 if stop_local else 0.0, dtype=torch.float64, device=device)
    buf = torch.cat([torch.stack(loss_parts).to(torch.float64).reshape(k, 2), flag]) if k else flag
    if dist.is_initialized() and world_size > 1:
        dist.all_reduce(buf)
    losses = buf[:k, 0] / buf[:k, 1].clamp(min=1)
    have = [i for i, g in enumerate(grad_norms) if g is not None]
    norms = torch.stack([grad_norms[i].to(torch.float64) for i in have]) if have else losses[:0]
    host = torch.cat([losses, norms, buf[k:, 0]]).tolist()  # the window's one host sync
    got_norms: list[float | None] = [None] * k
    for j, i in enumerate(have):
        got_norms[i] = host[k + j]
    return WindowTotals(losses=host[:k], grad_norms=got_norms, stop=host[-1] > 0)


def all_finite(values: list[torch.Tensor]) -> bool:
    """True when every tensor is finite (one host sync); the NaN check between flushes."""
    if not values:
        return True
    return bool(torch.stack([v.to(torch.float64) for v in values]).isfinite().all())
