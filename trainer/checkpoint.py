"""Checkpoints of a run: megatron dist_checkpointing for model and optimizer, plus the scheduler,
the data loader state and every rank's RNG state.

```
run_dir/checkpoints/
  iter_0000200/
    metadata.json, common.pt, *.distcp   megatron dist checkpoint (model + optimizer, any TP/PP/DP;
                                         the model only with train.save_optimizer=false)
    trainer_state.json                   step, tokens, scheduler, architecture, tokenizer size
    ranks/rank_00000.pt                  per rank: RNG states and the loader's state_dict()
  latest                                 text: the name of the newest complete checkpoint
```

Writing is atomic: everything goes to ``iter_XXXXXXX.tmp``, which is renamed once every rank has
finished, and ``latest`` is replaced (write + ``os.replace``) last. A crash at any point leaves the
previous checkpoint and ``latest`` intact; a leftover ``.tmp`` folder is removed by the next save.
The distributed optimizer is saved in the ``dp_reshardable`` format (loads under a different DP size
with the same TP/PP); model weights reshard freely (export loads them at TP=1).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from infra.folders import RunFolder
from infra.log import get_logger
from trainer.distributed import barrier

log = get_logger(__name__)

_ITER_RE = re.compile(r"^iter_(\d{7})$")
OPTIM_META = {"distrib_optim_sharding_type": "dp_reshardable"}


def checkpoint_name(step: int) -> str:
    return f"iter_{step:07d}"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        from megatron.core.tensor_parallel import get_cuda_rng_tracker

        state["cuda"] = torch.cuda.get_rng_state()
        state["tracker"] = get_cuda_rng_tracker().get_states()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and "cuda" in state:
        from megatron.core.tensor_parallel import get_cuda_rng_tracker

        torch.cuda.set_rng_state(state["cuda"])
        get_cuda_rng_tracker().set_states(state["tracker"])


def list_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Complete checkpoints (with trainer_state.json), oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    out = [p for p in root.iterdir() if _ITER_RE.match(p.name) and (p / "trainer_state.json").is_file()]
    return sorted(out, key=lambda p: int(_ITER_RE.match(p.name).group(1)))


def find_latest(ckpt_root: str | Path) -> Path | None:
    """The checkpoint ``latest`` names; the newest complete one if ``latest`` is missing or stale."""
    root = Path(ckpt_root)
    latest = root / "latest"
    if latest.is_file():
        cand = root / latest.read_text().strip()
        if (cand / "trainer_state.json").is_file():
            return cand
        log.warning("%s names %s, which is not a complete checkpoint; using the newest complete one", latest, cand.name)
    done = list_checkpoints(root)
    return done[-1] if done else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a run folder, a ``checkpoints`` folder or a checkpoint folder."""
    p = Path(path)
    if (p / "trainer_state.json").is_file():
        return p
    for root in (RunFolder(p).checkpoints, p):
        found = find_latest(root)
        if found is not None:
            return found
    raise FileNotFoundError(
        f"{path}: no complete checkpoint (expected a run folder, its checkpoints/ "
        "folder or a checkpoints/iter_XXXXXXX folder)"
    )


