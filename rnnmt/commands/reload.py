"""`rnnmt reload`: ask a running server to reload its model repository (its admin service)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rnnmt.commands.common import (
    add_client_security_options,
    add_server_option,
    client_security,
    server_errors,
)
from rnnmt.errors import RnnmtError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reload",
        help="reload a server's models: new, changed and removed packages take effect without a restart",
        description="Prints what the reload loaded, kept, unloaded and failed to load (as JSON); exits "
        "with 2 when a package failed (the version it would replace keeps serving). The server needs "
        "--admin-token; SIGHUP to the server process does the same.",
    )
    add_server_option(parser)
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("RNNMT_ADMIN_TOKEN", ""),
        help="the server's admin token [env RNNMT_ADMIN_TOKEN]",
    )
    parser.add_argument("--admin-token-file", type=Path, help="read the admin token from this file")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the reload")
    add_client_security_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from google.protobuf import json_format

    from rnnmt.serving.client import TranslatorClient

    try:
        token = args.admin_token_file.read_text().strip() if args.admin_token_file else args.admin_token
    except OSError as exc:
        raise RnnmtError(f"--admin-token-file: {exc}") from None
    if not token:
        raise RnnmtError(
            "give the server's admin token: --admin-token, --admin-token-file or RNNMT_ADMIN_TOKEN"
        )
    security = client_security(args)
    with (
        server_errors(args.server),
        TranslatorClient(args.server, timeout=args.timeout, retries=0, **security) as client,
    ):
        response = client.reload_models(token)
    print(json_format.MessageToJson(response, indent=2, always_print_fields_with_no_presence=True))
    if response.failed:
        raise RnnmtError(
            f"{len(response.failed)} package(s) failed to load; the versions they would replace keep serving"
        )
