"""Rendering without a cluster: scripts, dependency graphs, curricula, and refusals from the config's
cluster description. Every script is also checked by ``bash -n``."""

from __future__ import annotations

import json
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


def plan(cmd: str, tmp_path: Path, *overrides: str, config: str = "configs/launch/h100.yaml", after=()):
    cfg = load_config(LaunchConfig, REPO_ROOT / config, [*CLUSTER, f"output_dir={tmp_path}", *overrides])
    return PLANNERS[cmd](Context(cfg, REPO_ROOT, origin=config, after=list(after)))


def _fits(corpus: Path) -> tuple[str, str]:
    """A corpus that exists and a schedule that fits a short test run of the shipped 1.7B config."""
    return f"train.corpus={corpus}", "train.overrides=[train.warmup_steps=10]"


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


def test_train_script(tmp_path, launch_corpus):
    p = plan(
        "train",
        tmp_path,
        "train.resources.nodes=4",
        "train.dist_env={NCCL_NVLS_ENABLE: ''}",
        "environment.venv=null",
        "environment.container_image=nvcr.io#nvidia/pytorch:24.05-py3",
        f"train.corpus={launch_corpus}",
        f"environment.container_mounts=[{launch_corpus.parent}:{launch_corpus.parent}:ro]",
        "train.overrides=[train.train_steps=100, train.warmup_steps=10]",
    )
    (job,) = p.jobs
    s = job.script
    root = tmp_path
    for needle in [
        "#SBATCH --nodes=4",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --signal=B:USR1@300",
        "#SBATCH --requeue",
        "#SBATCH --exclusive",
        "#SBATCH --mem=0",  # exclusive without mem: all of each node's memory, not the site's default
        f"#SBATCH --output={tmp_path}/safety-pretraining/logs/train/%j.out",
        'export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK:-1}"',
        'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1',
        '--rdzv-endpoint="$SPT_HEAD_NODE:$SPT_RDZV_PORT"',
        "--nproc-per-node=8",
        "trap '' USR1\nexec python -m torch.distributed.run",
        "export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=600",
        "trap spt_on_signal USR1",
        'scontrol requeue "$SLURM_JOB_ID"',
        "export CUDA_DEVICE_MAX_CONNECTIONS=1",
        "unset NCCL_NVLS_ENABLE",
        f"export HF_HOME={root}/cache/huggingface",  # caches under the scratch root
        "export HF_HUB_OFFLINE=1",
        "export PROGRESS=0",
        "train.train_steps=100",
        f"run_dir={tmp_path}/safety-pretraining/run",
        f"data.corpus={launch_corpus}",
    ]:
        assert needle in s, needle
    (srun,) = [line for line in s.splitlines() if line.startswith("srun ")]
    assert srun == (
        "srun --nodes=4 --ntasks-per-node=1 --cpus-per-task=96 --kill-on-bad-exit=1 "
        f"--output={tmp_path}/safety-pretraining/logs/train/%j.node%n.out --open-mode=append "
        "--container-image='nvcr.io#nvidia/pytorch:24.05-py3' "
        f"--container-mounts={REPO_ROOT}:{REPO_ROOT},{root}:{root},{launch_corpus.parent}:{launch_corpus.parent}:ro "
        f"--container-workdir={REPO_ROOT} --container-name=safety-pretraining-train "
        'bash -c "$SPT_STEP" &'
    )
    assert "source " not in s  # no virtualenv inside the container
    bash_syntax_ok(s, tmp_path)


def test_venv_is_not_sourced_in_a_container(tmp_path, launch_corpus):
    p = plan(
        "train",
        tmp_path,
        f"train.corpus={launch_corpus}",
        "environment.container_image=nvcr.io#nvidia/pytorch:24.05-py3",
        f"environment.container_mounts=[{launch_corpus.parent}:{launch_corpus.parent}]",
        "train.overrides=[train.train_steps=100, train.warmup_steps=10]",
    )
    assert "source " not in p.jobs[0].script
    assert any("environment.venv (.venv) is not sourced inside the container" in w for w in p.warnings)
    host = plan("train", tmp_path, f"train.corpus={launch_corpus}", "train.overrides=[train.warmup_steps=10]")
    assert f"source {REPO_ROOT}/.venv/bin/activate" in host.jobs[0].script
    assert "--container" not in host.jobs[0].script


