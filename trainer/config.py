"""Typed configuration of ``python -m trainer train|sft`` (YAML under ``configs/trainer/``).

Every field is documented in its class's ``Attributes:`` section; unknown keys and wrong types are
rejected by ``infra.config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from infra.config import ConfigError
from infra.curriculum import CurriculumConfig, resolve_curriculum

__all__ = ["FusionConfig", "TrainerConfig", "ValidationConfig", "resolve_curriculum"]


@dataclass
class FusionConfig:
    """megatron-core's fused kernels (``trainer.fusions``): null = on where available on this device
    and spec, true = required (an error at start names what is missing), false = off. All are off on
    the CPU.

    Attributes:
        gradient_accumulation: weight-gradient GEMMs accumulate into the fp32 main-grad buffer
            (needs apex's ``fused_weight_gradient_mlp_cuda``).
        rope: fused rotary embedding (needs Transformer-Engine).
        cross_entropy: fused vocab-parallel cross-entropy (megatron's native kernel; CUDA).
        swiglu: fused SiLU-and-multiply of the MLP (CUDA).
    """

    gradient_accumulation: bool | None = None
    rope: bool | None = None
    cross_entropy: bool | None = None
    swiglu: bool | None = None


@dataclass
class ModelConfig:
    """Model architecture and implementation.

    Attributes:
        preset: ``tiny`` | ``smollm2-135m`` | ``smollm2-360m`` | ``smollm2-1.7b`` (ignored with
            ``init.hf``, whose config.json defines the architecture).
        spec: layer implementation, ``auto`` (best available) | ``te`` | ``torch`` (SDPA) | ``local``.
        num_layers: overrides the preset's number of transformer layers (null keeps the preset's).
        hidden_size: overrides the preset's model width (null keeps the preset's).
        num_attention_heads: overrides the preset's query heads (null keeps the preset's).
        num_query_groups: overrides the preset's key/value heads, GQA (null keeps the preset's).
        ffn_hidden_size: overrides the preset's SwiGLU inner width (null keeps the preset's).
        rope_theta: overrides the preset's rotary embedding base (null keeps the preset's).
        vocab_size: tokenizer vocabulary; null takes it from the corpus manifest / HF tokenizer.
        make_vocab_size_divisible_by: the embedding is padded to a multiple of this times TP.
        fp8: null (off) | ``e4m3`` | ``hybrid`` (e4m3 forward, e5m2 gradients). With the ``te`` spec
            Transformer-Engine's FP8; with the ``torch`` spec torchao's float8 training
            (``trainer.fp8``). The recipe is checked against the GPU and the library version at start.
        fp8_recipe: ``delayed`` | ``tensorwise`` | ``mxfp8`` (Blackwell only) | ``blockwise``
            (Transformer-Engine), ``tensorwise`` (fp8=hybrid) | ``rowwise`` (fp8=e4m3) for torchao;
            used only with ``fp8``.
        compile: ``torch.compile`` each transformer layer separately (torchtitan's way: megatron's
            gradient-reduce and parameter-gather hooks stay outside the compiled graphs, so their
            overlap with compute survives). GPU; the torch spec benefits most.
        fusions: megatron's fused kernels (``FusionConfig``).
        init_std: std of the normal weight initialisation.
    """

    preset: str = "tiny"
    spec: Literal["auto", "te", "torch", "local"] = "auto"
    num_layers: int | None = None
    hidden_size: int | None = None
    num_attention_heads: int | None = None
    num_query_groups: int | None = None
    ffn_hidden_size: int | None = None
    rope_theta: float | None = None
    vocab_size: int | None = None
    make_vocab_size_divisible_by: int = 128
    fp8: Literal["e4m3", "hybrid"] | None = None
    fp8_recipe: Literal["delayed", "tensorwise", "mxfp8", "blockwise", "rowwise"] = "delayed"
    compile: bool = False
    fusions: FusionConfig = field(default_factory=FusionConfig)
    init_std: float = 0.02


@dataclass
class DataConfig:
    """Pretraining data.

    Attributes:
        corpus: corpus folder written by ``datagen run`` (manifest.json, shards/<bucket>/).
        curriculum: path to a curriculum YAML (``configs/trainer/curricula/*.yaml``) or the curriculum
            inline (``{phases: [{start: 0.0, weights: {raw: 1.0}}, ...], max_epochs: 4}``); see
            ``infra.curriculum.CurriculumConfig``.
        seed: seed of the per-bucket permutations (independent of the model seed).
    """

    corpus: str = ""
    curriculum: str | CurriculumConfig | None = None
    seed: int = 1234


@dataclass
class TrainConfig:
    """Optimisation and schedule. Steps count optimizer steps (global batches).

    Attributes:
        train_steps: optimizer steps of the whole run (the curriculum's budget is
            ``train_steps * global_batch_size * seq_length`` tokens).
        seq_length: tokens per sample the model sees.
        global_batch_size: samples per optimizer step over all data-parallel ranks.
        micro_batch_size: samples per forward pass per rank; global = micro * DP * accumulation steps.
        lr: peak learning rate (after warmup).
        min_lr: learning rate at the end of the decay.
        warmup_steps: linear warmup from 0 to ``lr`` over this many steps.
        schedule: ``cosine`` | ``wsd`` (warmup-stable-decay) | ``linear`` | ``constant``.
        wsd_decay_fraction: share of the steps spent decaying in WSD.
        weight_decay: decoupled (AdamW) weight decay.
        adam_beta1: Adam's first-moment decay.
        adam_beta2: Adam's second-moment decay.
        adam_eps: Adam's denominator epsilon.
        clip_grad: global gradient-norm clipping threshold (0 disables clipping).
        device: ``auto`` (CUDA when it works; the CPU only on a machine without an NVIDIA GPU) |
            ``cuda`` (CUDA or an error naming why it cannot be used) | ``cpu`` (the CPU even on a GPU
            machine). A GPU that is present but unusable is an error, never a silent CPU run; the
            choice and the device are logged at start (``trainer.device``).
        precision: ``auto`` (bf16 on GPU, fp32 on CPU) | ``bf16`` | ``fp32``.
        distributed_optimizer: shard optimizer state over DP ranks (megatron's DistributedOptimizer).
        overlap_grad_reduce: start each gradient bucket's DP reduce(-scatter) during the backward
            pass; null: on with CUDA, off on the CPU.
        overlap_param_gather: with the distributed optimizer, all-gather the updated parameters
            bucket by bucket during the next forward pass instead of right after the optimizer step;
            null: on with CUDA and the distributed optimizer. Before a checkpoint, a validation or
            the export the gather is completed.
        fused_adam: torch's fused AdamW kernel (one launch for all parameters, its step counts on the
            device) where megatron falls back to torch's AdamW (no Transformer-Engine / apex
            FusedAdam); null: on with CUDA. Numerically equal to the default implementation up to
            rounding.
        deterministic: reproducible GPU kernels (``torch.use_deterministic_algorithms``, a fixed
            cuBLAS workspace, the math SDPA backend: flash / memory-efficient attention backward are
            not deterministic). Slower; for bit-exact resume checks. No effect on CPU results.
        seed: model initialisation seed.
        save_interval: checkpoint every N steps (0: only at the end).
        keep_last: complete checkpoints kept (older ones are deleted).
        save_optimizer: write the optimizer state (Adam moments, fp32 main weights) into checkpoints.
            With ``false`` a checkpoint holds the model only (a quarter of the size in fp32: 0.54 GB
            against 2.16 GB for a 135M model); resuming from it restarts Adam's moments from zero, like
            megatron's ``--no-save-optim``. For finetunes that are exported and evaluated, not resumed.
        log_interval: print a log line every N steps. It is also the loop's flush interval: the
            per-step loss, gradient norm and timing stay on the device and are read back (one
            all-reduce, one copy) every N steps, at checkpoint and validation steps and at the end;
            metrics.jsonl still gets one record per step, written at the flush. A stop signal
            (SIGTERM / SIGUSR1) takes effect at the next flush.
        nan_check_interval: also check every N steps, between flushes, that the gradient norm is
            finite (one host sync each time); 0 (the default) checks only at the flushes, where the
            values are read back anyway. A non-finite loss or gradient norm stops the run with an
            error naming the first such step; nothing is saved after it.
        prefetch_batches: batches prepared ahead on a background thread (pinned memory on CUDA);
            0 reads each batch in the loop. Results are the same either way.
        peak_tflops: dense bf16 peak TFLOP/s of one accelerator, the denominator of the ``mfu``
            metric (H100/H200 SXM: 989). Only the metric depends on it.
    """

    train_steps: int = 100
    seq_length: int = 128
    global_batch_size: int = 8
    micro_batch_size: int = 4
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 10
    schedule: Literal["cosine", "wsd", "linear", "constant"] = "cosine"
    wsd_decay_fraction: float = 0.2
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    device: Literal["auto", "cuda", "cpu"] = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    distributed_optimizer: bool = True
    overlap_grad_reduce: bool | None = None
    overlap_param_gather: bool | None = None
    fused_adam: bool | None = None
    deterministic: bool = False
    seed: int = 1234
    save_interval: int = 0
    keep_last: int = 2
    save_optimizer: bool = True
    log_interval: int = 10
    nan_check_interval: int = 0
    prefetch_batches: int = 2
    peak_tflops: float = 989.0

    def validate(self) -> None:
        for name in ("train_steps", "seq_length", "global_batch_size", "micro_batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"key 'train.{name}': must be > 0, got {getattr(self, name)}")
        if self.global_batch_size % self.micro_batch_size:
            raise ConfigError(
                f"key 'train.global_batch_size' ({self.global_batch_size}) must be a multiple "
                f"of train.micro_batch_size ({self.micro_batch_size})"
            )
        if self.warmup_steps < 0 or self.warmup_steps > self.train_steps:
            raise ConfigError(f"key 'train.warmup_steps': must be in [0, train.train_steps], got {self.warmup_steps}")
        if not 0.0 <= self.wsd_decay_fraction <= 1.0:
            raise ConfigError(f"key 'train.wsd_decay_fraction': must be in [0, 1], got {self.wsd_decay_fraction}")
        if self.min_lr > self.lr:
            raise ConfigError(f"key 'train.min_lr' ({self.min_lr}) is larger than train.lr ({self.lr})")
        if self.keep_last < 1:
            raise ConfigError(f"key 'train.keep_last': must be >= 1, got {self.keep_last}")
        if self.overlap_param_gather and not self.distributed_optimizer:
            raise ConfigError(
                "key 'train.overlap_param_gather' is true but train.distributed_optimizer is false: "
                "only the distributed optimizer gathers parameters"
            )
        if self.log_interval < 1:
            raise ConfigError(f"key 'train.log_interval': must be >= 1, got {self.log_interval}")
        if self.nan_check_interval < 0:
            raise ConfigError(
                f"key 'train.nan_check_interval': must be >= 0 (0: at flushes), got {self.nan_check_interval}"
            )
        if self.prefetch_batches < 0:
            raise ConfigError(f"key 'train.prefetch_batches': must be >= 0 (0: off), got {self.prefetch_batches}")
        if not self.peak_tflops > 0:
            raise ConfigError(f"key 'train.peak_tflops': must be > 0, got {self.peak_tflops}")


@dataclass
class ValidationConfig:
    """Validation loss on held-out samples of every curriculum bucket (pretraining only).

    Attributes:
        interval: compute the validation loss every N steps; 0 (the default) turns validation off,
            holds nothing out and leaves the run exactly as without this section.
        samples_per_bucket: packed samples held out at the end of every active bucket. While
            validation is on they are never trained on: each bucket's training epochs run over its
            other samples, so turning validation on (or changing this number) changes the training
            samples, and a run cannot be resumed with a different setting.
        at_end: also validate after the last step when ``train_steps`` is not a multiple of
            ``interval`` (only while validation is on).
    """

    interval: int = 0
    samples_per_bucket: int = 8
    at_end: bool = True

    def validate(self) -> None:
        if self.interval < 0:
            raise ConfigError(f"key 'validation.interval': must be >= 0 (0: off), got {self.interval}")
        if self.samples_per_bucket < 1:
            raise ConfigError(f"key 'validation.samples_per_bucket': must be >= 1, got {self.samples_per_bucket}")

    @property
    def enabled(self) -> bool:
        return self.interval > 0


@dataclass
class ParallelConfig:
    """Model parallelism; the data-parallel size is ``WORLD_SIZE / (tp * pp)``.

    Attributes:
        tp: tensor-parallel size.
        pp: pipeline-parallel size.
    """

    tp: int = 1
    pp: int = 1


@dataclass
class InitConfig:
    """Where the weights start.

    Attributes:
        hf: an HF Llama folder (config.json + safetensors + tokenizer) to start from; its weights are
            imported into the megatron model, the tag token is added to its vocabulary if missing.
            Null: random initialisation.
    """

    hf: str | None = None


@dataclass
class SFTConfig:
    """Supervised finetuning on chat data.

    Attributes:
        path: chat JSONL (``{"messages": [{"role", "content"}, ...]}`` per line); SFT mode when set.
            Loss is computed on assistant tokens only (``trainer.data.loader.SFTLoader``).
    """

    path: str | None = None


@dataclass
class ExportConfig:
    """Export when training ends.

    Attributes:
        hf_at_end: write an HF Llama folder (+ tokenizer) to ``run_dir/hf`` when training ends.
        hf_at_saves: also write one with every checkpoint, to ``run_dir/hf_steps/iter_XXXXXXX`` (kept
            when ``train.keep_last`` deletes the checkpoint itself): safety along the run without an
            export per checkpoint afterwards.
    """

    hf_at_end: bool = False
    hf_at_saves: bool = False


@dataclass
class LoggingConfig:
    """Where the metrics go besides ``run_dir/metrics.jsonl``.

    Attributes:
        tensorboard: write TensorBoard scalars to ``run_dir/tensorboard``.
        wandb: also log to Weights & Biases (needs the ``wandb`` package).
        wandb_project: the W&B project.
        wandb_name: the W&B run name, also used as its id (null: W&B names the run, the id is the run
            folder's name).
        progress: show a progress bar on the main rank (``PROGRESS=0`` hides it too).
        report_at_end: write the run report (``report.html`` + ``report.md``: loss with phase boundaries,
            bucket shares against the schedule, tokens/s, epochs per bucket) into ``run_dir`` when
            training ends; ``python -m trainer report RUN_DIR`` writes it at any time. A report that
            cannot be written is logged, never a failed run.
    """

    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "safety-pretraining"
    wandb_name: str | None = None
    progress: bool = True
    report_at_end: bool = True


@dataclass
class ResumeConfig:
    """Resuming a run folder that has checkpoints.

    Attributes:
        allow_changed: settings a checkpoint fixes that this start may change anyway (by default a
            change is refused with both values named): ``model.architecture``, ``model.spec``,
            ``model.vocab``, ``tokenizer``, ``data.curriculum``, ``data.seed``, ``train.seed``,
            ``train.seq_length``, ``train.global_batch_size``, ``train.precision``,
            ``train.distributed_optimizer``, ``sft.path`` (what each fixes: ``trainer/segments.py``).
            Each accepted change is recorded in ``run_dir/segments.jsonl``. Other settings (learning
            rate and schedule, steps, intervals, parallel layout, logging) may always change; the
            new values are applied and recorded there too.
    """

    allow_changed: list[str] = field(default_factory=list)


@dataclass
class TrainerConfig:
    """Everything ``python -m trainer train|sft`` needs.

    Attributes:
        run_dir: the run folder (``infra.folders.RunFolder``: run.json, config, tokenizer, metrics,
            checkpoints, tensorboard, hf); an existing run folder with checkpoints is resumed.
        model: architecture and implementation.
        data: corpus and curriculum (pretraining).
        train: optimisation, schedule, checkpointing.
        validation: held-out validation loss per bucket (off by default).
        parallel: tensor and pipeline parallel sizes.
        init: starting weights.
        sft: chat data; setting ``sft.path`` switches to SFT mode.
        export: HF export at the end.
        logging: TensorBoard, W&B, progress bar.
        resume: what a start that resumes from a checkpoint may change.
    """

    run_dir: str = "runs/tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)

    def validate(self) -> None:
        if self.sft.path is None and not self.data.corpus:
            raise ConfigError(
                "key 'data.corpus': a corpus folder is required for pretraining (or set sft.path for SFT mode)"
            )
        if self.sft.path is None and self.data.curriculum is None:
            raise ConfigError(
                "key 'data.curriculum': a curriculum (YAML path or inline phases) is required for pretraining"
            )
        if isinstance(self.data.curriculum, str):
            resolve_curriculum(self.data.curriculum)  # a missing or invalid file fails here, not at step 0
        from trainer.segments import FIXED

        unknown = [k for k in self.resume.allow_changed if k not in FIXED]
        if unknown:
            raise ConfigError(f"key 'resume.allow_changed': unknown setting(s) {unknown}; known: {sorted(FIXED)}")
        if self.parallel.tp < 1 or self.parallel.pp < 1:
            raise ConfigError("keys 'parallel.tp'/'parallel.pp' must be >= 1")
        if self.validation.enabled and self.sft.path is not None:
            raise ConfigError(
                "key 'validation.interval': validation holds out curriculum buckets' samples and "
                "is not supported in SFT mode (sft.path is set); use validation.interval=0"
            )

    @property
    def sft_mode(self) -> bool:
        return self.sft.path is not None
