"""Fixtures of the launch tests: a real single-host Slurm (two fake nodes, started once per session and
stopped after), a tiny corpus and a tiny HF model for the jobs to use."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from infra.paths import REPO_ROOT


@pytest.fixture(scope="session")
def local_slurm(tmp_path_factory):
    """munged, slurmctld and one slurmd per fake node (n1, n2 in partition ``debug``; n1 alone in
    ``single``; both in ``mem``, which gives jobs a default memory per CPU as many sites do).
    ``SLURM_CONF`` points at it for the whole session."""
    from launch.testing.local_slurm import LocalSlurm, LocalSlurmError, missing_requirements

    why = missing_requirements()
    if why and os.geteuid() == 0 and "not installed" in why:
        # CI runs as root: install the Debian packages (idempotent) rather than skip.
        res = subprocess.run(
            ["bash", str(REPO_ROOT / "launch" / "testing" / "install_slurm.sh")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        why = missing_requirements() if res.returncode == 0 else f"install_slurm.sh failed: {res.stderr[-500:]}"
    if why:
        pytest.skip(f"no local Slurm: {why}")
    # A short folder: Slurm and munge keep socket paths in fixed-size buffers.
    root = Path(tmp_path_factory.mktemp("slurm"))
    cluster = LocalSlurm(
        root,
        nodes=2,
        cpus_per_node=4,
        extra_partitions={"single": "n1", "mem": "n[1-2]"},
        partition_options={"mem": "DefMemPerCPU=100"},
    )
    old = os.environ.get("SLURM_CONF")
    try:
        cluster.start(timeout=60)
    except LocalSlurmError as e:
        cluster.stop()
        pytest.fail(f"local Slurm did not start: {e}")
    os.environ.update(cluster.env())
    try:
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def scontrol_job(job_id: str) -> dict[str, str]:
    """``scontrol show job`` of one job (the first line for an array) as a dict."""
    res = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", str(job_id)], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    line = res.stdout.splitlines()[0]
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def array_states(job_id: str) -> list[str]:
    res = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", str(job_id)], capture_output=True, text=True, timeout=30
    )
    return [
        dict(i.split("=", 1) for i in line.split() if "=" in i).get("JobState", "?") for line in res.stdout.splitlines()
    ]


FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def wait_done(job_id: str, timeout: float, what: str = "", logs: Path | None = None) -> list[str]:
    """Wait until every element of a job is in a final state; returns the states."""
    deadline = time.monotonic() + timeout
    states: list[str] = []
    while time.monotonic() < deadline:
        states = array_states(job_id)
        if states and all(s in FINAL for s in states):
            return states
        time.sleep(1)
    detail = ""
    if logs is not None and logs.exists():
        detail = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(logs.rglob("*.out")))
    subprocess.run(["scancel", str(job_id)], capture_output=True)
    raise AssertionError(f"{what or job_id} not done after {timeout:.0f} s: {states}\n{detail}")


def run_launch(*argv: str) -> tuple[int, str, str]:
    """``python -m launch ARGV`` from the repository root, in a subprocess (as users run it)."""
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "launch", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PROGRESS": "0"},
    )
    return res.returncode, res.stdout, res.stderr


@pytest.fixture(scope="session")
def launch_corpus(tmp_path_factory):
    """A tiny corpus folder in the datagen layout (built with the trainer tests' builder)."""
    from tests.trainer.conftest import build_tiny_corpus

    return build_tiny_corpus(tmp_path_factory.mktemp("launch_corpus") / "corpus")


@pytest.fixture(scope="session")
def tiny_hf_model(tmp_path_factory, smollm2_dir):
    """A 2-layer random Llama with SmolLM2's tokenizer: a real HF folder that evaluates in seconds."""
    from infra.tokenizer import load_tokenizer
    from tests.fixtures.models import build_tiny_llama

    out = tmp_path_factory.mktemp("launch_tiny_llama")
    tok = load_tokenizer(smollm2_dir, add_tag=True)
    build_tiny_llama(tok).save_pretrained(out)
    tok.save_pretrained(out)
    return out
