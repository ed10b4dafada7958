"""``python -m trainer {train,sft,export-hf,report}``: thin command-line entry points."""

from __future__ import annotations

import argparse
import sys

from infra.cli import add_version_argument
from infra.config import add_config_arguments, config_from_args

EXIT_NOTE = (
    "Exit status 0 also after SIGTERM/SIGUSR1: the trainer then saved a checkpoint at the current "
    "step boundary and stopped; running the same command again resumes from run_dir."
)


def _train(args, sft: bool) -> int:
    from trainer.config import TrainerConfig
    from trainer.train import train

    cfg = config_from_args(TrainerConfig, args)
    if sft and not cfg.sft_mode:
        raise SystemExit("trainer sft: set sft.path=CHAT.jsonl (and init.hf=HF_DIR)")
    from infra.config import ConfigError
    from trainer.checkpoint_files import CheckpointError

    try:
        summary = train(cfg)
    except (CheckpointError, ConfigError) as e:
        print(f"trainer: {e}", file=sys.stderr)
        return 2
    print(
        f"trainer: {'stopped by signal' if summary['stopped_by_signal'] else 'finished'} at step "
        f"{summary['step']}, loss {summary['loss']:.4f}, run folder {summary['run_dir']}",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        epilog=EXIT_NOTE,
        description=(
            "Megatron-Core GPT trainer: curriculum pretraining over a corpus folder, chat SFT from an HF folder, "
            "and export of checkpoints as HF Llama folders. Run under torchrun for several processes."
        ),
    )
    add_version_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "train",
        help="pretrain with a curriculum over a corpus folder (resumes run_dir)",
        description="Train a megatron-core GPT on a corpus folder with a curriculum. Keys: "
        "run_dir, model.*, data.*, train.*, validation.*, parallel.*, init.hf, sft.path, "
        "export.hf_at_end, logging.* (see docs/trainer.md). " + EXIT_NOTE,
    )
    add_config_arguments(p, default_config="configs/trainer/tiny.yaml")
    p = sub.add_parser(
        "sft",
        help="supervised finetuning on chat JSONL (init.hf=HF_DIR sft.path=JSONL)",
        description="Train in SFT mode: loss on assistant tokens only. " + EXIT_NOTE,
    )
    add_config_arguments(p, default_config="configs/trainer/sft.yaml")
    p = sub.add_parser(
        "export-hf",
        help="write a checkpoint as an HF Llama folder + tokenizer",
        description="CKPT: a run folder, its checkpoints/ folder or a checkpoints/iter_XXXXXXX "
        "folder. OUT: the HF folder to write.",
    )
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p = sub.add_parser(
        "report",
        help="write RUN_DIR/report.html and report.md: loss, bucket mix, tokens/s, epochs per bucket",
        description="The run report of a run folder (also while it trains): loss with phase boundaries, "
        "cumulative token share per bucket against the schedule, tokens/s, epochs per bucket.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="folder of report.html, report.md and report_plots/ (default: RUN_DIR)")
    args = parser.parse_args(argv)
    if args.command == "report":
        from infra.folders import FolderError
        from trainer.report import write_run_report

        try:
            print(write_run_report(args.run_dir, args.out))
        except FolderError as e:
            print(f"trainer report: {e}", file=sys.stderr)
            return 2
        return 0

    import warnings

    from infra.log import setup_logging

    # megatron announces at import that TE/apex are absent (expected off-GPU) and torch deprecations
    # from inside megatron; the trainer logs which spec runs instead.
    warnings.filterwarnings("ignore", message=r".*(Transformer Engine|Apex|apex).*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*cuda_graph_scope.*")
    warnings.filterwarnings("ignore", message=r"The \.grad attribute of a Tensor that is not a leaf")
    setup_logging()
    import logging

    # megatron logs every gradient bucket and optimizer field at INFO; warnings stay visible
    logging.getLogger("megatron").setLevel(logging.WARNING)
    logging.getLogger("megatron.core.rerun_state_machine").setLevel(logging.ERROR)
    if args.command == "train":
        return _train(args, sft=False)
    if args.command == "sft":
        return _train(args, sft=True)
    from trainer.checkpoint_files import CheckpointError
    from trainer.export import export_hf

    try:
        export_hf(args.checkpoint, args.out, dtype=args.dtype)
    except CheckpointError as e:
        print(f"trainer export-hf: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
