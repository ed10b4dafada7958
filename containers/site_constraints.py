#!/usr/bin/env python3
"""The site's CUDA stack (torch, torchvision, Transformer-Engine, apex, triton, NVIDIA libraries) as pip
constraints, so that installing the project beside it never replaces any of it.

    python containers/site_constraints.py > site-constraints.txt
    pip install -c site-constraints.txt "/path/to/checkout[train,eval,data]"
    python containers/site_constraints.py --check site-constraints.txt   # exit 1 when a pin moved

Without the constraints, pip may pick a newer torch for a package that asks for torchvision (the
project's ``streaming`` dependency does) and install it with its own CUDA libraries over the site's.
With them, pip chooses the versions that fit the installed torch, or fails saying which requirement
conflicts. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import sys

# distributions of a CUDA/PyTorch stack (names normalised as in PEP 503)
STACK = re.compile(
    r"^(torch|torchvision|torchaudio|torchao|triton|pytorch-triton.*|transformer-engine.*|apex|flash-attn.*"
    r"|nvidia-.*|cuda-python|cuda-bindings|cupy-cuda.*|xformers|vllm)$"
)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(everything: bool = False) -> dict[str, str]:
    """Normalised name -> version of the installed distributions of the stack (or of all with ``everything``)."""
    out = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        key = normalise(name)
        if everything or STACK.match(key):
            out[key] = dist.version
    return dict(sorted(out.items()))


def read_pins(path: str) -> dict[str, str]:
    pins = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if "==" not in line:
                raise SystemExit(f"{path}:{n}: expected NAME==VERSION, got {line!r}")
            name, version = line.split("==", 1)
            pins[normalise(name.strip())] = version.strip()
    return pins


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--all", action="store_true", help="pin every installed distribution, not only the CUDA stack")
    p.add_argument(
        "--check", metavar="FILE", help="compare the installed versions with FILE's pins; exit 1 if any moved"
    )
    args = p.parse_args(argv)
    have = installed(args.all)
    if args.check:
        pins = read_pins(args.check)
        current = installed(everything=True)
        moved = {n: (v, current.get(n)) for n, v in pins.items() if current.get(n) != v}
        for n, (was, now) in moved.items():
            print(f"{n}: was {was}, now {now or 'not installed'}", file=sys.stderr)
        if not moved:
            print(f"site stack unchanged: {', '.join(f'{n}=={v}' for n, v in pins.items()) or 'nothing pinned'}")
        return 1 if moved else 0
    if "torch" not in have:
        print(
            "warning: no torch is installed here; install the site's CUDA build first, or pip will choose one",
            file=sys.stderr,
        )
    print(f"# the CUDA stack installed in {sys.prefix} (containers/site_constraints.py)")
    for name, version in have.items():
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
