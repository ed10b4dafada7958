"""The training loop: set-up helpers first, then the step functions, then ``train()``.

``train()`` reads top to bottom: set up (distributed world, run folder, model, optimizer, loader),
resume from the newest checkpoint, then ``train_step`` / ``maybe_validate`` / ``flush_window`` /
``maybe_save`` until ``train.train_steps``. Pretraining reads a corpus folder through
``trainer.data.loader.CurriculumLoader`` (the curriculum changes the bucket mix at step boundaries
inside the loader); SFT mode (``sft.path``) reads chat JSONL through ``SFTLoader`` with the loss on
assistant tokens only. The loop sees either through the ``BatchLoader`` protocol.

Loss normalisation: megatron's ``calculate_per_token_loss`` is on, so gradients are the mean over
every unmasked token of the *global* batch whatever the DP size or micro-batch split; this is what
makes DP=2 reproduce a single process and SFT masks weigh every target token equally. The
validation loss is the same per-token mean over a bucket's held-out samples.
"""

from __future__ import annotations

import logging
import math
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from infra.config import ConfigError, save_config, to_dict
from infra.folders import RunFolder
from infra.log import get_logger, progress, setup_logging
from infra.proc import run_cli
from trainer import checkpoint as ckpt
from trainer import hot_loop
from trainer.config import TrainerConfig, resolve_curriculum
from trainer.distributed import DistInfo, barrier, init_distributed, shutdown
from trainer.hot_loop import StepClock, all_finite, optimizer_step, reduce_window, supports_device_step
from trainer.layer_specs import fp8_config_kwargs, resolve_spec_name
from trainer.model import (
    Arch,
    arch_of,
    build_gpt,
    flops_per_token,
    mask_padded_vocab,
    padded_vocab_size,
    transformer_config,
)
from trainer.segments import (
    append_segment,
    changed_keys,
    check_fixed,
    fixed_settings,
    read_previous_config,
    tokenizer_fingerprint,
)

if TYPE_CHECKING:
    from trainer.data.loader import BatchLoader

log = get_logger("trainer")


# ----------------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------------


@dataclass
class ModelSetup:
    arch: Arch
    spec: str
    vocab_size: int  # tokenizer length (what HF export writes)
    padded_vocab: int  # embedding rows (multiple of make_vocab_size_divisible_by * TP)
    dtype: torch.dtype
    tokenizer: object


def check_init_tokenizer(hf_dir: str, corpus_tokenizer, corpus: str) -> None:
    """Refuse ``init.hf`` weights whose tokenizer is not the corpus's: the token ids of the corpus would
    index embedding rows trained for other tokens (the embedding is also cut to the corpus's vocabulary)."""
    from infra.tokenizer import load_tokenizer

    try:
        hf_tok = load_tokenizer(hf_dir, add_tag=True)
    except Exception as e:  # noqa: BLE001 - no tokenizer files, unreadable files
        raise ConfigError(f"init.hf={hf_dir}: its tokenizer cannot be loaded ({e}), so it cannot be checked") from e
    if tokenizer_fingerprint(hf_tok) == tokenizer_fingerprint(corpus_tokenizer):
        return
    a, b = hf_tok.get_vocab(), corpus_tokenizer.get_vocab()
    differ = sum(1 for t, i in b.items() if a.get(t) != i)
    raise ConfigError(
        f"init.hf={hf_dir}: its tokenizer ({len(hf_tok)} tokens) is not the tokenizer of data.corpus={corpus} "
        f"({len(corpus_tokenizer)} tokens; {differ} of them have another id or none in init.hf's). The "
        "corpus's token ids would index embedding rows trained for other tokens. Tokenize the corpus with "
        "init.hf's tokenizer (datagen tokenizer.path=<the HF folder>) or train from scratch (no init.hf)"
    )


