"""`rnnmt translate`: texts (arguments, or stdin lines) with an rnnmt server."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from rnnmt.commands.common import (
    add_client_security_options,
    add_decoding_options,
    add_server_option,
    client_security,
    decoding,
    server_errors,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "translate",
        help="translate texts (arguments, or stdin lines) with an rnnmt server",
        description="Prints one translation per input line, or with --n-best > 1 the n-best list "
        "in Moses format (number ||| text ||| score).",
    )
    parser.add_argument("texts", nargs="*", help="texts to translate (default: one per line of stdin)")
    add_server_option(parser)
    parser.add_argument("--model", default="", help="model name (default: the server's default)")
    parser.add_argument("--model-version", default="", help="model version (default: the latest served)")
    parser.add_argument(
        "--split-sentences",
        action="store_true",
        help="translate each text (line) sentence by sentence, keeping its spacing (needs --n-best 1)",
    )
    add_decoding_options(parser)
    parser.add_argument("--batch-size", type=int, default=32, help="lines per request")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="deadline of the whole run, in seconds (0 = none)"
    )
    parser.add_argument("--retries", type=int, default=3, help="retries when the server is unavailable")
    add_client_security_options(parser)
    parser.add_argument(
        "--model-info", action="store_true", help="print the server's models as JSON and exit"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Stream the texts to the server in batches and print the translations as they come."""
    from google.protobuf import json_format

    from rnnmt.serving.client import TranslatorClient, batched

    options = dataclasses.asdict(decoding(args))
    security = client_security(args)
    with (
        server_errors(args.server),
        TranslatorClient(
            args.server, timeout=args.timeout or None, retries=args.retries, **security
        ) as client,
    ):
        if args.model_info:
            print(json_format.MessageToJson(client.model_info(args.model), indent=2))
            return
        lines = args.texts or (line.rstrip("\r\n") for line in sys.stdin)
        number = 0
        batches = batched(lines, args.batch_size)
        for translations in client.translate_stream(
            batches,
            args.model,
            **options,
            model_version=args.model_version,
            split_sentences=args.split_sentences,
        ):
            for translation in translations:
                if args.n_best > 1:  # Moses n-best format: sentence number ||| text ||| score
                    for h in translation.hypotheses:
                        print(f"{number} ||| {h.text} ||| {h.score:.4f}")
                else:
                    print(translation.hypotheses[0].text)
                number += 1
            sys.stdout.flush()
