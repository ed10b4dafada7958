"""``python -m evalkit {run,compare,track,abliterate,train-judge,validate-judges,study}``: safety evaluation."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evalkit.config import SUITES, EvalConfig

DEFAULT_CONFIG = "configs/evalkit/default.yaml"


def _default_config() -> str | None:
    from infra.config import resolve_config_path

    p = resolve_config_path(DEFAULT_CONFIG)  # the checkout's file, or the installed shipped config
    return str(p) if p.is_file() else None


def _load(args) -> EvalConfig:
    from infra.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "model", None):
        overrides.append(f"model={args.model}")
    if getattr(args, "suite", None):
        overrides.append(f"suites=[{args.suite}]")
    if getattr(args, "out", None):
        overrides.append(f"out={args.out}")
    return load_config(EvalConfig, args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    from infra.cli import add_version_argument
    from infra.config import ConfigError, add_config_arguments, load_config
    from infra.folders import FolderError
    from infra.log import setup_logging

    parser = argparse.ArgumentParser(prog="python -m evalkit", description=__doc__)
    add_version_argument(parser)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="run suites on a model; writes results.json, samples/, plots/, report")
    p.add_argument("--model", help="HF model folder, or a trainer checkpoint (exported with trainer export-hf)")
    p.add_argument("--suite", help=f"comma-separated suites: {', '.join(SUITES)}")
    p.add_argument("--out", help="results folder")
    add_config_arguments(p, _default_config())
    c = sub.add_parser("compare", help="results folders side by side: compare.html, .md, .csv, plots/")
    c.add_argument("dirs", nargs="+", help="results folders written by `evalkit run`")
    c.add_argument("--out", default="compare", help="where compare.html, .md, .csv, .json and plots/ go")
    c.add_argument(
        "--start",
        action="append",
        metavar="NAME=START",
        help="intervention start of a results folder (its name or path) as a fraction, a percentage or "
        "'never'; by default read from the curriculum of the run it evaluated (repeatable)",
    )
    k = sub.add_parser(
        "track",
        help="evaluate a run's checkpoints (each once, cached by content) and plot metrics against tokens",
        description="Evaluate every checkpoint of each RUN_DIR with the chosen suites (a trainer checkpoint is "
        "exported first) and write trajectory.html, .md and .csv to --out: each headline metric against tokens "
        "seen, with the curriculum's phase boundaries. A rerun evaluates only checkpoints it has not seen.",
    )
    k.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by `trainer train`")
    k.add_argument("--suite", required=True, help=f"comma-separated suites: {', '.join(SUITES)}")
    k.add_argument("--out", default="track", help="folder of the evaluations (evals/) and the trajectory report")
    k.add_argument("--every", type=int, default=1, help="only checkpoints whose step is a multiple of N (and the last)")
    k.add_argument("--follow", action="store_true", help="keep polling for new checkpoints until every run ends")
    k.add_argument("--poll-s", type=float, default=60.0, help="seconds between polls with --follow")
    k.add_argument("--max-wait-s", type=float, default=None, help="stop following after this many seconds")
    k.add_argument("--keep-exports", action="store_true", help="keep each checkpoint's exported HF folder")
    add_config_arguments(k, _default_config())
    a = sub.add_parser("abliterate", help="remove the refusal direction from a model's weights and save it")
    a.add_argument("--model", required=True, help="HF model folder or trainer checkpoint")
    a.add_argument("--out", required=True, help="folder for the edited HF model (+ abliteration.json)")
    add_config_arguments(a, _default_config())
    t = sub.add_parser("train-judge", help="train the embedding refusal classifier judge on labelled answers")
    t.add_argument(
        "--data",
        default="evalkit/data/judge_train.jsonl",
        help='JSONL {"output": ..., "label": "refusal"|"non_refusal"}',
    )
    t.add_argument(
        "--out", required=True, help="judge folder (use it as judges.use=[{kind: classifier, path: FOLDER}])"
    )
    t.add_argument(
        "--human-labels",
        default="evalkit/data/human_labels.jsonl",
        help="score the trained judge on these labels too ('' to skip)",
    )
    from evalkit.validate import add_parser as add_validate_parser

    add_validate_parser(sub)
    from evalkit.study.cli import add_study_parser

    add_study_parser(sub)
    args, extra = parser.parse_known_args(argv)
    if args.cmd == "track":  # key=value overrides after the options (the run folders come first)
        bad = [e for e in extra if "=" not in e or e.startswith("-")]
        if bad:
            parser.error(f"unrecognized arguments: {' '.join(bad)}")
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    setup_logging()
    if args.cmd == "study":
        return args.func(args)
    try:
        if args.cmd == "run":
            if args.suite:
                args.suite = ",".join(s.strip() for s in args.suite.split(",") if s.strip())
            from evalkit.run import run_eval

            res = run_eval(_load(args))
            print(
                json.dumps(
                    {"out": str(_load(args).out), "suites": list(res["suites"]), "errors": res["errors"]}, indent=1
                )
            )
            return 1 if res["errors"] else 0
        if args.cmd == "validate-judges":
            from evalkit.validate import run_cli

            return run_cli(args)
        if args.cmd == "compare":
            from evalkit.compare import compare, parse_starts

            md = compare([Path(d) for d in args.dirs], Path(args.out), parse_starts(args.start))
            print(json.dumps({"html": str(md.with_suffix(".html")), "md": str(md), "csv": str(md.with_suffix(".csv"))}))
            return 0
        if args.cmd == "track":
            from evalkit.track import track

            suites = ",".join(s.strip() for s in args.suite.split(",") if s.strip())
            cfg = load_config(EvalConfig, args.config, [*args.overrides, f"suites=[{suites}]"])
            res = track(args.runs, cfg, Path(args.out), every=args.every, follow=args.follow, poll_s=args.poll_s,
                        max_wait_s=args.max_wait_s, keep_exports=args.keep_exports)  # fmt: skip
            print(json.dumps({"report": str(res["report"]), "evaluated": res["evaluated"], "cached": res["cached"],
                              "warnings": res["warnings"]}, indent=1))  # fmt: skip
            return 0
        if args.cmd == "train-judge":
            from evalkit.classifier_judge import ClassifierJudge, train_judge
            from evalkit.data import resolve_path
            from evalkit.validate import load_labels, validate_judges

            meta = train_judge(resolve_path(args.data), Path(args.out))
            if args.human_labels:
                rows, _ = load_labels(str(resolve_path(args.human_labels)))
                scores = validate_judges([ClassifierJudge(args.out)], rows)["judges"]["classifier"]
                meta["human_labels"] = {k: v for k, v in scores.items() if k != "confusion"}
                (Path(args.out) / "judge.json").write_text(json.dumps(meta, indent=2))
            print(
                json.dumps(
                    {k: meta[k] for k in ("rows", "cv_accuracy", "majority_baseline", "human_labels") if k in meta}
                )
            )
            return 0
        if args.cmd == "abliterate":
            from evalkit.run import abliterate_model

            cfg = _load(argparse.Namespace(config=args.config, overrides=args.overrides, model=args.model))
            m = abliterate_model(cfg, Path(args.out))
            print(json.dumps({k: m[k] for k in ("layer", "max_proj_before", "max_proj_after", "refusal_rate_drop")}))
            return 0
    except (ConfigError, FolderError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