def resolve_model_setup(cfg: TrainerConfig, info: DistInfo) -> ModelSetup:
    """Architecture, tokenizer and vocabulary of a run from the config, the corpus and ``init.hf``."""
    from infra.corpus import Manifest
    from infra.tokenizer import load_tokenizer

    m = cfg.model
    arch = arch_of(m, cfg.init.hf)
    if cfg.sft_mode or not cfg.data.corpus:
        if not cfg.init.hf:
            raise ValueError("SFT mode needs a tokenizer: set init.hf (an HF folder with tokenizer files)")
        tokenizer = load_tokenizer(cfg.init.hf, add_tag=True)
    else:
        manifest = Manifest.load(cfg.data.corpus)
        tokenizer = load_tokenizer(Path(cfg.data.corpus) / manifest.tokenizer.path, add_tag=True)
        if cfg.init.hf:
            check_init_tokenizer(cfg.init.hf, tokenizer, cfg.data.corpus)
    vocab = m.vocab_size or len(tokenizer)
    if vocab < len(tokenizer):
        raise ValueError(f"model.vocab_size={vocab} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "fp32"
    return ModelSetup(
        arch=arch,
        spec=resolve_spec_name(m.spec),
        vocab_size=vocab,
        padded_vocab=padded_vocab_size(vocab, m.make_vocab_size_divisible_by, cfg.parallel.tp),
        dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
        tokenizer=tokenizer,
    )


def build_model_and_optimizer(cfg: TrainerConfig, ms: ModelSetup, info: DistInfo):
    """The DDP-wrapped megatron model (one chunk), its optimizer and LR scheduler.

    ``init.hf`` weights are copied in *before* DDP and the optimizer exist, because DDP moves
    parameters into its contiguous buffers and the optimizer clones fp32 master weights.
    """
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.transformer.module import Float16Module

    from trainer.fp8 import convert_to_float8, validate_fp8_on_this_machine
    from trainer.fusions import installed_fusion_libraries, resolve_fusions
    from trainer.model import compile_layers, hoist_param_gather_hooks

    t, m = cfg.train, cfg.model
    on_gpu = info.device.type == "cuda"
    validate_fp8_on_this_machine(ms.spec, m.fp8, m.fp8_recipe, m.compile)
    if m.compile and not on_gpu:
        log.warning("model.compile=true on the CPU: compiling for the CPU (slow to start, no gain expected)")
    fusions = resolve_fusions(
        {k: getattr(m.fusions, k) for k in ("gradient_accumulation", "rope", "cross_entropy", "swiglu")},
        on_gpu,
        ms.spec,
        installed_fusion_libraries(),
    )
    if m.fp8 and ms.spec == "torch" and fusions["gradient_accumulation_fusion"]:
        if m.fusions.gradient_accumulation:
            raise ConfigError(
                "key 'model.fusions.gradient_accumulation': torchao's float8 linears (model.fp8 with the "
                "torch spec) produce their own weight gradients; set it to null or false"
            )
        fusions["gradient_accumulation_fusion"] = False
    if info.is_main:
        log.info("fusions: %s", ", ".join(f"{k}={v}" for k, v in fusions.items()))
    config = transformer_config(
        ms.arch,
        tp=info.tp,
        pp=info.pp,
        dtype=ms.dtype,
        init_std=m.init_std,
        spec=ms.spec,
        fp8=fp8_config_kwargs(m.fp8, m.fp8_recipe, ms.spec),
        fusions=fusions,
    )
    gpt = build_gpt(
        config,
        ms.arch,
        ms.spec,
        ms.padded_vocab,
        t.seq_length,
        pre_process=info.is_first_stage,
        post_process=info.is_last_stage,
    )
    mask_padded_vocab(gpt, ms.vocab_size, info.tp_rank, info.tp)
    if on_gpu:
        gpt.cuda(torch.cuda.current_device())
    if cfg.init.hf:
        from trainer.hf_convert import load_hf_into_model

        load_hf_into_model(gpt, cfg.init.hf, ms.vocab_size, ms.padded_vocab, info.tp_rank, info.tp)
    model = gpt
    if ms.dtype == torch.bfloat16:
        model = Float16Module(config, gpt)
    if m.fp8 and ms.spec == "torch":
        n = convert_to_float8(gpt, m.fp8_recipe)
        if info.is_main:
            log.info("fp8: %d linear layers run through torchao float8 (%s)", n, m.fp8_recipe)
    if m.compile:
        n = compile_layers(gpt)
        if info.is_main:
            log.info("compile: %d transformer layers compiled one by one", n)
    overlap_grad = on_gpu if t.overlap_grad_reduce is None else t.overlap_grad_reduce
    overlap_param = (on_gpu and t.distributed_optimizer) if t.overlap_param_gather is None else t.overlap_param_gather
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        use_distributed_optimizer=t.distributed_optimizer,
        overlap_grad_reduce=overlap_grad,
        overlap_param_gather=overlap_param,
        average_in_collective=False,
        # megatron's check reads every bucket's norm back each step; the loop checks the global
        # gradient norm at its flushes instead (train.nan_check_interval)
        check_for_nan_in_grad=False,
    )
    ddp = DistributedDataParallel(config=config, ddp_config=ddp_config, module=model)
    if m.compile:
        hoist_param_gather_hooks(ddp, gpt)
    opt_config = OptimizerConfig(
        optimizer="adam",
        lr=t.lr,
        min_lr=t.min_lr,
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        adam_eps=t.adam_eps,
        clip_grad=t.clip_grad,
        bf16=ms.dtype == torch.bfloat16,
        params_dtype=ms.dtype,
        use_distributed_optimizer=t.distributed_optimizer,
    )
    optimizer = get_megatron_optimizer(opt_config, [ddp])
    fused = on_gpu if t.fused_adam is None else t.fused_adam
    if fused:
        n = use_fused_adamw(optimizer)
        if info.is_main:
            log.info("optimizer: torch's fused AdamW for %d parameter groups", n)
    decay_steps = t.train_steps
    style = {"cosine": "cosine", "linear": "linear", "constant": "constant", "wsd": "WSD"}[t.schedule]
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if t.warmup_steps else t.lr,
        max_lr=t.lr,
        min_lr=t.min_lr,
        lr_warmup_steps=t.warmup_steps,
        lr_decay_steps=decay_steps,
        lr_decay_style=style,
        start_wd=t.weight_decay,
        end_wd=t.weight_decay,
        wd_incr_steps=decay_steps,
        wd_incr_style="constant",
        wsd_decay_steps=max(1, int(round(t.wsd_decay_fraction * t.train_steps))) if style == "WSD" else None,
        lr_wsd_decay_style="cosine" if style == "WSD" else None,
        # on resume the config's schedule wins over the checkpoint's (changes are logged by record_start);
        # only the step count comes from the checkpoint
        use_checkpoint_opt_param_scheduler=False,
        override_opt_param_scheduler=True,
    )
    # megatron's scheduler gives step n the lr of n completed steps, so step 1 of a warmup would run at
    # lr 0; advancing once makes step s (1-based) use schedule(s). A resumed run restores num_steps.
    scheduler.step(increment=1)
    # Hooks megatron's schedules call: grad sync + 1/num_tokens scaling (on the device), no-sync for
    # accumulation.
    config.finalize_model_grads_func = hot_loop.finalize_model_grads
    config.no_sync_func = ddp.no_sync
    config.grad_scale_func = optimizer.scale_loss
    return ddp, optimizer, scheduler