def test_output_locations_follow_the_scratch_root(tmp_path, launch_corpus, monkeypatch):
    cfg = load_config(
        LaunchConfig,
        REPO_ROOT / "configs/launch/h100.yaml",
        [*CLUSTER, f"train.corpus={launch_corpus}", "train.overrides=[train.warmup_steps=10]", "name=r1"],
    )
    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    s = PLANNERS["train"](Context(cfg, REPO_ROOT)).jobs[0].script
    for needle in [
        f"run_dir={tmp_path}/scratch/safety-pretraining/r1/run",
        f"--output={tmp_path}/scratch/safety-pretraining/r1/logs/train/%j.out",
        f"HF_HOME={tmp_path}/scratch/safety-pretraining/cache/huggingface",
    ]:
        assert needle in s, needle
    monkeypatch.delenv("SCRATCH")
    with pytest.raises(ConfigError, match=r"output_dir: '\$SCRATCH/safety-pretraining' uses the environment variable"):
        Context(cfg, REPO_ROOT)
    # a scratch root inside the checkout is allowed, with a warning about its quota
    inside = plan(
        "train",
        tmp_path,
        f"output_dir={REPO_ROOT}/launches",
        f"train.corpus={launch_corpus}",
        "train.overrides=[train.warmup_steps=10]",
    )
    assert any("is inside the checkout" in w for w in inside.warnings)


def test_dry_run_flags_a_missing_account(tmp_path, launch_corpus):
    args = (f"train.corpus={launch_corpus}", "train.overrides=[train.warmup_steps=10]")
    text = plan("train", tmp_path, *args).dry_run_text()
    assert text.startswith("##### warnings\n# warning: cluster.account is null")
    with_account = plan("train", tmp_path, *args, "cluster.account=proj42")
    assert not any("account" in w for w in with_account.warnings)
    assert "#SBATCH --account=proj42" in with_account.jobs[0].script


def test_train_static_rendezvous_without_preemption(tmp_path, launch_corpus):
    p = plan(
        "train",
        tmp_path,
        "train.rdzv_backend=static",
        "train.preemption.enabled=false",
        f"train.corpus={launch_corpus}",
        "train.overrides=[train.warmup_steps=10]",
    )
    s = p.jobs[0].script
    assert '--node-rank="$SLURM_NODEID"' in s and '--master-addr="$SPT_HEAD_NODE"' in s
    assert "--signal=" not in s and "scontrol requeue" not in s and "trap ''" not in s
    bash_syntax_ok(s, tmp_path)


def test_sweep_graph_and_curricula(tmp_path, launch_corpus):
    p = plan("sweep", tmp_path, "sweep.interventions=[0.0, 0.2, 0.6]", *_fits(launch_corpus))
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


def test_sweep_uses_shipped_curricula_where_given(tmp_path, launch_corpus):
    p = plan(
        "sweep",
        tmp_path,
        *_fits(launch_corpus),
        "sweep.interventions=[0.2, 0.4]",
        "sweep.evaluate=false",
        "sweep.curriculum_files={20: configs/trainer/curricula/intervention_20.yaml}",
    )
    assert [j.key for j in p.jobs] == ["train-p20", "train-p40"]
    assert "data.curriculum=configs/trainer/curricula/intervention_20.yaml" in p.jobs[0].script
    assert list(p.files) == ["curricula/intervention_40.yaml"]


def test_eval_array_and_compare(tmp_path):
    models = [tmp_path / "runs" / "a", tmp_path / "runs" / "b" / "checkpoints" / "latest", tmp_path / "abs" / "b"]
    for m in models:
        m.mkdir(parents=True)
    p = plan("eval", tmp_path, f"eval.checkpoints=[{', '.join(map(str, models))}]", "eval.max_parallel=2")
    ev, cmp_ = p.jobs
    assert ev.array_size == 3 and "#SBATCH --array=0-2%2" in ev.script
    assert "%A_%a.out" in ev.script
    assert "--cpus-per-task=12" in next(line for line in ev.script.splitlines() if line.startswith("srun "))
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
    # datatrove's arrays are submitted from the driver with --export=ALL: none of its memory/CPU variables
    assert "grep -E '^(SLURM|SRUN)_' | grep -vx SLURM_CONF); do unset" in s
    assert s.index("do unset") < s.index("-m datagen run")
    assert "executor.kind=slurm" in s and "executor.partition=cpu" in s and "executor.tasks=64" in s
    assert f"executor.venv_path={REPO_ROOT}/.venv/bin/activate" in s
    assert f"output={tmp_path}/safety-pretraining/corpus" in s
    assert "manifest.json" in s and "executor.job_name=safety-pretraining-corpus" in s
    bash_syntax_ok(s, tmp_path)
    local = plan("corpus", tmp_path, "corpus.executor=local").jobs[0].script
    assert "executor.kind=local" in local and "srun --nodes=1" in local and "do unset" not in local


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.resources.partition=h200", "unknown partition 'h200'"),
        ("train.resources.nodes=17", "asks for 17 nodes but partition 'h100' has 16"),
        ("train.resources.gpus_per_node=16", "asks for 16 GPUs per node but partition 'h100' has 8"),
        ("train.resources.time=3-00:00:00", "above partition 'h100'"),
        ("environment.container_image=/no/such/image.sqsh", "image file /no/such/image.sqsh does not exist"),
        ("environment.container_image=README.md", f"names the file {REPO_ROOT / 'README.md'}, which is not a squashfs"),
        ("environment.container_image=notes.md", "is neither a squashfs file (/path/image.sqsh) nor a registry"),
        (
            f"environment.container_image={REPO_ROOT / 'README.md'}",
            f"{REPO_ROOT / 'README.md'} is not a squashfs image",
        ),
        ("environment.container_image=img.sif", "is an Apptainer/Singularity image"),
        ("train.config=configs/trainer/no_such.yaml", "train.config"),
    ],
)
def test_refusals_before_submission(tmp_path, launch_corpus, override, message):
    with pytest.raises(LaunchError, match=re.escape(message)):
        plan("train", tmp_path, *_fits(launch_corpus), override)
    assert not (tmp_path / "safety-pretraining").exists()


