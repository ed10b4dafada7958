"""Checkpoints of a run: megatron dist_checkpointing for model and optimizer, plus the scheduler,
the data loader state and every rank's RNG state.

```
run_dir/checkpoints/
  iter_0000200/
    metadata.json, common.pt, *.distcp   megatron dist checkpoint (model + optimizer, any TP/PP/DP;
                                         the model only with train.save_optimizer=false)
    trainer_state.json                   step, tokens, scheduler, architecture, tokenizer size
    ranks/rank_00000.json                per rank: RNG states and the loader's state_dict() (JSON)
    manifest.json                        size and SHA-256 of every other file (written last)
  iter_0000100.corrupt/                  a checkpoint that failed verification, moved aside
  latest                                 text: the name of the newest complete checkpoint
```

Writing is atomic: everything goes to ``iter_XXXXXXX.tmp``, which is renamed once every rank has
finished, and ``latest`` is replaced (write + ``os.replace``) last. A crash at any point leaves the
previous checkpoint and ``latest`` intact; a leftover ``.tmp`` folder is removed by the next save.

Loading verifies first (``trainer/checkpoint_files.py``): every file against the manifest, and every
pickle megatron and torch would read in a mode that cannot run code. A checkpoint that fails the
checksums or cannot be read is named, moved aside as ``iter_XXXXXXX.corrupt`` and the run resumes from
the newest one that passes; a file that asks to build arbitrary objects stops the run.
The distributed optimizer is saved in the ``dp_reshardable`` format (loads under a different DP size
with the same TP/PP); model weights reshard freely (export loads them at TP=1).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from infra.folders import RunFolder
from infra.log import get_logger
from trainer import checkpoint_files as cf
from trainer.checkpoint_files import CheckpointError, UnsafeCheckpointError
from trainer.distributed import barrier

log = get_logger(__name__)

_ITER_RE = cf.ITER_RE
OPTIM_META = {"distrib_optim_sharding_type": "dp_reshardable"}


def checkpoint_name(step: int) -> str:
    return f"iter_{step:07d}"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _gather(obj) -> list:
    """``obj`` of every rank, in rank order (a list of one without torch.distributed)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


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
    """The checkpoint ``latest`` names; the newest complete one if ``latest`` is missing, stale or names
    anything but a checkpoint folder beside it."""
    root = Path(ckpt_root)
    latest = root / "latest"
    if latest.is_file():
        name, problem = cf.read_latest(latest)
        if problem is None and (root / name / "trainer_state.json").is_file():
            return root / name
        if _rank() == 0:
            log.warning(
                "%s %s; using the newest complete checkpoint",
                latest,
                problem or f"names {name}, which is not a complete checkpoint",
            )
    done = list_checkpoints(root)
    return done[-1] if done else None


def candidates(ckpt_root: str | Path) -> list[Path]:
    """Checkpoints to try on resume, best first: the one ``latest`` names, then the others newest first."""
    first = find_latest(ckpt_root)
    rest = [p for p in reversed(list_checkpoints(ckpt_root)) if p != first]
    return ([first] if first else []) + rest


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


def _in_process_write_results() -> None:
    """Give megatron's checkpoint writer an in-process results queue.

    Megatron's file writer collects its write results in a queue it makes with
    ``multiprocessing.get_context("spawn").Manager()``; spawning re-imports the ``__main__`` script, so
    a script that calls ``train()`` without an ``if __name__ == "__main__":`` guard ran itself again and
    the first save failed with ``EOFError``. The trainer saves synchronously: the results are put and
    read in this process, so a thread-safe in-process queue does the same job with no extra process.
    """
    import queue

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if getattr(filesystem_async, "_results_queue", None) is None:
        filesystem_async._results_queue = queue.Queue()


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
    _in_process_write_results()
    dist_checkpointing.save(_sharded(model_chunks, optimizer, is_loading=False), str(tmp))
    (tmp / "ranks").mkdir(exist_ok=True)
    cf.write_rank_state(cf.rank_state_file(tmp, rank), rng_state(), loader_state)
    if rank == 0:
        state = dict(
            trainer_state,
            step=step,
            scheduler=scheduler.state_dict() if scheduler else None,
            optimizer_saved=optimizer is not None,
        )
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
    barrier()
    # every rank hashes a share of the files; rank 0 writes the manifest before the folder goes live
    files = cf.checkpoint_files(tmp) if rank == 0 else None
    if dist.is_initialized():
        box = [files]
        dist.broadcast_object_list(box, src=0)
        files = box[0]
    entries: dict = {}
    for share in _gather(cf.hash_share(tmp, files, rank, _world())):
        entries.update(share)
    if rank == 0:
        cf.write_manifest(tmp, entries)
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