def use_fused_adamw(optimizer) -> int:
    """Switch the torch Adam/AdamW instances inside megatron's optimizer to torch's fused kernel (a
    no-op for TE's or apex's FusedAdam, which are fused already). Must run before the first step (the
    fused kernel keeps its step counts on the device; ``trainer.checkpoint`` primes and restores them
    there). Returns the number of parameter groups switched."""
    from trainer.checkpoint import _inner_optimizers

    n = 0
    for inner in _inner_optimizers(optimizer):
        if type(inner) not in (torch.optim.Adam, torch.optim.AdamW):
            continue
        if any(inner.state.values()):
            raise RuntimeError("train.fused_adam: the optimizer has already stepped")
        for group in inner.param_groups:
            group["fused"], group["foreach"] = True, False
            n += 1
    return n


def build_loader(cfg: TrainerConfig, ms: ModelSetup, info: DistInfo) -> BatchLoader:
    """The curriculum loader (pretraining) or the SFT loader, sharded over DP ranks. With validation on,
    the curriculum loader holds ``validation.samples_per_bucket`` samples of every bucket out."""
    from trainer.data.loader import CurriculumLoader, SFTLoader

    t = cfg.train
    if cfg.sft_mode:
        return SFTLoader(
            cfg.sft.path,
            ms.tokenizer,
            t.seq_length,
            t.global_batch_size,
            cfg.data.seed,
            dp_rank=info.dp_rank,
            dp_size=info.dp,
        )
    v = cfg.validation
    return CurriculumLoader(
        cfg.data.corpus,
        resolve_curriculum(cfg.data.curriculum),
        t.seq_length,
        t.global_batch_size,
        t.train_steps,
        cfg.data.seed,
        dp_rank=info.dp_rank,
        dp_size=info.dp,
        expected_vocab_size=len(ms.tokenizer),
        heldout_per_bucket=v.samples_per_bucket if v.enabled else 0,
    )


def make_forward_step():
    """megatron ``forward_step_func``: per-token loss summed over the mask, with the token count."""

    def forward_step(data_iterator, model):
        mb = next(data_iterator)
        tokens, labels, mask = mb["input"], mb["labels"], mb["loss_mask"]
        position_ids = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0).expand_as(tokens)
        output = model(tokens, position_ids, None, labels=labels)

        def loss_func(per_token_loss):
            loss = torch.sum(per_token_loss.float().view(-1) * mask.view(-1))
            num_tokens = mask.sum().to(torch.int)
            return loss, num_tokens, {"lm": torch.stack([loss.detach(), num_tokens.detach().float()])}

        return output, loss_func

    return forward_step


