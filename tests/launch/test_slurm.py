"""Jobs on a real Slurm (two fake nodes on this host, started by the ``local_slurm`` fixture): the
datatrove corpus job, a two-node training run that is preempted, requeued and resumed, an evaluation
array with its dependent comparison, the sweep's dependency graph, and refusals checked against Slurm."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.launch.conftest import array_states, run_launch, scontrol_job, wait_done

pytestmark = pytest.mark.slurm

LOCAL = ["--config", "configs/launch/local.yaml"]


def _queue_ids() -> set[str]:
    res = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True, timeout=30)
    return set(res.stdout.split())


def _submitted(launch_dir: Path) -> dict[str, str]:
    data = json.loads((launch_dir / "jobs.json").read_text())
    return {j["key"]: j["job_id"] for j in data["submissions"][-1]["jobs"]}


def test_refusals_checked_against_slurm(local_slurm, launch_corpus, tmp_path, monkeypatch, capsys):
    from infra.paths import REPO_ROOT
    from launch.__main__ import main

    monkeypatch.chdir(REPO_ROOT)
    before = _queue_ids()
    cases = [
        (["train.resources.nodes=3"], "asks for 3 nodes but partition 'debug' has 2"),
        (["train.resources.partition=single", "train.resources.nodes=2"], "partition 'single' has 1"),
        (
            ["train.resources.partition=gpu"],
            "unknown partition 'gpu' (known on this cluster (slurm): debug, mem, single)",
        ),
        (["train.resources.gpus_per_node=8"], "0 GPUs per node"),
        (["environment.container_image=/no/such/image.sqsh"], "image file /no/such/image.sqsh does not exist"),
        (["environment.container_image=nvcr.io#nvidia/pytorch:24.05-py3"], "no pyxis plugin"),
    ]
    for overrides, message in cases:
        rc = main(["train", *LOCAL, f"output_dir={tmp_path}", f"train.corpus={launch_corpus}", *overrides])
        err = capsys.readouterr().err
        assert rc == 2, (overrides, err)
        assert message in err, (overrides, err)
    assert _queue_ids() == before
    assert not (tmp_path / "local" / "jobs.json").exists()


def test_failed_submission_cancels_the_jobs_already_submitted(local_slurm, tmp_path):
    # the comparison asks for an option sbatch rejects: the evaluation array, submitted first, is cancelled
    for m in ("a", "b"):
        (tmp_path / "x" / m).mkdir(parents=True)
    rc, out, err = run_launch(
        "eval",
        *LOCAL,
        f"output_dir={tmp_path}",
        f"eval.checkpoints=[{tmp_path}/x/a, {tmp_path}/x/b]",
        "eval.compare_resources.extra_sbatch=[--no-such-option=1]",
        "eval.resources.extra_sbatch=[--begin=now+1hour]",
    )
    assert rc == 2 and "sbatch failed for job 'compare'" in err
    record = json.loads((tmp_path / "local" / "jobs.json").read_text())["submissions"][-1]
    assert record["status"].startswith("failed at compare")
    (eval_id,) = [j["job_id"] for j in record["jobs"] if j["key"] == "eval"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and set(array_states(eval_id)) - {"CANCELLED"}:
        time.sleep(0.5)
    assert set(array_states(eval_id)) == {"CANCELLED"}


def test_sweep_submits_the_dependency_graph(local_slurm, launch_corpus, tmp_path):
    # hold everything behind a held job so that nothing runs; the graph is what Slurm recorded
    hold = subprocess.run(
        ["sbatch", "--parsable", "--hold", "--partition=debug", f"--output={tmp_path}/h.out", "--wrap=true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert hold.returncode == 0, hold.stderr
    hold_id = hold.stdout.strip()
    try:
        rc, out, err = run_launch(
            "sweep",
            *LOCAL,
            f"output_dir={tmp_path}",
            "--after",
            hold_id,
            "sweep.interventions=[0.0, 0.2, 0.6]",
            f"train.corpus={launch_corpus}",
        )
        assert rc == 0, err
        launch_dir = tmp_path / "local"
        ids = _submitted(launch_dir)
        assert set(ids) == {"train-p0", "train-p20", "train-p60", "eval-p0", "eval-p20", "eval-p60", "compare"}
        assert dict(line.split("\t") for line in out.strip().splitlines()) == ids

        def deps(key):
            return sorted(re.findall(r"afterok:(\d+)", scontrol_job(ids[key])["Dependency"]))

        for pct in (0, 20, 60):
            assert deps(f"train-p{pct}") == [hold_id]
            assert deps(f"eval-p{pct}") == [ids[f"train-p{pct}"]]
            job = scontrol_job(ids[f"train-p{pct}"])
            assert job["JobName"] == f"local-train-p{pct}" and job["NumNodes"] in ("2", "2-2") and job["Requeue"] == "1"
            curriculum = launch_dir / "curricula" / f"intervention_{pct}.yaml"
            assert curriculum.is_file()
            script = (launch_dir / "scripts" / f"train-p{pct}.sbatch").read_text()
            assert f"data.curriculum={curriculum}" in script and f"run_dir={launch_dir}/runs/p{pct}" in script
        assert deps("compare") == sorted(ids[f"eval-p{p}"] for p in (0, 20, 60))
        assert all(scontrol_job(i)["JobState"] == "PENDING" for i in ids.values())
        # `status` reads the record back
        st = subprocess.run(
            [".venv/bin/python", "-m", "launch", "status", str(launch_dir), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).parents[2],
        )
        states = json.loads(st.stdout)["states"]
        assert states[ids["compare"]]["state"] == "PENDING"
    finally:
        subprocess.run(["scancel", hold_id], capture_output=True)
    # cancelling the held job makes the whole graph unsatisfiable; --kill-on-invalid-dep removes it
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _queue_ids() & set(ids.values()):
        time.sleep(1)
    assert not _queue_ids() & set(ids.values())


def _metric_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_two_node_training_preempted_requeued_resumed(local_slurm, launch_corpus, tmp_path):
    # enough steps that the signal lands mid-run: on an idle machine this tiny model does ~30 steps/s, and
    # the signal travels scancel -> batch script -> srun -> torchrun -> trainer
    steps = 240
    rc, out, err = run_launch(
        "train",
        *LOCAL,
        f"output_dir={tmp_path}",
        f"train.corpus={launch_corpus}",
        f"train.overrides=[train.train_steps={steps}, train.save_interval=1000, "
        "train.log_interval=1, logging.tensorboard=false]",
    )
    assert rc == 0, err
    launch_dir = tmp_path / "local"
    job = _submitted(launch_dir)["train"]
    run_dir = launch_dir / "run"
    logs = launch_dir / "logs" / "train"
    # let it train a few steps, then send the warning signal the way Slurm does before the time limit
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(_metric_steps(run_dir)) < 3:
        if array_states(job)[0] in {"FAILED", "COMPLETED", "CANCELLED"}:
            break
        time.sleep(0.05)
    assert len(_metric_steps(run_dir)) >= 3, "\n".join(p.read_text()[-3000:] for p in logs.glob("*.out"))
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, timeout=30)
    states = wait_done(job, 600, "requeued training", logs)
    info = scontrol_job(job)
    batch_log = (logs / f"{job}.out").read_text()
    assert states == ["COMPLETED"] and info["ExitCode"] == "0:0", batch_log
    assert info["Restarts"] == "1", batch_log
    assert "got SIGUSR1" in batch_log and f"requeueing job {job}" in batch_log and "restart 1" in batch_log
    node_logs = {p.name: p.read_text() for p in logs.glob(f"{job}.node*.out")}
    assert sorted(node_logs) == [f"{job}.node0.out", f"{job}.node1.out"]  # one torchrun per node
    text = "\n".join(node_logs.values())
    # every rank (one per node) reports the same step
    saved = {int(s) for s in re.findall(r"checkpoint saved at step (\d+), exiting for requeue", text)}
    resumed = {int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", text)}
    assert len(saved) == 1 and 3 <= min(saved) < steps, text[-3000:]
    assert resumed == saved, text[-3000:]  # the requeued job continues where it saved
    assert _metric_steps(run_dir) == list(range(1, steps + 1))
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"iter_{steps:07d}"
    world = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert world["tokens"] > 0


@pytest.mark.slow
def test_eval_array_then_compare(local_slurm, tiny_hf_model, tmp_path):
    rc, out, err = run_launch(
        "eval",
        *LOCAL,
        f"output_dir={tmp_path}",
        f"eval.checkpoints=[{tiny_hf_model}, {tiny_hf_model}]",
        "eval.names=[first, second]",
        "eval.suite=asr",
        "eval.extra_args=[data.limit=2, decoding.max_new_tokens=8]",
    )
    assert rc == 0, err
    launch_dir = tmp_path / "local"
    ids = _submitted(launch_dir)
    assert re.findall(r"afterok:(\d+)", scontrol_job(ids["compare"])["Dependency"]) == [ids["eval"]]
    logs = launch_dir / "logs"
    assert wait_done(ids["eval"], 240, "evaluation array", logs) == ["COMPLETED", "COMPLETED"]
    assert wait_done(ids["compare"], 120, "comparison", logs) == ["COMPLETED"]
    for name in ("first", "second"):
        results = json.loads((launch_dir / "eval" / name / "results.json").read_text())
        assert "asr" in json.dumps(results)
    assert any((launch_dir / "eval" / "compare").iterdir())
    assert len(list((logs / "eval").glob(f"{ids['eval']}_*.out"))) == 2


def _forgetful_scontrol(folder: Path) -> dict[str, str]:
    """PATH with an ``scontrol`` that, like the controller after ``MinJobAge``, no longer knows any job."""
    import os
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    fake = folder / "scontrol"
    fake.write_text(
        "#!/bin/bash\n"
        'if [ "$1" = show ] && [ "$2" = job ]; then echo "slurm_load_jobs error: Invalid job id specified" >&2; '
        "exit 1; fi\n"
        f'exec {shutil.which("scontrol")} "$@"\n'
    )
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def test_status_falls_back_to_sacct(local_slurm, tmp_path):
    # a real finished job, read back by `launch status` after the controller has forgotten it: sacct
    # answers (here from the job completion records: the local Slurm has no accounting database)
    res = subprocess.run(
        ["sbatch", "--parsable", "--wait", "--partition=debug", f"--output={tmp_path}/j.out", "--wrap=exit 3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    job = res.stdout.strip().split(";")[0]
    assert job.isdigit(), res.stderr
    launch_dir = tmp_path / "l1"
    launch_dir.mkdir()
    record = {"command": "train", "time": "t", "status": "submitted", "jobs": [{"key": "train", "job_id": job}]}
    (launch_dir / "jobs.json").write_text(json.dumps({"submissions": [record]}))
    env = _forgetful_scontrol(tmp_path / "bin")
    st = subprocess.run(
        [".venv/bin/python", "-m", "launch", "status", str(launch_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
        env=env,
    )
    assert st.returncode == 0, st.stderr
    state = json.loads(st.stdout)["states"][job]
    assert state == {"state": "FAILED", "exit_code": "3:0", "source": "sacct"}
    # the controller still knows it: scontrol answers first
    from launch.plan import job_states

    assert job_states([job])[job]["source"] == "scontrol"


@pytest.mark.slow
def test_corpus_driver_with_memory_submits_datatrove_arrays(local_slurm, tmp_path):
    # the driver asks for memory (SLURM_MEM_PER_NODE in its environment) on a partition with DefMemPerCPU,
    # datatrove's arrays ask --mem-per-cpu and inherit the driver's environment (--export=ALL): without
    # the driver scrubbing its SLURM_* variables, srun in every array task fails with "SLURM_MEM_PER_CPU,
    # SLURM_MEM_PER_GPU, and SLURM_MEM_PER_NODE are mutually exclusive"
    rc, out, err = run_launch(
        "corpus",
        *LOCAL,
        f"output_dir={tmp_path}",
        "corpus.executor=slurm",
        "corpus.output_dir=corpus",
        "corpus.wait_poll_s=2",
        "corpus.resources={partition: mem, mem: 400M, cpus_per_task: 1, time: '00:30:00'}",
        "corpus.executor_overrides={executor.partition: mem, executor.tasks: 2, "
        "executor.time: '00:20:00', executor.mem_per_cpu_gb: 1}",
    )
    assert rc == 0, err
    launch_dir = tmp_path / "local"
    driver = _submitted(launch_dir)["corpus"]
    assert scontrol_job(driver)["MinMemoryNode"] == "400M"
    corpus = launch_dir / "corpus"
    states = wait_done(driver, 280, "corpus driver", launch_dir / "logs")
    slurm_logs = sorted((corpus / "logs").rglob("slurm/*.out"))
    text = "\n".join(p.read_text() for p in slurm_logs)
    log = (launch_dir / "logs" / "corpus" / f"{driver}.out").read_text()
    assert "mutually exclusive" not in text, text[-3000:]
    assert states == ["COMPLETED"], log[-3000:] + text[-3000:]
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert sum(b["documents"] for b in manifest["buckets"].values()) > 0
    assert slurm_logs  # the stages ran as datatrove's own Slurm jobs
