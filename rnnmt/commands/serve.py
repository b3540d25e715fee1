"""`rnnmt serve`: model packages over gRPC. Its flags (and their RNNMT_* variables) are those of
:mod:`rnnmt.serving.server.config`, which is cheap to import."""

from __future__ import annotations

import argparse

from rnnmt.serving.server.config import add_server_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve model packages over gRPC (dynamic batching, health, reflection, metrics)",
        description="Serve a model package, or a directory of them, over gRPC until SIGTERM/SIGINT. "
        "Each flag can also be set by the environment variable shown with it.",
    )
    add_server_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT."""
    from rnnmt.serving.server.app import serve
    from rnnmt.serving.server.config import config_from_args

    serve(config_from_args(args))
