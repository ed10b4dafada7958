"""``python -m launch``: render Slurm jobs from YAML configs, print them (``--dry-run``) or submit them.

  corpus   datagen run as a job (datatrove local executor inside it, or a driver for its Slurm executor)
  train    multi-node training: srun + torchrun, rendezvous on the head node, checkpoint-and-requeue
  eval     evalkit run as a job array over checkpoints, then evalkit compare after all of them
  track    evalkit track as one job: every checkpoint of the given runs evaluated, the trajectory report
           written (with --follow beside training, until the runs have finished)
  sweep    one training run per curriculum intervention, their evaluations and the comparison
  status   states of the jobs recorded in a launch folder's jobs.json (scontrol, then sacct once the
           controller has forgotten a finished job)

Every command takes ``--config configs/launch/<cluster>.yaml`` and dotted ``key=value`` overrides, e.g.
``python -m launch sweep --config configs/launch/h100.yaml sweep.interventions=[0,0.2,0.6] --dry-run``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from infra.cli import add_version_argument
from infra.config import ConfigError, add_config_arguments, config_from_args, save_config
from infra.log import setup_logging

DEFAULT_CONFIG = "configs/launch/h100.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m launch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version_argument(p)
    sub = p.add_subparsers(dest="cmd", required=True)
    helps = {
        "corpus": "build the corpus (datagen run) as a Slurm job",
        "train": "submit one multi-node training run",
        "eval": "evaluate checkpoints (job array) and compare them (dependent job)",
        "track": "evaluate every checkpoint of runs (evalkit track) and plot safety against tokens seen",
        "sweep": "training runs for several intervention starts, their evaluations and the comparison",
    }
    for name, text in helps.items():
        sp = sub.add_parser(name, help=text, description=text)
        add_config_arguments(sp, DEFAULT_CONFIG)
        sp.add_argument(
            "--dry-run", action="store_true", help="print every script and the sbatch commands; submit nothing"
        )
        sp.add_argument(
            "--after",
            action="append",
            default=[],
            metavar="JOBID",
            help="make the first jobs wait for this job id (afterok); repeatable",
        )
        sp.add_argument(
            "--no-cluster-check",
            action="store_true",
            help="do not query Slurm or the config's partitions (render for another cluster)",
        )
    st = sub.add_parser("status", help="states of the jobs recorded in a launch folder")
    st.add_argument("launch_dir", help="the launch folder (<output_dir>/<name>) holding jobs.json")
    st.add_argument("--json", action="store_true", help="print JSON")
    return p


def _status(args) -> int:
    from launch.plan import job_states, load_jobs

    data = load_jobs(args.launch_dir)
    last = data["submissions"][-1]
    ids = [j["job_id"] for j in last["jobs"]]
    states = job_states(ids)
    if args.json:
        print(json.dumps({"submission": last, "states": states}, indent=2))
        return 0
    print(f"{last['command']} submitted {last['time']} ({last['status']})")
    for j in last["jobs"]:
        rows = {k: v for k, v in states.items() if k == j["job_id"] or k.startswith(j["job_id"] + "_")}
        for jid, s in sorted(rows.items()):
            extra = f" restarts={s['restarts']}" if "restarts" in s else ""
            note = f" ({s['error']})" if s.get("error") else (" (sacct)" if s.get("source") == "sacct" else "")
            print(f"  {j['key']:<16} {jid:<12} {s['state']:<12} exit={s.get('exit_code')}{extra}{note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # key=value overrides may come after options such as --after (plain argparse stops at those)
    args, rest = parser.parse_known_args(argv)
    stray = [a for a in rest if a.startswith("-") or "=" not in a]
    if stray or (rest and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or rest)}")
    if rest:
        args.overrides = list(args.overrides) + rest
    setup_logging()
    from launch.cluster import LaunchError

    try:
        if args.cmd == "status":
            return _status(args)
        from launch.config import LaunchConfig
        from launch.jobs import PLANNERS, Context

        cfg = config_from_args(LaunchConfig, args)
        ctx = Context(
            cfg, Path.cwd(), origin=args.config or "", check_cluster=not args.no_cluster_check, after=list(args.after)
        )
        plan = PLANNERS[args.cmd](ctx)
        if args.dry_run:
            for w in plan.warnings:
                print(f"warning: {w}", file=sys.stderr)
            sys.stdout.write(plan.dry_run_text())
            return 0
        plan.launch_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, plan.launch_dir / "config.yaml")
        ids = plan.submit()
        for key, jid in ids.items():
            print(f"{key}\t{jid}")
        print(f"recorded in {plan.launch_dir / 'jobs.json'}", file=sys.stderr)
        return 0
    except (ConfigError, LaunchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
