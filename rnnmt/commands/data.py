"""`rnnmt data prepare` and `rnnmt data bible`: parallel corpora, cleaned and split."""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnmt.errors import RnnmtError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="prepare parallel corpora").add_subparsers(
        dest="data_command", required=True
    )
    prepare = data.add_parser("prepare", help="clean aligned plain-text files or a TSV file into a split")
    prepare.add_argument("--src", type=Path, help="source file, one sentence per line")
    prepare.add_argument("--tgt", type=Path, help="target file, aligned with --src")
    prepare.add_argument("--tsv", type=Path, help="a TSV file: source<TAB>target")
    prepare.add_argument("--src-lang", default="es")
    prepare.add_argument("--tgt-lang", default="en")
    prepare.add_argument("--name", default="train", help="split name: writes <out>/<name>.<lang>")
    prepare.add_argument("--out", type=Path, required=True)
    prepare.add_argument(
        "--max-words", type=int, default=100, help="drop pairs longer than this (0 = no limit)"
    )
    prepare.add_argument(
        "--max-ratio", type=float, default=3.0, help="drop pairs over this length ratio (0 = none)"
    )
    prepare.set_defaults(func=prepare_split)

    bible = data.add_parser(
        "bible", help="build the Spanish-English Bible corpus from Debian's SWORD modules"
    )
    bible.add_argument("--out", type=Path, default=Path("data/bible"))
    bible.add_argument("--sword-dir", type=Path, default=None, help="SWORD folder (default /usr/share/sword)")
    bible.add_argument("--max-words", type=int, default=100)
    bible.add_argument("--max-ratio", type=float, default=3.0)
    bible.set_defaults(func=build_bible)


def prepare_split(args: argparse.Namespace) -> None:
    """Clean --src/--tgt or --tsv into the split <out>/<name>."""
    from rnnmt.training.corpus import clean, read_parallel, read_tsv, write_split

    if args.tsv:
        pairs = read_tsv(args.tsv)
    elif args.src and args.tgt:
        pairs = read_parallel(args.src, args.tgt)
    else:
        raise RnnmtError("give --src and --tgt files, or --tsv")
    kept, report = clean(pairs, args.max_words, args.max_ratio)
    write_split(args.out / args.name, kept, args.src_lang, args.tgt_lang)
    print(f"{args.name}: {report.summary()} → {args.out / args.name}.{{{args.src_lang},{args.tgt_lang},ids}}")


def build_bible(args: argparse.Namespace) -> None:
    """Write the Bible's train, dev and test splits to --out."""
    from rnnmt.training.bible import extract_bible
    from rnnmt.training.corpus import clean, write_split

    splits = extract_bible(args.sword_dir)
    for name, pairs in splits.items():
        # Only training pairs are filtered by length: dev and test stay complete.
        kept, report = clean(pairs, args.max_words, args.max_ratio) if name == "train" else clean(pairs)
        write_split(args.out / name, kept, "es", "en")
        print(f"{name}: {report.summary()}")
    print(f"written to {args.out}/{{train,dev,test}}.{{es,en,ids}}")
