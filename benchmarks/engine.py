"""Translator speed side by side: PyTorch reference beam search vs the onnxruntime engine (fp32, quantized,
with a shortlist).

    .venv/bin/python benchmarks/engine.py --checkpoint runs/bible-es-en/best.pt \\
        --package build/fp32/bible-es-en --other-package models/bible-es-en \\
        --source data/bible/test.es --reference data/bible/test.en

Every backend translates the same sentences in the same batches (sorted by length, ``--max-batch-rows``
rows), at beam 5 and greedy, each in its own process (torch's threads busy-wait and slow onnxruntime
down when both are loaded in one process). Prints sentences/s, target tokens/s, BLEU and chrF, the speed
ratio to PyTorch, the share of best hypotheses identical to PyTorch's, and the decoder step's achieved
GFLOP/s at a full batch against this machine's float32 GEMM peak (measured with onnxruntime's MatMul).
For a package with a shortlist it also prints the set size, the share of the reference's target pieces
inside each sentence's set (coverage) and the mean size of a batch's union.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rnnmt.evaluation import load_translator
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.package import load_package

BEAMS = (5, 1)
ALONE = 200  # sentences also translated one by one at beam 5, to compare with their batched results


def worker(path: Path, source: Path, max_batch_rows: int, out: Path) -> None:
    """Translate ``source`` at each beam with the checkpoint or package ``path``; write hypotheses,
    timing and target token counts as JSON."""
    translator = load_translator(path, max_batch_rows)
    texts = source.read_text(encoding="utf-8").splitlines()
    sources = translator.tokenize(texts)
    translator.translate_ids(sources[:8], SearchOptions(beam_size=5))  # warm-up
    runs = {}
    for beam in BEAMS:
        start = time.perf_counter()
        hyps = translator.translate_ids(sources, SearchOptions(beam_size=beam))
        seconds = time.perf_counter() - start
        best = [h[0].tokens for h in hyps]
        runs[str(beam)] = {
            "seconds": seconds,
            "tokens": sum(len(t) + 1 for t in best),
            "texts": translator.detokenize(best),
            "ids": best,
            "scores": [h[0].score for h in hyps],
        }
    alone = [translator.translate_ids([s], SearchOptions(beam_size=5))[0][0] for s in sources[:ALONE]]
    batched = runs["5"]
    runs["alone"] = {
        "differ": sum(h.tokens != ids for h, ids in zip(alone, batched["ids"], strict=False)),
        "max_score_diff": max(abs(h.score - s) for h, s in zip(alone, batched["scores"], strict=False)),
    }
    out.write_text(json.dumps(runs))


def run_worker(path: Path, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        command = [sys.executable, __file__, "--worker", str(path)]
        command += [
            "--source",
            str(args.source),
            "--max-batch-rows",
            str(args.max_batch_rows),
            "--out",
            str(out),
        ]
        subprocess.run(command, check=True)
        return json.loads(out.read_text())


def gemm_peak_gflops(threads: int, size: int = 1536, repeat: int = 20) -> float:
    """float32 GEMM throughput of onnxruntime's MatMul on this machine (size × size matrices)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options)
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    session.run(None, {"a": a, "b": a})
    start = time.perf_counter()
    for _ in range(repeat):
        session.run(None, {"a": a, "b": a})
    return 2 * size**3 * repeat / (time.perf_counter() - start) / 1e9


def decoder_step_gflops(package: Path, rows: int, src_len: int, repeat: int = 30) -> tuple[float, float]:
    """(achieved GFLOP/s, milliseconds) of one decoder step over ``rows`` rows and ``src_len`` source
    positions, counting the multiply-adds of the LSTM, attention, combination and output projection."""
    from rnnmt.serving.core.translator import Translator

    engine = Translator.from_package(package)
    cfg, vocab = engine.manifest.model, engine.manifest.target_vocab_size
    src = np.full((rows, src_len), 5, dtype=np.int64)
    src[:, -1] = 3
    memory, state = engine.backend.encode(src, np.full(rows, src_len, dtype=np.int64))
    prev = np.full(rows, 2, dtype=np.int64)
    zeros = np.zeros(rows, dtype=np.float32)
    engine.backend.step(prev, state, memory, zeros, zeros, 6)
    start = time.perf_counter()
    for _ in range(repeat):
        engine.backend.step(prev, state, memory, zeros, zeros, 6)
    seconds = (time.perf_counter() - start) / repeat
    e, d, h2, a, layers = (
        cfg["emb_size"],
        cfg["decoder_hidden"],
        2 * cfg["encoder_hidden"],
        cfg["attention_size"],
        cfg["decoder_layers"],
    )
    lstm_in = e * (2 if cfg["input_feeding"] else 1)
    lstm = 4 * d * (lstm_in + d) + (layers - 1) * 4 * d * 2 * d
    attention = {"bahdanau": d * a + src_len * a, "general": src_len * d, "dot": src_len * d}[
        cfg["attention"]
    ]
    per_row = lstm + attention + src_len * h2 + (d + h2) * e + e * vocab
    return 2 * per_row * rows / seconds / 1e9, seconds * 1000


