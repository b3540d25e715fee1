"""`rnnmt evaluate`: translate a test set with a checkpoint or a model package, and score it."""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnmt.commands.common import add_decoding_options, decoding
from rnnmt.errors import RnnmtError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="translate a test set with a checkpoint (PyTorch reference) or a package (ONNX engine); sacreBLEU",
        description="With --n-best above 1, --output has the columns text, score per hypothesis.",
    )
    parser.add_argument("model", type=Path, help="a checkpoint (.pt) or a model package directory")
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--reference", type=Path)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--record", metavar="NAME", help="store the scores in the package's manifest as NAME")
    add_decoding_options(parser)
    parser.add_argument(
        "--max-length-ratio",
        type=float,
        default=None,
        help="output pieces at most this × source pieces + 10 (default: the model's)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Translate --source with the model's defaults under the flags; score, write and record."""
    from dataclasses import replace

    from rnnmt.evaluation import evaluate, evaluation_record, load_translator

    if args.record and not (args.model.is_dir() and args.reference):
        raise RnnmtError("--record needs a model package directory and --reference")
    translator = load_translator(args.model)
    options = translator.default_options.overlay(decoding(args))
    if args.max_length_ratio is not None:
        options = replace(options, max_length_ratio=args.max_length_ratio)
    result = evaluate(translator, args.source, options, args.reference, args.output)
    if args.output:
        print(f"hypotheses written to {args.output}")
    if result.scores:
        print(result.scores.report())
    if args.record and result.scores:
        from rnnmt.serving.core.package import record_evaluation

        record = evaluation_record(args.source, len(result.hypotheses), options, result.scores)
        record_evaluation(args.model, args.record, record)
        print(f"recorded as evaluation {args.record!r} in {args.model}/manifest.json")