def _adam_step_dtype(fused: bool = False) -> torch.dtype:
    """The dtype torch's Adam gives its ``step`` tensors: float32 when fused, else float64 under a
    float64 default dtype, else float32. Priming with the same dtype keeps a resumed run's bias
    correction, and so its losses, bit-identical; spelt out here rather than importing torch's private
    helper for it."""
    if fused:
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _step_tensor(value: float, group: dict, p: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An Adam ``step`` tensor where torch's Adam keeps it: on the parameter's device for the fused
    (``train.fused_adam``) and capturable variants, on the CPU otherwise."""
    on_device = bool(group.get("fused") or group.get("capturable"))
    dtype = dtype or _adam_step_dtype(bool(group.get("fused")))
    return torch.tensor(value, dtype=dtype, device=p.device if on_device else "cpu")


# param-group entries that come from the run's config, not from training: a resumed run keeps this
# start's values (the checkpoint's param groups would otherwise bring back the old peak lr, betas...)
# (and the kernel choice, train.fused_adam)
_CONFIGURED = ("max_lr", "min_lr", "betas", "eps", "fused", "foreach")


def _inner_optimizers(optimizer):
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if isinstance(inner, torch.optim.Optimizer):
            yield inner


def _configured_hyperparameters(optimizer) -> list:
    return [
        [{k: g[k] for k in _CONFIGURED if k in g} for g in inner.param_groups] for inner in _inner_optimizers(optimizer)
    ]


def _set_configured_hyperparameters(optimizer, saved: list) -> None:
    for inner, groups in zip(_inner_optimizers(optimizer), saved, strict=True):
        for g, values in zip(inner.param_groups, groups, strict=True):
            g.update(values)


def _prime_optimizer_state(optimizer) -> None:
    """Give a fresh torch Adam an (all-zero) state so that megatron can build the sharded state dict
    to load into: without apex/TE, ``DistributedOptimizer.state_dict()`` reads every param's ``step``,
    which torch's Adam only creates on its first step. The loaded values replace these in place."""
    for inner in _inner_optimizers(optimizer):
        for group in inner.param_groups:
            for p in group["params"]:
                st = inner.state[p]
                if "step" not in st:
                    st["step"] = _step_tensor(0.0, group, p)
                    st.setdefault("exp_avg", torch.zeros_like(p, memory_format=torch.preserve_format))
                    st.setdefault("exp_avg_sq", torch.zeros_like(p, memory_format=torch.preserve_format))


def _restore_adam_steps(optimizer) -> None:
    """Set every parameter's own Adam ``step`` tensor from the loaded param groups. Without apex/TE,
    megatron's DistributedOptimizer keeps the step count in ``param_groups[i]["step"]`` in its
    checkpoint and, on load into an optimizer whose state already exists, leaves torch's per-parameter
    ``step`` tensors at their old values (or one shared tensor that torch's Adam would increment once
    per parameter). Either breaks Adam's bias correction and bit-exact resume."""
    for inner in _inner_optimizers(optimizer):
        for group in inner.param_groups:
            if "step" not in group:
                continue
            for p in group["params"]:
                st = inner.state.get(p)
                if st is not None and isinstance(st.get("step"), torch.Tensor):
                    st["step"] = _step_tensor(float(group["step"]), group, p, st["step"].dtype)


def _read_trainer_state(ckpt_dir: Path) -> dict:
    path = ckpt_dir / "trainer_state.json"
    try:
        state = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("no integer 'step'")
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: missing") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from e
    return state


def _np_core():
    return getattr(np, "_core", None) or np.core


def _legacy_rank_state(path: Path) -> tuple[dict, dict | None]:
    """A ``rank_XXXXX.pt`` of checkpoints written before rank state was JSON, read weights-only (numpy's
    array reconstruction allowed, nothing else)."""
    try:
        with torch.serialization.safe_globals([_np_core().multiarray._reconstruct, np.ndarray, np.dtype]):
            d = torch.load(path, map_location="cpu", weights_only=True)
        return d["rng"], d.get("data")
    except Exception as e:  # noqa: BLE001 - weights-only refusals and truncation alike
        raise UnsafeCheckpointError(f"{path}: weights-only reader refused it ({cf.weights_only_reason(e)})") from e


def _rank_state(ckpt_dir: Path, rank: int) -> tuple[dict, dict | None]:
    path = cf.rank_state_file(ckpt_dir, rank)
    legacy = path.with_suffix(".pt")
    if not path.exists() and legacy.exists():
        return _legacy_rank_state(legacy)
    return cf.read_rank_state(path)


def verify_checkpoint(ckpt_dir: str | Path) -> dict:
    """Check ``ckpt_dir`` on every rank before anything in it is loaded; every rank must call this.

    Returns the trainer state. Raises CheckpointError naming the folder and each bad file (the same
    on every rank), UnsafeCheckpointError for a file that asks to build arbitrary objects.
    """
    ckpt_dir = Path(ckpt_dir)
    problems: list[str] = []
    unsafe: list[str] = []
    state = None
    try:
        files = cf.read_manifest(ckpt_dir)
        if files is None:
            if _rank() == 0:
                log.warning("%s has no checksum manifest (written by an earlier version): not verified", ckpt_dir)
        else:
            problems += cf.verify_share(ckpt_dir, files, _rank(), _world())
        if not problems:
            state = _read_trainer_state(ckpt_dir)
            cf.check_pickles(ckpt_dir)
    except UnsafeCheckpointError as e:
        unsafe.append(str(e))
    except CheckpointError as e:
        problems.append(str(e))
    everyone = _gather((problems, unsafe))
    unsafe = sorted({u for _, us in everyone for u in us})
    problems = sorted({p for ps, _ in everyone for p in ps})
    if unsafe:
        raise UnsafeCheckpointError(
            f"{ckpt_dir}: refusing to load: " + "; ".join(unsafe) + ". Nothing from it was loaded; "
            "a file like this is never written by the trainer, so the run stops instead of falling back"
        )
    if problems:
        raise CheckpointError(f"{ckpt_dir}: " + "; ".join(problems))
    return state


def move_aside(ckpt_dir: Path) -> Path:
    """Rename a checkpoint that failed verification to ``<name>.corrupt`` (numbered if taken); rank 0."""
    target = ckpt_dir.with_name(ckpt_dir.name + ".corrupt")
    n = 1
    while target.exists():
        n += 1
        target = ckpt_dir.with_name(f"{ckpt_dir.name}.corrupt{n}")
    os.replace(ckpt_dir, target)
    return target


def load_newest_usable(ckpt_root: str | Path, model_chunks, optimizer, scheduler, check=None):
    """Resume from the newest checkpoint that passes verification; every rank must call this.

    A checkpoint that fails (checksums, truncation, a missing or unreadable file) is logged with its
    problems, moved aside and the next older one is tried. Returns ``(path, trainer_state,
    loader_state)``, or ``(None, None, None)`` when the run has no checkpoint. Raises CheckpointError
    when checkpoints exist but none is usable (the run never silently starts over), and
    UnsafeCheckpointError at once for a file that asks to build arbitrary objects. ``check(path,
    trainer_state)``, called after verification and before anything is loaded, may refuse the
    checkpoint by raising (e.g. the resume checks of ``trainer.segments``).
    """
    tried = []
    for ckpt_dir in candidates(ckpt_root):
        try:
            saved = verify_checkpoint(ckpt_dir)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as e:
            barrier()
            if _rank() == 0:
                moved = move_aside(ckpt_dir)
                log.error("checkpoint %s cannot be used: %s. Moved aside to %s", ckpt_dir.name, e, moved.name)
            barrier()
            tried.append(ckpt_dir.name)
            continue
        if tried and _rank() == 0:
            log.warning(
                "resuming from %s, the newest usable checkpoint (unusable: %s) ", ckpt_dir.name, ", ".join(tried)
            )
        if check is not None:
            check(ckpt_dir, saved)
        state, loader_state = load_checkpoint(ckpt_dir, model_chunks, optimizer, scheduler, verified=True)
        return ckpt_dir, state, loader_state
    if tried:
        raise CheckpointError(
            f"{ckpt_root}: no usable checkpoint ({', '.join(tried)} failed verification and were moved aside as "
            "*.corrupt). The run does not start over by itself: move the checkpoints folder away to do so"
        )
    return None, None, None


def load_checkpoint(
    ckpt_dir: str | Path, model_chunks, optimizer, scheduler, verified: bool = False
) -> tuple[dict, dict | None]:
    """Restore model, optimizer, scheduler and this rank's RNG state from ``ckpt_dir``.

    Returns ``(trainer_state, loader_state)``; ``loader_state`` is this rank's saved loader state
    (rank 0's when the world size changed, since the loader state is global). The checkpoint is
    verified first unless ``verified`` (``verify_checkpoint`` already ran on every rank).
    """
    from megatron.core import dist_checkpointing

    ckpt_dir = Path(ckpt_dir)
    state = _read_trainer_state(ckpt_dir) if verified else verify_checkpoint(ckpt_dir)
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
            configured = _configured_hyperparameters(optimizer)
            optimizer.load_state_dict(loaded["optimizer"])
            _set_configured_hyperparameters(optimizer, configured)
            _restore_adam_steps(optimizer)  # after: a fused group keeps its step counts on the device
        if model_only_optimizer is not None:  # bf16 runs: refresh the fp32 main weights from the model
            model_only_optimizer.reload_model_params()
    if scheduler is not None and state.get("scheduler"):
        scheduler.num_steps = 0  # megatron's load_state_dict *advances* by the saved count
        scheduler.load_state_dict(state["scheduler"])
    same_world = state.get("world_size") == _world()
    rng, data = _rank_state(ckpt_dir, _rank() if same_world else 0)
    if same_world:
        set_rng_state(rng)
    return state, data


def load_model_weights(ckpt_dir: str | Path, model) -> None:
    """Load only the model weights of a checkpoint into ``model`` (any TP/PP layout, e.g. TP=1 export)."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.validation import StrictHandling

    verify_checkpoint(ckpt_dir)
    with torch.no_grad():
        loaded = dist_checkpointing.load(
            {"model": unwrap(model).sharded_state_dict()}, str(ckpt_dir), strict=StrictHandling.LOG_UNEXPECTED
        )
    unwrap(model).load_state_dict(loaded["model"], strict=True)