def step_profile(package: Path, rows: int, src_len: int, repeat: int = 30) -> list[tuple[str, float]]:
    """onnxruntime's profile of the decoder step at ``rows`` rows and ``src_len`` source positions:
    (op type, share of the kernel time), largest first."""
    import onnxruntime as ort

    from rnnmt.serving.core.onnx_backend import session_options
    from rnnmt.serving.core.translator import Translator

    engine = Translator.from_package(package)
    backend = engine.backend
    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(0)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "step")
        backend.decoder = ort.InferenceSession(str(engine.package.decoder_path), options)
        src = np.full((rows, src_len), 5, dtype=np.int64)
        src[:, -1] = 3
        memory, state = backend.encode(src, np.full(rows, src_len, dtype=np.int64))
        prev, zeros = np.full(rows, 2, dtype=np.int64), np.zeros(rows, dtype=np.float32)
        for _ in range(repeat):
            backend.step(prev, state, memory, zeros, zeros, 6)
        events = json.loads(Path(backend.decoder.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            by_op[op] = by_op.get(op, 0.0) + event["dur"]
    total = sum(by_op.values())
    return sorted(((op, dur / total) for op, dur in by_op.items()), key=lambda item: -item[1])


def system_name(package: Path) -> str:
    manifest = load_package(package).manifest
    return f"ONNX {manifest.quantization or 'fp32'}" + (" + shortlist" if manifest.shortlist else "")


def shortlist_report(name: str, package: Path, args: argparse.Namespace) -> str:
    """Set size, coverage of the reference's pieces (if given) and mean union size at beam 5."""
    from rnnmt.serving.core.beam_search import pad_batch
    from rnnmt.serving.core.translator import Translator

    engine = Translator.from_package(package)
    table = engine.backend.shortlist
    sources = engine.tokenize(args.source.read_text(encoding="utf-8").splitlines())
    order = sorted((s for s in sources if s), key=len)
    per_batch = max(1, args.max_batch_rows // 5)
    unions = [
        len(table.batch(*pad_batch(order[i : i + per_batch]))[0]) for i in range(0, len(order), per_batch)
    ]
    line = (
        f"{name}: {table.size} pieces per sentence, union per beam-5 batch {np.mean(unions):.0f} on average"
    )
    if args.reference:
        targets = engine.tgt_tokenizer.encode(args.reference.read_text(encoding="utf-8").splitlines())
        kept = [(s[:-1], t) for s, t in zip(sources, targets, strict=True) if s]
        line += f", coverage of the reference's pieces {table.coverage(*zip(*kept, strict=True)):.1%}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--package", type=Path, help="the fp32 (or int8-weights) package")
    parser.add_argument(
        "--other-package",
        type=Path,
        action="append",
        default=[],
        help="repeatable; named by its quantization (and shortlist)",
    )
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--reference", type=Path)
    parser.add_argument("--max-batch-rows", type=int, default=256)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.source, args.max_batch_rows, args.out)
        return

    from rnnmt.scoring import score

    systems = [("PyTorch reference", args.checkpoint)] if args.checkpoint else []
    systems += [(system_name(p), p) for p in [args.package, *args.other_package]]
    baseline = systems[0][0]  # the PyTorch reference, or without a checkpoint the --package
    results = {name: run_worker(path, args) for name, path in systems}
    refs = args.reference.read_text(encoding="utf-8").splitlines() if args.reference else None
    n = len(args.source.read_text(encoding="utf-8").splitlines())
    print(f"{n} sentences, batches of at most {args.max_batch_rows} rows\n")
    print(f"ratios and identical best hypotheses against: {baseline}")
    header = f"{'system':<30}{'beam':>5}{'sent/s':>9}{'tok/s':>9}{'× base':>10}{'same best':>10}"
    print(header + (f"{'BLEU':>7}{'chrF':>7}" if refs else ""))
    for beam in map(str, BEAMS):
        base = results[baseline][beam]
        for name, run in ((name, results[name][beam]) for name, _ in systems):
            same = np.mean([a == b for a, b in zip(run["ids"], base["ids"], strict=True)])
            line = (
                f"{name:<30}{beam:>5}{n / run['seconds']:>9.1f}{run['tokens'] / run['seconds']:>9.0f}"
                f"{base['seconds'] / run['seconds']:>10.2f}{same:>10.1%}"
            )
            if refs:
                s = score(run["texts"], refs)
                line += f"{s.bleu:>7.2f}{s.chrf:>7.2f}"
            print(line)
    if refs:
        print(f"\nsacreBLEU: {score(['x'], ['x']).bleu_signature}")
    print(f"\nthe first {ALONE} sentences one by one at beam 5 against the same in batches:")
    for name, _ in systems:
        alone = results[name]["alone"]
        print(
            f"  {name}: {alone['differ']} best hypotheses differ; largest score difference {alone['max_score_diff']:.2e}"
        )
    for name, path in systems[1 if args.checkpoint else 0 :]:
        if load_package(path).manifest.shortlist:
            print(shortlist_report(name, path, args))
    peak = gemm_peak_gflops(threads=0)
    rows = args.max_batch_rows
    gflops, ms = decoder_step_gflops(args.package, rows, src_len=40)
    print(f"\nfloat32 GEMM peak (onnxruntime MatMul, 1536²): {peak:.1f} GFLOP/s")
    print(
        f"decoder step, fp32, {rows} rows × 40 source positions: {ms:.2f} ms, {gflops:.1f} GFLOP/s = {gflops / peak:.0%} of peak"
    )
    print(f"\ndecoder step profiles ({rows} rows × 40 source positions; kernel time by op type, ≥ 2%):")
    for name, path in systems[1 if args.checkpoint else 0 :]:
        shares = ", ".join(f"{op} {share:.0%}" for op, share in step_profile(path, rows, 40) if share >= 0.02)
        print(f"  {name}: {shares}")


if __name__ == "__main__":
    main()
