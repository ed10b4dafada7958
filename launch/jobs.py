"""Plans for each command: corpus, train, eval, sweep. They call the other packages' CLIs only.

All checks (paths, partitions, nodes, container) run while planning, so a bad request is refused
before anything is submitted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from infra.config import ConfigError
from infra.curriculum import CurriculumConfig, curriculum_yaml, load_curriculum, with_intervention
from infra.log import get_logger
from launch import render as R
from launch.cluster import ClusterInfo, LaunchError, check_environment, check_resources, cluster_info
from launch.config import DEFAULT_DIST_ENV, LaunchConfig, Resources, TrainJob
from launch.plan import JobSpec, Plan

q = R.q
log = get_logger(__name__)


@dataclass
class Context:
    """Resolved paths and cluster facts shared by the planners.

    Args:
        cfg: the launch config.
        base: folder that relative paths in the config are taken from (the current folder).
        origin: the config file name, written into the scripts' headers.
        check_cluster: query/check partitions (off only for rendering scripts for another cluster).
    """

    cfg: LaunchConfig
    base: Path
    origin: str = ""
    check_cluster: bool = True

    def __post_init__(self):
        self.base = Path(self.base).resolve()
        self.workdir = (self.base / self.cfg.environment.workdir).resolve()
        self.launch_dir = (self.base / self.cfg.output_dir / self.cfg.name).resolve()
        self.info: ClusterInfo | None = cluster_info(self.cfg.cluster) if self.check_cluster else None
        self.errors: list[str] = []
        if not self.workdir.is_dir():
            self.errors.append(f"environment.workdir: {self.workdir} is not a folder")
        self.errors += check_environment(self.cfg.environment, self.info, self.workdir)

    def under_launch(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else self.launch_dir / path

    def input_path(self, p: str) -> Path:
        """An input folder (corpus, checkpoint) named relative to the current folder, made absolute."""
        return (self.base / Path(p).expanduser()).resolve()

    def repo_file(self, key: str, p: str) -> str:
        """A file the job reads from the repository (checked now; kept relative when it was)."""
        path = Path(p).expanduser()
        full = path if path.is_absolute() else self.workdir / path
        if not full.is_file():
            self.errors.append(f"{key}: {full} does not exist")
        return str(p)

    def check(self, key: str, res: Resources, ntasks_per_node: int = 1) -> None:
        self.errors += check_resources(key, res, self.info, ntasks_per_node)

    def job_name(self, key: str) -> str:
        return f"{self.cfg.name}-{key}"

    def finish(self, plan: Plan) -> Plan:
        if self.errors:
            raise LaunchError("refusing to submit:\n  " + "\n  ".join(self.errors))
        return plan


def _header(ctx: Context, plan: Plan, key: str, res: Resources, **kw) -> list[str]:
    return R.sbatch_header(ctx.job_name(key), res, ctx.cfg.cluster, plan.log_dir(key), origin=ctx.origin, **kw)


# -- training ------------------------------------------------------------------------------------
def _nproc(train: TrainJob) -> int:
    return train.nproc_per_node or train.resources.gpus_per_node or 1


def train_job(
    ctx: Context, plan: Plan, key: str, *, run_dir: Path, curriculum: str | None = None, after: list[str] | None = None
) -> JobSpec:
    """One multi-node training job: ``srun`` starts one ``torchrun`` per node, the head node from
    ``scontrol show hostnames`` hosts the rendezvous; the warning signal makes it save and requeue."""
    t = ctx.cfg.train
    res = t.resources
    ctx.check(key, res)
    env = ctx.cfg.environment
    config = ctx.repo_file("train.config", t.config)
    nproc = _nproc(t)
    args = ["--config", config, f"run_dir={run_dir}"]
    if t.corpus:
        corpus = ctx.input_path(t.corpus)
        if not (corpus / "manifest.json").is_file():
            log.warning("%s: %s has no manifest.json yet; fine if a corpus job (--after) writes it", key, corpus)
        args.append(f"data.corpus={corpus}")
    curriculum = curriculum or t.curriculum
    if curriculum:
        args.append(f"data.curriculum={curriculum}")
    args += t.overrides

    dist_env = {**DEFAULT_DIST_ENV, **t.dist_env}
    if t.rdzv_backend == "c10d":
        rdzv = ["--rdzv-backend=c10d", '--rdzv-endpoint="$SPT_HEAD_NODE:$SPT_RDZV_PORT"', '--rdzv-id="$SLURM_JOB_ID"']
    else:
        rdzv = ['--node-rank="$SLURM_NODEID"', '--master-addr="$SPT_HEAD_NODE"', '--master-port="$SPT_RDZV_PORT"']
    launcher = [
        f"{q(env.python)} -m torch.distributed.run",
        '--nnodes="$SLURM_JOB_NUM_NODES"',
        f"--nproc-per-node={nproc}",
        *rdzv,
        "--max-restarts=0",
    ]
    p = t.preemption
    launcher.append(" ".join(q(a) for a in [*t.program, *args]))
    step_vars = dict(dist_env)
    if p.enabled:
        # On SIGTERM (scancel, preemption) torchrun forwards it and kills the trainers after this many
        # seconds; its default of 30 s is too short to write a large checkpoint (recent torch versions read it).
        step_vars.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(p.shutdown_timeout))
    step = R.step_env(env, ctx.workdir, step_vars) + [
        'echo "[launch] node $SLURM_NODEID ($(hostname)): torchrun with rendezvous at $SPT_HEAD_NODE:$SPT_RDZV_PORT"'
    ]
    if p.enabled:
        # srun delivers the warning signal to every process of the step, the trainers included. torchrun
        # must not act on it: by default it would die (and leave the trainers to be killed mid-save), and
        # newer versions would tear the workers down with a deadline. Ignored signals stay ignored across
        # exec, so torchrun ignores it; the trainer installs its own handler, saves and exits 0, and
        # torchrun then ends normally.
        step.append(f"trap '' {p.signal.upper()}")
    step.append("exec " + " \\\n  ".join(launcher))
    port = str(t.rdzv_port) if t.rdzv_port else "$((20000 + SLURM_JOB_ID % 20000))"
    lines = (
        _header(ctx, plan, key, res, preemption=p)
        + R.prelude(ctx.workdir)
        + [
            f"mkdir -p {q(str(run_dir))}",
            'export SPT_HEAD_NODE="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
            f"export SPT_RDZV_PORT={port}",
            "",
            *R.WAIT_FN,
            *(R.preemption_block(p) if p.enabled else ["SPT_PREEMPTED=0", "SPT_STEP_PID="]),
            "",
            *R.embed_step("SPT_STEP", step),
            "",
            "# one torchrun per node; each writes its own log beside the job's",
            R.srun_prefix(env, ctx.workdir, nodes=res.nodes, output=str(plan.log_dir(key) / "%j.node%n.out"))
            + ' bash -c "$SPT_STEP" &',
            "SPT_STEP_PID=$!",
            'spt_wait "$SPT_STEP_PID"; SPT_RC=$?',
            'echo "[launch] $(date -u +%FT%TZ) training step ended with exit code $SPT_RC"',
            *(R.requeue_block(p) if p.enabled else []),
            'exit "$SPT_RC"',
        ]
    )
    return plan.add(
        JobSpec(
            key=key,
            name=ctx.job_name(key),
            script="\n".join(lines) + "\n",
            after=after or [],
            resources=res,
            info={"run_dir": str(run_dir)},
        )
    )


def plan_train(ctx: Context) -> Plan:
    plan = Plan("train", ctx.launch_dir)
    train_job(ctx, plan, "train", run_dir=ctx.under_launch(ctx.cfg.train.run_dir))
    return ctx.finish(plan)


# -- evaluation ----------------------------------------------------------------------------------
def _unique_names(paths: list[str], names: list[str]) -> list[str]:
    if names:
        if len(names) != len(paths):
            raise LaunchError(f"eval.names has {len(names)} entries for {len(paths)} checkpoints")
        out = names
    else:
        out = []
        for p in paths:
            parts = [x for x in Path(p).parts if x not in ("/", "checkpoints", "latest")]
            out.append(re.sub(r"[^A-Za-z0-9._-]+", "_", parts[-1] if parts else "model"))
    seen: dict[str, int] = {}
    result = []
    for n in out:
        if n in seen:
            seen[n] += 1
            n = f"{n}_{seen[n]}"
        else:
            seen[n] = 0
        result.append(n)
    if len(set(result)) != len(result):
        raise LaunchError(f"evaluation names are not unique: {result}")
    return result


def eval_array_job(
    ctx: Context, plan: Plan, key: str, *, models: list[str], out_dirs: list[Path], after: list[str] | None = None
) -> JobSpec:
    """A job array: element i runs ``evalkit run --model models[i] --out out_dirs[i]``."""
    e = ctx.cfg.eval
    res = e.resources
    ctx.check(key, res)
    env = ctx.cfg.environment
    n = len(models)
    array = f"0-{n - 1}" + (f"%{e.max_parallel}" if e.max_parallel else "")
    step = R.step_env(env, ctx.workdir) + [
        'echo "[launch] evaluating $SPT_MODEL into $SPT_OUT"',
        f'exec {q(env.python)} -m evalkit run --model "$SPT_MODEL" --suite {q(e.suite)} --out "$SPT_OUT"'
        + "".join(" " + q(a) for a in e.extra_args),
    ]
    setup = [
        "# one element per model: an HF folder, a checkpoint or a run folder (evalkit exports the latter)",
        R.bash_array("SPT_MODELS", models),
        R.bash_array("SPT_OUTS", [str(o) for o in out_dirs]),
        "SPT_I=${SLURM_ARRAY_TASK_ID:-0}",
        'export SPT_MODEL="${SPT_MODELS[$SPT_I]}"',
        'export SPT_OUT="${SPT_OUTS[$SPT_I]}"',
        'mkdir -p "$SPT_OUT"',
        "",
    ]
    return _one_node_job(
        ctx,
        plan,
        key,
        res,
        setup,
        step,
        after or [],
        header_kw={"array": array},
        array_size=n,
        info={"models": models, "out_dirs": [str(o) for o in out_dirs]},
    )


def _one_node_job(
    ctx: Context,
    plan: Plan,
    key: str,
    res: Resources,
    setup: list[str],
    step: list[str],
    after: list[str],
    header_kw: dict | None = None,
    **spec,
) -> JobSpec:
    """A job whose script runs ``setup`` on the batch host, then ``step`` as one srun step on one node."""
    env = ctx.cfg.environment
    lines = (
        _header(ctx, plan, key, res, **(header_kw or {}))
        + R.prelude(ctx.workdir)
        + setup
        + [*R.embed_step("SPT_STEP", step), R.srun_prefix(env, ctx.workdir, nodes=1) + ' bash -c "$SPT_STEP"']
    )
    script = "\n".join(lines) + "\n"
    return plan.add(JobSpec(key=key, name=ctx.job_name(key), script=script, after=after, resources=res, **spec))


def compare_job(ctx: Context, plan: Plan, key: str, *, result_dirs: list[Path], out: Path, after: list[str]) -> JobSpec:
    e = ctx.cfg.eval
    res = e.compare_resources
    ctx.check(key, res)
    env = ctx.cfg.environment
    step = R.step_env(env, ctx.workdir) + [
        f"exec {q(env.python)} -m evalkit compare "
        + " ".join(q(str(d)) for d in result_dirs)
        + f" --out {q(str(out))}"
        + "".join(" " + q(a) for a in e.compare_args),
    ]
    return _one_node_job(ctx, plan, key, res, [f"mkdir -p {q(str(out))}"], step, after, info={"out": str(out)})


def plan_eval(ctx: Context) -> Plan:
    e = ctx.cfg.eval
    if not e.checkpoints:
        raise LaunchError(
            "eval.checkpoints is empty: give the model or run folders, e.g. eval.checkpoints=[runs/a,runs/b]"
        )
    plan = Plan("eval", ctx.launch_dir)
    models = [str(ctx.input_path(c)) for c in e.checkpoints]
    names = _unique_names(e.checkpoints, e.names)
    out_root = ctx.under_launch(e.out_dir)
    outs = [out_root / n for n in names]
    eval_array_job(ctx, plan, "eval", models=models, out_dirs=outs)
    compare_job(
        ctx,
        plan,
        "compare",
        result_dirs=outs,
        out=ctx.under_launch(e.compare_out) if e.compare_out else out_root / "compare",
        after=["eval"],
    )
    return ctx.finish(plan)


# -- curriculum sweep ----------------------------------------------------------------------------
def load_template(path: Path) -> CurriculumConfig:
    """The sweep's template curriculum: its first phase is the base mix, its last the intervention mix."""
    try:
        template = load_curriculum(path)
    except ConfigError as e:
        raise LaunchError(f"sweep.curriculum_template {path}: {e}") from None
    if len(template.phases) < 2:
        raise LaunchError(
            f"sweep.curriculum_template {path}: needs at least two phases (first: base mix, last: intervention mix)"
        )
    return template


