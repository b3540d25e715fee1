"""`rnnmt data prepare` and `rnnmt data bible`: parallel corpora, cleaned and split."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rnnmt.errors import RnnmtError

if TYPE_CHECKING:
    from rnnmt.training.corpus import Pair


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="prepare parallel corpora").add_subparsers(
        dest="data_command", required=True
    )
    prepare = data.add_parser(
        "prepare",
        help="clean aligned plain-text files or a TSV file into a split, streaming (any size)",
    )
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
    prepare.add_argument(
        "--keep-duplicates", action="store_true", help="keep repeats of a pair (default: the first only)"
    )
    prepare.add_argument(
        "--langid",
        action="store_true",
        help="drop pairs whose source or target py3langid identifies as another language",
    )
    prepare.add_argument(
        "--langid-min-probability",
        type=float,
        default=0.5,
        help="with --langid: drop only identifications at least this sure (0-1)",
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
    """Clean --src/--tgt or --tsv into the split <out>/<name>, streaming, with progress on stderr."""
    from rnnmt.progress import Progress
    from rnnmt.training.cleaning import CleanReport, LanguageCheck, clean
    from rnnmt.training.corpus import read_parallel, read_tsv, write_split

    if args.tsv:
        pairs = read_tsv(args.tsv)
    elif args.src and args.tgt:
        pairs = read_parallel(args.src, args.tgt)
    else:
        raise RnnmtError("give --src and --tgt files, or --tsv")
    if not 0 <= args.langid_min_probability <= 1:
        raise RnnmtError("--langid-min-probability must be between 0 and 1")
    check = LanguageCheck(args.langid_min_probability) if args.langid else None
    report = CleanReport()
    progress = Progress(0, "pairs")

    def counted() -> Iterator[Pair]:
        for number, pair in enumerate(pairs, start=1):
            if number % 100_000 == 0:
                progress.update(number, kept=f"{report.kept:,}")
            yield pair

    kept = clean(
        counted(),
        report,
        args.max_words,
        args.max_ratio,
        dedupe=not args.keep_duplicates,
        languages=(args.src_lang, args.tgt_lang) if check else None,
        language_check=check,
    )
    write_split(args.out / args.name, kept, args.src_lang, args.tgt_lang)
    progress.close()
    print(f"{args.name}: {report.summary()} → {args.out / args.name}.{{{args.src_lang},{args.tgt_lang},ids}}")


def build_bible(args: argparse.Namespace) -> None:
    """Write the Bible's train, dev and test splits to --out."""
    from rnnmt.training.bible import extract_bible
    from rnnmt.training.cleaning import CleanReport, clean
    from rnnmt.training.corpus import write_split

    splits = extract_bible(args.sword_dir)
    for name, pairs in splits.items():
        # Only training pairs are filtered by length: dev and test stay complete. Repeated verses stay:
        # the reference figures were measured with them.
        report = CleanReport()
        limits = (args.max_words, args.max_ratio) if name == "train" else (0, 0.0)
        write_split(args.out / name, clean(pairs, report, *limits), "es", "en")
        print(f"{name}: {report.summary()}")
    print(f"written to {args.out}/{{train,dev,test}}.{{es,en,ids}}")
