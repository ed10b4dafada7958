"""``python -m trainer.data plan``: what a curriculum will draw, and (with a corpus) whether it can.

Example::

    python -m trainer.data plan --config configs/trainer/curricula/intervention_20.yaml \\
        train_steps=20000 global_batch_size=512 seq_length=2048 corpus=out/corpus
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass

from infra.config import ConfigError, add_config_arguments, config_from_args
from infra.corpus import CorpusError
from infra.log import setup_logging
from trainer.data.curriculum import CurriculumConfig, MixScheduler


@dataclass
class PlanConfig:
    """What ``plan`` reports on: a curriculum and the shape of a run.

    Attributes:
        curriculum: the phases and epoch limits (the shipped curriculum files have this top-level key).
        train_steps: the run's optimizer steps.
        global_batch_size: samples per step; the budget is ``train_steps * global_batch_size`` samples.
        seq_length: tokens per sample; the token budget is the three numbers' product.
        corpus: optional corpus folder: open every bucket the curriculum uses (the same start-up checks
            as training, the curriculum's ``max_epochs`` included) and report how many epochs of each
            bucket the run will read.
        seed: loader seed (only used to open the corpus).
    """

    curriculum: CurriculumConfig
    train_steps: int = 1000
    global_batch_size: int = 64
    seq_length: int = 2048
    corpus: str | None = None
    seed: int = 1234


def plan(cfg: PlanConfig) -> dict:
    """Summary of the schedule: phases with their first step, samples/tokens per bucket, epochs."""
    sched = MixScheduler(cfg.curriculum, cfg.train_steps, cfg.global_batch_size)
    total = cfg.train_steps * cfg.global_batch_size
    out = {"budget_tokens": total * cfg.seq_length, "budget_samples": total, "phases": [], "buckets": {}}
    for i, p in enumerate(cfg.curriculum.phases):
        # the first global batch that starts inside the phase (a boundary may split the batch before it)
        first = math.ceil(p.start * cfg.train_steps - 1e-9)
        out["phases"].append({"index": i, "start": p.start, "first_step": first, "weights": p.weights})
    for b in sched.buckets:
        n = round(sched.target(b, total))  # the loader stays within one sample of this
        out["buckets"][b] = {"samples": n, "tokens": n * cfg.seq_length}
    if cfg.corpus:
        from trainer.data.loader import CurriculumLoader

        loader = CurriculumLoader(
            cfg.corpus, cfg.curriculum, cfg.seq_length, cfg.global_batch_size, cfg.train_steps, cfg.seed
        )
        for b, info in out["buckets"].items():
            per_epoch = len(loader.packed[b])
            info.update(samples_per_epoch=per_epoch, epochs=round(info["samples"] / per_epoch, 3))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "plan",
        help="phases, samples and tokens per bucket, epochs per bucket (with corpus=)",
        description=PlanConfig.__doc__,
    )
    add_config_arguments(p)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = config_from_args(PlanConfig, args)
        print(json.dumps(plan(cfg), indent=2))
    except (ConfigError, CorpusError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
