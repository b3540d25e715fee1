"""The `rnnmt` command. Each subcommand imports what it needs when it runs, so serving commands never
import torch."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rnnmt import __version__
from rnnmt.errors import RnnmtError


def _add_search_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--n-best", type=int, default=1)
    parser.add_argument("--length-penalty", type=float, default=1.0, help="GNMT alpha; 0 = raw log-prob")
    parser.add_argument("--max-output-tokens", type=int, default=256)
    parser.add_argument("--max-length-ratio", type=float, default=2.0)


def _search_options(args: argparse.Namespace):  # -> SearchOptions
    from rnnmt.serving.core.options import SearchOptions

    if not 1 <= args.n_best <= args.beam_size:
        raise RnnmtError(f"--n-best must be between 1 and --beam-size ({args.beam_size})")
    return SearchOptions(
        beam_size=args.beam_size,
        n_best=args.n_best,
        length_penalty=args.length_penalty,
        max_output_tokens=args.max_output_tokens,
        max_length_ratio=args.max_length_ratio,
    )


def _add_client_security_options(parser: argparse.ArgumentParser) -> None:
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


def _client_security(args: argparse.Namespace) -> dict[str, Any]:
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


def cmd_data_prepare(args: argparse.Namespace) -> None:
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


def cmd_data_bible(args: argparse.Namespace) -> None:
    from rnnmt.training.bible import extract_bible
    from rnnmt.training.corpus import clean, write_split

    splits = extract_bible(args.sword_dir)
    for name, pairs in splits.items():
        # Only training pairs are filtered by length: dev and test stay complete.
        kept, report = clean(pairs, args.max_words, args.max_ratio) if name == "train" else clean(pairs)
        write_split(args.out / name, kept, "es", "en")
        print(f"{name}: {report.summary()}")
    print(f"written to {args.out}/{{train,dev,test}}.{{es,en,ids}}")


def cmd_train(args: argparse.Namespace) -> None:
    from rnnmt.training.config import load_config, validate
    from rnnmt.training.trainer import train

    config = load_config(args.config)
    if args.max_minutes is not None:
        config.train.max_minutes = args.max_minutes
    if args.run_dir is not None:
        config.run_dir = str(args.run_dir.resolve())
    result = train(validate(config), resume=not args.restart)
    if os.environ.get("RANK", "0") != "0":
        return
    print(
        f"trained {result.steps:,} steps in {result.minutes:.1f} min ({result.tokens_per_second:,.0f} target tokens/s); "
        f"best dev BLEU {result.best_bleu:.2f}: {result.best_checkpoint}"
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from rnnmt.evaluation import evaluate, evaluation_record, load_translator

    if args.record and not (args.model.is_dir() and args.reference):
        raise RnnmtError("--record needs a model package directory and --reference")
    options = _search_options(args)
    result = evaluate(load_translator(args.model), args.source, options, args.reference, args.output)
    if args.output:
        print(f"hypotheses written to {args.output}")
    if result.scores:
        print(result.scores.report())
    if args.record and result.scores:
        from rnnmt.serving.core.package import record_evaluation

        record = evaluation_record(args.source, len(result.hypotheses), options, result.scores)
        record_evaluation(args.model, args.record, record)
        print(f"recorded as evaluation {args.record!r} in {args.model}/manifest.json")


def cmd_export(args: argparse.Namespace) -> None:
    from rnnmt.training.export import export_package

    out = export_package(
        args.checkpoint, args.out, quantize=args.quantize, max_input_tokens=args.max_input_tokens
    )
    print(f"model package written to {out}")


def cmd_plot(args: argparse.Namespace) -> None:
    from rnnmt.training.plot import plot_metrics

    out = plot_metrics(args.run_dir / "metrics.jsonl", args.out or args.run_dir / "metrics.png")
    print(f"plot written to {out}")


def cmd_serve(args: argparse.Namespace) -> None:
    from rnnmt.serving.server.app import serve
    from rnnmt.serving.server.config import config_from_args

    serve(config_from_args(args))


def cmd_translate(args: argparse.Namespace) -> None:
    import grpc
    from google.protobuf import json_format

    from rnnmt.serving.client import TranslatorClient, batched

    options = {
        "model": args.model,
        "beam_size": args.beam_size,
        "n_best": args.n_best,
        "length_penalty": args.length_penalty,
        "max_output_tokens": args.max_output_tokens,
    }
    security = _client_security(args)
    try:
        with TranslatorClient(
            args.server, timeout=args.timeout or None, retries=args.retries, **security
        ) as client:
            if args.model_info:
                print(json_format.MessageToJson(client.model_info(args.model), indent=2))
                return
            lines = args.texts or (line.rstrip("\r\n") for line in sys.stdin)
            number = 0
            for translations in client.translate_stream(batched(lines, args.batch_size), **options):
                for translation in translations:
                    if args.n_best > 1:  # Moses n-best format: sentence number ||| text ||| score
                        for h in translation.hypotheses:
                            print(f"{number} ||| {h.text} ||| {h.score:.4f}")
                    else:
                        print(translation.hypotheses[0].text)
                    number += 1
                sys.stdout.flush()
    except OSError as exc:
        raise RnnmtError(str(exc)) from None
    except grpc.RpcError as exc:
        raise RnnmtError(f"{args.server}: {exc.code().name}: {exc.details()}") from None


def cmd_batch(args: argparse.Namespace) -> None:
    from rnnmt.serving.batch.backends import EngineBackend, GrpcBackend
    from rnnmt.serving.batch.checkpoint import errors_path
    from rnnmt.serving.batch.chunk import RetryPolicy
    from rnnmt.serving.batch.formats import line_format
    from rnnmt.serving.batch.job import BatchJob, run, score_output
    from rnnmt.serving.batch.shards import merge, parse_shard
    from rnnmt.serving.core.options import Decoding

    if args.merge:
        merged = merge(args.inputs, args.out)
        print(f"merged {len(args.inputs)} shards: {merged.lines:,} lines → {args.out}")
        if merged.failed:
            print(f"{merged.failed:,} line{'s' * (merged.failed != 1)} failed: see {errors_path(args.out)}")
            raise SystemExit(3)
        return
    if len(args.inputs) != 1:
        raise RnnmtError("give one INPUT file (several only with --merge)")
    if (args.server is None) == (args.model is None):
        raise RnnmtError("give --server HOST:PORT (a server) or --model DIR (in this process)")
    source = args.inputs[0]
    decoding = Decoding(args.beam_size, args.n_best, args.length_penalty, args.max_output_tokens)
    fmt = line_format(source, args.tsv_column, args.jsonl_field, args.output_field, max(1, args.n_best))
    job = BatchJob(
        source,
        args.out,
        fmt,
        decoding,
        parse_shard(args.shard),
        args.chunk_lines,
        args.concurrency or (8 if args.server else len(os.sched_getaffinity(0))),
        RetryPolicy(retries=args.retries),
        args.restart,
    )
    if args.server:
        backend = GrpcBackend(
            args.server, args.model_name, decoding, args.timeout or None, **_client_security(args)
        )
    else:
        backend = EngineBackend(args.model, args.model_name, decoding, args.engine_threads)
    try:
        result = run(job, backend)
    finally:
        backend.close()
    state = result.state
    if result.already_done:
        print(f"{job.output} is already complete ({state.lines:,} lines); --restart translates it again")
    else:
        resumed = state.lines - result.translated
        print(
            f"translated {result.translated:,} lines in {result.seconds:.1f} s "
            f"({result.translated / max(result.seconds, 1e-9):,.1f} lines/s)"
            + (f", resuming after {resumed:,} done before" if resumed else "")
            + f" → {job.output}"
        )
    if state.failed:
        print(
            f"{state.failed:,} line{'s' * (state.failed != 1)} failed (left empty): see {errors_path(job.output)}"
        )
    if args.reference:
        print(score_output(job, state, args.reference).report())
    if state.failed:
        raise SystemExit(3)


def cmd_health(args: argparse.Namespace) -> None:
    import grpc

    from rnnmt.serving.client import TranslatorClient

    security = _client_security(args)
    try:
        with TranslatorClient(args.server, timeout=args.timeout, retries=0, **security) as client:
            status = client.health(args.service)
    except OSError as exc:
        raise RnnmtError(str(exc)) from None
    except grpc.RpcError as exc:
        raise RnnmtError(f"{args.server}: {exc.code().name}: {exc.details()}") from None
    print(status)
    if status != "SERVING":
        raise RnnmtError(f"{args.server} is {status}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnmt", description="RNN machine translation: train, export, serve."
    )
    parser.add_argument("--version", action="version", version=f"rnnmt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="prepare parallel corpora").add_subparsers(
        dest="data_command", required=True
    )
    prep = data.add_parser("prepare", help="clean aligned plain-text files or a TSV file into a split")
    prep.add_argument("--src", type=Path, help="source file, one sentence per line")
    prep.add_argument("--tgt", type=Path, help="target file, aligned with --src")
    prep.add_argument("--tsv", type=Path, help="a TSV file: source<TAB>target")
    prep.add_argument("--src-lang", default="es")
    prep.add_argument("--tgt-lang", default="en")
    prep.add_argument("--name", default="train", help="split name: writes <out>/<name>.<lang>")
    prep.add_argument("--out", type=Path, required=True)
    prep.add_argument("--max-words", type=int, default=100, help="drop pairs longer than this (0 = no limit)")
    prep.add_argument(
        "--max-ratio", type=float, default=3.0, help="drop pairs over this length ratio (0 = none)"
    )
    prep.set_defaults(func=cmd_data_prepare)
    bible = data.add_parser(
        "bible", help="build the Spanish-English Bible corpus from Debian's SWORD modules"
    )
    bible.add_argument("--out", type=Path, default=Path("data/bible"))
    bible.add_argument("--sword-dir", type=Path, default=None, help="SWORD folder (default /usr/share/sword)")
    bible.add_argument("--max-words", type=int, default=100)
    bible.add_argument("--max-ratio", type=float, default=3.0)
    bible.set_defaults(func=cmd_data_bible)

    tr = sub.add_parser(
        "train", help="train a model from a YAML config (resumes the run if it has latest.pt)"
    )
    tr.add_argument("config", type=Path)
    tr.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget, overrides the config")
    tr.add_argument("--run-dir", type=Path, default=None, help="overrides the config's run_dir")
    tr.add_argument("--restart", action="store_true", help="ignore latest.pt and start from scratch")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "evaluate",
        help="translate a test set with a checkpoint (PyTorch reference) or a package (ONNX engine); sacreBLEU",
    )
    ev.add_argument("model", type=Path, help="a checkpoint (.pt) or a model package directory")
    ev.add_argument("--source", type=Path, required=True)
    ev.add_argument("--reference", type=Path)
    ev.add_argument("--output", type=Path)
    ev.add_argument("--record", metavar="NAME", help="store the scores in the package's manifest as NAME")
    _add_search_options(ev)
    ev.set_defaults(func=cmd_evaluate)

    ex = sub.add_parser("export", help="export a checkpoint to an ONNX model package")
    ex.add_argument("checkpoint", type=Path)
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument(
        "--quantize",
        choices=["int8", "int8-weights"],
        default=None,
        help="int8: dynamic int8 decoder step (fastest; results can depend on batching); "
        "int8-weights: int8-stored weights, fp32 compute (a quarter of the size, batch-independent)",
    )
    ex.add_argument("--max-input-tokens", type=int, default=250)
    ex.set_defaults(func=cmd_export)

    from rnnmt.serving.server.config import add_server_arguments

    sv = sub.add_parser(
        "serve",
        help="serve model packages over gRPC (dynamic batching, health, reflection, metrics)",
        description="Serve a model package, or a directory of them, over gRPC until SIGTERM/SIGINT. "
        "Each flag can also be set by the environment variable shown with it.",
    )
    add_server_arguments(sv)
    sv.set_defaults(func=cmd_serve)

    tl = sub.add_parser(
        "translate",
        help="translate texts (arguments, or stdin lines) with an rnnmt server",
        description="Prints one translation per input line, or with --n-best > 1 the n-best list "
        "in Moses format (number ||| text ||| score).",
    )
    tl.add_argument("texts", nargs="*", help="texts to translate (default: one per line of stdin)")
    tl.add_argument(
        "--server",
        default=os.environ.get("RNNMT_SERVER", "localhost:50051"),
        help="HOST:PORT [env RNNMT_SERVER; default: %(default)s]",
    )
    tl.add_argument("--model", default="", help="model name (default: the server's default)")
    tl.add_argument("--beam-size", type=int, default=0, help="0 = the model's default")
    tl.add_argument("--n-best", type=int, default=0, help="0 = the model's default")
    tl.add_argument("--length-penalty", type=float, default=None, help="GNMT alpha (default: the model's)")
    tl.add_argument("--max-output-tokens", type=int, default=0, help="0 = the model's default")
    tl.add_argument("--batch-size", type=int, default=32, help="lines per request")
    tl.add_argument(
        "--timeout", type=float, default=300.0, help="deadline of the whole run, in seconds (0 = none)"
    )
    tl.add_argument("--retries", type=int, default=3, help="retries when the server is unavailable")
    _add_client_security_options(tl)
    tl.add_argument("--model-info", action="store_true", help="print the server's models as JSON and exit")
    tl.set_defaults(func=cmd_translate)

    bt = sub.add_parser(
        "batch",
        help="translate a whole file with a server or in-process: streamed, resumable, sharded",
        description="Translate INPUT (one segment per line: plain text, a TSV column or a JSONL field) "
        "into --out, one output line per input line, in order. Progress is checkpointed in OUT.progress: "
        "a job stopped at any moment resumes where it was when run again, every line exactly once. "
        "Lines the model refuses are left empty and listed in OUT.errors.jsonl (exit code 3).",
    )
    bt.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUT", help="the file (with --merge: shard outputs)"
    )
    bt.add_argument("--out", type=Path, required=True, help="output file (with --merge: the merged file)")
    where = bt.add_mutually_exclusive_group()
    where.add_argument(
        "--server",
        help="HOST:PORT; several as a comma-separated list, or a DNS name with several addresses "
        "(load spread round robin); or a gRPC target (dns:, ipv4:, unix:)",
    )
    where.add_argument("--model", type=Path, help="translate in this process with this model package")
    bt.add_argument(
        "--model-name", default="", help="model name (default: the server's / repository's default)"
    )
    bt.add_argument("--tsv-column", type=int, help="translate this TSV column (from 1); default for .tsv: 1")
    bt.add_argument("--jsonl-field", help="translate this JSONL field; default for .jsonl: text")
    bt.add_argument("--output-field", help="JSONL field for the translation (default: translation)")
    bt.add_argument("--beam-size", type=int, default=0, help="0 = the model's default")
    bt.add_argument("--n-best", type=int, default=0, help="above 1: add the n-best (text, score) pairs")
    bt.add_argument("--length-penalty", type=float, default=None, help="GNMT alpha (default: the model's)")
    bt.add_argument("--max-output-tokens", type=int, default=0, help="0 = the model's default")
    bt.add_argument("--chunk-lines", type=int, default=64, help="lines per request")
    bt.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="requests in flight (0 = 8 with --server, one per core in-process)",
    )
    bt.add_argument(
        "--engine-threads", type=int, default=1, help="onnxruntime threads per request in-process"
    )
    bt.add_argument(
        "--timeout", type=float, default=300.0, help="deadline of each request, in seconds (0 = none)"
    )
    bt.add_argument(
        "--retries",
        type=int,
        default=8,
        help="retries of a request on UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED (backoff from 0.5 s to 30 s)",
    )
    _add_client_security_options(bt)  # with --server
    bt.add_argument("--shard", default="1/1", help="K/N: translate only the K-th of N equal ranges of lines")
    bt.add_argument(
        "--merge", action="store_true", help="concatenate the finished shard outputs INPUT... into --out"
    )
    bt.add_argument("--restart", action="store_true", help="start over, ignoring and replacing OUT.progress")
    bt.add_argument("--reference", type=Path, help="print BLEU and chrF against these references at the end")
    bt.set_defaults(func=cmd_batch)

    hc = sub.add_parser("health", help="check a server's gRPC health; exit 0 when SERVING (probes, scripts)")
    hc.add_argument("--server", default=os.environ.get("RNNMT_SERVER", "localhost:50051"), help="HOST:PORT")
    hc.add_argument("--service", default="", help='service name ("" = the whole server)')
    hc.add_argument("--timeout", type=float, default=3.0)
    _add_client_security_options(hc)  # the server asks no token for health checks
    hc.set_defaults(func=cmd_health)

    pl = sub.add_parser("plot", help="plot training loss and dev BLEU of a run to a PNG")
    pl.add_argument("run_dir", type=Path)
    pl.add_argument("--out", type=Path)
    pl.set_defaults(func=cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except RnnmtError as exc:
        print(f"rnnmt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnmt: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