def test_container_image_forms_accepted(tmp_path, launch_corpus):
    image = tmp_path / "spt.sqsh"
    image.write_bytes(b"hsqs" + bytes(60))  # the squashfs magic is what is checked
    mount = f"environment.container_mounts=[{launch_corpus.parent}:{launch_corpus.parent}]"
    for img in [str(image), "nvcr.io#nvidia/pytorch:25.06-py3", "vllm/vllm-openai:v0.10.1", "ubuntu"]:
        p = plan("train", tmp_path, *_fits(launch_corpus), f"environment.container_image={img}", mount)
        assert f"--container-image={R_q(img)}" in p.jobs[0].script


def R_q(s: str) -> str:
    import shlex

    return shlex.quote(s)


@pytest.mark.parametrize(
    "overrides,message",
    [
        # the trainer's own loader: an unknown key, a wrong type, its validate(), a curriculum file
        (["train.overrides=[train.lrr=1e-3]"], "unknown key 'train.lrr'"),
        (["train.overrides=[train.lr=fast]"], "key 'train.lr'"),
        (["train.overrides=[train.warmup_steps=10, train.train_steps=5]"], "key 'train.warmup_steps'"),
        (
            ["train.curriculum=configs/trainer/curricula/no_such.yaml", "train.overrides=[train.warmup_steps=10]"],
            "curriculum file not found: configs/trainer/curricula/no_such.yaml",
        ),
        # the layout the trainer only meets on the allocation: 3 nodes x 8 = 24 ranks, DP 24
        (
            ["train.resources.nodes=3", "train.overrides=[train.warmup_steps=10]"],
            "train.global_batch_size=512 is not a multiple of micro_batch_size*DP = 4*24",
        ),
        (
            ["train.overrides=[train.warmup_steps=10, parallel.tp=3]"],
            "64 ranks are not divisible by parallel.tp*parallel.pp = 3*1",
        ),
        (
            ["train.resources.nodes=6", "train.overrides=[train.warmup_steps=10, parallel.tp=3]"],
            "parallel.tp=3 does not divide the 32 attention heads (model.preset smollm2-1.7b)",
        ),
        (
            ["train.overrides=[train.warmup_steps=10, parallel.pp=16]"],
            "parallel.pp=16 does not divide the 24 layers (model.preset smollm2-1.7b)",
        ),
    ],
)
def test_trainer_config_refused_as_the_trainer_would(tmp_path, launch_corpus, overrides, message):
    with pytest.raises(LaunchError) as e:
        plan("train", tmp_path, f"train.corpus={launch_corpus}", *overrides)
    text = str(e.value)
    assert message in text, text
    assert "configs/trainer/smollm2_1.7b.yaml" in text  # the file is named with the key


def test_curriculum_buckets_checked_against_the_corpus(tmp_path, launch_corpus):
    cur = tmp_path / "cur.yaml"
    cur.write_text(
        "curriculum:\n  phases:\n    - {start: 0.0, weights: {raw: 0.5, mystery: 0.5}}\n  extra_buckets: [mystery]\n"
    )
    with pytest.raises(LaunchError, match=r"data.curriculum weights bucket\(s\) \['mystery'\] that the corpus"):
        plan("train", tmp_path, *_fits(launch_corpus), f"train.curriculum={cur}")