def curriculum_for(template: CurriculumConfig, path: str, fraction: float) -> str:
    """The template's curriculum with the intervention mix starting at ``fraction`` of the run (YAML)."""
    cur = with_intervention(template.phases[0].weights, template.phases[-1].weights, fraction, like=template)
    return curriculum_yaml(
        cur, f"Intervention from {round(fraction * 100)}% of the run; written by `python -m launch sweep` from {path}"
    )


def plan_sweep(ctx: Context) -> Plan:
    s = ctx.cfg.sweep
    plan = Plan("sweep", ctx.launch_dir)
    template = None
    need_template = any(round(x * 100) not in s.curriculum_files for x in s.interventions)
    if need_template:
        tpath = (
            ctx.workdir / s.curriculum_template
            if not Path(s.curriculum_template).is_absolute()
            else Path(s.curriculum_template)
        )
        if not tpath.is_file():
            raise LaunchError(f"sweep.curriculum_template: {tpath} does not exist")
        template = load_template(tpath)
    evals, outs = [], []
    for x in s.interventions:
        pct = round(x * 100)
        if pct in s.curriculum_files:
            curriculum = ctx.repo_file(f"sweep.curriculum_files.{pct}", s.curriculum_files[pct])
        else:
            rel = f"curricula/intervention_{pct}.yaml"
            plan.files[rel] = curriculum_for(template, s.curriculum_template, x)
            curriculum = str(ctx.launch_dir / rel)
        run_dir = ctx.launch_dir / "runs" / f"p{pct}"
        train_job(ctx, plan, f"train-p{pct}", run_dir=run_dir, curriculum=curriculum)
        if s.evaluate:
            out = ctx.under_launch(ctx.cfg.eval.out_dir) / f"p{pct}"
            eval_array_job(ctx, plan, f"eval-p{pct}", models=[str(run_dir)], out_dirs=[out], after=[f"train-p{pct}"])
            evals.append(f"eval-p{pct}")
            outs.append(out)
    if s.evaluate:
        e = ctx.cfg.eval
        compare_job(
            ctx,
            plan,
            "compare",
            result_dirs=outs,
            after=evals,
            out=ctx.under_launch(e.compare_out) if e.compare_out else ctx.under_launch(e.out_dir) / "compare",
        )
    return ctx.finish(plan)


