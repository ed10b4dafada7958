"""Batch scripts as text. Every value that comes from a config is shell-quoted here, once.

A script has three parts: the ``#SBATCH`` header, a batch-shell prelude (log line, working folder, job
environment), and one or more *steps*. A step is a small bash program (environment set-up, then
``exec`` of the real command) that runs under ``srun`` on the allocated nodes, inside the container when
one is configured. Steps are embedded with a quoted here-document so that ``$SLURM_*`` variables expand
on the node that runs them.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from launch.config import ClusterConfig, EnvironmentConfig, PreemptionConfig, Resources

q = shlex.quote


def sbatch_header(
    job_name: str,
    res: Resources,
    cluster: ClusterConfig,
    log_dir: Path,
    *,
    ntasks_per_node: int = 1,
    array: str | None = None,
    preemption: PreemptionConfig | None = None,
    origin: str = "",
) -> list[str]:
    """``#SBATCH`` lines for one job; the output goes to ``log_dir/%j.out`` (``%A_%a.out`` for arrays)."""
    lines = [
        "#!/bin/bash",
        f"# Rendered by `python -m launch`{' from ' + origin if origin else ''}; "
        "change the YAML config rather than this file.",
    ]
    opts: list[str] = [f"--job-name={job_name}"]
    if res.partition:
        opts.append(f"--partition={res.partition}")
    if cluster.account:
        opts.append(f"--account={cluster.account}")
    if cluster.qos:
        opts.append(f"--qos={cluster.qos}")
    opts += [f"--nodes={res.nodes}", f"--ntasks-per-node={ntasks_per_node}", f"--cpus-per-task={res.cpus_per_task}"]
    if res.gpus_per_node:
        opts.append(f"--gpus-per-node={res.gpus_per_node}")
    if res.mem_option is not None:
        opts.append(f"--mem={res.mem_option}")
    opts.append(f"--time={res.time}")
    if res.exclusive:
        opts.append("--exclusive")
    if res.constraint:
        opts.append(f"--constraint={res.constraint}")
    if res.reservation:
        opts.append(f"--reservation={res.reservation}")
    if array:
        opts.append(f"--array={array}")
    out = log_dir / ("%A_%a.out" if array else "%j.out")
    opts += [f"--output={out}", "--open-mode=append"]
    if preemption is not None and preemption.enabled:
        # B: the signal goes to the batch shell only; its trap tells the step and requeues the job.
        opts += [f"--signal=B:{preemption.signal.upper()}@{preemption.warn_seconds}", "--requeue"]
    opts += list(res.extra_sbatch)
    for o in opts:
        if "\n" in o:
            raise ValueError(f"sbatch option {o!r} contains a newline")
        lines.append(f"#SBATCH {o}")
    return lines


def prelude(workdir: Path) -> list[str]:
    return [
        "",
        "set -uo pipefail",
        'echo "[launch] job ${SLURM_JOB_ID}${SLURM_ARRAY_TASK_ID:+ (array task $SLURM_ARRAY_TASK_ID)} '
        'on ${SLURM_JOB_NODELIST}, restart ${SLURM_RESTART_COUNT:-0}, $(date -u +%FT%TZ)"',
        f"cd {q(str(workdir))} || exit 1",
        "# srun steps get the job's CPUs per task: Slurm 22.05-23.02 srun does not inherit --cpus-per-task",
        "# from sbatch and would pin each task (torchrun and all its ranks) to one CPU",
        'export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK:-1}"',
    ]


def venv_path(env: EnvironmentConfig, workdir: Path) -> Path | None:
    if not env.venv:
        return None
    p = Path(env.venv).expanduser()
    return p if p.is_absolute() else workdir / p


def step_env(
    env: EnvironmentConfig, workdir: Path, extra_env: dict[str, str] | None = None, *, host: bool = False
) -> list[str]:
    """The first lines of every step: fail fast, working folder, virtualenv, set-up lines, variables.

    The virtualenv is sourced only outside a container (``host``: a step that runs on the host even
    when a container is configured, such as the corpus driver)."""
    lines = ["set -eo pipefail", f"cd {q(str(workdir))}"]
    venv = venv_path(env, workdir)
    if venv is not None and (host or not env.container_image):
        lines.append(f"source {q(str(venv / 'bin' / 'activate'))}")
    lines += list(env.setup)
    merged = {**(extra_env or {}), **env.env}
    for k, v in merged.items():
        if v == "":
            lines.append(f"unset {k}")
        else:
            lines.append(f"export {k}={q(str(v))}")
    return lines