def split_microbatches(batch: dict, micro_batch_size: int, device) -> list[dict]:
    tokens = batch["tokens"].to(device, non_blocking=True)
    mask = batch["loss_mask"].to(device, non_blocking=True)
    out = []
    for i in range(0, tokens.shape[0], micro_batch_size):
        tk = tokens[i : i + micro_batch_size]
        out.append(
            {
                "input": tk[:, :-1].contiguous(),
                "labels": tk[:, 1:].contiguous(),
                "loss_mask": mask[i : i + micro_batch_size],
            }
        )
    return out


class StopSignal:
    """SIGTERM / SIGUSR1 set a flag; the loop saves a checkpoint and exits 0 at the next flush of its
    per-step values (every ``train.log_interval`` steps and at checkpoint steps), where the flag is
    summed over the ranks with the losses so that every rank stops at the same step (Slurm's
    ``--signal=B:USR1@N`` and preemption's SIGTERM), so a requeued job resumes."""

    def __init__(self):
        self.received: int | None = None
        for s in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        self.received = signum


def model_meta(ms: ModelSetup, cfg: TrainerConfig, info: DistInfo) -> dict:
    return {
        "arch": asdict(ms.arch),
        "vocab_size": ms.vocab_size,
        "padded_vocab": ms.padded_vocab,
        "spec": ms.spec,
        "dtype": str(ms.dtype).replace("torch.", ""),
        "world_size": info.world_size,
        "tp": info.tp,
        "pp": info.pp,
        "seq_length": cfg.train.seq_length,
    }


def save_tokenizer(tokenizer, path: Path) -> None:
    if not (path / "tokenizer_config.json").is_file():
        tokenizer.save_pretrained(str(path))


def prepare_run_folder(folder: RunFolder, cfg: TrainerConfig, ms: ModelSetup, info: DistInfo) -> None:
    """Main rank, at every start (fresh or resumed): tokenizer, ``run.json``. The resolved config is
    written by ``record_start`` once the resume checks accepted this start."""
    folder.root.mkdir(parents=True, exist_ok=True)
    save_tokenizer(ms.tokenizer, folder.tokenizer)
    folder.write_info(
        mode="sft" if cfg.sft_mode else "pretrain", world_size=info.world_size, tp=info.tp, pp=info.pp, dp=info.dp
    )
    log.info(
        "model: %s layers, hidden %d, vocab %d (padded %d), spec=%s, %s, TP=%d PP=%d DP=%d",
        ms.arch.num_layers,
        ms.arch.hidden_size,
        ms.vocab_size,
        ms.padded_vocab,
        ms.spec,
        str(ms.dtype).replace("torch.", ""),
        info.tp,
        info.pp,
        info.dp,
    )


def record_start(folder: RunFolder, cfg: TrainerConfig, info: DistInfo, previous: dict | None, start: dict) -> None:
    """Main rank, after resume: the resolved config, and this start's line in ``segments.jsonl`` with
    the settings that changed since the previous start (applied, and logged here)."""
    changed = changed_keys(previous, to_dict(cfg))
    for key, c in changed.items():
        if key.split(".")[0] not in ("logging", "run_dir"):
            log.info("resume: %s changed %s -> %s (applied)", key, c["before"], c["after"])
    save_config(cfg, folder.config)
    append_segment(
        folder.segments,
        dict(start, world_size=info.world_size, tp=info.tp, pp=info.pp, dp=info.dp, changed=changed),
    )


def complete_param_gather(ddp) -> None:
    """With ``train.overlap_param_gather`` the updated parameters are all-gathered during the next
    forward pass; before a checkpoint, a validation or the export they must be complete."""
    if getattr(ddp, "use_forward_hook", False):
        ddp.start_param_sync(force_sync=True)


def export_hf(ckpt_dir: Path, folder: RunFolder, info: DistInfo, ddp, ms: ModelSetup, out: Path | None = None) -> None:
    """Write the model as an HF folder, ``run_dir/hf`` or ``out`` (at the end, or with each checkpoint):
    in process for a world of one, else as a TP=1 subprocess on rank 0 exporting ``ckpt_dir``."""
    out = folder.hf if out is None else out
    complete_param_gather(ddp)
    if info.world_size == 1:
        from trainer.export import export_state_dict

        sd = {
            k: v.float().cpu()
            for k, v in ddp.module.state_dict().items()
            if v is not None and not k.endswith("_extra_state")
        }
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        export_state_dict(sd, ms.arch, ms.vocab_size, ms.tokenizer, out)
    elif info.is_main:
        # Absolute paths: the child runs from the repository root and the run folder may be relative.
        # No log file: the export's output joins this job's log, as before, since it is a step of the run.
        run_cli(
            "trainer", ["export-hf", str(Path(ckpt_dir).resolve()), str(out.resolve())], log_path=None, what="export-hf"
        )
    barrier()
    if info.is_main:
        log.info("exported HF model to %s", out)


