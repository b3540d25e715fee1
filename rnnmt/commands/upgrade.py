"""`rnnmt upgrade PACKAGE...`: bring model packages to the current format in place (format 3: the
decoder outputs its attention, which places HTML's inline tags; :mod:`rnnmt.training.attention`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "upgrade",
        help="bring model packages to the current format in place (translations unchanged)",
        description="Rewrite each package to format 3: its decoder also outputs its attention weights "
        "(used to put HTML's inline tags around the right words); its translations are unchanged. A "
        "signed package is refused: upgrade it, then sign it again. Needs rnnmt[train] (onnx).",
    )
    parser.add_argument("packages", type=Path, nargs="+", metavar="PACKAGE")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from rnnmt.training.attention import upgrade_package

    for package in args.packages:
        print(f"{package}: {'upgraded to format 3' if upgrade_package(package) else 'already format 3'}")