def test_inputs_exist_or_are_written_by_an_earlier_job(tmp_path, launch_corpus):
    # a corpus that is not there, named by train.corpus or by the trainer config itself
    with pytest.raises(LaunchError, match=r"train.corpus /no/corpus is not a corpus folder with manifest.json"):
        plan("train", tmp_path, "train.corpus=/no/corpus", "train.overrides=[train.warmup_steps=10]")
    with pytest.raises(LaunchError, match=r"data.corpus \(from train.config configs/trainer/smollm2_1.7b.yaml\)"):
        plan("train", tmp_path, "train.overrides=[train.warmup_steps=10]")
    # an evaluation of a checkpoint that does not exist
    with pytest.raises(LaunchError, match=r"eval: eval.checkpoints\[1\] /no/ckpt is not a file or folder"):
        plan("eval", tmp_path, f"eval.checkpoints=[{launch_corpus}, /no/ckpt]")
    # a datagen input that does not exist
    with pytest.raises(LaunchError, match=r"corpus: input.path \(corpus.config configs/datagen/slurm.yaml\) /no/in"):
        plan("corpus", tmp_path, "corpus.overrides=[input.path=/no/in.jsonl]")
    # datatrove's arrays on a partition the cluster does not have
    with pytest.raises(
        LaunchError,
        match=r"corpus \(datatrove's arrays, executor.\* of corpus.executor_overrides\): "
        r"unknown partition 'cpux'",
    ):
        plan("corpus", tmp_path, "corpus.executor_overrides={executor.partition: cpux}")
    # a typo in the datagen overrides, refused by datagen's loader with the file named
    with pytest.raises(LaunchError, match=r"configs/datagen/slurm.yaml.*unknown key 'filters.langage'"):
        plan("corpus", tmp_path, "corpus.overrides=[filters.langage.enabled=false]")
    # in a sweep the evaluations read what the training runs write: planned, so accepted
    sweep = plan("sweep", tmp_path, "sweep.interventions=[0.2]", *_fits(launch_corpus))
    assert [j.key for j in sweep.jobs] == ["train-p20", "eval-p20", "compare"]


def test_inputs_written_by_an_after_job_of_an_earlier_launch(tmp_path, launch_corpus):
    # the corpus launch recorded what its job writes; training --after it may read the corpus that is not there yet
    corpus = tmp_path / "c1" / "corpus"
    (tmp_path / "c1").mkdir()
    record = {"submissions": [{"jobs": [{"key": "corpus", "job_id": "4242", "outputs": [str(corpus)]}]}]}
    (tmp_path / "c1" / "jobs.json").write_text(json.dumps(record))
    args = (f"train.corpus={corpus}", "train.overrides=[train.warmup_steps=10]")
    assert plan("train", tmp_path, *args, after=["4242"]).jobs
    with pytest.raises(LaunchError, match="is not a corpus folder"):
        plan("train", tmp_path, *args)
    # a job id no launch recorded: accepted with a warning that names it
    p = plan("train", tmp_path, *args, after=["999"])
    assert any("assuming that job(s) 999 (--after) write it" in w for w in p.warnings)


def test_container_paths_outside_the_mounts_are_refused(tmp_path, launch_corpus):
    args = (*_fits(launch_corpus), "environment.container_image=nvcr.io#nvidia/pytorch:25.06-py3")
    with pytest.raises(LaunchError, match=rf"train: train.corpus {launch_corpus} is outside the container's mounts"):
        plan("train", tmp_path, *args)
    # the same corpus mounted under another path inside the container: named by its container path
    inside = Path("/data/corpus")
    p = plan(
        "train",
        tmp_path,
        *args,
        f"environment.container_mounts=[{launch_corpus}:{inside}:ro]",
        f"train.corpus={inside}",
    )
    assert f"data.corpus={inside}" in p.jobs[0].script
    with pytest.raises(LaunchError, match="the source /no/such/fs of '/no/such/fs:/data' does not exist"):
        plan("train", tmp_path, *args, "environment.container_mounts=[/no/such/fs:/data]")


def test_cli_dry_run_prints_every_script(tmp_path, launch_corpus):
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
            *_fits(launch_corpus),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("#!/bin/bash") == 5
    assert "warning: cluster.account is null" in res.stderr
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
            f"output_dir={tmp_path}",
            "train.resources.nodes=17",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "asks for 17 nodes" in bad.stderr


