"""`rnnmt health`: a server's standard gRPC health check, for probes and scripts."""

from __future__ import annotations

import argparse

from rnnmt.commands.common import (
    add_client_security_options,
    add_server_option,
    client_security,
    server_errors,
)
from rnnmt.errors import RnnmtError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "health", help="check a server's gRPC health; exit 0 when SERVING (probes, scripts)"
    )
    add_server_option(parser)
    parser.add_argument("--service", default="", help='service name ("" = the whole server)')
    parser.add_argument("--timeout", type=float, default=3.0)
    add_client_security_options(parser)  # the server asks no token for health checks
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Print the status; anything but SERVING is an error."""
    from rnnmt.serving.client import TranslatorClient

    security = client_security(args)
    with (
        server_errors(args.server),
        TranslatorClient(args.server, timeout=args.timeout, retries=0, **security) as client,
    ):
        status = client.health(args.service)
    print(status)
    if status != "SERVING":
        raise RnnmtError(f"{args.server} is {status}")
