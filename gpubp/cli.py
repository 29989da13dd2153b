"""The `gpubp` command line: parses arguments and calls the library."""

from __future__ import annotations

import argparse
import sys

from . import __version__, backend


def info(args) -> int:
    rows = [("gpubp", __version__), *backend.describe()]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpubp", description="Train multilayer perceptrons by explicit backpropagation."
    )
    parser.add_argument("--version", action="version", version=f"gpubp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("info", help="versions, devices, and why the GPU is unavailable when it is").set_defaults(
        run=info
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