# -- corpus --------------------------------------------------------------------------------------
def plan_corpus(ctx: Context) -> Plan:
    c = ctx.cfg.corpus
    plan = Plan("corpus", ctx.launch_dir)
    key = "corpus"
    res = c.resources
    ctx.check(key, res)
    env = ctx.cfg.environment
    config = ctx.repo_file("corpus.config", c.config)
    args = ["--config", config]
    out_dir = ctx.under_launch(c.output_dir) if c.output_dir else None
    if out_dir is not None:
        args.append(f"{c.output_key}={out_dir}")
    args.append(f"executor.kind={c.executor}")
    venv = R.venv_path(env, ctx.workdir)
    if c.executor == "slurm" and venv is not None and "executor.venv_path" not in c.executor_overrides:
        args.append(f"executor.venv_path={venv / 'bin' / 'activate'}")  # sourced by datatrove's jobs
    stage_prefix = c.executor_overrides.get("executor.job_name", ctx.job_name(key))
    if c.executor == "slurm" and "executor.job_name" not in c.executor_overrides:
        args.append(f"executor.job_name={stage_prefix}")  # datatrove names its jobs <job_name>-<stage>
    args += c.overrides + [f"{k}={v}" for k, v in c.executor_overrides.items()]
    cmd = f"exec {q(env.python)} -m datagen run " + " ".join(q(a) for a in args)
    step = R.step_env(env, ctx.workdir) + [cmd]
    body: list[str]
    if c.executor == "local":
        body = [
            *R.embed_step("SPT_STEP", step),
            "# datatrove's local executor runs every task inside this one allocation",
            R.srun_prefix(env, ctx.workdir, nodes=1) + ' bash -c "$SPT_STEP"',
        ]
    else:
        if out_dir is None:
            raise LaunchError(
                "corpus.output_dir is needed with corpus.executor=slurm: the driver waits for "
                "<output_dir>/manifest.json so that later jobs can depend on it"
            )
        if env.container_image:
            ctx.errors.append(
                "corpus.executor=slurm submits datatrove's jobs from the driver, which needs "
                "sbatch: it runs outside the container; set environment.venv for it"
            )
        body = [
            *R.embed_step("SPT_STEP", step),
            "# datatrove's SlurmPipelineExecutor submits one job array per stage from here (sbatch on the",
            "# batch host), chained by its own dependencies; then wait for the corpus to be complete.",
            'bash -c "$SPT_STEP" || exit $?',
            f"SPT_MANIFEST={q(str(out_dir / 'manifest.json'))}",
            "SPT_IDLE=0",
            'while [ ! -f "$SPT_MANIFEST" ]; do',
            f"  sleep {int(c.wait_poll_s)}",
            "  # datatrove's jobs that can still run (a failed stage leaves its dependents pending forever)",
            f'  alive=$(squeue -h -u "$(id -un)" -o "%j %r" | grep "^{stage_prefix}-" '
            "| grep -v -c DependencyNeverSatisfied || true)",
            '  if [ "$alive" = 0 ]; then SPT_IDLE=$((SPT_IDLE + 1)); else SPT_IDLE=0; fi',
            '  if [ "$SPT_IDLE" -ge 2 ] && [ ! -f "$SPT_MANIFEST" ]; then',
            f'    echo "[launch] no runnable {stage_prefix}-* job left and no $SPT_MANIFEST: a stage failed '
            '(see the datatrove logging folders under the corpus)"',
            f'    stale=$(squeue -h -u "$(id -un)" -o %j | grep "^{stage_prefix}-" | sort -u | paste -sd, -)',
            '    if [ -n "$stale" ]; then scancel -u "$(id -un)" -n "$stale"; fi',
            "    exit 1",
            "  fi",
            "done",
            'echo "[launch] corpus complete: $SPT_MANIFEST"',
        ]
    lines = (
        _header(ctx, plan, key, res)
        + R.prelude(ctx.workdir)
        + [*([f"mkdir -p {q(str(out_dir.parent))}"] if out_dir is not None else []), *body]
    )
    plan.add(
        JobSpec(
            key=key,
            name=ctx.job_name(key),
            script="\n".join(lines) + "\n",
            resources=res,
            info={"output_dir": str(out_dir) if out_dir else None, "executor": c.executor},
        )
    )
    return ctx.finish(plan)


PLANNERS = {"corpus": plan_corpus, "train": plan_train, "eval": plan_eval, "sweep": plan_sweep}
