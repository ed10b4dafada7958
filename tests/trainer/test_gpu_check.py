"""scripts/gpu_check.sh and bench/gpu_check.py without a GPU: argument handling, the metrics
comparison, and the whole check in its CPU dry mode (toy sizes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import gpu_check
from bench import trainer as bench_trainer
from infra.paths import REPO_ROOT
from tests.trainer.conftest import trainer_env


def test_gpu_check_arguments(tiny_corpus, tmp_path):
    a = gpu_check.parse_args(["--corpus", str(tiny_corpus)])
    assert (a.bench_modes, a.resume_steps, a.budget_s) == ("eager,compile,fp8", 30, 450.0)
    a = gpu_check.parse_args(["--corpus", str(tiny_corpus), "--dry-run"])
    assert (a.bench_modes, a.resume_steps) == ("eager", 8)
    assert gpu_check.parse_args(["--skip-resume"]).corpus is None
    for bad in ([], ["--corpus", str(tmp_path)], ["--corpus", str(tiny_corpus), "--resume-steps", "4"]):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)
    assert bench_trainer.parse_args(["--modes", "eager, fp8"]).modes == ["eager", "fp8"]
    with pytest.raises(SystemExit):
        bench_trainer.parse_args(["--modes", "eager,turbo"])


def test_compare_metrics_finds_differences():
    ref = [{"step": s, "loss": 5.0 - s / 10, "grad_norm": 1.0, "lr": 1e-3, "bucket_samples": {"raw": 8},
            "bucket_tokens": {"raw": 8 * s}} for s in range(1, 5)]  # fmt: skip
    same = gpu_check.compare_metrics(ref, [dict(r) for r in ref])
    assert same["bit_exact"] and same["steps_compared"] == 4 and same["max_abs_loss_diff"] == 0.0
    off = [dict(r) for r in ref]
    off[2]["loss"] += 1e-7
    got = gpu_check.compare_metrics(ref, off[:3])
    assert not got["bit_exact"] and got["steps_that_differ"] == [3] and got["missing_steps"] == [4]
    assert got["max_abs_loss_diff"] == pytest.approx(1e-7)


def test_shell_script_refuses_missing_inputs_and_a_missing_gpu(tiny_corpus, tmp_path):
    usage = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert usage.returncode == 2 and "prepare" in usage.stdout and "run" in usage.stdout
    run = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "run", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert run.returncode == 2 and "corpus missing" in run.stderr
    if __import__("torch").cuda.is_available():
        return
    carried = tmp_path / "carried"
    carried.mkdir()
    (carried / "corpus").symlink_to(tiny_corpus)
    # this interpreter has megatron-core, torchao and psutil: nothing to install; no GPU: exit 2, said so
    no_gpu = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "run", str(carried), "--", "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT,
        env=dict(trainer_env(), PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert no_gpu.returncode == 2 and "CUDA is not available" in no_gpu.stdout, no_gpu.stdout[-2000:]


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tiny_corpus, tmp_path):
    out = tmp_path / "check"
    cmd = [sys.executable, "bench/gpu_check.py", "--dry-run", "--corpus", str(tiny_corpus), "--out", str(out)]
    cmd += ["--resume-steps", "8", "--bench-steps", "2", "--bench-warmup", "1", "--budget-s", "400"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=trainer_env(), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["environment"]["torch"] and report["environment"]["packages"]["megatron-core"] == "0.16.1"
    resume = report["resume"]
    assert resume["ok"] and resume["bit_exact"] and resume["steps_compared"] == 8
    # killed once the metrics reached step 4 (flushes every 3 steps: after step 6), resumed from a checkpoint
    assert 4 <= resume["killed_after_step"] < 8 and resume["resumed_from"].startswith("iter_")
    eager = report["bench"]["runs"]["eager"]
    assert eager["spec"] == "torch" and eager["baseline"]["tokens_per_s"] > 0 and eager["trainer"]["tokens_per_s"] > 0
    assert eager["ratio_trainer_over_baseline"] > 0