def test_corpus_input_outside_the_mounts(tmp_path, tmp_path_factory):
    data = tmp_path_factory.mktemp("lustre") / "web.jsonl"
    data.write_text('{"id": "1", "text": "hello"}\n')
    args = ("environment.container_image=nvcr.io#nvidia/pytorch:25.06-py3", f"corpus.overrides=[input.path={data}]")
    # datatrove's local executor runs in the container: the input must be mounted
    with pytest.raises(LaunchError, match=rf"corpus: input.path \(corpus.config .*\) {data} is outside the container"):
        plan("corpus", tmp_path, *args, "corpus.executor=local")
    # the Slurm driver and datatrove's arrays run on the host, in the virtualenv: nothing to mount
    p = plan("corpus", tmp_path, *args, "corpus.executor=slurm")
    assert "--container" not in p.jobs[0].script and f"source {REPO_ROOT}/.venv/bin/activate" in p.jobs[0].script


def test_track_job_and_missing_run(tmp_path):
    runs = [tmp_path / "runs" / "p0", tmp_path / "runs" / "p20"]
    for r in runs:
        r.mkdir(parents=True)
    p = plan(
        "track",
        tmp_path,
        f"track.runs=[{', '.join(map(str, runs))}]",
        "track.suite=asr, overrefusal",
        "track.every=500",
        "track.follow=true",
        "track.poll_s=30",
        "track.max_wait_s=7200",
        "environment.venv=null",
        "environment.container_image=nvcr.io#nvidia/pytorch:25.06-py3",
    )
    (job,) = p.jobs
    s = job.script
    out = f"{tmp_path}/safety-pretraining/track"
    assert job.key == "track" and job.outputs == [out] and job.after == []
    assert (
        f"exec python -m evalkit track {runs[0]} {runs[1]} --suite asr,overrefusal --out {out} --every 500 "
        "--follow --poll-s 30 --max-wait-s 7200" in s
    )
    (srun,) = [line for line in s.splitlines() if line.startswith("srun ")]
    assert srun == (
        "srun --nodes=1 --ntasks-per-node=1 --cpus-per-task=12 --kill-on-bad-exit=1 "
        "--container-image='nvcr.io#nvidia/pytorch:25.06-py3' "
        f"--container-mounts={REPO_ROOT}:{REPO_ROOT},{tmp_path}:{tmp_path} "
        f"--container-workdir={REPO_ROOT} --container-name=safety-pretraining-track "
        'bash -c "$SPT_STEP"'
    )
    for needle in ["#SBATCH --gpus-per-node=1", "#SBATCH --time=2-00:00:00", 'until [ -f "$r/config.yaml" ]']:
        assert needle in s, needle
    bash_syntax_ok(s, tmp_path)
    # without --follow: no waiting for the runs, no polling options; the default --every is not repeated
    once = plan("track", tmp_path, f"track.runs=[{runs[0]}]").jobs[0].script
    assert f"-m evalkit track {runs[0]} --suite asr,overrefusal --out {out}\n" in once
    assert "--follow" not in once and "config.yaml" not in once
    # a run folder that is not there and that no job writes is refused, naming it
    with pytest.raises(LaunchError, match=r"track: track.runs\[1\] /no/run is not a file or folder here"):
        plan("track", tmp_path, f"track.runs=[{runs[0]}, /no/run]")
    with pytest.raises(LaunchError, match="track.runs is empty"):
        plan("track", tmp_path)
    with pytest.raises(ConfigError, match="track.every must be >= 1"):
        plan("track", tmp_path, f"track.runs=[{runs[0]}]", "track.every=0")
    with pytest.raises(LaunchError, match="unknown suite|suites"):
        plan("track", tmp_path, f"track.runs=[{runs[0]}]", "track.suite=nosuch")


def test_sweep_tracks_each_run_beside_its_training(tmp_path, launch_corpus):
    p = plan("sweep", tmp_path, "sweep.interventions=[0.0, 0.2]", "sweep.track=true", *_fits(launch_corpus))
    by_key = {j.key: j for j in p.jobs}
    assert list(by_key) == ["train-p0", "track-p0", "eval-p0", "train-p20", "track-p20", "eval-p20", "compare"]
    run = f"{tmp_path}/safety-pretraining/runs/p20"
    tr = by_key["track-p20"]
    assert tr.after == [] and f"-m evalkit track {run} --suite asr,overrefusal --out " in tr.script
    assert f"{tmp_path}/safety-pretraining/track/p20 --follow --poll-s 60" in tr.script
    # submitted without a dependency, at the same time as the run it follows
    assert p.sbatch_args(tr, {k: f"<{k}>" for k in by_key})[2:3] == [p.script_path(tr).as_posix()]