# ----------------------------------------------------------------------------------------------
# The loop's pieces
# ----------------------------------------------------------------------------------------------


@dataclass
class Trainer:
    """What the step functions share: the config, the world, the model, its optimizer, the data.

    Attributes:
        cfg: the run's config.
        info: this process's ranks.
        folder: the run folder.
        ms: architecture, vocabulary, dtype, tokenizer.
        ddp: the DDP-wrapped model (one chunk).
        optimizer: megatron's optimizer.
        scheduler: megatron's LR / weight-decay scheduler.
        loader: the batches (pretraining or SFT).
        num_microbatches: micro-batches per step on this rank (gradient accumulation).
        forward_backward: megatron's schedule for this PP size.
        forward_step: its ``forward_step_func`` (``make_forward_step``).
        flops_per_token: model FLOPs per trained token (for MFU).
        fixed: the settings this run's checkpoints fix (``trainer.segments.fixed_settings``), taken once
            at start-up and written into every checkpoint.
        clock: step timing (CUDA events on GPU).
        device_step: the optimizer step runs without host syncs (``trainer.hot_loop.optimizer_step``).
    """

    cfg: TrainerConfig
    info: DistInfo
    folder: RunFolder
    ms: ModelSetup
    ddp: object
    optimizer: object
    scheduler: object
    loader: BatchLoader
    num_microbatches: int
    forward_backward: object
    forward_step: object
    flops_per_token: float
    fixed: dict = field(default_factory=dict)
    clock: StepClock = field(default_factory=lambda: StepClock(False))
    device_step: bool = True


@dataclass
class TrainState:
    """The loop's counters.

    Attributes:
        step: optimizer steps done (a checkpoint's step).
        tokens: tokens trained on so far.
        loss: the last step's loss.
        phase: curriculum phase of the last step (a change is logged).
        stopped_by_signal: the loop stopped on SIGTERM / SIGUSR1 after saving.
    """

    step: int = 0
    tokens: int = 0
    loss: float = float("nan")
    phase: int = 0
    stopped_by_signal: bool = False


@dataclass
class StepResult:
    """What one optimizer step leaves for the next flush; its numbers stay on the device until then.

    Attributes:
        step: the step it completed (1-based).
        tokens: tokens trained on after it.
        loss_parts: this rank's [loss sum, unmasked token count] (fp64, device; zeros on ranks
            that hold no loss).
        grad_norm: global gradient norm (fp64 device scalar; None when megatron reports none).
        lr: the learning rate it ran at.
        start, end: its ``StepClock`` marks.
        phase: curriculum phase in force at its start.
        bucket_counts: samples per bucket in its global batch.
        cumulative_tokens: tokens drawn per bucket up to and including its batch.
    """

    step: int
    tokens: int
    loss_parts: torch.Tensor
    grad_norm: torch.Tensor | None
    lr: float
    start: object
    end: object
    phase: int
    bucket_counts: dict
    cumulative_tokens: dict


def build_trainer(cfg: TrainerConfig, info: DistInfo, folder: RunFolder, ms: ModelSetup) -> Trainer:
    from megatron.core.pipeline_parallel import get_forward_backward_func

    t = cfg.train
    if t.global_batch_size % (info.dp * t.micro_batch_size):
        raise ValueError(
            f"train.global_batch_size={t.global_batch_size} must be a multiple of "
            f"micro_batch_size*DP = {t.micro_batch_size}*{info.dp}"
        )
    # the loader first: its start-up checks (corpus, tokenizer, epoch limits) fail in seconds, before a
    # large model is built; it draws no torch random numbers, so the model's initialisation is unchanged
    loader = build_loader(cfg, ms, info)
    ddp, optimizer, scheduler = build_model_and_optimizer(cfg, ms, info)
    return Trainer(
        cfg=cfg,
        info=info,
        folder=folder,
        ms=ms,
        ddp=ddp,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        num_microbatches=t.global_batch_size // info.dp // t.micro_batch_size,
        forward_backward=get_forward_backward_func(),
        forward_step=make_forward_step(),
        flops_per_token=flops_per_token(ms.arch, ms.padded_vocab, t.seq_length),
        fixed=fixed_settings(cfg, ms),
        clock=StepClock(info.device.type == "cuda"),
        device_step=supports_device_step(optimizer),
    )


