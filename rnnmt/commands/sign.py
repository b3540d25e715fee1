"""`rnnmt keys new` and `rnnmt sign`: Ed25519 keys and signed model packages."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser("keys", help="make a key pair for signing model packages")
    actions = keys.add_subparsers(dest="action", required=True)
    new = actions.add_parser("new", help="write a new Ed25519 private key and KEY.pub, its public key")
    new.add_argument("key", type=Path, help="private key file to write (mode 0600); never overwritten")
    new.set_defaults(func=run_new)
    sign = subparsers.add_parser(
        "sign", help="sign a model package's manifest (servers with --trusted-keys need it)"
    )
    sign.add_argument("package", type=Path)
    sign.add_argument("--key", type=Path, required=True, help="the Ed25519 private key (rnnmt keys new)")
    sign.set_defaults(func=run_sign)


def run_new(args: argparse.Namespace) -> None:
    from rnnmt.serving.core.signing import key_id, load_public_key, new_key

    public = new_key(args.key)
    print(f"private key {args.key}, public key {public} (key id {key_id(load_public_key(public))})")


def run_sign(args: argparse.Namespace) -> None:
    from rnnmt.serving.core.signing import SIGNATURE_FILE, sign_package

    signer = sign_package(args.package, args.key)
    print(f"signed {args.package} with key {signer} ({args.package / SIGNATURE_FILE})")
