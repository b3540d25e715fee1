"""`rnnmt batch INPUT --out OUT`: translate a whole file, streamed, resumable and sharded;
`rnnmt batch merge SHARD... --out OUT`: put the outputs of a sharded job back together; and
`rnnmt batch ray INPUT... --out-dir DIR --model PACKAGE`: translate files on a Ray cluster.

`merge` and `ray` are recognised as the first word after `batch`
(:class:`~rnnmt.commands.common.CommandParser`), so each form has its own flags and help; an input file
named ``merge`` or ``ray`` is given as ``./merge`` or ``./ray``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from rnnmt.commands.common import add_client_security_options, add_decoding_options, client_security, decoding
from rnnmt.errors import RnnmtError
from rnnmt.serving.documents.formats import FORMATS as DOCUMENT_FORMATS

if TYPE_CHECKING:
    from rnnmt.serving.batch.backends import Backend
    from rnnmt.serving.core.options import Decoding

FAILED_EXIT_CODE = 3  # the job finished, but some lines failed and were left empty
LINE_KINDS = ("plain", "tsv", "jsonl")  # serving.batch.formats.FORMATS, whose imports --help can do without


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="translate a whole file with a server or in-process: streamed, resumable, sharded",
        usage="%(prog)s INPUT --out OUT [options]\n       %(prog)s merge SHARD... --out OUT\n"
        "       %(prog)s ray INPUT... --out-dir DIR --model PACKAGE [options]",
        description="Translate INPUT (one segment per line: plain text, a TSV column or a JSONL field) "
        "into --out, one output line per input line, in order. Progress is checkpointed in OUT.progress: "
        "a job stopped at any moment resumes where it was when run again, every line exactly once. "
        "Lines the model refuses are left empty and listed in OUT.errors.jsonl (exit code 3). "
        "With --n-best above 1, each output line adds the n-best (text, score) pairs. "
        "A document (.srt, .vtt, .docx, .pptx, .odt, .html, .htm, .md, .markdown, or --format) is read "
        "whole and its texts translated sentence by sentence, in chunks checkpointed the same way (their "
        "translations kept in OUT.texts.jsonl until the end, every text exactly once), then the document "
        "is written to OUT with its layout and markup, by rename; texts the model refuses stay "
        "untranslated and are listed in OUT.errors.jsonl (exit code 3). A malformed document is refused "
        "and nothing is written. Not with --shard, --tsv-column, --jsonl-field, --paragraphs, "
        "--reference or --n-best above 1.",
        epilog="rnnmt batch merge SHARD... --out OUT puts the outputs of the --shard K/N jobs of one "
        "file together (see rnnmt batch merge --help); rnnmt batch ray translates files on a Ray cluster "
        "(see rnnmt batch ray --help). An INPUT file named merge or ray is written ./merge, ./ray.",
    )
    parser.add_argument("input", type=Path, metavar="INPUT", help="the file to translate")
    parser.add_argument("--out", type=Path, required=True, help="output file")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--server",
        help="HOST:PORT; several as a comma-separated list, or a DNS name with several addresses "
        "(load spread round robin); or a gRPC target (dns:, ipv4:, unix:)",
    )
    where.add_argument("--model", type=Path, help="translate in this process with this model package")
    parser.add_argument(
        "--model-name", default="", help="model name (default: the server's / repository's default)"
    )
    parser.add_argument(
        "--tsv-column", type=int, help="translate this TSV column (from 1); default for .tsv: 1"
    )
    parser.add_argument("--jsonl-field", help="translate this JSONL field; default for .jsonl: text")
    parser.add_argument("--output-field", help="JSONL field for the translation (default: translation)")
    parser.add_argument(
        "--format",
        choices=[*LINE_KINDS, *(suffix[1:] for suffix in DOCUMENT_FORMATS if suffix != ".txt")],
        help="what INPUT is, whatever its extension (default: by extension; .txt and others: plain)",
    )
    add_decoding_options(parser)
    parser.add_argument(
        "--split-sentences",
        action="store_true",
        help="translate each line sentence by sentence, keeping its spacing: for documents with a "
        "paragraph per line, or lines over the model's input limit (needs --n-best 1)",
    )
    parser.add_argument(
        "--paragraphs",
        action="store_true",
        help="INPUT is a plain-text document of paragraphs separated by blank lines, hard-wrapped or "
        "not: translate each paragraph (each list item) whole, sentence by sentence, and wrap it back "
        "to its width and indentation (needs --n-best 1; not with --shard or --reference)",
    )
    parser.add_argument("--chunk-lines", type=int, default=64, help="lines per request (a document's texts)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="requests in flight (0 = 8 with --server, one per core in-process)",
    )
    parser.add_argument(
        "--engine-threads", type=int, default=1, help="onnxruntime threads per request in-process"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="deadline of each request, in seconds (0 = none)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=8,
        help="retries of a request on UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED (backoff from 0.5 s to 30 s)",
    )
    add_client_security_options(parser)  # with --server
    parser.add_argument(
        "--shard", default="1/1", help="K/N: translate only the K-th of N equal ranges of lines"
    )
    parser.add_argument(
        "--restart", action="store_true", help="start over, ignoring and replacing OUT.progress"
    )
    parser.add_argument(
        "--reference", type=Path, help="print BLEU and chrF against these references at the end"
    )
    parser.set_defaults(func=run)

    merge = parser.add_command(
        "merge",
        description="Concatenate the finished outputs of the --shard K/N jobs of one file into OUT, "
        "and their errors into OUT.errors.jsonl (exit code 3 when some lines failed).",
    )
    merge.add_argument("shards", nargs="+", type=Path, metavar="SHARD", help="the output of each shard job")
    merge.add_argument("--out", type=Path, required=True, help="the merged file")
    merge.set_defaults(func=run_merge)

    on_ray = parser.add_command(
        "ray",
        description="Translate each INPUT (plain text, one segment per line) into --out-dir/<its name> "
        "on a Ray cluster (the rnnmt[ray] extra): Ray Data feeds the lines to --workers engine workers "
        "(one CPU each), and each output appears, complete, by rename; inputs whose output exists are "
        "skipped, so running the command again resumes file by file. Every node must see the package "
        "and the inputs at the same paths. Lines the model refuses are left empty and listed in "
        "<output>.errors.jsonl (exit code 3).",
    )
    on_ray.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="files to translate")
    on_ray.add_argument("--out-dir", type=Path, required=True, help="folder of the outputs")
    on_ray.add_argument("--model", type=Path, required=True, help="model package or repository")
    on_ray.add_argument("--model-name", default="", help="model name in a repository (default: the first)")
    on_ray.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS", "local"),
        help="the Ray cluster: 'auto' (the one this node is part of), ray://HOST:10001, or 'local' "
        "(start one in this process) [env RAY_ADDRESS; default: %(default)s]",
    )
    on_ray.add_argument("--workers", type=int, default=2, help="engine workers (one CPU each)")
    on_ray.add_argument("--chunk-lines", type=int, default=64, help="lines per engine call")
    on_ray.add_argument("--engine-threads", type=int, default=1, help="onnxruntime threads per worker")
    add_decoding_options(on_ray)
    on_ray.set_defaults(func=run_ray)


def open_backend(args: argparse.Namespace, options: Decoding, splits: bool) -> Backend:
    """Where the job translates: the servers of --server, or the engine of --model in this process;
    ``splits``: each text sentence by sentence."""
    from rnnmt.serving.batch.backends import EngineBackend, GrpcBackend

    if args.server:
        return GrpcBackend(
            args.server,
            args.model_name,
            options,
            args.timeout or None,
            **client_security(args),
            split_sentences=splits,
        )
    return EngineBackend(args.model, args.model_name, options, args.engine_threads, splits)


def run(args: argparse.Namespace) -> None:
    """Translate INPUT into --out (resuming a job stopped before), and report."""
    from rnnmt.serving.batch.checkpoint import errors_path
    from rnnmt.serving.batch.chunk import RetryPolicy
    from rnnmt.serving.batch.documents import document_suffix, run_document
    from rnnmt.serving.batch.formats import line_format
    from rnnmt.serving.batch.job import BatchJob, score_output
    from rnnmt.serving.batch.job import run as run_lines
    from rnnmt.serving.batch.shards import parse_shard

    if (args.server is None) == (args.model is None):
        raise RnnmtError("give --server HOST:PORT (a server) or --model DIR (in this process)")
    document = document_suffix(args.input, args.format)
    if (args.paragraphs or document) and args.reference:
        raise RnnmtError("--reference scores one translation per line: not with --paragraphs or a document")
    options = decoding(args)
    fmt = line_format(
        args.input,
        args.tsv_column,
        args.jsonl_field,
        args.output_field,
        max(1, options.n_best),
        args.format if args.format in LINE_KINDS else None,
    )
    job = BatchJob(
        args.input,
        args.out,
        fmt,
        options,
        parse_shard(args.shard),
        args.chunk_lines,
        args.concurrency or (8 if args.server else len(os.sched_getaffinity(0))),
        RetryPolicy(retries=args.retries),
        args.restart,
        args.split_sentences,
        args.paragraphs,
        document,
    )
    backend = open_backend(args, options, job.splits)
    try:
        result = (run_document if document else run_lines)(job, backend)
    finally:
        backend.close()
    state = result.state
    unit = "texts" if document else "lines"
    if result.already_done:
        print(f"{job.output} is already complete ({state.lines:,} {unit}); --restart translates it again")
    else:
        resumed = state.lines - result.translated
        print(
            f"translated {result.translated:,} {unit} in {result.seconds:.1f} s "
            f"({result.translated / max(result.seconds, 1e-9):,.1f} {unit}/s)"
            + (f", resuming after {resumed:,} done before" if resumed else "")
            + f" → {job.output}"
        )
    if state.failed:
        what = "text" if document else "line"
        print(
            f"{state.failed:,} {what}{'s' * (state.failed != 1)} failed "
            f"({'left untranslated' if document else 'left empty'}): see {errors_path(job.output)}"
        )
    if args.reference:
        print(score_output(job, state, args.reference).report())
    if state.failed:
        raise SystemExit(FAILED_EXIT_CODE)


def run_merge(args: argparse.Namespace) -> None:
    """Merge the shard outputs into --out, and report."""
    from rnnmt.serving.batch.checkpoint import errors_path
    from rnnmt.serving.batch.shards import merge

    merged = merge(args.shards, args.out)
    print(f"merged {len(args.shards)} shards: {merged.lines:,} lines → {args.out}")
    if merged.failed:
        print(f"{merged.failed:,} line{'s' * (merged.failed != 1)} failed: see {errors_path(args.out)}")
        raise SystemExit(FAILED_EXIT_CODE)


def run_ray(args: argparse.Namespace) -> None:
    """Translate the inputs on the Ray cluster of --address, and report per file."""
    try:
        import ray
    except ImportError:
        raise RnnmtError("rnnmt batch ray needs the ray extra: pip install 'rnnmt[ray]'") from None
    from rnnmt.serving.batch.checkpoint import errors_path
    from rnnmt.serving.batch.ray import translate_files

    if args.workers < 1:
        raise RnnmtError("--workers must be at least 1")
    missing = [str(p) for p in args.inputs if not p.is_file()]
    if missing:
        raise RnnmtError(f"input not found: {', '.join(missing)}")
    ray.init(address=None if args.address == "local" else args.address, log_to_driver=False)
    try:
        results = translate_files(
            args.inputs,
            args.out_dir,
            args.model,
            model_name=args.model_name,
            decoding=decoding(args),
            workers=args.workers,
            chunk_lines=args.chunk_lines,
            engine_threads=args.engine_threads,
        )
    finally:
        ray.shutdown()
    for path in args.inputs:
        result = results.get(path.resolve())
        target = args.out_dir / path.name
        if result is None:
            print(f"{path}: {target} exists already; skipped")
            continue
        print(f"{path}: {result.lines:,} lines → {target}")
        if result.failed:
            print(
                f"  {result.failed:,} line{'s' * (result.failed != 1)} failed (left empty): see {errors_path(target)}"
            )
    if any(r.failed for r in results.values()):
        raise SystemExit(FAILED_EXIT_CODE)