def resume(tr: Trainer) -> tuple[TrainState, dict]:
    """Automatic resume from the newest usable checkpoint: model, optimizer, scheduler, data, RNG.

    Returns the loop's state and what this start is (``from_checkpoint``, ``step`` and the fixed
    settings ``resume.allow_changed`` let change, ``allowed``), for ``segments.jsonl``. A checkpoint
    whose fixed settings differ from this start's is refused before anything is loaded from it.
    """
    state = TrainState()
    accepted: dict = {}

    def check(ckpt_dir, saved: dict) -> None:
        if "fixed" not in saved and tr.info.is_main:
            log.warning("%s predates the resume checks: its settings are not compared with this start's", ckpt_dir)
        accepted.update(check_fixed(saved.get("fixed"), tr.fixed, tr.cfg.resume.allow_changed, str(ckpt_dir)))

    latest, saved, data_state = ckpt.load_newest_usable(
        tr.folder.checkpoints, [tr.ddp], tr.optimizer, tr.scheduler, check=check
    )
    if latest is not None:
        tr.loader.load_state_dict(data_state)
        state.step, state.tokens = saved["step"], saved["tokens"]
        log.info("resumed from %s at step %d", latest, state.step)
        for name in accepted:
            log.warning("resume.allow_changed: %s changed at step %d (recorded in segments.jsonl)", name, state.step)
    state.phase = tr.loader.phase_at(state.step)
    return state, {"from_checkpoint": latest.name if latest else None, "step": state.step, "allowed": accepted}


def local_loss_parts(losses: list[dict], info: DistInfo) -> torch.Tensor:
    """This rank's [loss sum, token count] of a step's micro-batches (fp64, on the device): the last PP
    stage's TP rank 0 of every DP replica holds them, every other rank zeros, so that summing over
    all ranks counts each token once."""
    total = torch.zeros(2, dtype=torch.float64, device=info.device)
    if info.is_last_stage and info.tp_rank == 0:
        for x in losses:
            total += x["lm"].to(torch.float64)
    return total


def reduce_loss(losses: list[dict], info: DistInfo) -> float:
    """Mean loss over every unmasked token of the global batch (one all-reduce and one read-back)."""
    total = local_loss_parts(losses, info)
    if dist.is_initialized() and info.world_size > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1].clamp(min=1))


def train_step(tr: Trainer, state: TrainState, clock: StepClock) -> StepResult:
    """Next batch, forward + backward over its micro-batches (pipeline schedule when PP > 1), optimizer
    and LR-scheduler step; advances ``state``. Nothing is read back from the device: the loss, the
    gradient norm and the timing stay there until the next flush (``flush_window``)."""
    t = tr.cfg.train
    phase = tr.loader.phase_at(state.step)  # the loader switches the mix at this step boundary
    start = clock.mark()
    batch = tr.loader.next_batch()
    microbatches = split_microbatches(batch, t.micro_batch_size, tr.info.device)
    tr.ddp.zero_grad_buffer()
    tr.optimizer.zero_grad()
    losses = tr.forward_backward(
        forward_step_func=tr.forward_step,
        data_iterator=iter(microbatches),
        model=[tr.ddp],
        num_microbatches=tr.num_microbatches,
        seq_length=t.seq_length,
        micro_batch_size=t.micro_batch_size,
        forward_only=False,
    )
    lr = tr.optimizer.param_groups[0]["lr"]
    if tr.device_step:
        update_ok, grad_norm = optimizer_step(tr.optimizer, t.clip_grad, tr.info.device)
    else:  # megatron's own step (reads the norm back): optimizers the device step does not cover
        update_ok, norm, _ = tr.optimizer.step()
        grad_norm = None if norm is None else torch.tensor(float(norm), dtype=torch.float64)
    if not update_ok:
        raise FloatingPointError(f"step {state.step + 1}: optimizer step skipped (non-finite gradients)")
    tr.scheduler.step(increment=1)
    end = clock.mark()
    state.step += 1
    state.tokens += t.global_batch_size * t.seq_length
    return StepResult(
        step=state.step,
        tokens=state.tokens,
        loss_parts=local_loss_parts(losses, tr.info),
        grad_norm=grad_norm,
        lr=lr,
        start=start,
        end=end,
        phase=phase,
        bucket_counts=batch["bucket_counts"],
        cumulative_tokens=tr.loader.cumulative_tokens,
    )


