"""`rnnmt export`: a checkpoint to an ONNX model package."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a checkpoint to an ONNX model package")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--quantize",
        choices=["int8", "int8-weights", "int8-rows"],
        default=None,
        help="int8: dynamic int8 decoder step (results can depend on batching); "
        "int8-weights: int8-stored weights, fp32 compute (a quarter of the size, batch-independent); "
        "int8-rows: decoder step with per-row int8 activations and per-column int8 weights "
        "(faster, batch-independent)",
    )
    parser.add_argument("--max-input-tokens", type=int, default=250)
    parser.add_argument(
        "--shortlist",
        type=Path,
        metavar="CORPUS",
        help="add a lexical shortlist built from this parallel corpus prefix (e.g. data/bible/train: "
        "its .<src> and .<tgt> files): the decoder scores each sentence's own likely target pieces only",
    )
    parser.add_argument(
        "--sign",
        type=Path,
        metavar="KEY",
        help="sign the package with this Ed25519 private key (rnnmt keys new)",
    )
    parser.add_argument(
        "--shortlist-size", type=int, default=1024, help="target pieces per sentence (default 1024)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Write the package of --checkpoint to --out."""
    from rnnmt.training.export import export_package

    if args.sign:
        from rnnmt.serving.core.signing import load_private_key

        load_private_key(args.sign)  # a bad key fails before the export, not after
    out = export_package(
        args.checkpoint,
        args.out,
        quantize=args.quantize,
        max_input_tokens=args.max_input_tokens,
        shortlist_corpus=args.shortlist,
        shortlist_size=args.shortlist_size,
    )
    print(f"model package written to {out}")
    if args.sign:
        from rnnmt.serving.core.signing import sign_package

        print(f"signed with key {sign_package(out, args.sign)}")
