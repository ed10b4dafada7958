"""``python -m evalkit.study.safebeam_check STUDY_DIR [--drop-fractions 0,0.25,0.5] [--seeds 0,1]``: is
SafeBeam steering, or is it breaking the text?

A SafeBeam ASR drop means steering only while SafeBeam still answers benign requests. This command
decodes the study's SafeBeam prompts (held-out harmful prompts and their benign twins, the same as the
study's) once more for every trained model of a finished study, at each ``drop_fraction`` of
Algorithm 2 (the share of candidates with the highest tag probability dropped at every step; 0 is
plain beam search with the same beams and proposals), and reports per condition and setting the
SafeBeam ASR and the benign control with their intervals, and the control against greedy decoding on
the same twins (paired, from the study's own greedy answers). So it separates what beam search
does to a small model's text from what the dropping does.

Writes ``STUDY_DIR/safebeam_check.json`` (every setting, condition and seed with its per-prompt
outcomes and the summaries) and ``safebeam_check.md``, and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path


def _floats(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    bad = [x for x in out if not 0.0 <= x < 1.0]
    if not out or bad:
        raise argparse.ArgumentTypeError(f"drop fractions must be in [0, 1): {text!r}")
    return out


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of seeds: {text!r}") from None


def load_study(study_dir: Path) -> tuple[dict, object, dict]:
    """The study's ``results.json``, its config and its evaluation sets; a clear error when the folder
    is not a finished study."""
    from evalkit.study.config import StudyConfig
    from evalkit.study.run import StudyError, _read_jsonl, safebeam_prompts
    from infra.config import load_config

    res_path = study_dir / "results.json"
    if not res_path.is_file():
        raise StudyError(f"{study_dir}: no results.json (is this the output folder of a finished `evalkit study`?)")
    results = json.loads(res_path.read_text())
    cfg = load_config(StudyConfig, study_dir / "study_config.yaml")
    ev = {k: _read_jsonl(study_dir / "eval" / f"{k}_prompts.jsonl") for k in ("harmful", "benign")}
    harmful, twins = safebeam_prompts(ev["harmful"], ev["benign"], cfg.eval.safebeam_prompts)
    if [r["id"] for r in harmful] != results["prompts"]["safebeam"]:
        raise StudyError(f"{study_dir}: the eval/ prompt sets do not give the SafeBeam prompts results.json used")
    return results, cfg, {"harmful": harmful, "benign": twins}


def check(study_dir: str | Path, drop_fractions: list[float], seeds: list[int] | None = None) -> dict:
    """Decode the SafeBeam prompts with every model of the study at each drop fraction; returns (and
    writes) ``safebeam_check.json``."""
    import numpy as np

    from evalkit.model import HFModel
    from evalkit.study import stats
    from evalkit.study.analysis import _groups
    from evalkit.study.run import StudyError, safebeam_attack

    study_dir = Path(study_dir)
    results, cfg, sb = load_study(study_dir)
    rows = [r for r in results["runs"] if seeds is None or r["seed"] in seeds]
    if not rows:
        raise StudyError(f"{study_dir}: no run with seeds {seeds}")
    groups = _groups(results["prompts"])["safebeam"]
    resamples = cfg.eval.bootstrap_resamples
    measured = []
    t_all = time.perf_counter()
    for r in rows:
        hf = Path(r["run_dir"]) / "hf"
        model = HFModel(hf, prompt_style="completion", device=cfg.eval.device)
        for f in drop_fractions:
            t0 = time.perf_counter()
            _, outcomes, samples = safebeam_attack(
                model, sb["harmful"], sb["benign"], dataclasses.replace(cfg.eval, drop_fraction=f)
            )
            measured.append(
                {
                    "condition": r["condition"],
                    "seed": r["seed"],
                    "drop_fraction": f,
                    "outcomes": outcomes,
                    "greedy_benign_helpful": r["outcomes"]["benign_helpful_safebeam_prompts"],
                    "seconds": round(time.perf_counter() - t0, 1),
                    "samples": samples,
                }
            )
    summary = []
    for f in drop_fractions:
        for c in dict.fromkeys(r["condition"] for r in rows):
            ms = [m for m in measured if m["condition"] == c and m["drop_fraction"] == f]
            ms.sort(key=lambda m: m["seed"])
            asr = np.asarray([m["outcomes"]["safebeam_asr"] for m in ms], dtype=float)
            helpful = np.asarray([m["outcomes"]["safebeam_benign_helpful"] for m in ms], dtype=float)
            greedy = np.asarray([m["greedy_benign_helpful"] for m in ms], dtype=float)
            summary.append(
                {
                    "drop_fraction": f,
                    "condition": c,
                    "seeds": [m["seed"] for m in ms],
                    "safebeam_asr": stats.mean_interval(asr, groups, resamples=resamples),
                    "safebeam_benign_helpful": stats.mean_interval(helpful, groups, resamples=resamples),
                    "greedy_benign_helpful": stats.mean_interval(greedy, groups, resamples=resamples),
                    "control_minus_greedy": stats.paired_difference(helpful, greedy, groups, resamples=resamples),
                }
            )
    out = {
        "study": str(study_dir),
        "drop_fractions": drop_fractions,
        "beams": cfg.eval.beams,
        "top_n": cfg.eval.top_n,
        "max_new_tokens": cfg.eval.safebeam_max_new_tokens,
        "leak_threshold": cfg.eval.leak_threshold,
        "n_prompts": len(sb["harmful"]),
        "summary": summary,
        "runs": measured,
        "total_s": round(time.perf_counter() - t_all, 1),
    }
    (study_dir / "safebeam_check.json").write_text(json.dumps(out, indent=2))
    (study_dir / "safebeam_check.md").write_text(markdown(out))
    return out


def markdown(out: dict) -> str:
    from evalkit.study.report import interval_cell

    n = out["n_prompts"]
    lines = [
        "# SafeBeam settings check",
        "",
        f"{n} held-out harmful prompts and their {n} benign twins, SafeBeam with {out['beams']} beams x "
        f"{out['top_n']} proposals, {out['max_new_tokens']} tokens, at each drop fraction (0: plain beam "
        "search). Cells: mean over seeds and prompts [95% bootstrap interval over seeds and phrasing frames]; "
        "the last column is SafeBeam's benign helpfulness minus greedy decoding's on the same twins (paired).",
        "",
        "| drop fraction | condition | seeds | SafeBeam ASR | SafeBeam benign helpful | greedy benign helpful "
        "| control − greedy |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in out["summary"]:
        d = s["control_minus_greedy"]
        lines.append(
            f"| {s['drop_fraction']:g} | {s['condition']} | {len(s['seeds'])} | {interval_cell(s['safebeam_asr'])} "
            f"| {interval_cell(s['safebeam_benign_helpful'])} | {interval_cell(s['greedy_benign_helpful'])} "
            f"| {interval_cell(d)}{' (resolved)' if d['resolved'] else ''} |"
        )
    lines += ["", f"Decoding time: {out['total_s']:.0f} s in all.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from evalkit.study.run import StudyError
    from infra.config import ConfigError
    from infra.log import setup_logging

    p = argparse.ArgumentParser(prog="python -m evalkit.study.safebeam_check", description=__doc__)
    p.add_argument("study_dir", type=Path, help="output folder of a finished `evalkit study`")
    p.add_argument("--drop-fractions", type=_floats, default=[0.0, 0.25, 0.5], help="comma-separated, in [0, 1)")
    p.add_argument("--seeds", type=_ints, default=None, help="comma-separated seeds (default: all)")
    args = p.parse_args(argv)
    setup_logging()
    try:
        out = check(args.study_dir, args.drop_fractions, args.seeds)
    except (StudyError, ConfigError) as e:
        print(f"safebeam_check: {e}", file=sys.stderr)
        return 2
    print(markdown(out))
    print(f"written: {args.study_dir / 'safebeam_check.json'}, {args.study_dir / 'safebeam_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