def validate(tr: Trainer) -> dict[str, float]:
    """Mean per-token loss on each bucket's held-out samples: forward only, no gradients, eval mode."""
    t = tr.cfg.train
    out = {}
    complete_param_gather(tr.ddp)
    tr.ddp.eval()
    try:
        with torch.no_grad():
            for bucket in tr.loader.heldout_buckets:
                batch = tr.loader.heldout_batch(bucket, multiple_of=t.micro_batch_size)
                microbatches = split_microbatches(batch, t.micro_batch_size, tr.info.device)
                losses = tr.forward_backward(
                    forward_step_func=tr.forward_step,
                    data_iterator=iter(microbatches),
                    model=[tr.ddp],
                    num_microbatches=len(microbatches),
                    seq_length=t.seq_length,
                    micro_batch_size=t.micro_batch_size,
                    forward_only=True,
                )
                out[bucket] = reduce_loss(losses, tr.info)
    finally:
        tr.ddp.train()
    return out


def maybe_validate(tr: Trainer, state: TrainState) -> dict[str, float] | None:
    """The validation losses when this step is due (every ``validation.interval`` steps, and after the
    last step with ``validation.at_end``), else None."""
    v = tr.cfg.validation
    if not v.enabled:
        return None
    if state.step % v.interval and not (v.at_end and state.step == tr.cfg.train.train_steps):
        return None
    val_loss = validate(tr)
    if tr.info.is_main:
        log.info("step %d val_loss %s", state.step, " ".join(f"{b} {x:.4f}" for b, x in val_loss.items()))
    return val_loss


def flush_due(cfg: TrainerConfig, step: int, validated: bool) -> bool:
    """Steps where the loop reads its per-step values back: every ``train.log_interval`` steps, the
    last step, checkpoint steps and validated steps. The same on every rank (a function of the step)."""
    t = cfg.train
    return (
        step % t.log_interval == 0
        or step == t.train_steps
        or bool(t.save_interval and step % t.save_interval == 0)
        or validated
    )


def check_finite_window(tr: Trainer, window: list[StepResult]) -> None:
    """The NaN check between flushes (``train.nan_check_interval``): one read-back of the window's
    gradient norms (global, so every rank decides alike); a non-finite one stops the run before
    anything more is saved."""
    norms = [r.grad_norm for r in window if r.grad_norm is not None]
    if all_finite(norms):
        return
    for r in window:
        if r.grad_norm is not None and not bool(r.grad_norm.isfinite()):
            raise FloatingPointError(f"step {r.step}: gradient norm is {float(r.grad_norm)}")


def flush_window(
    tr: Trainer,
    state: TrainState,
    window: list[StepResult],
    val_loss: dict[str, float] | None,
    stop: StopSignal,
    metrics,
    bar,
) -> bool:
    """Read a window of steps back (one all-reduce, one copy), then write each step's metrics.jsonl
    record (``val_loss`` on the last when it validated), the progress bar, the periodic log line and
    the curriculum phase-change line. A non-finite loss or gradient norm stops the run at the first
    such step (the records before it are written). Returns True when a rank received a stop signal."""
    t, info = tr.cfg.train, tr.info
    totals = reduce_window(
        [r.loss_parts for r in window],
        [r.grad_norm for r in window],
        stop.received is not None,
        info.device,
        info.world_size,
    )
    on_gpu = info.device.type == "cuda"
    for i, r in enumerate(window):
        loss, grad_norm = totals.losses[i], totals.grad_norms[i]
        if not math.isfinite(loss):
            raise FloatingPointError(f"step {r.step}: loss is {loss}")
        if grad_norm is not None and not math.isfinite(grad_norm):
            raise FloatingPointError(f"step {r.step}: gradient norm is {grad_norm}")
        if r.phase != state.phase:
            state.phase = r.phase
            if info.is_main:
                log.info(
                    "step %d: curriculum phase %d starts: %s", r.step - 1, r.phase, tr.loader.phase_weights(r.phase)
                )
        seconds = tr.clock.seconds(r.start, r.end)
        tps = t.global_batch_size * t.seq_length / seconds
        mfu = tps * tr.flops_per_token / (t.peak_tflops * 1e12 * info.world_size) if on_gpu else None
        record = {
            "step": r.step,
            "tokens": r.tokens,
            "loss": loss,
            "lr": r.lr,
            "grad_norm": grad_norm,
            "tokens_per_s": tps,
            "mfu": mfu,
            "phase": r.phase,
            "bucket_samples": r.bucket_counts,
            "bucket_tokens": r.cumulative_tokens,
        }
        if val_loss is not None and i == len(window) - 1:
            record["val_loss"] = val_loss
        metrics.log(record)
        state.loss = loss
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{r.lr:.2e}")
        if info.is_main and (r.step % t.log_interval == 0 or r.step == t.train_steps):
            log.info(
                "step %d/%d loss %.4f lr %.3e grad_norm %.3f tokens/s %.0f",
                r.step,
                t.train_steps,
                loss,
                r.lr,
                grad_norm or 0.0,
                tps,
            )
    return totals.stop


