"""The training loop: set-up helpers first, then ``train()``, one loop read top to bottom.

Pretraining reads a corpus folder through ``trainer.data.loader.CurriculumLoader`` (the curriculum
changes the bucket mix at step boundaries inside the loader); SFT mode (``sft.path``) reads chat
JSONL through ``SFTLoader`` with the loss on assistant tokens only. Both go through the same loop.

Loss normalisation: megatron's ``calculate_per_token_loss`` is on, so gradients are the mean over
every unmasked token of the *global* batch whatever the DP size or micro-batch split; this is what
makes DP=2 reproduce a single process and SFT masks weigh every target token equally.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from infra.config import save_config, to_dict
from infra.log import get_logger, progress, setup_logging
from trainer import checkpoint as ckpt
from trainer.config import TrainerConfig, resolve_curriculum
from trainer.distributed import DistInfo, init_distributed, shutdown
from trainer.layer_specs import fp8_config_kwargs, resolve_spec_name
from trainer.model import (Arch, arch_from_hf_config, build_gpt, flops_per_token, mask_padded_vocab,
                           padded_vocab_size, resolve_arch, transformer_config)

log = get_logger("trainer")

PEAK_BF16_FLOPS = float(os.environ.get("SPT_PEAK_TFLOPS", "989")) * 1e12  # H100/H200 dense bf16


# ----------------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------------

@dataclass
class ModelSetup:
    arch: Arch
    spec: str
    vocab_size: int          # tokenizer length (what HF export writes)
    padded_vocab: int        # embedding rows (multiple of make_vocab_size_divisible_by * TP)
    dtype: torch.dtype
    tokenizer: object


def resolve_model_setup(cfg: TrainerConfig, info: DistInfo) -> ModelSetup:
    """Architecture, tokenizer and vocabulary of a run from the config, the corpus and ``init.hf``."""
    import json

    from infra.corpus import Manifest
    from infra.tokenizer import load_tokenizer

    m = cfg.model
    overrides = dict(num_layers=m.num_layers, hidden_size=m.hidden_size, num_attention_heads=m.num_attention_heads,
                     num_query_groups=m.num_query_groups, ffn_hidden_size=m.ffn_hidden_size, rope_theta=m.rope_theta)
    if cfg.init.hf:
        hf_cfg = json.loads((Path(cfg.init.hf) / "config.json").read_text())
        arch = arch_from_hf_config(hf_cfg)
    else:
        arch = resolve_arch(m.preset, **overrides)
    if cfg.sft_mode or not cfg.data.corpus:
        if not cfg.init.hf:
            raise ValueError("SFT mode needs a tokenizer: set init.hf (an HF folder with tokenizer files)")
        tokenizer = load_tokenizer(cfg.init.hf, add_tag=True)
    else:
        manifest = Manifest.load(cfg.data.corpus)
        tokenizer = load_tokenizer(Path(cfg.data.corpus) / manifest.tokenizer.path, add_tag=True)
    vocab = m.vocab_size or len(tokenizer)
    if vocab < len(tokenizer):
        raise ValueError(f"model.vocab_size={vocab} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "fp32"
    return ModelSetup(arch=arch, spec=resolve_spec_name(m.spec), vocab_size=vocab,
                      padded_vocab=padded_vocab_size(vocab, m.make_vocab_size_divisible_by, cfg.parallel.tp),
                      dtype=torch.bfloat16 if precision == "bf16" else torch.float32, tokenizer=tokenizer)


def build_model_and_optimizer(cfg: TrainerConfig, ms: ModelSetup, info: DistInfo):
    """The DDP-wrapped megatron model (one chunk), its optimizer and LR scheduler.

    ``init.hf`` weights are copied in *before* DDP and the optimizer exist, because DDP moves
    parameters into its contiguous buffers and the optimizer clones fp32 master weights.
    """
    from megatron.core import parallel_state as ps
    from megatron.core.distributed import (DistributedDataParallel, DistributedDataParallelConfig,
                                           finalize_model_grads)
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.transformer.module import Float16Module

    t = cfg.train
    config = transformer_config(ms.arch, tp=info.tp, pp=info.pp, dtype=ms.dtype, init_std=cfg.model.init_std,
                                spec=ms.spec, fp8=fp8_config_kwargs(cfg.model.fp8, cfg.model.fp8_recipe, ms.spec))
    model = build_gpt(config, ms.arch, ms.spec, ms.padded_vocab, t.seq_length,
                      pre_process=ps.is_pipeline_first_stage(), post_process=ps.is_pipeline_last_stage())
    mask_padded_vocab(model, ms.vocab_size, info.tp_rank, info.tp)
    if torch.cuda.is_available():
        model.cuda(torch.cuda.current_device())
    if cfg.init.hf:
        from trainer.hf_convert import load_hf_into_model

        load_hf_into_model(model, cfg.init.hf, ms.vocab_size, ms.padded_vocab, info.tp_rank, info.tp)
    if ms.dtype == torch.bfloat16:
        model = Float16Module(config, model)
    if cfg.model.compile:
        model.compile()  # compiles forward in place; megatron wrappers keep working
    on_gpu = torch.cuda.is_available()
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, use_distributed_optimizer=t.distributed_optimizer,
        overlap_grad_reduce=on_gpu, overlap_param_gather=False, average_in_collective=False,
        check_for_nan_in_grad=True)
    ddp = DistributedDataParallel(config=config, ddp_config=ddp_config, module=model)
    opt_config = OptimizerConfig(
        optimizer="adam", lr=t.lr, min_lr=t.min_lr, weight_decay=t.weight_decay, adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2, adam_eps=t.adam_eps, clip_grad=t.clip_grad, bf16=ms.dtype == torch.bfloat16,
        params_dtype=ms.dtype, use_distributed_optimizer=t.distributed_optimizer)
    optimizer = get_megatron_optimizer(opt_config, [ddp])
    decay_steps = t.train_steps
    style = {"cosine": "cosine", "linear": "linear", "constant": "constant", "wsd": "WSD"}[t.schedule]
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0 if t.warmup_steps else t.lr, max_lr=t.lr, min_lr=t.min_lr,
        lr_warmup_steps=t.warmup_steps, lr_decay_steps=decay_steps, lr_decay_style=style,
        start_wd=t.weight_decay, end_wd=t.weight_decay, wd_incr_steps=decay_steps, wd_incr_style="constant",
        wsd_decay_steps=max(1, int(round(t.wsd_decay_fraction * t.train_steps))) if style == "WSD" else None,
        lr_wsd_decay_style="cosine" if style == "WSD" else None)
    # megatron's scheduler gives step n the lr of n completed steps, so step 1 of a warmup would run at
    # lr 0; advancing once makes step s (1-based) use schedule(s). A resumed run restores num_steps.
    scheduler.step(increment=1)
    # Hooks megatron's schedules call: grad sync + 1/num_tokens scaling, no-sync for accumulation.
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = ddp.no_sync
    config.grad_scale_func = optimizer.scale_loss
    return ddp, optimizer, scheduler


def build_loader(cfg: TrainerConfig, ms: ModelSetup, info: DistInfo):
    """The curriculum loader (pretraining) or the SFT loader, sharded over DP ranks."""
    from trainer.data.loader import CurriculumLoader, SFTLoader

    t = cfg.train
    if cfg.sft_mode:
        return SFTLoader(cfg.sft.path, ms.tokenizer, t.seq_length, t.global_batch_size, cfg.data.seed,
                         dp_rank=info.dp_rank, dp_size=info.dp)
    return CurriculumLoader(cfg.data.corpus, resolve_curriculum(cfg.data.curriculum), t.seq_length,
                            t.global_batch_size, t.train_steps, cfg.data.seed, dp_rank=info.dp_rank,
                            dp_size=info.dp, expected_vocab_size=len(ms.tokenizer))


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
        tk = tokens[i:i + micro_batch_size]
        out.append({"input": tk[:, :-1].contiguous(), "labels": tk[:, 1:].contiguous(),
                    "loss_mask": mask[i:i + micro_batch_size]})
    return out


def reduce_loss(losses: list[dict], info: DistInfo) -> float:
    """Mean loss over every unmasked token of the global batch (summed on the last PP stage's TP rank 0
    of every DP replica, so each token counts once)."""
    from megatron.core import parallel_state as ps

    total = torch.zeros(2, dtype=torch.float64, device=info.device)
    if ps.is_pipeline_last_stage() and info.tp_rank == 0:
        for x in losses:
            total += x["lm"].to(torch.float64)
    if dist.is_initialized() and info.world_size > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1].clamp(min=1))


class StopSignal:
    """SIGTERM / SIGUSR1 set a flag; the loop saves a checkpoint and exits 0 at the next step boundary
    (Slurm's ``--signal=B:USR1@N`` and preemption's SIGTERM), so a requeued job resumes."""

    def __init__(self):
        self.received: int | None = None
        for s in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        self.received = signum

    def should_stop(self, info: DistInfo) -> bool:
        flag = torch.tensor([1.0 if self.received else 0.0], device=info.device)
        if dist.is_initialized() and info.world_size > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank must stop at the same step
        return bool(flag.item())


def model_meta(ms: ModelSetup, cfg: TrainerConfig, info: DistInfo) -> dict:
    from dataclasses import asdict

    return {"arch": asdict(ms.arch), "vocab_size": ms.vocab_size, "padded_vocab": ms.padded_vocab,
            "spec": ms.spec, "dtype": str(ms.dtype).replace("torch.", ""), "world_size": info.world_size,
            "tp": info.tp, "pp": info.pp, "seq_length": cfg.train.seq_length}


def save_tokenizer(tokenizer, path: Path) -> None:
    if not (path / "tokenizer_config.json").is_file():
        tokenizer.save_pretrained(str(path))


def export_at_end(ckpt_dir: Path, out: Path, info: DistInfo, ddp, ms: ModelSetup) -> None:
    """Write ``run_dir/hf``: in process for a world of one, else as a TP=1 subprocess on rank 0."""
    if info.world_size == 1:
        from trainer.export import export_state_dict

        sd = {k: v.float().cpu() for k, v in ddp.module.state_dict().items()
              if v is not None and not k.endswith("_extra_state")}
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        export_state_dict(sd, ms.arch, ms.vocab_size, ms.tokenizer, out)
    elif info.is_main:
        subprocess.run([sys.executable, "-m", "trainer", "export-hf", str(ckpt_dir), str(out)], check=True,
                       env={k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                                           "MASTER_ADDR", "MASTER_PORT")})
    ckpt._barrier()


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------

def train(cfg: TrainerConfig) -> dict:
    """Train (or resume) the run in ``cfg.run_dir``; returns a summary (steps, last loss, stopped)."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from trainer.metrics import MetricsWriter

    setup_logging()
    for name in ("megatron.core", "megatron"):  # megatron logs every bucket and config at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    t = cfg.train
    info = init_distributed(cfg.parallel.tp, cfg.parallel.pp, seed=t.seed)
    run_dir = Path(cfg.run_dir)
    ckpt_root = run_dir / "checkpoints"
    ms = resolve_model_setup(cfg, info)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        save_tokenizer(ms.tokenizer, run_dir / "tokenizer")
        log.info("model: %s layers, hidden %d, vocab %d (padded %d), spec=%s, %s, TP=%d PP=%d DP=%d",
                 ms.arch.num_layers, ms.arch.hidden_size, ms.vocab_size, ms.padded_vocab, ms.spec,
                 str(ms.dtype).replace("torch.", ""), info.tp, info.pp, info.dp)
    mbs_per_rank = t.global_batch_size // info.dp
    if t.global_batch_size % (info.dp * t.micro_batch_size):
        raise ValueError(f"train.global_batch_size={t.global_batch_size} must be a multiple of "
                         f"micro_batch_size*DP = {t.micro_batch_size}*{info.dp}")
    num_microbatches = mbs_per_rank // t.micro_batch_size

    ddp, optimizer, scheduler = build_model_and_optimizer(cfg, ms, info)
    loader = build_loader(cfg, ms, info)
    step, tokens_seen = 0, 0
    latest = ckpt.find_latest(ckpt_root)
    if latest is not None:  # automatic resume: model, optimizer, scheduler, data state, RNG
        state, data_state = ckpt.load_checkpoint(latest, [ddp], optimizer, scheduler)
        loader.load_state_dict(data_state)
        step, tokens_seen = state["step"], state["tokens"]
        log.info("resumed from %s at step %d", latest, step)

    metrics = MetricsWriter(run_dir, enabled=info.is_main, resume_step=step, tensorboard=cfg.logging.tensorboard,
                            wandb=cfg.logging.wandb, project=cfg.logging.wandb_project, name=cfg.logging.wandb_name,
                            config=to_dict(cfg))
    stop = StopSignal()
    forward_backward = get_forward_backward_func()
    forward_step = make_forward_step()
    flops_tok = flops_per_token(ms.arch, ms.padded_vocab, t.seq_length)
    mix = getattr(loader, "scheduler", None)
    phase = mix.phase_index(step) if mix is not None else 0
    bar = progress(total=t.train_steps, desc="train", unit="step", initial=step) \
        if (info.is_main and cfg.logging.progress) else None
    loss = float("nan")
    stopped_by_signal = False

    while step < t.train_steps:
        # -- curriculum: the loader switches the bucket mix at this step boundary when a phase starts
        if mix is not None and mix.phase_index(step) != phase:
            phase = mix.phase_index(step)
            if info.is_main:
                log.info("step %d: curriculum phase %d starts: %s", step, phase,
                         loader.curriculum.phases[phase].weights)
        start = time.perf_counter()
        batch = loader.next_batch()
        microbatches = split_microbatches(batch, t.micro_batch_size, info.device)

        # -- forward + backward over the micro-batches (pipeline schedule when PP > 1), then step
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        losses = forward_backward(forward_step_func=forward_step, data_iterator=iter(microbatches), model=[ddp],
                                  num_microbatches=num_microbatches, seq_length=t.seq_length,
                                  micro_batch_size=t.micro_batch_size, forward_only=False)
        lr = optimizer.param_groups[0]["lr"]
        update_ok, grad_norm, _ = optimizer.step()
        if not update_ok:
            raise FloatingPointError(f"step {step}: optimizer step skipped (non-finite gradients)")
        scheduler.step(increment=1)
        loss = reduce_loss(losses, info)
        if not math.isfinite(loss):
            raise FloatingPointError(f"step {step}: loss is {loss}")
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        step += 1
        step_tokens = t.global_batch_size * t.seq_length
        tokens_seen += step_tokens

        # -- metrics: one JSON line per step
        tps = step_tokens / elapsed
        record = {"step": step, "tokens": tokens_seen, "loss": loss, "lr": lr,
                  "grad_norm": float(grad_norm) if grad_norm is not None else None, "tokens_per_s": tps,
                  "mfu": (tps * flops_tok / (PEAK_BF16_FLOPS * info.world_size)) if torch.cuda.is_available() else None,
                  "phase": phase, "bucket_samples": batch["bucket_counts"],
                  "bucket_tokens": loader.cumulative_tokens}
        metrics.log(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{record['lr']:.2e}")
        if info.is_main and (step % t.log_interval == 0 or step == t.train_steps):
            log.info("step %d/%d loss %.4f lr %.3e grad_norm %.3f tokens/s %.0f", step, t.train_steps, loss,
                     record["lr"], record["grad_norm"] or 0.0, tps)

        # -- checkpoint on schedule, at the end, or when a stop signal arrived
        stopping = stop.should_stop(info)
        if stopping or step == t.train_steps or (t.save_interval and step % t.save_interval == 0):
            ckpt.save_checkpoint(ckpt_root, step, [ddp], optimizer if t.save_optimizer else None, scheduler,
                                 dict(model_meta(ms, cfg, info), tokens=tokens_seen, loss=loss),
                                 loader.state_dict(), keep_last=t.keep_last)
        if stopping:
            log.warning("signal %s: checkpoint saved at step %d, exiting for requeue", stop.received, step)
            stopped_by_signal = True
            break

    if bar is not None:
        bar.close()
    metrics.close()
    if not stopped_by_signal and cfg.export.hf_at_end:
        final = ckpt.find_latest(ckpt_root)
        export_at_end(final, run_dir / "hf", info, ddp, ms)
        if info.is_main:
            log.info("exported HF model to %s", run_dir / "hf")
    shutdown()
    return {"step": step, "loss": loss, "stopped_by_signal": stopped_by_signal, "run_dir": str(run_dir)}