def _sharded(model_chunks, optimizer, is_loading: bool) -> dict:
    # One chunk per rank unless virtual pipelining; megatron's own trainer uses "model" for one chunk.
    sd = {}
    model_sd: dict = {}
    for i, m in enumerate(model_chunks):
        key = "model" if len(model_chunks) == 1 else f"model{i}"
        sd[key] = unwrap(m).sharded_state_dict()
        model_sd.update(sd[key])
    if optimizer is not None:
        sd["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=is_loading, metadata=OPTIM_META)
    return sd


def save_checkpoint(
    ckpt_root: str | Path,
    step: int,
    model_chunks,
    optimizer,
    scheduler,
    trainer_state: dict,
    loader_state: dict,
    keep_last: int,
) -> Path:
    """Save a complete checkpoint at ``step`` atomically; every rank must call this.

    Args:
        ckpt_root: ``run_dir/checkpoints``.
        step: optimizer steps completed.
        model_chunks: the DDP-wrapped model chunks; optimizer: the megatron optimizer, or ``None`` to
            save the model only (``train.save_optimizer=false``); scheduler: ``OptimizerParamScheduler``.
        trainer_state: JSON-serialisable run state written by rank 0 (step, tokens, architecture...).
        loader_state: this rank's ``loader.state_dict()``.
        keep_last: complete checkpoints to keep (older ones are deleted after ``latest`` moves).
    """
    from megatron.core import dist_checkpointing

    root = Path(ckpt_root)
    final = root / checkpoint_name(step)
    tmp = root / (final.name + ".tmp")
    rank = _rank()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    dist_checkpointing.save(_sharded(model_chunks, optimizer, is_loading=False), str(tmp))
    (tmp / "ranks").mkdir(exist_ok=True)
    torch.save({"rng": rng_state(), "data": loader_state}, tmp / "ranks" / f"rank_{rank:05d}.pt")
    if rank == 0:
        state = dict(
            trainer_state,
            step=step,
            scheduler=scheduler.state_dict() if scheduler else None,
            optimizer_saved=optimizer is not None,
        )
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
    barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        latest_tmp = root / "latest.tmp"
        latest_tmp.write_text(final.name + "\n")
        os.replace(latest_tmp, root / "latest")
        _fsync_dir(root)
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob("iter_*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    return final


def unwrap(module):
    """The ``GPTModel`` inside DDP / Float16Module wrappers. Checkpoints use its keys, so runs in fp32
    and bf16, and the export's bare model, all read the same names."""
    while hasattr(module, "module"):
        module = module.module
    return module


def _adam_step_dtype() -> torch.dtype:
    """The dtype torch's (non-fused) Adam gives its ``step`` tensors: float64 under a float64 default
    dtype, else float32. Priming with the same dtype keeps a resumed run's bias correction, and so its
    losses, bit-identical; spelt out here rather than importing torch's private helper for it."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _prime_optimizer_state(optimizer) -> None:
    """Give a fresh torch Adam an (all-zero) state so that megatron can build the sharded state dict
    to load into: without apex/TE, ``DistributedOptimizer.state_dict()`` reads every param's ``step``,
    which torch's Adam only creates on its first step. The loaded values replace these in place."""
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            continue
        for group in inner.param_groups:
            for p in group["params"]:
                st = inner.state[p]
                if "step" not in st:
                    st["step"] = torch.tensor(0.0, dtype=_adam_step_dtype())
                    st.setdefault("exp_avg", torch.zeros_like(p, memory_format=torch.preserve_format))
                    st.setdefault("exp_avg_sq", torch.zeros_like(p, memory_format=torch.preserve_format))


def _restore_adam_steps(optimizer) -> None:
    """Set every parameter's own Adam ``step`` tensor from the loaded param groups. Without apex/TE,
    megatron's DistributedOptimizer keeps the step count in ``param_groups[i]["step"]`` in its
    checkpoint and, on load into an optimizer whose state already exists, leaves torch's per-parameter
    ``step`` tensors at their old values (or one shared tensor that torch's Adam would increment once
    per parameter). Either breaks Adam's bias correction and bit-exact resume."""
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            continue
        for group in inner.param_groups:
            if "step" not in group:
                continue
            for p in group["params"]:
                st = inner.state.get(p)
                if st is not None and isinstance(st.get("step"), torch.Tensor):
                    st["step"] = torch.tensor(float(group["step"]), dtype=st["step"].dtype)


def load_checkpoint(ckpt_dir: str | Path, model_chunks, optimizer, scheduler) -> tuple[dict, dict | None]:
    """Restore model, optimizer, scheduler and this rank's RNG state from ``ckpt_dir``.

    Returns ``(trainer_state, loader_state)``; ``loader_state`` is this rank's saved loader state
    (rank 0's when the world size changed, since the loader state is global).
    """
    from megatron.core import dist_checkpointing

    ckpt_dir = Path(ckpt_dir)
    state = json.loads((ckpt_dir / "trainer_state.json").read_text())
    if optimizer is not None and not state.get("optimizer_saved", True):
        if _rank() == 0:
            log.warning(
                "%s holds no optimizer state (saved with train.save_optimizer=false): Adam's moments restart from zero",
                ckpt_dir,
            )
        model_only_optimizer, optimizer = optimizer, None
    else:
        model_only_optimizer = None
    if optimizer is not None:
        _prime_optimizer_state(optimizer)
    with torch.no_grad():  # the distributed optimizer copies into leaf tensors
        sharded = _sharded(model_chunks, optimizer, is_loading=True)
        loaded = dist_checkpointing.load(sharded, str(ckpt_dir))
        for i, m in enumerate(model_chunks):
            key = "model" if len(model_chunks) == 1 else f"model{i}"
            unwrap(m).load_state_dict(loaded[key], strict=True)
        if optimizer is not None:
            optimizer.load_state_dict(loaded["optimizer"])
            _restore_adam_steps(optimizer)
        if model_only_optimizer is not None:  # bf16 runs: refresh the fp32 main weights from the model
            model_only_optimizer.reload_model_params()
    if scheduler is not None and state.get("scheduler"):
        scheduler.num_steps = 0  # megatron's load_state_dict *advances* by the saved count
        scheduler.load_state_dict(state["scheduler"])
    rank_file = ckpt_dir / "ranks" / f"rank_{_rank():05d}.pt"
    same_world = rank_file.is_file() and state.get("world_size") == (
        dist.get_world_size() if dist.is_initialized() else 1
    )
    extra = torch.load(rank_file if same_world else ckpt_dir / "ranks" / "rank_00000.pt", weights_only=False)
    if same_world:
        set_rng_state(extra["rng"])
    return state, extra.get("data")


def load_model_weights(ckpt_dir: str | Path, model) -> None:
    """Load only the model weights of a checkpoint into ``model`` (any TP/PP layout, e.g. TP=1 export)."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.validation import StrictHandling

    with torch.no_grad():
        loaded = dist_checkpointing.load(
            {"model": unwrap(model).sharded_state_dict()}, str(ckpt_dir), strict=StrictHandling.LOG_UNEXPECTED
        )
    unwrap(model).load_state_dict(loaded["model"], strict=True)
