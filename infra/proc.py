"""Running one package's command line from another (``python -m trainer sft ...``) as a subprocess.

Packages talk to each other through their CLIs and folders, never their internals. Every such call
goes through ``run_cli``: the child gets a clean distributed environment (a torchrun-launched parent
must not make the child join its process group), the repository on ``PYTHONPATH``, hubs off, its
output in a log file, a timeout, and a failure raises ``CLIError`` with the log's tail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from infra.log import get_logger
from infra.paths import REPO_ROOT

__all__ = ["CLIError", "DIST_ENV_VARS", "clean_env", "run_cli"]

log = get_logger(__name__)

# torchrun / torch.distributed / Slurm-launch variables that would make a child join the parent's group
DIST_ENV_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
    "TORCHELASTIC_USE_AGENT_STORE",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING",
)


class CLIError(RuntimeError):
    """A package command that failed or timed out; the message names the command, the log and its tail."""

    def __init__(self, message: str, returncode: int | None = None, log_path: Path | None = None):
        super().__init__(message)
        self.returncode = returncode
        self.log_path = log_path


def clean_env(extra: dict | None = None) -> dict:
    """The current environment without distributed variables, the repository importable, hubs off."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV_VARS}
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.update(extra or {})
    return env


def _tail(path: Path | None, text: str | None, n: int) -> str:
    if text is not None:
        return text[-n:]
    if path is not None and path.is_file():
        return path.read_text(encoding="utf-8", errors="replace")[-n:]
    return ""


def run_cli(
    package: str,
    args: list[str],
    *,
    log_path: str | Path | None = None,
    timeout_s: float | None = None,
    what: str | None = None,
    env: dict | None = None,
    cwd: str | Path = REPO_ROOT,
    tail_chars: int = 1500,
) -> float:
    """Run ``python -m <package> <args>``; return its wall time in seconds.

    Args:
        package: the module to run (``trainer``, ``datagen``, ``evalkit``...).
        args: its arguments.
        log_path: file for stdout and stderr together; ``None`` lets the output through to this
            process's (the demo shows its steps live).
        timeout_s: seconds before the child is killed and ``CLIError`` raised.
        what: the step's name in messages (default ``<package> <first arg>``).
        env: variables added to the clean environment.

    Raises:
        CLIError: non-zero exit or timeout; the message has the exit status, the log path and its tail.
    """
    cmd = [sys.executable, "-m", package, *map(str, args)]
    what = what or f"{package} {args[0] if args else ''}".strip()
    log.info("%s: %s", what, " ".join(cmd))
    log_path = Path(log_path) if log_path is not None else None
    t0 = time.perf_counter()
    try:
        if log_path is None:
            r = subprocess.run(cmd, cwd=str(cwd), env=clean_env(env), timeout=timeout_s)
        else:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("w", encoding="utf-8") as lf:
                r = subprocess.run(
                    cmd, cwd=str(cwd), env=clean_env(env), timeout=timeout_s, stdout=lf, stderr=subprocess.STDOUT
                )
    except subprocess.TimeoutExpired:
        where = f" (log: {log_path})" if log_path else ""
        raise CLIError(
            f"{what}: no result within {timeout_s:.0f} s{where}\n{_tail(log_path, None, tail_chars)}", None, log_path
        ) from None
    if r.returncode != 0:
        where = f" (log: {log_path})" if log_path else ""
        raise CLIError(
            f"{what}: exit status {r.returncode}{where}\n{_tail(log_path, None, tail_chars)}", r.returncode, log_path
        )
    return time.perf_counter() - t0
