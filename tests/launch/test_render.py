"""Rendering without a cluster: scripts, dependency graphs, curricula, and refusals from the config's
cluster description. Every script is also checked by ``bash -n``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.config import ConfigError, load_config
from infra.paths import REPO_ROOT
from launch.cluster import LaunchError
from launch.config import LaunchConfig, parse_time_minutes
from launch.jobs import PLANNERS, Context

CLUSTER = [
    "cluster.query=config",
    "cluster.partitions={h100: {nodes: 16, cpus_per_node: 96, gpus_per_node: 8, max_time: '2-00:00:00'},"
    " cpu: {nodes: 2, cpus_per_node: 64, gpus_per_node: 0}}",
    "cluster.default_partition=h100",
]


def plan(cmd: str, tmp_path: Path, *overrides: str, config: str = "configs/launch/h100.yaml"):
    cfg = load_config(LaunchConfig, REPO_ROOT / config, [*CLUSTER, f"output_dir={tmp_path}", *overrides])
    return PLANNERS[cmd](Context(cfg, REPO_ROOT, origin=config))


def bash_syntax_ok(text: str, tmp_path: Path) -> None:
    p = tmp_path / "check.sh"
    p.write_text(text)
    res = subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # the embedded step programs are parsed again when they run: check them too
    for body in re.findall(r"<<'SPT_STEP_EOF' \|\| true\n(.*?)\nSPT_STEP_EOF", text, flags=re.S):
        p.write_text(body)
        res = subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True)
        assert res.returncode == 0, f"{res.stderr}\n{body}"


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "configs" / "launch").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(LaunchConfig, path)
    assert cfg.train.resources.nodes >= 1


def test_time_parsing():
    assert parse_time_minutes("90") == 90
    assert parse_time_minutes("01:30:00") == 90
    assert parse_time_minutes("2-00:00:00") == 2880
    assert parse_time_minutes("1-12") == 2160
    assert parse_time_minutes("UNLIMITED") == float("inf")
    with pytest.raises(ValueError):
        parse_time_minutes("soon")


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="train.resources.mem"):
        load_config(LaunchConfig, None, ["train.resources.mem=lots"])
    with pytest.raises(ConfigError, match="sweep.interventions: 20"):
        load_config(LaunchConfig, None, ["sweep.interventions=[0, 20]"])
    with pytest.raises(ConfigError, match="unknown key 'train.gpus'"):
        load_config(LaunchConfig, None, ["train.gpus=8"])


def test_train_script(tmp_path):
    p = plan(
        "train",
        tmp_path,
        "train.resources.nodes=4",
        "train.dist_env={NCCL_NVLS_ENABLE: ''}",
        "environment.venv=null",
        "environment.container_image=nvcr.io#nvidia/pytorch:24.05-py3",
        "train.overrides=[train.train_steps=100]",
    )
    (job,) = p.jobs
    s = job.script
    for needle in [
        "#SBATCH --nodes=4",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --signal=B:USR1@300",
        "#SBATCH --requeue",
        "#SBATCH --exclusive",
        f"#SBATCH --output={tmp_path}/safety-pretraining/logs/train/%j.out",
        'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1',
        '--rdzv-endpoint="$SPT_HEAD_NODE:$SPT_RDZV_PORT"',
        "--nproc-per-node=8",
        "trap '' USR1\nexec python -m torch.distributed.run",
        "export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=600",
        "trap spt_on_signal USR1",
        'scontrol requeue "$SLURM_JOB_ID"',
        "--container-image='nvcr.io#nvidia/pytorch:24.05-py3'",
        "export CUDA_DEVICE_MAX_CONNECTIONS=1",
        "unset NCCL_NVLS_ENABLE",
        "train.train_steps=100",
        f"run_dir={tmp_path}/safety-pretraining/run",
    ]:
        assert needle in s, needle
    assert "source " not in s  # no virtualenv inside the container
    bash_syntax_ok(s, tmp_path)


def test_train_static_rendezvous_without_preemption(tmp_path):
    p = plan("train", tmp_path, "train.rdzv_backend=static", "train.preemption.enabled=false")
    s = p.jobs[0].script
    assert '--node-rank="$SLURM_NODEID"' in s and '--master-addr="$SPT_HEAD_NODE"' in s
    assert "--signal=" not in s and "scontrol requeue" not in s and "trap ''" not in s
    bash_syntax_ok(s, tmp_path)


def test_sweep_graph_and_curricula(tmp_path):
    p = plan("sweep", tmp_path, "sweep.interventions=[0.0, 0.2, 0.6]")
    keys = [j.key for j in p.jobs]
    assert keys == ["train-p0", "eval-p0", "train-p20", "eval-p20", "train-p60", "eval-p60", "compare"]
    after = {j.key: j.after for j in p.jobs}
    assert after["train-p20"] == [] and after["eval-p60"] == ["train-p60"]
    assert after["compare"] == ["eval-p0", "eval-p20", "eval-p60"]
    text = p.dry_run_text()
    assert "sbatch --parsable --dependency=afterok:<train-p20> --kill-on-invalid-dep=yes" in text
    assert "--dependency=afterok:<eval-p0>:<eval-p20>:<eval-p60>" in text
    # one curriculum per intervention, built from the template's base and intervention mixes
    c0 = yaml.safe_load(p.files["curricula/intervention_0.yaml"])["curriculum"]["phases"]
    c60 = yaml.safe_load(p.files["curricula/intervention_60.yaml"])["curriculum"]["phases"]
    assert len(c0) == 1 and c0[0]["start"] == 0.0 and c0[0]["weights"]["refusal"] > 0
    assert [ph["start"] for ph in c60] == [0.0, 0.6] and c60[0]["weights"] == {"raw": 1.0}
    t60 = next(j for j in p.jobs if j.key == "train-p60").script
    assert f"data.curriculum={tmp_path}/safety-pretraining/curricula/intervention_60.yaml" in t60
    e60 = next(j for j in p.jobs if j.key == "eval-p60").script
    assert f"SPT_MODELS=({tmp_path}/safety-pretraining/runs/p60)" in e60
    for j in p.jobs:
        bash_syntax_ok(j.script, tmp_path)
    assert not (tmp_path / "safety-pretraining").exists()  # planning writes nothing


def test_sweep_uses_shipped_curricula_where_given(tmp_path):
    p = plan(
        "sweep",
        tmp_path,
        "sweep.interventions=[0.2, 0.4]",
        "sweep.evaluate=false",
        "sweep.curriculum_files={20: configs/trainer/curricula/intervention_20.yaml}",
    )
    assert [j.key for j in p.jobs] == ["train-p20", "train-p40"]
    assert "data.curriculum=configs/trainer/curricula/intervention_20.yaml" in p.jobs[0].script
    assert list(p.files) == ["curricula/intervention_40.yaml"]


def test_eval_array_and_compare(tmp_path):
    p = plan("eval", tmp_path, "eval.checkpoints=[runs/a, runs/b/checkpoints/latest, /abs/b]", "eval.max_parallel=2")
    ev, cmp_ = p.jobs
    assert ev.array_size == 3 and "#SBATCH --array=0-2%2" in ev.script
    assert "%A_%a.out" in ev.script
    outs = [f"{tmp_path}/safety-pretraining/eval/{n}" for n in ("a", "b", "b_1")]
    assert "SPT_OUTS=(" + " ".join(outs) + ")" in ev.script
    assert cmp_.after == ["eval"] and " ".join(outs) in cmp_.script
    assert '--model "$SPT_MODEL" --suite asr,overrefusal --out "$SPT_OUT"' in ev.script
    bash_syntax_ok(ev.script, tmp_path)
    bash_syntax_ok(cmp_.script, tmp_path)


def test_corpus_driver_for_datatrove_slurm(tmp_path):
    p = plan(
        "corpus",
        tmp_path,
        "corpus.executor=slurm",
        "corpus.output_dir=corpus",
        "corpus.executor_overrides={executor.partition: cpu, executor.tasks: 64}",
    )
    s = p.jobs[0].script
    assert "executor.kind=slurm" in s and "executor.partition=cpu" in s and "executor.tasks=64" in s
    assert f"executor.venv_path={REPO_ROOT}/.venv/bin/activate" in s
    assert f"output={tmp_path}/safety-pretraining/corpus" in s
    assert "manifest.json" in s and "executor.job_name=safety-pretraining-corpus" in s
    bash_syntax_ok(s, tmp_path)
    local = plan("corpus", tmp_path, "corpus.executor=local").jobs[0].script
    assert "executor.kind=local" in local and "srun --nodes=1" in local


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.resources.partition=h200", "unknown partition 'h200'"),
        ("train.resources.nodes=17", "asks for 17 nodes but partition 'h100' has 16"),
        ("train.resources.gpus_per_node=16", "asks for 16 GPUs per node but partition 'h100' has 8"),
        ("train.resources.time=3-00:00:00", "above partition 'h100'"),
        ("environment.container_image=/no/such/image.sqsh", "image file /no/such/image.sqsh does not exist"),
        ("train.config=configs/trainer/no_such.yaml", "train.config"),
    ],
)
def test_refusals_before_submission(tmp_path, override, message):
    with pytest.raises(LaunchError, match=re.escape(message)):
        plan("train", tmp_path, override)
    assert not (tmp_path / "safety-pretraining").exists()


def test_cli_dry_run_prints_every_script(tmp_path):
    res = subprocess.run(
        [
            str(REPO_ROOT / ".venv" / "bin" / "python"),
            "-m",
            "launch",
            "sweep",
            "--config",
            "configs/launch/h100.yaml",
            "--dry-run",
            *CLUSTER,
            f"output_dir={tmp_path}",
            "sweep.interventions=[0.2, 0.6]",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("#!/bin/bash") == 5
    assert "##### submission order" in res.stdout and "intervention_20.yaml" in res.stdout
    bad = subprocess.run(
        [
            str(REPO_ROOT / ".venv" / "bin" / "python"),
            "-m",
            "launch",
            "train",
            "--config",
            "configs/launch/h100.yaml",
            "--dry-run",
            *CLUSTER,
            "train.resources.nodes=17",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "asks for 17 nodes" in bad.stderr
