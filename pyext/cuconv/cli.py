"""`python -m cuconv COMMAND` (also the `cuconv` console script). Each command lives in its own
module, which adds its sub-parser through `register(subparsers)`; modules are imported only when
the command line is parsed, so the kernel library needs none of the extras."""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute commands, in the order `--help` lists them.
COMMAND_MODULES = ("cuconv.train", "cuconv.bench", "cuconv.selfcheck", "cuconv.audit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cuconv", description="cuconv: our own conv2d and max_pool2d kernels.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # the module is not part of this build
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
