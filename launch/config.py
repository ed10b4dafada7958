"""Typed configuration of ``python -m launch`` (YAML under ``configs/launch/``, see docs/launch.md).

One file describes the cluster (partitions, account), how a job gets its software (repository folder,
virtualenv or pyxis container, set-up lines, environment) and one section per kind of job: ``corpus``,
``train``, ``eval``, ``track`` and ``sweep``. Every section names the other package's config file and overrides
the way its CLI takes them. The jobs run those CLIs; before submitting, ``launch.preflight`` loads each
job's package config with the package's own loader (in-process, or in the job's virtualenv) so that a
config the job would refuse is refused before the queue.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Literal

from infra.config import ConfigError

_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM_RE = re.compile(r"^\d+[KMGT]?$")


def expand_path(value: str, key: str) -> str:
    """``~`` and ``$VAR``/``${VAR}`` expanded (on the host that runs ``launch``); an unset variable is an
    error naming ``key`` (a scratch root such as ``$SCRATCH/spt`` must not become ``/spt``)."""
    out = os.path.expanduser(os.path.expandvars(value))
    left = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", out)
    if left:
        raise ConfigError(
            f"{key}: {value!r} uses the environment variable ${left[0]}, which is not set here "
            f"(export it, or give {key} as a path)"
        )
    return out


def parse_time_minutes(value: str) -> float:
    """Minutes in a Slurm time string: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM[:SS]``.

    ``UNLIMITED``/``INFINITE`` give ``inf``. Raises ``ValueError`` for anything else.
    """
    v = value.strip()
    if v.upper() in ("UNLIMITED", "INFINITE"):
        return float("inf")
    m = _TIME_RE.match(v)
    if not m:
        raise ValueError(f"not a Slurm time: {value!r}")
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        return int(days) * 1440 + int(a) * 60 + int(b or 0) + int(c or 0) / 60
    if c is not None:  # HH:MM:SS
        return int(a) * 60 + int(b) + int(c) / 60
    if b is not None:  # MM:SS
        return int(a) + int(b) / 60
    return float(a)  # MM


@dataclass
class PartitionSpec:
    """What a partition offers, used to check requests when Slurm cannot be asked (e.g. a dry run on a
    laptop). ``null`` means unknown (not checked).

    Attributes:
        nodes: nodes in the partition.
        cpus_per_node: CPUs of each node.
        gpus_per_node: GPUs of each node.
        max_time: the partition's time limit, a Slurm time string (``UNLIMITED``: none).
    """

    nodes: int | None = None
    cpus_per_node: int | None = None
    gpus_per_node: int | None = None
    max_time: str = "UNLIMITED"


@dataclass
class ClusterConfig:
    """The cluster the jobs go to.

    Attributes:
        query: ``auto`` asks ``scontrol``/``sinfo`` when they answer, else uses ``partitions``; ``slurm``
            requires them; ``config`` only uses ``partitions``.
        partitions: partition name -> what it offers, for the checks when Slurm is not asked or does not
            answer.
        default_partition: the partition that jobs naming none are checked against when the checks use
            ``partitions`` (a queried Slurm reports its own default); it is not passed to sbatch.
        account: ``--account`` of every job (null: none).
        qos: ``--qos`` of every job (null: none).
    """

    query: Literal["auto", "slurm", "config"] = "auto"
    partitions: dict[str, PartitionSpec] = field(default_factory=dict)
    default_partition: str | None = None
    account: str | None = None
    qos: str | None = None


@dataclass
class Resources:
    """sbatch resources of one job.

    Attributes:
        partition: ``--partition`` (null: the cluster's default partition).
        nodes: ``--nodes``.
        cpus_per_task: ``--cpus-per-task`` (the jobs run one task per node).
        gpus_per_node: ``--gpus-per-node`` (0: none requested).
        mem: ``--mem``, e.g. ``64G`` (null: the partition's default; with ``exclusive``: ``--mem=0``,
            all of each node's memory, since an exclusive job otherwise still gets only the default).
        time: ``--time``, a Slurm time string.
        exclusive: ``--exclusive`` (and ``--mem=0`` unless ``mem`` is given).
        constraint: ``--constraint`` (null: none).
        reservation: ``--reservation`` (null: none).
        extra_sbatch: more ``--flag=value`` options verbatim.
    """

    partition: str | None = None
    nodes: int = 1
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    mem: str | None = None
    time: str = "01:00:00"
    exclusive: bool = False
    constraint: str | None = None
    reservation: str | None = None
    extra_sbatch: list[str] = field(default_factory=list)

    @property
    def mem_option(self) -> str | None:
        """The ``--mem`` value sbatch gets (``0``, all of the node's memory, for an exclusive job)."""
        if self.mem is not None:
            return self.mem
        return "0" if self.exclusive else None

    def check(self, key: str) -> None:
        """Raise ``ConfigError`` naming ``key`` (the dotted path of this section) for impossible values."""
        if self.nodes < 1:
            raise ConfigError(f"{key}.nodes must be >= 1, got {self.nodes}")
        if self.cpus_per_task < 1:
            raise ConfigError(f"{key}.cpus_per_task must be >= 1, got {self.cpus_per_task}")
        if self.gpus_per_node < 0:
            raise ConfigError(f"{key}.gpus_per_node must be >= 0, got {self.gpus_per_node}")
        if self.mem is not None and not _MEM_RE.match(self.mem):
            raise ConfigError(f"{key}.mem {self.mem!r} is not a Slurm memory size such as 64G or 500M")
        try:
            parse_time_minutes(self.time)
        except ValueError as e:
            raise ConfigError(f"{key}.time: {e} (use e.g. 04:00:00 or 2-00:00:00)") from None
        for flag in self.extra_sbatch:
            if not flag.startswith("--"):
                raise ConfigError(f"{key}.extra_sbatch entry {flag!r} must start with '--'")


@dataclass
class EnvironmentConfig:
    """How every job step gets the project's software.

    Attributes:
        workdir: the repository checkout as seen from the compute nodes (relative paths are taken
            from the folder ``python -m launch`` runs in and made absolute).
        venv: virtualenv to activate (relative to ``workdir`` unless absolute); ``null`` for none.
            Never sourced inside a container (the image has the software); only the corpus driver of
            ``corpus.executor: slurm``, which runs on the host, uses it then.
        python: the Python command after activation.
        container_image: pyxis/enroot image: a squashfs file (``/shared/images/spt.sqsh``, made by
            ``containers/build_sqsh.sh``) or a registry reference (``nvcr.io#nvidia/pytorch:25.06-py3``);
            the job steps then run in it with ``srun --container-image``.
        container_name: ``--container-name`` of the steps: pyxis unpacks the image once per node under
            this name and later steps (and, with pyxis' ``container_scope=global``, a requeued job)
            reuse it instead of pulling it again. ``auto``: ``<name>-<job>``; null: unnamed (unpacked
            for every step).
        container_mounts: more ``src:dst[:flags]`` mounts for the container. The workdir and the
            scratch root (``output_dir``) are always mounted at the same path; every other path a job
            reads or writes (a corpus on /lustre, checkpoints to evaluate, caches) must lie under one
            of the mounts, or the launch is refused naming the path.
        cache_dir: caches of the jobs (``HF_HOME``, ``TRITON_CACHE_DIR``, ``TORCHINDUCTOR_CACHE_DIR``
            below it, unless ``env`` sets them); relative: under ``output_dir``. Null: set none.
        setup: shell lines run before each step (``module load ...``).
        env: environment variables exported in each step.
    """

    workdir: str = "."
    venv: str | None = ".venv"
    python: str = "python"
    container_image: str | None = None
    container_name: str | None = "auto"
    container_mounts: list[str] = field(default_factory=list)
    cache_dir: str | None = None
    setup: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.container_name not in (None, "auto") and not re.match(r"^[A-Za-z0-9._-]+$", self.container_name):
            raise ConfigError(
                f"environment.container_name {self.container_name!r}: use letters, digits, '.', '_' and '-' only"
            )
        for m in self.container_mounts:
            parts = m.split(":")
            if len(parts) not in (2, 3) or not all(parts[:2]) or not all(p.startswith("/") for p in parts[:2]):
                raise ConfigError(
                    f"environment.container_mounts entry {m!r}: write SRC:DST or SRC:DST:FLAGS with absolute paths "
                    "(e.g. /lustre/data:/lustre/data:ro)"
                )


@dataclass
class CorpusJob:
    """``datagen run`` as a Slurm job.

    Attributes:
        config: the datagen config file (relative: in ``environment.workdir``).
        overrides: passed to ``datagen run`` as ``key=value`` after ``executor.kind=<executor>`` (and
            ``executor.venv_path`` from ``environment.venv``).
        output_dir: the corpus folder (relative: under the launch folder), passed as ``<output_key>=...``;
            null: the datagen config's own ``output`` (relative to the workdir). Required with
            ``executor: slurm``.
        output_key: the datagen key ``output_dir`` is passed as.
        executor: ``local``: one job (one node, ``cpus_per_task`` CPUs) runs every datatrove task itself.
            ``slurm``: the job is a small driver; datatrove's ``SlurmPipelineExecutor`` submits one job
            array per stage (LLM stage after scoring) with the settings in ``executor_overrides``; the
            driver waits for the corpus manifest so that later jobs can depend on it.
        executor_overrides: ``key -> value`` passed to ``datagen run`` as ``key=value`` after
            ``overrides`` (the ``executor.*`` settings, e.g. ``executor.partition``).
        wait_poll_s: seconds between the driver's checks for the corpus manifest (``executor: slurm``).
        resources: sbatch resources of the job (with ``executor: slurm``, of the driver).
    """

    config: str = "configs/datagen/demo.yaml"
    overrides: list[str] = field(default_factory=list)
    output_dir: str | None = "corpus"
    output_key: str = "output"
    executor: Literal["local", "slurm"] = "local"
    executor_overrides: dict[str, str] = field(default_factory=dict)
    wait_poll_s: int = 30
    resources: Resources = field(default_factory=lambda: Resources(cpus_per_task=8, time="12:00:00"))


@dataclass
class PreemptionConfig:
    """Warning signal, checkpoint-and-requeue.

    Attributes:
        enabled: ask Slurm for ``--signal=B:<signal>@<warn_seconds>`` and requeue on it.
        signal: signal name without ``SIG``.
        warn_seconds: how long before the time limit the signal comes (Slurm may send it up to 60 s early).
        max_requeues: stop requeueing after this many restarts (``SLURM_RESTART_COUNT``).
        shutdown_timeout: seconds torchrun gives the trainers to save after forwarding a SIGTERM before it
            kills them (``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``).
    """

    enabled: bool = True
    signal: str = "USR1"
    warn_seconds: int = 300
    max_requeues: int = 20
    shutdown_timeout: int = 600

    def validate(self) -> None:
        if self.signal.upper().startswith("SIG"):
            raise ConfigError(f"train.preemption.signal: write {self.signal[3:]!r} without 'SIG'")
        if self.signal.upper() not in ("USR1", "USR2"):
            raise ConfigError(
                f"train.preemption.signal {self.signal!r}: use USR1 or USR2 (TERM and INT also end the job step)"
            )


# Defaults usual on H100 InfiniBand clusters; any value can be overridden, "" removes a variable.
DEFAULT_DIST_ENV = {
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",  # megatron: keeps TP/SP communication kernels in order
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",  # abort a hung collective instead of waiting forever
    "NCCL_DEBUG": "WARN",
    "NCCL_IB_TIMEOUT": "22",  # long IB timeouts ride out transient fabric congestion
    "NCCL_IB_RETRY_CNT": "10",
    "NCCL_NVLS_ENABLE": "1",  # NVLink SHARP on H100 NVSwitch systems
    "NCCL_SOCKET_IFNAME": "^lo,docker0",  # bootstrap over the first real interface
    "OMP_NUM_THREADS": "1",
}


@dataclass
class TrainJob:
    """``trainer train`` on ``resources.nodes`` nodes: one ``torchrun`` per node, started by ``srun``.

    Attributes:
        config: trainer config file.
        overrides: ``key=value`` overrides of it, appended after the ones launch sets (``run_dir``, ``data.*``).
        run_dir: the run folder (``run_dir=`` override); a relative path is under the launch folder.
        corpus: optional corpus folder (``data.corpus=``).
        curriculum: optional curriculum file (``data.curriculum=``).
        program: what torchrun starts (``-m trainer train`` by default).
        nproc_per_node: processes per node; default: ``resources.gpus_per_node`` or 1 without GPUs.
        rdzv_backend: ``c10d`` (torchrun's rendezvous on the head node) or ``static`` (node rank
            from ``SLURM_NODEID``).
        rdzv_port: rendezvous port on the head node; 0 derives one from the job id.
        dist_env: NCCL/torch environment (defaults in ``DEFAULT_DIST_ENV``; "" removes one).
        preemption: the warning signal, checkpoint and requeue.
        resources: sbatch resources of the training job.
    """

    config: str = "configs/trainer/tiny.yaml"
    overrides: list[str] = field(default_factory=list)
    run_dir: str = "run"
    corpus: str | None = None
    curriculum: str | None = None
    program: list[str] = field(default_factory=lambda: ["-m", "trainer", "train"])
    nproc_per_node: int | None = None
    rdzv_backend: Literal["c10d", "static"] = "c10d"
    rdzv_port: int = 29500
    dist_env: dict[str, str] = field(default_factory=dict)
    preemption: PreemptionConfig = field(default_factory=PreemptionConfig)
    resources: Resources = field(
        default_factory=lambda: Resources(gpus_per_node=8, cpus_per_task=64, time="48:00:00", exclusive=True)
    )


@dataclass
class EvalJob:
    """``evalkit run`` as a job array over checkpoints, then one ``evalkit compare`` job after all of them.

    Attributes:
        checkpoints: model folders or run folders (a run folder is resolved to its latest checkpoint).
        names: result sub-folder names, one per checkpoint (empty: the last part of each path other than
            ``checkpoints``/``latest``, made unique).
        suite: the ``--suite`` argument.
        out_dir: results root (one sub-folder per checkpoint); relative paths are under the launch folder.
        compare_out: where ``evalkit compare`` writes (default ``<out_dir>/compare``).
        extra_args: more arguments for ``evalkit run``.
        compare_args: more arguments for ``evalkit compare``.
        max_parallel: at most this many array elements at once (0: no limit).
        resources: sbatch resources of each array element.
        compare_resources: sbatch resources of the ``evalkit compare`` job.
    """

    checkpoints: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    suite: str = "asr,overrefusal"
    out_dir: str = "eval"
    compare_out: str | None = None
    extra_args: list[str] = field(default_factory=list)
    compare_args: list[str] = field(default_factory=list)
    max_parallel: int = 0
    resources: Resources = field(default_factory=lambda: Resources(gpus_per_node=1, cpus_per_task=8, time="04:00:00"))
    compare_resources: Resources = field(default_factory=lambda: Resources(cpus_per_task=1, time="00:30:00"))


@dataclass
class TrackJob:
    """``evalkit track`` as one job: every checkpoint of the given runs evaluated (each once, cached by
    content) and the trajectory report (each headline metric against tokens seen) written.

    Attributes:
        runs: run folders written by ``trainer train`` (relative: from the current folder); each must
            exist, or be written by a job the track job waits for (``--after``).
        suite: the ``--suite`` argument (comma-separated suites).
        out_dir: ``--out``: the evaluations (``evals/``) and ``trajectory.html``/``.md``/``.csv``;
            relative paths are under the launch folder.
        every: ``--every N``: only checkpoints whose step is a multiple of N (and each run's last).
        follow: ``--follow``: keep polling for new checkpoints until every run has its final checkpoint
            evaluated, so that the job can run beside training (the job first waits for each run's
            ``config.yaml``).
        poll_s: ``--poll-s``: seconds between polls with ``follow``.
        max_wait_s: ``--max-wait-s``: stop following after this many seconds and write the report (null:
            follow until the runs end or the job's time limit, ``resources.time``, the job's max time).
        extra_args: more arguments for ``evalkit track`` (``--config FILE``, ``key=value`` overrides).
        resources: sbatch resources of the job; ``time`` is its max time (with ``follow``: as long as the
            training it follows, plus the evaluation of the last checkpoint).
    """

    runs: list[str] = field(default_factory=list)
    suite: str = "asr,overrefusal"
    out_dir: str = "track"
    every: int = 1
    follow: bool = False
    poll_s: float = 60.0
    max_wait_s: float | None = None
    extra_args: list[str] = field(default_factory=list)
    resources: Resources = field(default_factory=lambda: Resources(gpus_per_node=1, cpus_per_task=8, time="48:00:00"))

    def validate(self) -> None:
        if self.every < 1:
            raise ConfigError(f"track.every must be >= 1, got {self.every}")
        if self.poll_s <= 0:
            raise ConfigError(f"track.poll_s must be > 0, got {self.poll_s}")
        if self.max_wait_s is not None and self.max_wait_s <= 0:
            raise ConfigError(f"track.max_wait_s must be > 0 or null, got {self.max_wait_s}")
        if not any(s.strip() for s in self.suite.split(",")):
            raise ConfigError("track.suite is empty (e.g. track.suite=asr,overrefusal)")


@dataclass
class SweepConfig:
    """Curriculum sweep: one training run per intervention start, each evaluated, then compared.

    Attributes:
        interventions: fractions of the run (in [0, 1)) at which the safety mix starts.
        curriculum_template: a curriculum YAML with at least two phases: the first phase's weights are
            the base mix, the last phase's the intervention mix. For each fraction a curriculum file is
            written into the launch folder with those two phases (one phase for 0.0).
        curriculum_files: explicit files per percentage (e.g. ``{20: configs/.../intervention_20.yaml}``);
            used instead of the template where given.
        evaluate: submit an evaluation for each run and the comparison.
        track: also submit one ``evalkit track --follow`` job per run (the ``track`` section's suite,
            every, resources, ...) at the same time as the run, without waiting for it: it evaluates the
            run's checkpoints as they appear; its report goes to ``<track.out_dir>/p<pct>``.
    """

    interventions: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.6])
    curriculum_template: str = "configs/trainer/curricula/intervention_20.yaml"
    curriculum_files: dict[int, str] = field(default_factory=dict)
    evaluate: bool = True
    track: bool = False

    def validate(self) -> None:
        if not self.interventions:
            raise ConfigError("sweep.interventions is empty")
        for x in self.interventions:
            if not 0.0 <= x < 1.0:
                raise ConfigError(f"sweep.interventions: {x} is not a fraction in [0, 1) (20% is 0.2)")
        pcts = [round(x * 100) for x in self.interventions]
        if len(set(pcts)) != len(pcts):
            raise ConfigError(f"sweep.interventions has duplicates: {self.interventions}")


@dataclass
class LaunchConfig:
    """Everything ``python -m launch`` needs.

    Attributes:
        name: the launch's name; job names are ``<name>-<job>``.
        output_dir: the scratch root: parent folder of launch folders (``~`` and ``$VAR`` expanded, e.g.
            ``$SCRATCH/safety-pretraining``; relative: from the current folder). The launch folder is
            ``<output_dir>/<name>`` and holds everything the launch writes: the scripts, ``logs/<job>/``,
            ``jobs.json``, the resolved ``config.yaml``, run folders, results and the corpus.
        cluster: the cluster the jobs go to.
        environment: how every job step gets the project's software.
        corpus: the ``corpus`` job.
        train: the ``train`` job, and each training run of ``sweep``.
        eval: the ``eval`` jobs, and the evaluations of ``sweep``.
        track: the ``track`` job (safety along a run's checkpoints), and those of ``sweep.track``.
        sweep: the curriculum sweep.
    """

    name: str = "launch"
    output_dir: str = "launches"
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    environment: EnvironmentConfig = field(default_factory=EnvironmentConfig)
    corpus: CorpusJob = field(default_factory=CorpusJob)
    train: TrainJob = field(default_factory=TrainJob)
    eval: EvalJob = field(default_factory=EvalJob)
    track: TrackJob = field(default_factory=TrackJob)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def validate(self) -> None:
        if not re.match(r"^[A-Za-z0-9._-]+$", self.name):
            raise ConfigError(f"name {self.name!r}: use letters, digits, '.', '_' and '-' only")
        for key, res in (
            ("corpus.resources", self.corpus.resources),
            ("train.resources", self.train.resources),
            ("eval.resources", self.eval.resources),
            ("eval.compare_resources", self.eval.compare_resources),
            ("track.resources", self.track.resources),
        ):
            res.check(key)
