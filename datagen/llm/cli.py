"""Subcommands of ``python -m datagen`` that belong to the LLM stage (registered by ``datagen.__main__``).

Each ``add_*_parser(subparsers)`` registers one subcommand and sets ``func(args) -> int``.
"""

from __future__ import annotations

import json


def add_annotate_parser(subparsers) -> None:
    """Register ``annotate``: LLM rubric labels (text, score, reason, id) for ``train-classifier``."""
    from infra.config import add_config_arguments

    p = subparsers.add_parser(
        "annotate",
        help="label documents 0-5 with the safety rubric by an LLM (labels JSONL for train-classifier)",
        description="Label documents with the 0-5 safety rubric through an OpenAI-compatible server (vLLM "
        "started here from llm.server.model, or llm.server.url). Writes OUTPUT (id, text, score, "
        "reason), OUTPUT.quarantine.jsonl (unusable lines and answers, with reason and raw answer) "
        "and statistics. Re-running resumes. Example: python -m datagen annotate --config "
        "configs/datagen/llm_annotate_cpu.yaml input=docs.jsonl output=out/labels.jsonl",
    )
    add_config_arguments(p)
    p.set_defaults(func=annotate_main)


def annotate_main(args) -> int:
    from datagen.llm.annotate import run_annotate
    from datagen.llm.config import AnnotateConfig
    from infra.config import config_from_args

    cfg = config_from_args(AnnotateConfig, args)
    stats = run_annotate(cfg)
    print(json.dumps(stats, indent=2))
    return 0
