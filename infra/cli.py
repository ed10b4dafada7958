"""What every command line of the project shares besides its config (``infra.config``): ``--version``."""

from __future__ import annotations

import argparse
import sys


class _VersionAction(argparse.Action):
    """Print the package version (and the commit, in a checkout) and exit; looked up only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from infra.folders import code_version

        v = code_version()
        text = f"{parser.prog} {v.get('version') or 'unknown version (not installed)'}"
        if v.get("git_sha"):
            text += f" (commit {v['git_sha'][:12]}{', uncommitted changes' if v.get('git_dirty') else ''})"
        sys.stdout.write(text + "\n")
        parser.exit()


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    """``--version``: the installed package's version and, when run from a checkout, its commit."""
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