def container_mounts(env: EnvironmentConfig, workdir: Path, output_root: Path) -> list[str]:
    """The container's mounts: the workdir and the scratch root at the same paths, then the config's."""
    auto = []
    for p in (workdir, output_root):
        m = f"{p}:{p}"
        if m not in auto:
            auto.append(m)
    return auto + [m for m in env.container_mounts if m not in auto]


def srun_prefix(
    env: EnvironmentConfig,
    workdir: Path,
    *,
    nodes: int,
    cpus_per_task: int,
    ntasks_per_node: int = 1,
    output: str | None = None,
    kill_on_bad_exit: bool = True,
    mounts: list[str] | None = None,
    container_name: str | None = None,
) -> str:
    """``srun`` with the step's placement and CPUs and, when configured, the pyxis container.

    ``container_name`` is shell text, quoted by the caller (it may end in an array task id variable)."""
    parts = ["srun", f"--nodes={nodes}", f"--ntasks-per-node={ntasks_per_node}", f"--cpus-per-task={cpus_per_task}"]
    if kill_on_bad_exit:
        parts.append("--kill-on-bad-exit=1")
    if output:
        parts += [f"--output={q(output)}", "--open-mode=append"]
    if env.container_image:
        parts += [
            f"--container-image={q(env.container_image)}",
            f"--container-mounts={q(','.join(mounts if mounts is not None else [f'{workdir}:{workdir}']))}",
            f"--container-workdir={q(str(workdir))}",
        ]
        if container_name:
            parts.append(f"--container-name={container_name}")
    return " ".join(parts)


def embed_step(var: str, lines: list[str]) -> list[str]:
    """Store a step program in shell variable ``var`` without expanding anything in it."""
    body = "\n".join(lines)
    marker = "SPT_STEP_EOF"
    if marker in body:
        raise ValueError(f"step text contains the here-document marker {marker}")
    return [f"read -r -d '' {var} <<'{marker}' || true", body, marker]


WAIT_FN = [
    "# `wait` returns early when a trap runs; keep waiting until the step has really ended.",
    "spt_wait() {",
    "  local rc",
    "  while :; do",
    '    wait "$1"; rc=$?',
    '    kill -0 "$1" 2>/dev/null || return "$rc"',
    "  done",
    "}",
]


def preemption_block(p: PreemptionConfig) -> list[str]:
    sig = p.signal.upper()
    return [
        "SPT_PREEMPTED=0",
        "SPT_STEP_PID=",
        "spt_on_signal() {",
        f'  echo "[launch] $(date -u +%FT%TZ) got SIG{sig}: the trainer saves a checkpoint and exits, '
        'then the job requeues itself"',
        "  SPT_PREEMPTED=1",
        f'  if [ -n "$SPT_STEP_PID" ]; then kill -{sig} "$SPT_STEP_PID" 2>/dev/null || true; fi',
        "}",
        f"trap spt_on_signal {sig}",
    ]


def requeue_block(p: PreemptionConfig) -> list[str]:
    return [
        'if [ "$SPT_PREEMPTED" = 1 ]; then',
        f'  if [ "${{SLURM_RESTART_COUNT:-0}}" -ge {p.max_requeues} ]; then',
        f'    echo "[launch] already restarted ${{SLURM_RESTART_COUNT}} times (preemption.max_requeues='
        f'{p.max_requeues}); not requeueing"',
        "    exit 1",
        "  fi",
        '  echo "[launch] step ended with $SPT_RC after the signal; requeueing job $SLURM_JOB_ID"',
        '  scontrol requeue "$SLURM_JOB_ID"',
        "  exit 0",
        "fi",
    ]


def bash_array(name: str, values: list[str]) -> str:
    return f"{name}=(" + " ".join(q(v) for v in values) + ")"
