"""What several commands share: the parser of a command with sub-commands beside its own arguments, the
decoding flags, and the flags and errors of a command that calls a server. Cheap to import (no grpc)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.options import Decoding


class CommandParser(argparse.ArgumentParser):
    """An argument parser that hands its arguments to a sub-command's parser when the first one names it
    (:meth:`add_command`), and parses them itself otherwise.

    argparse's own sub-commands would take any first positional for a command's name; this lets
    `rnnmt batch merge SHARD... --out OUT` stand beside `rnnmt batch INPUT --out OUT`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def add_command(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """The parser of `PROG NAME ...`; ``kwargs`` are those of :class:`argparse.ArgumentParser`."""
        parser = argparse.ArgumentParser(prog=f"{self.prog} {name}", **kwargs)
        self.commands[name] = parser
        return parser

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        args = sys.argv[1:] if args is None else list(args)
        if args and args[0] in self.commands:
            return self.commands[args[0]].parse_known_args(args[1:], namespace)
        return super().parse_known_args(args, namespace)


def add_decoding_options(parser: argparse.ArgumentParser) -> None:
    """The decoding flags of translate, batch and evaluate; :func:`decoding` reads them."""
    group = parser.add_argument_group("decoding options")
    group.add_argument("--beam-size", type=int, default=0, help="beam width (0 = the model's default)")
    group.add_argument(
        "--n-best", type=int, default=0, help="hypotheses per text, best first (0 = the model's default)"
    )
    group.add_argument(
        "--length-penalty",
        type=float,
        default=None,
        help="GNMT alpha, 0 = raw log-prob (default: the model's)",
    )
    group.add_argument(
        "--max-output-tokens", type=int, default=0, help="output pieces at most (0 = the model's default)"
    )


def decoding(args: argparse.Namespace) -> Decoding:
    """The :class:`Decoding` the flags of :func:`add_decoding_options` ask for (0 / ``None``: the model's
    default); it is checked where it meets the model's defaults."""
    return Decoding(args.beam_size, args.n_best, args.length_penalty, args.max_output_tokens)


def add_server_option(parser: argparse.ArgumentParser) -> None:
    """``--server``, the address of one rnnmt server."""
    parser.add_argument(
        "--server",
        default=os.environ.get("RNNMT_SERVER", "localhost:50051"),
        help="HOST:PORT [env RNNMT_SERVER; default: %(default)s]",
    )


def add_client_security_options(parser: argparse.ArgumentParser) -> None:
    """The TLS / mutual TLS and bearer-token flags of a command that calls a server."""
    parser.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates")
    parser.add_argument("--tls-ca", type=Path, help="PEM roots to verify the server with (implies --tls)")
    parser.add_argument("--tls-cert", type=Path, help="PEM client certificate, for mutual TLS")
    parser.add_argument("--tls-key", type=Path, help="PEM key of --tls-cert")
    parser.add_argument(
        "--auth-token",
        default=os.environ.get("RNNMT_AUTH_TOKEN", ""),
        help="bearer token [env RNNMT_AUTH_TOKEN]",
    )
    parser.add_argument("--auth-token-file", type=Path, help="read the bearer token from this file")


def client_security(args: argparse.Namespace) -> dict[str, Any]:
    """The TLS and token keyword arguments of TranslatorClient (and GrpcBackend) from those flags."""
    try:
        token = args.auth_token_file.read_text().strip() if args.auth_token_file else args.auth_token
    except OSError as exc:
        raise RnnmtError(f"--auth-token-file: {exc}") from None
    return {
        "tls": args.tls,
        "ca_file": args.tls_ca,
        "cert_file": args.tls_cert,
        "key_file": args.tls_key,
        "token": token,
    }


@contextmanager
def server_errors(server: str) -> Iterator[None]:
    """Turn what fails while talking to ``server`` (a file that cannot be read or written, a call's
    gRPC status) into an :class:`RnnmtError`."""
    import grpc

    try:
        yield
    except OSError as exc:
        raise RnnmtError(str(exc)) from None
    except grpc.RpcError as exc:
        raise RnnmtError(f"{server}: {exc.code().name}: {exc.details()}") from None
