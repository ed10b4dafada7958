"""The cluster install of docs/launch.md ("Installing beside the site's CUDA stack") into a fresh
virtualenv that already has a torch: the CPU torch 2.13.0 wheel on this machine's disk stands for a
site's CUDA build.

* The full install (``[train,eval,data]``) is resolved with ``pip install --dry-run --report``: a real
  install of its ~185 packages takes minutes, the resolution is where torch would be replaced (without
  the constraints pip picks torchvision 0.29.1 and with it torch 2.14.1 and the CUDA-13 libraries).
* The login-node base install is installed for real; torch's files are unchanged, and every package,
  console script and shipped config works from a folder outside the checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.paths import REPO_ROOT

pytestmark = pytest.mark.slow

TORCH = "torch==2.13.0"
FINGERPRINT = """
import hashlib, importlib.metadata as md, json, os, torch
dist = md.distribution("torch")
record = next(f for f in dist.files if f.name == "RECORD")
print(json.dumps({
    "version": torch.__version__, "cuda": torch.version.cuda, "git": torch.version.git_version,
    "record": hashlib.sha256(record.locate().read_bytes()).hexdigest(),
    "mtime": os.stat(torch.__file__).st_mtime_ns, "file": torch.__file__,
}))
"""


def _pip(python: Path) -> list[str]:
    """This environment's pip acting on another interpreter (no pip bootstrap in the new virtualenv)."""
    return [sys.executable, "-m", "pip", "--python", str(python)]


def _torch(python: Path) -> dict:
    res = subprocess.run([str(python), "-c", FINGERPRINT], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A virtualenv holding only a torch (the "site stack"), and a copy of the checkout's files (an install
    builds in its source folder; the checkout stays clean)."""
    root = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    res = subprocess.run(
        [*_pip(python), "install", "-q", "--no-compile", TORCH], capture_output=True, text=True, timeout=600
    )
    if res.returncode != 0:
        pytest.skip(f"{TORCH} (the local CPU wheel) cannot be installed here: {res.stderr.strip()[-300:]}")
    files = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    src = root / "src"
    for rel in filter(None, files):
        p = REPO_ROOT / os.fsdecode(rel)
        if p.is_file():
            (src / os.fsdecode(rel)).parent.mkdir(parents=True, exist_ok=True)
            (src / os.fsdecode(rel)).write_bytes(p.read_bytes())
    return {"root": root, "python": python, "src": src, "torch": _torch(python)}


def _install(site: dict, extras: str, *pip_args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHON": str(site["python"]),
        "PIP": " ".join(_pip(site["python"])),
        "PIP_ARGS": " ".join(["-q", *pip_args]),
        "SPT_CONSTRAINTS": str(site["root"] / f"constraints-{extras or 'base'}.txt"),
    }
    return subprocess.run(
        ["bash", str(site["src"] / "containers" / "install_project.sh"), str(site["src"]), extras],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def test_full_install_resolves_without_replacing_torch(site):
    from packaging.requirements import Requirement
    from packaging.version import Version

    report = site["root"] / "report.json"
    res = _install(site, "train,eval,data", "--dry-run", "--report", str(report))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"torch=={site['torch']['version']}" in (site["root"] / "constraints-train,eval,data.txt").read_text()
    items = json.loads(report.read_text())["install"]
    names = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"] for i in items}
    replaced = sorted(n for n in names if n in ("torch", "triton") or n.startswith("nvidia-"))
    assert not replaced, f"the install would replace the site's stack: {replaced}"
    # the resolution covered every extra's heavy dependency
    assert {"megatron-core", "datatrove", "lm-eval", "streaming-community", "transformers"} <= set(names)
    # every package that needs torch accepts the one installed (torchvision: the release made for it)
    installed = Version(site["torch"]["version"])
    for item in items:
        for spec in item["metadata"].get("requires_dist") or []:
            req = Requirement(spec)
            if req.name == "torch" and (req.marker is None or req.marker.evaluate({"extra": ""})):
                assert req.specifier.contains(installed, prereleases=True), (item["metadata"]["name"], spec)
    assert _torch(site["python"]) == site["torch"]


def test_base_install_keeps_torch_and_everything_works_outside_the_checkout(site, launch_corpus):
    res = _install(site, "")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "site stack unchanged" in res.stdout
    assert _torch(site["python"]) == site["torch"]  # version, build and the very files
    bin_dir = site["python"].parent
    work = site["root"] / "work"  # a folder with no checkout in it
    work.mkdir()
    imports = (
        "import infra, launch, datagen, trainer, evalkit, spt_configs, trainer.config, trainer.model, "
        "datagen.config, evalkit.config, launch.jobs, launch.preflight; print(trainer.__file__)"
    )
    res = subprocess.run([str(site["python"]), "-c", imports], capture_output=True, text=True, cwd=work, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith(str(site["root"] / "venv"))  # the installed copy, not the checkout
    for script in ("spt-launch", "spt-trainer", "spt-datagen", "spt-evalkit", "spt-infra"):
        v = subprocess.run([str(bin_dir / script), "--version"], capture_output=True, text=True, cwd=work, timeout=300)
        assert v.returncode == 0 and v.stdout.strip().endswith("0.1.0"), (script, v.stdout, v.stderr)
    # a dry run by shipped config names only: the launch config, the trainer config it names, the curriculum
    shipped = Path(
        subprocess.run(
            [str(site["python"]), "-c", "import spt_configs; print(spt_configs.__path__[0])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    dry = subprocess.run(
        [
            str(bin_dir / "spt-launch"),
            "train",
            "--config",
            "launch/h100",
            "--dry-run",
            "cluster.query=config",
            f"output_dir={site['root'] / 'scratch'}",
            f"environment.workdir={work}",
            "environment.venv=null",
            f"train.corpus={launch_corpus}",
            f"train.curriculum={shipped / 'trainer' / 'curricula' / 'intervention_20.yaml'}",
            "train.overrides=[train.warmup_steps=10]",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stderr
    assert "--config configs/trainer/smollm2_1.7b.yaml" in dry.stdout and "#SBATCH --mem=0" in dry.stdout
    assert "was not checked" not in dry.stderr  # the layout check ran, with the environment's torch
