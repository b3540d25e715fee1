"""The `rnnmt` command: the parser of every subcommand (one module each, in :mod:`rnnmt.commands`) and
the errors they report. Each subcommand imports what it needs when it runs, so serving commands never
import torch."""

from __future__ import annotations

import argparse
import sys

from rnnmt import __version__
from rnnmt.commands import (
    batch,
    data,
    evaluate,
    export,
    health,
    plot,
    reload,
    serve,
    sign,
    train,
    translate,
    upgrade,
)
from rnnmt.commands.common import CommandParser
from rnnmt.errors import RnnmtError

COMMANDS = (
    data,
    train,
    evaluate,
    export,
    upgrade,
    sign,
    serve,
    reload,
    translate,
    batch,
    health,
    plot,
)  # in --help's order


def build_parser() -> argparse.ArgumentParser:
    """The parser of `rnnmt`: each command's module adds its own subcommand, flags and handler."""
    parser = argparse.ArgumentParser(
        prog="rnnmt", description="RNN machine translation: train, export, serve."
    )
    parser.add_argument("--version", action="version", version=f"rnnmt {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command of ``argv`` (default: the process's); an :class:`RnnmtError` is exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        if argv is None and getattr(args, "preload_allocator", False):
            from rnnmt.training.allocator import preload

            preload(sys.argv[1:])  # a command run as a process: re-executed with its allocator
        args.func(args)
    except RnnmtError as exc:
        print(f"rnnmt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnmt: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
