"""`python -m cuconv COMMAND` (also the `cuconv` console script). Each command lives in its own
module, which adds its sub-parser through `register(subparsers)`."""
from __future__ import annotations

import argparse
import sys

from . import audit, bench, selfcheck, train

# Modules that contribute commands, in the order `--help` lists them.
COMMAND_MODULES = (train, bench, selfcheck, audit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cuconv", description="cuconv: our own conv2d and max_pool2d kernels.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
