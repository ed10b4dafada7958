"""``python -m evalkit study [--config] CONFIG [key=value ...]`` (standalone: ``python -m evalkit.study.cli``).

Runs the toy-world curriculum study: generate the toy corpus, train the same tiny model with no
intervention and with interventions from each start fraction, evaluate each model, and write
results.json, results.csv, results.html (self-contained), results.md and plots/ into ``output``.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_CONFIG = "configs/study/default.yaml"
EPILOG = (
    "Example: python -m evalkit study --config configs/study/default.yaml output=runs/study seeds=[0,1]. "
    "Keys: see evalkit.study.config.StudyConfig and docs/study.md. A second run with the same output "
    "reuses finished corpus, training and finetuning runs (reuse=false starts over)."
)


def _run(args) -> int:
    from evalkit.study.config import StudyConfig
    from evalkit.study.report import markdown_table
    from evalkit.study.run import StudyError, run_study
    from infra.config import ConfigError, config_from_args

    ov = list(args.overrides or [])
    if ov and "=" not in ov[0] and ov[0].endswith((".yaml", ".yml")):
        args.config, args.overrides = ov[0], ov[1:]  # `study CONFIG key=value ...` form
    try:
        cfg = config_from_args(StudyConfig, args)
        results = run_study(cfg)
    except (ConfigError, StudyError) as e:
        print(f"evalkit study: {e}", file=sys.stderr)
        return 2
    print(markdown_table(results))
    print(
        f"results: {cfg.output}/results.json, results.csv, results.html, results.md, plots/"
        + (", trajectory.html (safety along training)" if cfg.eval.trajectory_every else "")
    )
    return 0


def _run_with_signals(args) -> int:
    _exit_on_sigterm()
    return _run(args)


def add_study_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``study`` on an ``argparse`` subparsers object (``python -m evalkit``'s)."""
    from infra.config import add_config_arguments

    p = subparsers.add_parser(
        "study",
        help="toy-world curriculum study: train with interventions from 0/20/60%% "
        "and compare toy ASR, ASR after benign finetuning, over-refusal, SafeBeam, probes",
        description=__doc__,
        epilog=EPILOG,
    )
    add_config_arguments(p, DEFAULT_CONFIG)
    p.set_defaults(func=_run_with_signals)
    return p


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that ``subprocess.run`` kills the trainer child it waits on
    instead of leaving it running (a Slurm job's cancel sends SIGTERM)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def main(argv: list[str] | None = None) -> int:
    from infra.log import setup_logging

    parser = argparse.ArgumentParser(prog="python -m evalkit.study.cli", description=__doc__, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command")
    add_study_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "study":
        argv = ["study", *argv]  # standalone: the subcommand word is optional
    args = parser.parse_args(argv)
    setup_logging()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
