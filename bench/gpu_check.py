"""The trainer's one GPU check, sized for one offline H200, at most 8 minutes (run by ``scripts/gpu_check.sh run``).

    python bench/gpu_check.py --corpus DIR [--out DIR] [--budget-s 450] [--bench-steps 8]
                              [--bench-warmup 3] [--skip-bench] [--skip-resume] [--dry-run]

In one command, within ``--budget-s`` seconds of wall time:

1. the environment: Python, torch, CUDA, the GPU (name, compute capability, memory, driver), the
   versions of megatron-core, torchao, Transformer-Engine and transformers;
2. exact resume on the GPU: a 30-step tiny curriculum run (2 phases, bf16, the ``torch`` spec,
   ``train.deterministic=true``, fused AdamW) uninterrupted, then the same run killed with SIGKILL
   once its metrics reach 55% of the steps (16 of 30) and restarted until it ends; every step's
   loss, gradient norm, learning rate and bucket mix are compared (expected: bit-identical, since
   deterministic kernels are on; the largest loss difference is reported either way);
3. ``bench/trainer.py`` on the SmolLM2-1.7B shape (seq 2048, micro-batch 4) for the plain-PyTorch
   baseline and the trainer's ``torch`` spec in one process: bf16 eager, bf16 compiled, FP8 (torchao
   float8, compiled); tokens/s, MFU (against 989 TFLOP/s dense bf16) and the trainer/baseline ratio.
   It gets what is left of the budget; modes that do not finish in time are reported as such.

Writes ``OUT/gpu_check.json`` and prints it. ``--dry-run`` runs the same code on the CPU at toy
sizes (the bench's ``tiny`` shape in eager mode; an 8-step resume check), to test this script
without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CURRICULUM = (
    "{phases: [{start: 0.0, weights: {raw: 1.0}}, {start: 0.3, weights: "
    "{raw: 0.5, rephrased: 0.2, refusal: 0.1, moral: 0.1, tagged: 0.1}}]}"
)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", help="tiny corpus folder (scripts/gpu_check.sh prepare writes one)")
    ap.add_argument("--out", default="runs/gpu_check", help="output folder (default runs/gpu_check)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="wall-time budget of the whole check")
    ap.add_argument("--bench-steps", type=int, default=8, help="timed steps per bench mode")
    ap.add_argument("--bench-warmup", type=int, default=3, help="untimed steps per bench mode")
    ap.add_argument("--bench-modes", default=None, help="bench/trainer.py --modes (eager,compile,fp8; dry: eager)")
    ap.add_argument("--resume-steps", type=int, default=None, help="steps of the resume check (30; dry 8)")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--skip-resume", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: test this script without a GPU")
    args = ap.parse_args(argv)
    if not args.skip_resume and not args.corpus:
        ap.error("--corpus is required for the resume check (or --skip-resume)")
    if args.corpus and not (Path(args.corpus) / "manifest.json").is_file():
        ap.error(f"--corpus {args.corpus}: no manifest.json there (scripts/gpu_check.sh prepare builds one)")
    if args.budget_s <= 0 or args.bench_steps < 1 or args.bench_warmup < 0:
        ap.error("--budget-s and --bench-steps must be > 0, --bench-warmup >= 0")
    if args.bench_modes is None:
        args.bench_modes = "eager" if args.dry_run else "eager,compile,fp8"
    if args.resume_steps is None:
        args.resume_steps = 8 if args.dry_run else 30
    if args.resume_steps < 6:
        ap.error("--resume-steps must be >= 6 (a kill in the middle needs checkpoints before it)")
    return args


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment() -> dict:
    import torch

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "packages": {
            n: _version(n)
            for n in ("megatron-core", "torchao", "transformer-engine", "transformers", "numpy", "psutil", "triton")
        },
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = {
            "name": p.name,
            "count": torch.cuda.device_count(),
            "compute_capability": f"{p.major}.{p.minor}",
            "memory_gib": round(p.total_memory / 2**30, 1),
        }
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,power.limit,clocks.max.sm", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            env["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            env["nvidia_smi"] = f"not run: {e}"
    return env


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a record cut by the kill
    return out


def compare_metrics(ref: list[dict], got: list[dict]) -> dict:
    """Step by step: loss, grad norm, lr and bucket mix of a resumed run against an uninterrupted one."""
    keys = ("loss", "grad_norm", "lr", "bucket_samples", "bucket_tokens")
    by_step = {r["step"]: r for r in got}
    differ, max_dloss, missing = [], 0.0, []
    for r in ref:
        g = by_step.get(r["step"])
        if g is None:
            missing.append(r["step"])
            continue
        if any(r[k] != g[k] for k in keys):
            differ.append(r["step"])
        if r["loss"] is not None and g["loss"] is not None:
            max_dloss = max(max_dloss, abs(r["loss"] - g["loss"]))
    return {
        "steps_compared": len(ref) - len(missing),
        "missing_steps": missing,
        "bit_exact": not differ and not missing and len(got) == len(ref),
        "steps_that_differ": differ,
        "max_abs_loss_diff": max_dloss,
    }


def _trainer_args(run_dir: Path, corpus: str, steps: int, dry: bool) -> list[str]:
    return [
        "train",
        "--config",
        "configs/trainer/tiny.yaml",
        f"run_dir={run_dir}",
        f"data.corpus={corpus}",
        f"data.curriculum={CURRICULUM}",
        f"train.train_steps={steps}",
        "train.seq_length=64",
        "train.global_batch_size=8",
        "train.micro_batch_size=4",
        "train.warmup_steps=2",
        "train.save_interval=3",  # checkpoints often: the kill may land in the middle of one
        "train.log_interval=3",
        "train.keep_last=2",
        "train.deterministic=true",
        "train.fused_adam=true",  # the GPU default; on the CPU (dry run) torch's CPU fused kernel
        "logging.tensorboard=false",
        "logging.progress=false",
        "model.make_vocab_size_divisible_by=64",
        f"train.device={'cpu' if dry else 'cuda'}",
        f"model.spec={'local' if dry else 'torch'}",
    ]


def _env() -> dict:
    env = dict(os.environ, PROGRESS="0", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def resume_check(corpus: str, out: Path, steps: int, dry: bool, deadline: float) -> dict:
    """Uninterrupted run, then a run killed with SIGKILL after ~55% of its steps and restarted."""
    cmd = [sys.executable, "-m", "trainer"]
    ref_dir, run_dir = out / "resume_reference", out / "resume_killed"
    for d in (ref_dir, run_dir):
        if d.exists():
            import shutil

            shutil.rmtree(d)
    t0 = time.time()
    ref = subprocess.run(
        cmd + _trainer_args(ref_dir, corpus, steps, dry),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=max(30.0, deadline - time.time()),
    )
    if ref.returncode != 0:
        return {"ok": False, "error": f"uninterrupted run exited {ref.returncode}", "stderr": ref.stderr[-3000:]}
    ref_s = time.time() - t0
    kill_at = max(3, int(steps * 0.55))
    proc = subprocess.Popen(
        cmd + _trainer_args(run_dir, corpus, steps, dry),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed_after = None
    while time.time() < deadline:
        m = read_metrics(run_dir)
        if m and m[-1]["step"] >= kill_at:
            proc.send_signal(signal.SIGKILL)
            killed_after = m[-1]["step"]
            break
        if proc.poll() is not None:
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    if killed_after is None:
        return {"ok": False, "error": f"the run ended (exit {proc.returncode}) before step {kill_at} was seen"}
    rerun = subprocess.run(
        cmd + _trainer_args(run_dir, corpus, steps, dry),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=max(30.0, deadline - time.time()),
    )
    if rerun.returncode != 0:
        return {"ok": False, "error": f"resumed run exited {rerun.returncode}", "stderr": rerun.stderr[-3000:]}
    segments = [json.loads(x) for x in (run_dir / "segments.jsonl").read_text().splitlines() if x.strip()]
    cmp = compare_metrics(read_metrics(ref_dir), read_metrics(run_dir))
    return {
        "ok": cmp["bit_exact"],
        "steps": steps,
        "killed_after_step": killed_after,
        "resumed_from": segments[-1].get("from_checkpoint") if segments else None,
        "tolerance": "bit-exact (train.deterministic=true)",
        "uninterrupted_run_s": round(ref_s, 1),
        **cmp,
    }


def bench(args, out: Path, deadline: float) -> dict:
    """bench/trainer.py --modes ... in one subprocess; modes it finishes are kept if time runs out."""
    cmd = [sys.executable, str(REPO / "bench" / "trainer.py"), "--modes", args.bench_modes]
    cmd += ["--steps", str(args.bench_steps), "--warmup", str(args.bench_warmup)]
    cmd += ["--shape", "tiny" if args.dry_run else "1.7b", "--spec", "torch"]
    left = deadline - time.time()
    if left < 20:
        return {"ok": False, "error": f"no time left for the bench ({left:.0f} s)"}
    log = out / "bench.stderr.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            stdout, _ = proc.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, _ = proc.communicate()
    runs = {}
    for line in log.read_text().splitlines():  # one JSON line per finished mode
        if line.startswith("{"):
            try:
                runs.update(json.loads(line))
            except json.JSONDecodeError:
                pass
    result = {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "runs": runs}
    try:
        full = json.loads(stdout)
        result.update({k: v for k, v in full.items() if k != "runs"})
        result["runs"] = full.get("runs", runs)
    except json.JSONDecodeError:
        result["stderr_tail"] = log.read_text()[-3000:]
    result["modes_not_finished"] = [m for m in args.bench_modes.split(",") if m not in result["runs"]]
    result["ok"] = proc.returncode == 0 and not result["modes_not_finished"]
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    deadline = start + args.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"check": "trainer_gpu_check", "dry_run": args.dry_run, "budget_s": args.budget_s}
    report["environment"] = environment()
    if not args.dry_run and not report["environment"]["cuda_available"]:
        report["error"] = "CUDA is not available: run with a GPU, or --dry-run to test this script on the CPU"
        print(json.dumps(report, indent=2))
        return 2
    print(json.dumps({"environment": report["environment"]}, indent=2), flush=True)
    if not args.skip_resume:
        # the resume check first (a minute): it is the correctness half and must not starve
        report["resume"] = resume_check(args.corpus, out, args.resume_steps, args.dry_run, deadline)
        print(json.dumps({"resume": report["resume"]}, indent=2), flush=True)
    if not args.skip_bench:
        report["bench"] = bench(args, out, deadline)
    report["wall_s"] = round(time.time() - start, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    parts = [report.get(k, {"ok": True}) for k in ("resume", "bench")]
    return 0 if all(p.get("ok") for p in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
