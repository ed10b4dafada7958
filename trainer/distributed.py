"""Process-group set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

NCCL on GPU, gloo on CPU (where ``trainer.cpu_compat`` is enabled first). A plain ``python -m trainer``
without torchrun runs as a world of one on a free local port.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from trainer import cpu_compat


@dataclass
class DistInfo:
    """This process's place in the world; the loop reads ranks from here, not megatron's globals.

    Attributes:
        rank, world_size, local_rank: torchrun's global rank, world size and rank on the node.
        tp, pp, dp: tensor-, pipeline- and data-parallel sizes.
        dp_rank, tp_rank, pp_rank: this process's rank in each of them.
        device: the CUDA device of ``local_rank``, or the CPU.
        backend: ``nccl`` or ``gloo``.
    """

    rank: int
    world_size: int
    local_rank: int
    tp: int
    pp: int
    dp: int
    dp_rank: int
    tp_rank: int
    pp_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_first_stage(self) -> bool:
        """First pipeline stage: it holds the embedding (megatron's ``pre_process``)."""
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        """Last pipeline stage: it holds the output layer and computes the loss (``post_process``)."""
        return self.pp_rank == self.pp - 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(tp: int = 1, pp: int = 1, seed: int = 1234, timeout_min: int = 30) -> DistInfo:
    """Initialise torch.distributed and megatron's model-parallel groups; seed RNGs.

    Args:
        tp: tensor-parallel size. pp: pipeline-parallel size. The data-parallel size is
            ``WORLD_SIZE / (tp * pp)``.
        seed: base seed; megatron offsets it per TP rank for its model-parallel RNG tracker.
        timeout_min: collective timeout.
    """
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        cpu_compat.enable()
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world % (tp * pp):
        raise ValueError(f"WORLD_SIZE={world} is not divisible by parallel.tp*parallel.pp={tp * pp}")
    if on_gpu:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if on_gpu else "gloo"
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            if world != 1:
                raise RuntimeError("WORLD_SIZE>1 but MASTER_ADDR is unset: start with torchrun")
            os.environ["MASTER_ADDR"] = "127.0.0.1"
            os.environ["MASTER_PORT"] = str(_free_port())
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world, timeout=datetime.timedelta(minutes=timeout_min)
        )
    if not ps.model_parallel_is_initialized():
        ps.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    torch.manual_seed(seed)
    # On CPU the inference tracker's fork() leaves CUDA RNG alone (dropout is 0 in every preset).
    model_parallel_cuda_manual_seed(seed, inference_rng_tracker=not on_gpu, force_reset_rng=True)
    return DistInfo(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        tp=tp,
        pp=pp,
        dp=ps.get_data_parallel_world_size(),
        dp_rank=ps.get_data_parallel_rank(),
        tp_rank=ps.get_tensor_model_parallel_rank(),
        pp_rank=ps.get_pipeline_model_parallel_rank(),
        device=torch.device("cuda", local_rank) if on_gpu else torch.device("cpu"),
        backend=backend,
    )


def shutdown() -> None:
    """Destroy megatron's groups and the default process group (safe to call twice)."""
    from megatron.core import parallel_state as ps

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op without a process group, e.g. in single-process tools)."""
    if dist.is_initialized():
        dist.barrier()
