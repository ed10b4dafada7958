"""Plans for each command: corpus, train, eval, track, sweep. They call the other packages' CLIs only.

All checks run while planning, so a bad request is refused before anything is submitted: partitions,
nodes and container (``launch.cluster``), each job's own package config (``launch.preflight``), every
input a job reads (it exists, or an earlier job of the same chain writes it) and, with a container,
that every path a job reads or writes lies under a mount.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from infra.config import ConfigError
from infra.curriculum import CurriculumConfig, curriculum_yaml, load_curriculum, with_intervention
from infra.log import get_logger
from launch import preflight
from launch import render as R
from launch.cluster import ClusterInfo, LaunchError, check_environment, check_resources, cluster_info
from launch.config import DEFAULT_DIST_ENV, LaunchConfig, Resources, TrainJob, expand_path
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
        after: job ids the plan's first jobs wait for (``--after``); what they write counts as produced
            when ``jobs.json`` under the scratch root records it.
    """

    cfg: LaunchConfig
    base: Path
    origin: str = ""
    check_cluster: bool = True
    after: list[str] = field(default_factory=list)

    def __post_init__(self):
        cfg, env = self.cfg, self.cfg.environment
        self.base = Path(self.base).resolve()
        self.workdir = (self.base / expand_path(env.workdir, "environment.workdir")).resolve()
        self.output_root = (self.base / expand_path(cfg.output_dir, "output_dir")).resolve()
        self.launch_dir = self.output_root / cfg.name
        self.info: ClusterInfo | None = cluster_info(cfg.cluster) if self.check_cluster else None
        self.errors: list[str] = []
        self.warnings: list[str] = []
        if not self.workdir.is_dir():
            self.errors.append(f"environment.workdir: {self.workdir} is not a folder")
        self.errors += check_environment(env, self.info, self.workdir)
        self.cache_env: dict[str, str] = {}
        self.cache_dir: Path | None = None
        if env.cache_dir:
            c = Path(expand_path(env.cache_dir, "environment.cache_dir"))
            self.cache_dir = c if c.is_absolute() else self.output_root / c
            self.cache_env = {
                "HF_HOME": str(self.cache_dir / "huggingface"),
                "TRITON_CACHE_DIR": str(self.cache_dir / "triton"),
                "TORCHINDUCTOR_CACHE_DIR": str(self.cache_dir / "inductor"),
            }
        self.mounts: list[str] = []
        if env.container_image:
            self.mounts = R.container_mounts(env, self.workdir, self.output_root)
            for m in env.container_mounts:
                src = m.split(":")[0]
                if not Path(src).exists():
                    self.errors.append(f"environment.container_mounts: the source {src} of {m!r} does not exist")
            if env.venv:
                self.warnings.append(
                    f"environment.venv ({env.venv}) is not sourced inside the container "
                    "(environment.container_image is set); set environment.venv=null to silence this"
                )
        if cfg.cluster.account is None:
            self.warnings.append(
                "cluster.account is null: the jobs are submitted without --account; most clusters need one "
                "(set cluster.account=<project>, or ignore this where the site has a default account)"
            )
        if self.output_root == self.workdir or self.workdir in self.output_root.parents:
            self.warnings.append(
                f"output_dir {self.output_root} is inside the checkout {self.workdir}: run folders, checkpoints "
                "and corpora would count against its quota; set output_dir to a scratch root "
                "(e.g. output_dir=$SCRATCH/safety-pretraining)"
            )

    def under_launch(self, p: str) -> Path:
        path = Path(expand_path(p, "path")).expanduser()
        return path if path.is_absolute() else self.launch_dir / path

    def input_path(self, p: str) -> Path:
        """An input folder (corpus, checkpoint) named relative to the current folder, made absolute."""
        return (self.base / Path(expand_path(p, "path")).expanduser()).resolve()

    def job_path(self, p: str) -> Path:
        """A path as the job sees it: relative paths are taken from the job's working folder."""
        path = Path(p).expanduser()
        return path if path.is_absolute() else self.workdir / path

    def repo_file(self, key: str, p: str) -> str:
        """A file the job reads from the repository (checked now; kept relative when it was)."""
        full = self.host_path(self.job_path(p))
        if not full.is_file():
            self.errors.append(f"{key}: {full} does not exist")
        return str(p)

    def config_file(self, key: str, p: str, folder: str) -> Path | None:
        """The package config a job's ``--config P`` names, as its CLI finds it from the job's folder: a file
        there, else a shipped config of that name (``infra.config.resolve_config_path``). None (and an error
        naming ``key``) when neither exists."""
        from infra.config import resolve_config_path

        full = self.host_path(self.job_path(p))
        if full.is_file():
            return full
        if not Path(p).is_absolute() and self.workdir.is_dir():
            with preflight.in_dir(self.workdir):
                shipped = resolve_config_path(p, folder)
            if shipped.is_file():
                return shipped.resolve()
        self.errors.append(f"{key}: {full} does not exist (nor is {p!r} the name of a shipped config)")
        return None

    def check(self, key: str, res: Resources, ntasks_per_node: int = 1) -> None:
        self.errors += check_resources(key, res, self.info, ntasks_per_node)

    def job_name(self, key: str) -> str:
        return f"{self.cfg.name}-{key}"

    @property
    def job_python(self) -> Path | None:
        """The job's Python on this host (its virtualenv's), for checks that need the job's packages."""
        venv = R.venv_path(self.cfg.environment, self.workdir)
        return venv / "bin" / "python" if venv is not None else None

    # -- the steps ------------------------------------------------------------------------------
    def step_env(self, extra_env: dict[str, str] | None = None, *, host: bool = False) -> list[str]:
        return R.step_env(self.cfg.environment, self.workdir, {**self.cache_env, **(extra_env or {})}, host=host)

    def srun(self, key: str, res: Resources, *, nodes: int, output: str | None = None, array: bool = False) -> str:
        env = self.cfg.environment
        name = None
        if env.container_image and env.container_name:
            base = self.job_name(key) if env.container_name == "auto" else env.container_name
            # array elements are jobs of their own that may share a node: one container each
            name = q(base) + ('-"${SLURM_ARRAY_TASK_ID:-0}"' if array else "")
        return R.srun_prefix(
            env,
            self.workdir,
            nodes=nodes,
            cpus_per_task=res.cpus_per_task,
            output=output,
            mounts=self.mounts,
            container_name=name,
        )

    # -- paths inside and outside the container -------------------------------------------------
    def _mount_pairs(self) -> list[tuple[Path, Path]]:
        return [(Path(m.split(":")[0]), Path(m.split(":")[1])) for m in self.mounts]

    def host_path(self, path: Path) -> Path:
        """Where a path the job sees (inside the container: under a mount's destination) is on this host."""
        for src, dst in sorted(self._mount_pairs(), key=lambda m: -len(m[1].parts)):
            if path == dst or dst in path.parents:
                return src / path.relative_to(dst)
        return path

    def outside_mounts(self, path: Path) -> bool:
        return bool(self.mounts) and not any(path == d or d in path.parents for _, d in self._mount_pairs())

    def add_package_check(self, result: preflight.CheckResult) -> None:
        self.errors += result.errors
        self.warnings += result.warnings

    # -- the whole plan -------------------------------------------------------------------------
    def _external_outputs(self) -> dict[str, list[str]]:
        """job id -> paths it writes, for the ``--after`` jobs recorded in a ``jobs.json`` under the scratch root."""
        wanted = set(self.after)
        found: dict[str, list[str]] = {}
        if not wanted or not self.output_root.is_dir():
            return found
        for path in sorted(self.output_root.glob("*/jobs.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            for sub in data.get("submissions", []):
                for j in sub.get("jobs", []):
                    if j.get("job_id") in wanted:
                        found[j["job_id"]] = list(j.get("outputs") or [])
        return found

    def check_chain(self, plan: Plan) -> None:
        """Every input exists, or a job it waits for (in this plan or ``--after``) writes it; with a container,
        every path lies under a mount."""
        by_key = {j.key: j for j in plan.jobs}
        external = self._external_outputs() if self.after else {}
        unknown_after = [a for a in self.after if a not in external]

        def ancestors(key: str) -> set[str]:
            out, todo = set(), list(by_key[key].after)
            while todo:
                k = todo.pop()
                if k not in out:
                    out.add(k)
                    todo += by_key[k].after
            return out

        def writes(outputs: list[str], path: Path) -> bool:
            return any(path == Path(o) or Path(o) in path.parents for o in outputs)

        for job in plan.jobs:
            for label, p, kind in job.inputs:
                path = Path(p)
                host = self.host_path(path)
                present = (host / "manifest.json").is_file() if kind == "corpus" else host.exists()
                if not present:
                    producers = [j.key for j in plan.jobs if j.key != job.key and writes(j.outputs, path)]
                    before = ancestors(job.key)
                    if any(k in before for k in producers):
                        pass
                    elif kind == "beside" and producers:
                        pass  # read while a job of this plan writes it (a follower beside training)
                    elif producers:
                        self.errors.append(
                            f"{job.key}: {label} {path} is written by job {producers[0]!r}, which {job.key!r} "
                            "does not wait for"
                        )
                    elif any(writes(outs, path) for outs in external.values()):
                        pass
                    elif unknown_after and not job.after:
                        self.warnings.append(
                            f"{job.key}: {label} {path} does not exist yet; assuming that job(s) "
                            f"{', '.join(unknown_after)} (--after) write it"
                        )
                    else:
                        what = "a corpus folder with manifest.json" if kind == "corpus" else "a file or folder"
                        self.errors.append(
                            f"{job.key}: {label} {path} is not {what} here, and no job this one waits for "
                            "writes it (give an existing path, or --after the job that writes it)"
                        )
            if self.mounts and job.in_container:
                paths = [(label, p) for label, p, _ in job.inputs] + [("output", o) for o in job.outputs]
                if self.cache_dir is not None:
                    paths.append(("environment.cache_dir", str(self.cache_dir)))
                for label, p in paths:
                    if self.outside_mounts(Path(p)):
                        dsts = ", ".join(str(d) for _, d in self._mount_pairs())
                        self.errors.append(
                            f"{job.key}: {label} {p} is outside the container's mounts ({dsts}); add its file "
                            f"system to environment.container_mounts (e.g. {_top(p)}:{_top(p)})"
                        )

    def finish(self, plan: Plan) -> Plan:
        plan.external_after = list(self.after)
        self.check_chain(plan)
        plan.warnings = list(dict.fromkeys(self.warnings))
        if self.errors:
            raise LaunchError("refusing to submit:\n  " + "\n  ".join(dict.fromkeys(self.errors)))
        return plan


def _top(p: str) -> str:
    parts = Path(p).parts
    return str(Path(*parts[:2])) if len(parts) > 1 else str(p)


def _header(ctx: Context, plan: Plan, key: str, res: Resources, **kw) -> list[str]:
    return R.sbatch_header(ctx.job_name(key), res, ctx.cfg.cluster, plan.log_dir(key), origin=ctx.origin, **kw)


# -- training ------------------------------------------------------------------------------------
def _nproc(train: TrainJob) -> int:
    return train.nproc_per_node or train.resources.gpus_per_node or 1


def train_job(
    ctx: Context,
    plan: Plan,
    key: str,
    *,
    run_dir: Path,
    curriculum: str | None = None,
    after: list[str] | None = None,
) -> JobSpec:
    """One multi-node training job: ``srun`` starts one ``torchrun`` per node, the head node from
    ``scontrol show hostnames`` hosts the rendezvous; the warning signal makes it save and requeue."""
    t = ctx.cfg.train
    res = t.resources
    ctx.check(key, res)
    env = ctx.cfg.environment
    config = t.config
    config_path = ctx.config_file("train.config", t.config, "trainer")
    nproc = _nproc(t)
    args = ["--config", config, f"run_dir={run_dir}"]
    if t.corpus:
        args.append(f"data.corpus={ctx.input_path(t.corpus)}")
    curriculum = curriculum or t.curriculum
    if curriculum:
        args.append(f"data.curriculum={curriculum}")
    args += t.overrides
    inputs: list[tuple[str, str, str]] = []
    if config_path is not None:
        checked = preflight.check_trainer(
            key,
            str(config_path),
            args[2:],
            workdir=ctx.workdir,
            world_size=res.nodes * nproc,
            files={ctx.launch_dir / rel: text for rel, text in plan.files.items()},
            job_python=ctx.job_python,
        )
        ctx.add_package_check(checked)
        for k, v in checked.inputs.items():
            label = "train.corpus" if k == "data.corpus" and t.corpus else f"{k} (from train.config {t.config})"
            inputs.append((label, str(ctx.job_path(v)), "corpus" if k == "data.corpus" else "path"))
        if checked.config is not None and "data.corpus" in checked.inputs:
            ctx.errors += preflight.curriculum_bucket_errors(
                key, checked.config, ctx.host_path(ctx.job_path(checked.inputs["data.corpus"]))
            )

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
    step = ctx.step_env(step_vars) + [
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
            'SPT_HEAD_NODE="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
            "export SPT_HEAD_NODE",
            f"export SPT_RDZV_PORT={port}",
            "",
            *R.WAIT_FN,
            *(R.preemption_block(p) if p.enabled else ["SPT_PREEMPTED=0", "SPT_STEP_PID="]),
            "",
            *R.embed_step("SPT_STEP", step),
            "",
            "# one torchrun per node; each writes its own log beside the job's",
            ctx.srun(key, res, nodes=res.nodes, output=str(plan.log_dir(key) / "%j.node%n.out"))
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
            inputs=inputs,
            outputs=[str(run_dir)],
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
    ctx.add_package_check(preflight.check_eval(key, e.suite, e.extra_args, models, workdir=ctx.workdir))
    n = len(models)
    array = f"0-{n - 1}" + (f"%{e.max_parallel}" if e.max_parallel else "")
    step = ctx.step_env() + [
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
        inputs=[(f"eval.checkpoints[{i}]", m, "path") for i, m in enumerate(models)],
        outputs=[str(o) for o in out_dirs],
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
    header_kw = header_kw or {}
    lines = (
        _header(ctx, plan, key, res, **header_kw)
        + R.prelude(ctx.workdir)
        + setup
        + [
            *R.embed_step("SPT_STEP", step),
            ctx.srun(key, res, nodes=1, array="array" in header_kw) + ' bash -c "$SPT_STEP"',
        ]
    )
    script = "\n".join(lines) + "\n"
    return plan.add(JobSpec(key=key, name=ctx.job_name(key), script=script, after=after, resources=res, **spec))


def compare_job(ctx: Context, plan: Plan, key: str, *, result_dirs: list[Path], out: Path, after: list[str]) -> JobSpec:
    e = ctx.cfg.eval
    res = e.compare_resources
    ctx.check(key, res)
    env = ctx.cfg.environment
    step = ctx.step_env() + [
        f"exec {q(env.python)} -m evalkit compare "
        + " ".join(q(str(d)) for d in result_dirs)
        + f" --out {q(str(out))}"
        + "".join(" " + q(a) for a in e.compare_args),
    ]
    return _one_node_job(
        ctx,
        plan,
        key,
        res,
        [f"mkdir -p {q(str(out))}"],
        step,
        after,
        info={"out": str(out)},
        inputs=[(f"results of {d.name}", str(d), "path") for d in result_dirs],
        outputs=[str(out)],
    )


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


# -- safety trajectories -------------------------------------------------------------------------
def track_job(
    ctx: Context,
    plan: Plan,
    key: str,
    *,
    runs: list[str],
    out: Path,
    follow: bool,
    after: list[str] | None = None,
    beside: bool = False,
) -> JobSpec:
    """One job: ``evalkit track RUN... --suite S --out OUT [--every N] [--follow]`` on one node. With
    ``follow`` it first waits for each run's ``config.yaml`` (the trainer writes it when it starts), so that
    it may start at the same time as the training it follows (``beside``: the runs are written by a job
    of this plan that it does not wait for)."""
    t = ctx.cfg.track
    res = t.resources
    ctx.check(key, res)
    env = ctx.cfg.environment
    ctx.add_package_check(
        preflight.check_eval(key, t.suite, t.extra_args, runs[:1], workdir=ctx.workdir, section="track")
    )
    suite = ",".join(s.strip() for s in t.suite.split(",") if s.strip())
    args = [*runs, "--suite", suite, "--out", str(out)]
    if t.every != 1:
        args += ["--every", str(t.every)]
    if follow:
        args += ["--follow", "--poll-s", f"{t.poll_s:g}"]
        if t.max_wait_s is not None:
            args += ["--max-wait-s", f"{t.max_wait_s:g}"]
    args += t.extra_args
    step = ctx.step_env() + [
        f'echo "[launch] tracking {len(runs)} run(s) into {out}"',
        f"exec {q(env.python)} -m evalkit track " + " ".join(q(a) for a in args),
    ]
    setup = [f"mkdir -p {q(str(out))}"]
    if follow:
        setup += [
            "# the trainer writes config.yaml when it starts: wait for it (the time limit bounds the wait)",
            R.bash_array("SPT_RUNS", runs),
            'for r in "${SPT_RUNS[@]}"; do',
            '  until [ -f "$r/config.yaml" ]; do',
            f'    echo "[launch] waiting for $r/config.yaml"; sleep {max(1, int(t.poll_s))}',
            "  done",
            "done",
        ]
    setup.append("")
    return _one_node_job(
        ctx,
        plan,
        key,
        res,
        setup,
        step,
        after or [],
        info={"runs": runs, "out": str(out), "follow": follow},
        inputs=[(f"track.runs[{i}]", r, "beside" if beside else "path") for i, r in enumerate(runs)],
        outputs=[str(out)],
    )


def plan_track(ctx: Context) -> Plan:
    t = ctx.cfg.track
    if not t.runs:
        raise LaunchError("track.runs is empty: give the run folders, e.g. track.runs=[runs/p0,runs/p20]")
    plan = Plan("track", ctx.launch_dir)
    runs = [str(ctx.input_path(r)) for r in t.runs]
    track_job(ctx, plan, "track", runs=runs, out=ctx.under_launch(t.out_dir), follow=t.follow)
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
        tpath = ctx.config_file("sweep.curriculum_template", s.curriculum_template, "trainer")
        if tpath is None:
            raise LaunchError("refusing to submit:\n  " + "\n  ".join(ctx.errors))
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
        if s.track:
            out = ctx.under_launch(ctx.cfg.track.out_dir) / f"p{pct}"
            track_job(ctx, plan, f"track-p{pct}", runs=[str(run_dir)], out=out, follow=True, beside=True)
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
# Variables a job's environment carries that must not reach the jobs datatrove submits from the
# driver with --export=ALL: srun in those jobs would read the driver's memory request beside their own
# ("SLURM_MEM_PER_CPU, SLURM_MEM_PER_GPU, and SLURM_MEM_PER_NODE are mutually exclusive"), its CPUs per
# task (SRUN_CPUS_PER_TASK) and node counts. SLURM_CONF (which cluster) stays.
SCRUB_SLURM_ENV = [
    "# submit datatrove's arrays as from a login node: none of this job's SLURM_*/SRUN_* variables",
    "# (memory, CPUs, nodes) may be inherited by their --export=ALL",
    "for v in $(compgen -e | grep -E '^(SLURM|SRUN)_' | grep -vx SLURM_CONF); do unset \"$v\"; done",
]


def plan_corpus(ctx: Context) -> Plan:
    c = ctx.cfg.corpus
    plan = Plan("corpus", ctx.launch_dir)
    key = "corpus"
    res = c.resources
    ctx.check(key, res)
    env = ctx.cfg.environment
    config = c.config
    config_path = ctx.config_file("corpus.config", c.config, "datagen")
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
    inputs: list[tuple[str, str, str]] = []
    outputs = [str(out_dir)] if out_dir is not None else []
    if config_path is not None:
        checked = preflight.check_datagen(key, str(config_path), args[2:], workdir=ctx.workdir)
        ctx.add_package_check(checked)
        dg = checked.config
        if dg is not None:
            for k, v in checked.inputs.items():
                inputs.append((f"{k} (corpus.config {c.config})", str(ctx.job_path(v)), "path"))
            if out_dir is None and "://" not in dg.output:
                outputs = [str(ctx.job_path(dg.output))]
            ex = dg.executor
            if ex.kind == "slurm":
                # datatrove's arrays: their partition, CPUs and time limit against the cluster
                arrays = Resources(partition=ex.partition, cpus_per_task=ex.cpus_per_task, time=ex.time)
                ctx.errors += [
                    e.replace(f"{key}:", f"{key} (datatrove's arrays, executor.* of corpus.executor_overrides):", 1)
                    for e in check_resources(key, arrays, ctx.info)
                ]
                if ex.venv_path and not Path(ex.venv_path).is_file():
                    ctx.errors.append(
                        f"{key}: executor.venv_path {ex.venv_path} (sourced by datatrove's jobs) does not exist"
                    )
    cmd = f"exec {q(env.python)} -m datagen run " + " ".join(q(a) for a in args)
    body: list[str]
    if c.executor == "local":
        step = ctx.step_env() + [cmd]
        body = [
            *R.embed_step("SPT_STEP", step),
            "# datatrove's local executor runs every task inside this one allocation",
            ctx.srun(key, res, nodes=1) + ' bash -c "$SPT_STEP"',
        ]
    else:
        if out_dir is None:
            raise LaunchError(
                "corpus.output_dir is needed with corpus.executor=slurm: the driver waits for "
                "<output_dir>/manifest.json so that later jobs can depend on it"
            )
        if env.container_image and venv is None:
            ctx.errors.append(
                "corpus.executor=slurm submits datatrove's jobs from the driver, which needs "
                "sbatch: it runs outside the container; set environment.venv for it"
            )
        # the driver runs on the batch host (outside any container), in the host virtualenv
        step = ctx.step_env(host=True) + SCRUB_SLURM_ENV + [cmd]
        body = [
            *R.embed_step("SPT_STEP", step),
            "# datatrove's SlurmPipelineExecutor submits one job array per stage from here (sbatch on the",
            "# batch host), chained by its own dependencies; then wait for the corpus to be complete.",
            'bash -c "$SPT_STEP" || exit $?',
            f"SPT_MANIFEST={q(str(out_dir / 'manifest.json'))}",
            "SPT_IDLE=0",
            'while [ ! -f "$SPT_MANIFEST" ]; do',
            f"  sleep {int(c.wait_poll_s)}",
            "  # datatrove chains its stages with afterok: one job whose dependency can never be met means",
            "  # a stage failed (its later dependents stay pending forever); none left means the same",
            f'  jobs=$(squeue -h -u "$(id -un)" -o "%j %r" | grep "^{stage_prefix}-" || true)',
            '  broken=$(printf "%s\\n" "$jobs" | grep -c DependencyNeverSatisfied || true)',
            '  if [ -z "$jobs" ]; then SPT_IDLE=$((SPT_IDLE + 1)); else SPT_IDLE=0; fi',
            '  if { [ "$broken" != 0 ] || [ "$SPT_IDLE" -ge 2 ]; } && [ ! -f "$SPT_MANIFEST" ]; then',
            f'    echo "[launch] a {stage_prefix}-* job waits for a failed one, or none is left, and there is no '
            '$SPT_MANIFEST: a stage failed (see the datatrove logging folders under the corpus)"',
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
            inputs=inputs,
            outputs=outputs,
            in_container=c.executor == "local",
        )
    )
    return ctx.finish(plan)


PLANNERS = {"corpus": plan_corpus, "train": plan_train, "eval": plan_eval, "track": plan_track, "sweep": plan_sweep}
