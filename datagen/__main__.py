"""``python -m datagen``: build a safety-pretraining corpus (datatrove pipeline -> MDS buckets)."""

from __future__ import annotations

import argparse
import json
import sys

from infra.cli import add_version_argument
from infra.config import ConfigError, add_config_arguments, config_from_args
from infra.log import setup_logging


def _cmd_run(args) -> int:
    from datagen.config import DatagenConfig
    from datagen.pipeline import run
    from datagen.stats import format_summary

    cfg = config_from_args(DatagenConfig, args)
    stats = run(cfg)
    if stats is not None:
        print(format_summary(stats))
        print(f"\ncorpus: {cfg.output}")
    return 0


def _cmd_train_classifier(args) -> int:
    from datagen.classifier import TrainClassifierConfig, format_metrics, train_classifier

    meta = train_classifier(config_from_args(TrainClassifierConfig, args))
    print(format_metrics(meta["metrics"]), file=sys.stderr)
    print(
        json.dumps(
            {
                "backend": meta["backend"],
                "output": str(config_from_args(TrainClassifierConfig, args).output),
                "train_size": meta["train_size"],
                "test_size": meta["test_size"],
                **meta["metrics"],
                "majority_baseline": meta["majority_baseline"],
            },
            indent=2,
        )
    )
    return 0


def _cmd_eval_classifier(args) -> int:
    from datagen.classifier import EvalClassifierConfig, eval_classifier, format_metrics

    res = eval_classifier(config_from_args(EvalClassifierConfig, args))
    print(format_metrics(res["metrics"]), file=sys.stderr)
    print(json.dumps(res, indent=2))
    return 0


def _cmd_import_classifier(args) -> int:
    from datagen.classifier_hf import ImportClassifierConfig, import_classifier

    print(json.dumps(import_classifier(config_from_args(ImportClassifierConfig, args)), indent=2))
    return 0


def _cmd_train_tokenizer(args) -> int:
    from datagen.tokenizer_train import TrainTokenizerConfig, train_tokenizer

    print(train_tokenizer(config_from_args(TrainTokenizerConfig, args)))
    return 0


def _cmd_inspect(args) -> int:
    from datagen.stats import inspect
    from infra.curriculum import resolve_curriculum

    if bool(args.curriculum) != bool(args.tokens):
        print("datagen inspect: --curriculum and --tokens go together", file=sys.stderr)
        return 2
    curriculum = resolve_curriculum(args.curriculum, "--curriculum") if args.curriculum else None
    print(inspect(args.corpus, curriculum, args.tokens))
    return 0


def _cmd_prepare_model(args) -> int:
    from infra.models import prepare_smollm2

    print(prepare_smollm2(args.out, force=args.force))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m datagen", description=__doc__)
    add_version_argument(p)
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser(
        "run",
        help="read, filter, score, route, tag, tokenize and write the corpus folder",
        description="Run the datagen pipeline (config: datagen.config.DatagenConfig). "
        "Example: python -m datagen run --config configs/datagen/demo.yaml output=out/demo",
        epilog="Config sections: output, input, filters, score, route, tag, tokenizer, executor, "
        "compression, llm (fields documented in datagen/config.py and docs/datagen.md).",
    )
    add_config_arguments(r, "configs/datagen/demo.yaml")
    r.set_defaults(func=_cmd_run)

    c = sub.add_parser(
        "train-classifier",
        help="train a safety classifier (fasttext, embedding, finetune) and print held-out metrics as JSON",
        description="Keys: see datagen.classifier.TrainClassifierConfig. Example: python -m "
        "datagen train-classifier labels=datagen/data/default_corpus.jsonl output=out/clf",
    )
    add_config_arguments(c)
    c.set_defaults(func=_cmd_train_classifier)

    e = sub.add_parser(
        "eval-classifier",
        help="score a labelled JSONL with a classifier folder: macro-F1, recalls, false-positive rate, intervals",
        description="Keys: see datagen.classifier.EvalClassifierConfig. Example: python -m datagen "
        "eval-classifier classifier=out/clf labels=datagen/data/safety_labels/eval/xstest.jsonl.gz",
    )
    add_config_arguments(e)
    e.set_defaults(func=_cmd_eval_classifier)

    h = sub.add_parser(
        "import-classifier",
        help="wrap a released HF sequence-classification folder as a classifier folder (outputs -> 0-5)",
        description="Keys: see datagen.classifier_hf.ImportClassifierConfig. Example: python -m datagen "
        "import-classifier model=/models/safety-gte-large output=out/clf-released",
    )
    add_config_arguments(h)
    h.set_defaults(func=_cmd_import_classifier)

    t = sub.add_parser(
        "train-tokenizer",
        help="train a small byte-level BPE tokenizer (EOS + tag token)",
        description="Keys: see datagen.tokenizer_train.TrainTokenizerConfig. Example: python -m "
        "datagen train-tokenizer output=out/tok vocab_size=4096",
    )
    add_config_arguments(t)
    t.set_defaults(func=_cmd_train_tokenizer)

    i = sub.add_parser("inspect", help="print a corpus folder's stats.json as a table")
    i.add_argument("corpus", help="corpus folder written by `datagen run`")
    i.add_argument("--curriculum", help="a curriculum YAML: also show the epochs of each bucket it implies")
    i.add_argument("--tokens", type=int, help="the run's token budget (with --curriculum)")
    i.set_defaults(func=_cmd_inspect)

    m = sub.add_parser("prepare-model", help="prepare the SmolLM2-135M-Instruct HF folder used by the LLM stage")
    m.add_argument("--out", default=None, help="target folder (default: .cache/models/smollm2-135m-instruct)")
    m.add_argument("--force", action="store_true", help="convert again even if the folder exists")
    m.set_defaults(func=_cmd_prepare_model)

    try:  # the LLM stage registers `annotate` itself; tolerate its absence
        from datagen.llm.cli import add_annotate_parser
    except ImportError:
        add_annotate_parser = None
    if add_annotate_parser is not None:
        add_annotate_parser(sub)
    else:
        a = sub.add_parser("annotate", help="label documents with the rubric LLM (LLM stage not installed)")
        a.set_defaults(func=lambda _args: (print("datagen.llm.cli is not available", file=sys.stderr), 2)[1])
    return p


def main(argv: list[str] | None = None) -> int:
    from datagen.procs import OutputError

    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, ValueError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