def maybe_save(tr: Trainer, state: TrainState, stopping: bool, stop: StopSignal) -> bool:
    """Checkpoint on schedule, at the end, or when a stop signal arrived (``stopping``, decided at the
    last flush, the same on every rank); True when the loop must stop."""
    t = tr.cfg.train
    if stopping or state.step == t.train_steps or (t.save_interval and state.step % t.save_interval == 0):
        meta = dict(model_meta(tr.ms, tr.cfg, tr.info), tokens=state.tokens, loss=state.loss, fixed=tr.fixed)
        complete_param_gather(tr.ddp)
        ckpt.save_checkpoint(
            tr.folder.checkpoints,
            state.step,
            [tr.ddp],
            tr.optimizer if t.save_optimizer else None,
            tr.scheduler,
            meta,
            tr.loader.state_dict(),
            keep_last=t.keep_last,
        )
        if tr.cfg.export.hf_at_saves:  # the checkpoint just written, as an HF folder beside it
            export_hf(
                ckpt.find_latest(tr.folder.checkpoints),
                tr.folder,
                tr.info,
                tr.ddp,
                tr.ms,
                out=tr.folder.hf_at_step(state.step),
            )
    if stopping:
        log.warning("signal %s: checkpoint saved at step %d, exiting for requeue", stop.received, state.step)
        state.stopped_by_signal = True
    return stopping


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def train(cfg: TrainerConfig) -> dict:
    """Train (or resume) the run in ``cfg.run_dir``; returns a summary (steps, last loss, stopped)."""
    from trainer.metrics import MetricsWriter

    setup_logging()
    for name in ("megatron.core", "megatron"):  # megatron logs every bucket and config at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    from trainer.device import select_device

    _, device_line = select_device(cfg.train.device)  # before anything touches CUDA or megatron
    from trainer.layer_specs import guard_transformer_engine

    guard_transformer_engine()  # a broken TE install is hidden from megatron (and named if spec=te)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    info = init_distributed(cfg.parallel.tp, cfg.parallel.pp, seed=cfg.train.seed)
    if info.is_main:
        log.info("%s", device_line)
    folder = RunFolder(cfg.run_dir)
    ms = resolve_model_setup(cfg, info)
    previous = read_previous_config(folder.config) if info.is_main else None
    if info.is_main:
        prepare_run_folder(folder, cfg, ms, info)
    tr = build_trainer(cfg, info, folder, ms)
    state, start = resume(tr)
    if info.is_main:
        record_start(folder, cfg, info, previous, start)

    lg = cfg.logging
    metrics = MetricsWriter(
        folder.root,
        enabled=info.is_main,
        resume_step=state.step,
        tensorboard=lg.tensorboard,
        wandb=lg.wandb,
        project=lg.wandb_project,
        name=lg.wandb_name,
        config=to_dict(cfg),
    )
    stop = StopSignal()
    bar = (
        progress(total=cfg.train.train_steps, desc="train", unit="step", initial=state.step)
        if (info.is_main and lg.progress)
        else None
    )

    t = cfg.train
    if t.prefetch_batches and state.step < t.train_steps:
        from trainer.prefetch import PrefetchLoader

        tr.loader = PrefetchLoader(
            tr.loader, t.train_steps - state.step, depth=t.prefetch_batches, pin_memory=info.device.type == "cuda"
        )
    window: list[StepResult] = []  # steps whose numbers are still on the device
    checked = 0  # how many of them the NaN check has seen
    try:
        while state.step < t.train_steps:
            window.append(train_step(tr, state, tr.clock))
            # before the flush: a step's validation losses belong in that step's metrics record
            val_loss = maybe_validate(tr, state)
            stopping = False
            if flush_due(cfg, state.step, validated=val_loss is not None):
                stopping = flush_window(tr, state, window, val_loss, stop, metrics, bar)
                window, checked = [], 0
            elif t.nan_check_interval and state.step % t.nan_check_interval == 0:
                check_finite_window(tr, window[checked:])
                checked = len(window)
            if maybe_save(tr, state, stopping, stop):
                break
    finally:
        close = getattr(tr.loader, "close", None)
        if close is not None:
            close()

    if bar is not None:
        bar.close()
    metrics.close()
    if not state.stopped_by_signal and cfg.export.hf_at_end:
        export_hf(ckpt.find_latest(folder.checkpoints), folder, info, tr.ddp, ms)
    if info.is_main and not state.stopped_by_signal and cfg.logging.report_at_end:
        from trainer.report import write_run_report

        write_run_report(folder.root, on_error="log")
    shutdown()
    return {
        "step": state.step,
        "loss": state.loss,
        "stopped_by_signal": state.stopped_by_signal,
        "run_dir": str(folder.root),
    }
