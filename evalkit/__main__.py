"""``python -m evalkit {run,compare,abliterate,train-judge,validate-judges,study}``: safety evaluation."""

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
    from infra.config import ConfigError, add_config_arguments
    from infra.log import setup_logging

    parser = argparse.ArgumentParser(prog="python -m evalkit", description=__doc__)
    add_version_argument(parser)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="run suites on a model; writes results.json, samples/, plots/, report")
    p.add_argument("--model", help="HF model folder, or a trainer checkpoint (exported with trainer export-hf)")
    p.add_argument("--suite", help=f"comma-separated suites: {', '.join(SUITES)}")
    p.add_argument("--out", help="results folder")
    add_config_arguments(p, _default_config())
    c = sub.add_parser("compare", help="table and plots across results folders")
    c.add_argument("dirs", nargs="+", help="results folders written by `evalkit run`")
    c.add_argument("--out", default="compare", help="where compare.md, compare.json and plots/ go")
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
    args = parser.parse_args(argv)
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
            from evalkit.report import compare

            print(compare([Path(d) for d in args.dirs], Path(args.out)))
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
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
