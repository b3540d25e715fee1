"""`rnnmt batch`: streamed, resumable, exactly-once batch translation, against real servers and the
in-process engine, with the tiny model. Jobs are killed with SIGKILL (and servers too) at points read
from the job's own progress file, so each kill lands mid-job."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest
from conftest import run_without_torch, toy_pairs
from servers import RNNMT, start_server_process

from rnnmt.errors import RnnmtError
from rnnmt.serving.batch.backends import EngineBackend, GrpcBackend, ModelFacts, Transient, channel_target
from rnnmt.serving.batch.checkpoint import errors_path, progress_path, read_state
from rnnmt.serving.batch.chunk import RetryPolicy
from rnnmt.serving.batch.formats import LineFormat
from rnnmt.serving.batch.job import BatchJob, BatchResult, run
from rnnmt.serving.batch.shards import merge
from rnnmt.serving.core.options import Decoding
from rnnmt.serving.core.translator import TextHypothesis
from rnnmt.serving.server.app import TranslationServer
from rnnmt.serving.server.config import ServerConfig
from rnnmt.training.export import export_package

PAIRS = [(p.src, p.tgt) for p in toy_pairs()]
TRANSLATION = dict(PAIRS)  # the tiny model translates the toy corpus exactly
BAD = "perro " * 300  # 1200 pieces: over the package's 250-token limit, refused with INVALID_ARGUMENT
COPIES = 30  # 54 × 30 sentences: enough for several kills mid-job


def corpus(copies: int) -> tuple[list[str], list[str]]:
    """Source and reference lines: the toy corpus ``copies`` times, with blank lines and one bad line."""
    sources, references = [], []
    for i in range(copies):
        for j, (src, tgt) in enumerate(PAIRS):
            sources.append(src)
            references.append(tgt)
            if j % 17 == 0:
                sources.append("" if i % 2 else "   ")
                references.append("")
        if i == copies // 2:
            sources.append(BAD)
            references.append("x")
    return sources, references


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def package(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_package(tiny_checkpoint, tmp_path_factory.mktemp("batch_models") / "toy")


@pytest.fixture(scope="module")
def engine(package: Path) -> EngineBackend:
    return EngineBackend(package, "", Decoding())


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lines(tmp_path_factory.mktemp("batch_input") / "source.es", corpus(COPIES)[0])


@pytest.fixture(scope="module")
def reference(source: Path, engine: EngineBackend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output of an uninterrupted in-process job on ``source`` (errors beside it)."""
    out = tmp_path_factory.mktemp("batch_reference") / "out.en"
    result = run(BatchJob(source, out, chunk_lines=8), engine, io.StringIO())
    assert result.state.done and result.state.failed == 1
    return out


def quiet_run(job: BatchJob, backend: EngineBackend | GrpcBackend) -> BatchResult:
    return run(job, backend, io.StringIO())


def committed_lines(out: Path) -> int:
    state = read_state(out)
    return 0 if state is None else state.next_line


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[str] | None = None) -> None:
    end = time.monotonic() + 120
    while not condition():
        assert process is None or process.poll() is None, "the job ended before the kill"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def assert_same_output(out: Path, reference: Path) -> None:
    assert out.read_bytes() == reference.read_bytes()
    assert errors_path(out).read_bytes() == errors_path(reference).read_bytes()


# -- exactly once, whatever is killed ------------------------------------------------------------------


def test_a_job_killed_at_several_points_resumes_to_the_same_output(
    package: Path, source: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.en"
    command = [str(RNNMT), "batch", str(source), "--out", str(out), "--model", str(package)]
    command += ["--chunk-lines", "8", "--concurrency", "2"]
    total = len(source.read_text().splitlines())
    stopped_at = []
    for fraction in (0.2, 0.45, 0.7):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        try:
            wait_until(lambda f=fraction: committed_lines(out) >= f * total, process)
            assert "libtorch" not in Path(f"/proc/{process.pid}/maps").read_text()
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        state = read_state(out)
        assert state is not None and not state.done
        stopped_at.append(state.next_line)
        with out.open("ab") as f:  # as if killed after writing a chunk but before committing it
            f.write(b"an uncommitted chunk\n")
    assert stopped_at == sorted(stopped_at) and stopped_at[-1] < total
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 3, done.stderr  # the bad line
    assert f"resuming after {stopped_at[-1]:,} done before" in done.stdout
    assert "1 line failed" in done.stdout
    assert_same_output(out, reference)
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 3 and "already complete" in again.stdout
    assert_same_output(out, reference)


def start_server(package: Path, port: int) -> subprocess.Popen[bytes]:
    command = [str(RNNMT), "serve", "--model-dir", str(package), "--host", "127.0.0.1"]
    return subprocess.Popen([*command, "--port", str(port), "--workers", "1"], stderr=subprocess.DEVNULL)


T = TypeVar("T")


class Failing(GrpcBackend):
    """A GrpcBackend that counts the calls that failed in a way the job retries, and holds every call
    after its first ``hold_after`` until ``released`` is set (``holding`` is set once one is held)."""

    def __init__(self, servers: str, *, hold_after: int) -> None:
        super().__init__(servers, "", Decoding(), timeout=30)
        self.transient = 0
        self.calls, self.hold_after = 0, hold_after
        self.holding, self.released = threading.Event(), threading.Event()
        self.lock = threading.Lock()

    def open(self) -> ModelFacts:
        return self._counted(super().open)

    def translate(self, texts: Sequence[str]) -> list[list[TextHypothesis]]:
        with self.lock:
            self.calls += 1
            held = self.calls > self.hold_after
        if held:
            self.holding.set()
            assert self.released.wait(60)
        return self._counted(lambda: super(Failing, self).translate(texts))

    def _counted(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except Transient:
            self.transient += 1
            raise


class JobThread(threading.Thread):
    """A batch job on a thread; ``outcome`` is its result or the exception it raised."""

    def __init__(self, job: BatchJob, backend: GrpcBackend) -> None:
        super().__init__()
        self.job, self.backend = job, backend
        self.outcome: BatchResult | BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.outcome = quiet_run(self.job, self.backend)
        except BaseException as exc:
            self.outcome = exc


def test_a_server_killed_mid_job_stops_it_or_is_waited_for_and_nothing_is_lost(
    package: Path, source: Path, reference: Path, tmp_path: Path
) -> None:
    """The server is restarted on the port it chose the first time, which its death has just freed."""
    out = tmp_path / "out.en"
    started = start_server_process("--model-dir", str(package), "--workers", "1")
    server, port = started.process, int(started.address.rsplit(":", 1)[1])
    backend = Failing(started.address, hold_after=50)  # the job's calls after its 50th wait for the kill
    job = BatchJob(source, out, chunk_lines=8, concurrency=4)
    try:
        # A job that may retry twice gives up soon after the server dies, keeping what it committed.
        impatient = JobThread(replace(job, retry=RetryPolicy(retries=2, backoff=0.05)), backend)
        assert backend.holding.wait(60)
        server.send_signal(signal.SIGKILL)
        server.wait()
        backend.released.set()
        impatient.join(60)
        assert isinstance(impatient.outcome, RnnmtError), impatient.outcome
        message = str(impatient.outcome)
        assert "gave up after 2 retries" in message and "UNAVAILABLE" in message
        saved = committed_lines(out)
        assert f"{saved:,} of {len(source.read_text().splitlines()):,} lines are done and saved" in message
        # The same job, patient enough, resumes and waits for the server to come back.
        patient = JobThread(
            replace(job, retry=RetryPolicy(retries=40, backoff=0.1, max_backoff=1.0)), backend
        )
        retried = backend.transient
        wait_until(lambda: backend.transient >= retried + 2)  # it is retrying
        assert committed_lines(out) == saved and patient.outcome is None
        server = start_server(package, port)
        patient.join(120)
    finally:
        backend.released.set()
        server.send_signal(signal.SIGKILL)
        server.wait()
        backend.close()
    assert isinstance(patient.outcome, BatchResult), patient.outcome
    assert patient.outcome.state.done and 0 < saved < patient.outcome.state.lines
    assert_same_output(out, reference)


# -- failures, formats, shards -------------------------------------------------------------------------


class Servers:
    """In-process servers on one event loop thread (the job runs in a subprocess)."""

    def __init__(self, package: Path, count: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = ServerConfig(model_dir=package, host="127.0.0.1", port=0, workers=1)
        self.servers = [TranslationServer(config) for _ in range(count)]
        self.ports = [self.run(s.start()) for s in self.servers]

    def run(self, coroutine: object) -> int:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)  # type: ignore[arg-type]

    def translate_calls(self) -> list[float]:
        labels = {"method": "Translate", "code": "OK"}
        return [
            s.metrics.registry.get_sample_value("rnnmt_requests_total", labels) or 0 for s in self.servers
        ]

    def stop(self) -> None:
        for s in self.servers:
            self.run(s.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@contextmanager
def serving(package: Path, count: int) -> Iterator[Servers]:
    servers = Servers(package, count)
    try:
        yield servers
    finally:
        servers.stop()


def test_two_servers_share_a_job_a_bad_line_is_skipped_and_bleu_is_reported(
    package: Path, tmp_path: Path
) -> None:
    sources, references = corpus(2)
    source = write_lines(tmp_path / "in.es", sources)
    write_lines(tmp_path / "ref.en", references)
    out = tmp_path / "out.en"
    with serving(package, 2) as servers:
        addresses = ",".join(f"localhost:{port}" for port in servers.ports)
        command = [str(RNNMT), "batch", str(source), "--out", str(out), "--server", addresses]
        done = subprocess.run(
            [*command, "--chunk-lines", "4", "--reference", str(tmp_path / "ref.en")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        calls = servers.translate_calls()
    assert done.returncode == 3, done.stderr
    assert all(n >= 5 for n in calls), f"round robin should spread the requests: {calls}"
    bad = sources.index(BAD)
    records = [json.loads(line) for line in errors_path(out).read_text().splitlines()]
    assert records == [
        {"line": bad + 1, "reason": "the text is 1200 tokens long; this model accepts at most 250"}
    ]
    lines = out.read_text().splitlines()
    assert len(lines) == len(sources) and lines[bad] == ""
    assert lines == [TRANSLATION.get(s, "") for s in sources]
    assert re.search(r"^BLEU \d+\.\d\d \(nrefs:1\|.*\)$", done.stdout, re.M), done.stdout
    assert re.search(r"^chrF \d+\.\d\d \(nrefs:1\|.*\)$", done.stdout, re.M)
    assert "1 line failed (left empty)" in done.stdout
    assert "lines/s" in done.stderr and "ETA" in done.stderr  # the progress bar


def test_server_addresses_become_round_robin_targets() -> None:
    assert channel_target("translator:50051") == "dns:///translator:50051"
    assert channel_target("localhost:1, 127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target("ipv6:[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    with pytest.raises(RnnmtError, match="not HOST:PORT"):
        channel_target("127.0.0.1:1,localhost")


def test_shards_merged_equal_the_unsharded_output(
    engine: EngineBackend, source: Path, reference: Path, tmp_path: Path
) -> None:
    parts = [tmp_path / f"part{k}.en" for k in (1, 2, 3)]
    for k, part in enumerate(parts, 1):
        quiet_run(BatchJob(source, part, shard=(k, 3), chunk_lines=8), engine)
    total = len(source.read_text().splitlines())
    starts = [read_state(p).start_line for p in parts]  # type: ignore[union-attr]
    assert starts == [0, total // 3, 2 * total // 3]
    merged = merge([parts[2], parts[0], parts[1]], tmp_path / "all.en")
    assert (merged.lines, merged.failed) == (total, 1)
    assert_same_output(tmp_path / "all.en", reference)
    with pytest.raises(RnnmtError, match=r"needs shards 1/3 to 3/3, each once; found 1/3, 3/3"):
        merge([parts[0], parts[2]], tmp_path / "some.en")


def test_a_finished_job_does_nothing_and_another_job_is_refused(
    engine: EngineBackend, package: Path, tmp_path: Path
) -> None:
    source = write_lines(tmp_path / "in.es", [src for src, _ in PAIRS[:10]])
    out = tmp_path / "out.en"
    first = quiet_run(BatchJob(source, out), engine)
    assert first.translated == 10 and not first.already_done
    again = quiet_run(BatchJob(source, out), engine)
    assert again.already_done and again.translated == 0
    beam_3 = EngineBackend(package, "", Decoding(beam_size=3))
    with pytest.raises(RnnmtError, match=r"belongs to another job: decoding\.beam_size \(0 ≠ 3\)"):
        quiet_run(BatchJob(source, out, decoding=Decoding(beam_size=3)), beam_3)
    write_lines(source, [src for src, _ in PAIRS[:11]])
    with pytest.raises(RnnmtError, match=r"input_bytes .*input_lines \(10 ≠ 11\).*--restart"):
        quiet_run(BatchJob(source, out), engine)
    assert quiet_run(BatchJob(source, out, restart=True), engine).translated == 11
    progress_path(out).unlink()
    with pytest.raises(RnnmtError, match="is not a batch job's output"):
        quiet_run(BatchJob(source, out), engine)


def test_tsv_round_trip_keeps_the_other_columns(engine: EngineBackend, package: Path, tmp_path: Path) -> None:
    rows = [f"{i}\t{src}\tnote {i}" for i, (src, _) in enumerate(PAIRS[:6])]
    rows[2:2] = ["", "7\t\tempty source", "too few columns", f"8\t{BAD}\tbad"]
    source = write_lines(tmp_path / "in.tsv", rows)  # the extension says TSV, column 1 by default
    fmt = LineFormat("tsv", column=2, n_best=2)
    decoding = Decoding(beam_size=3, n_best=2)
    result = quiet_run(
        BatchJob(source, tmp_path / "out.tsv", fmt, decoding, chunk_lines=3),
        EngineBackend(package, "", decoding),
    )
    assert result.state.failed == 2
    lines = (tmp_path / "out.tsv").read_text().split("\n")[:-1]
    assert len(lines) == len(rows)
    assert lines[2] == ""
    assert lines[3] == "7\t\tempty source\t\t0.0000\t\t"
    assert lines[4] == ""
    assert lines[5] == "8\t\tbad\t\t\t\t"
    for row, line in zip(rows[:2] + rows[6:], lines[:2] + lines[6:], strict=True):
        number, src, note = row.split("\t")
        cells = line.split("\t")
        assert cells[:3] == [number, TRANSLATION[src], note] and cells[3] == TRANSLATION[src]
        assert len(cells) == 7 and float(cells[4]) >= float(cells[6])
    failures = [json.loads(line) for line in errors_path(tmp_path / "out.tsv").read_text().splitlines()]
    assert [f["line"] for f in failures] == [5, 6]
    assert failures[0]["reason"] == "the line has 1 TSV columns, not the 2 --tsv-column needs"


def test_jsonl_round_trip_keeps_the_other_fields(engine: EngineBackend, tmp_path: Path) -> None:
    records = [{"id": i, "text": src, "meta": {"tags": ["a", "ü"]}} for i, (src, _) in enumerate(PAIRS[:5])]
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    lines[1:1] = ["", "not json", '{"id": 9}', json.dumps({"id": 10, "text": BAD})]
    source = write_lines(tmp_path / "in.jsonl", lines)
    fmt = LineFormat("jsonl", output_field="en")
    result = quiet_run(BatchJob(source, tmp_path / "out.jsonl", fmt, chunk_lines=2), engine)
    assert result.state.failed == 3
    out = (tmp_path / "out.jsonl").read_text().split("\n")[:-1]
    assert out[1:4] == ["", "", ""]
    assert json.loads(out[4]) == {"id": 10, "text": BAD, "en": None}
    assert [json.loads(line) for line in out[:1] + out[5:]] == [
        {**r, "en": TRANSLATION[r["text"]]} for r in records
    ]
    failures = [json.loads(line) for line in errors_path(tmp_path / "out.jsonl").read_text().splitlines()]
    assert [f["line"] for f in failures] == [3, 4, 5]
    assert failures[1]["reason"] == "the line has no string field 'text'"


# -- Ray Data ------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own, when it copies its settings
def test_a_ray_job_gives_what_the_in_process_job_gives(
    engine: EngineBackend, package: Path, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    from rnnmt.serving.batch.ray import translate_files

    inputs = [write_lines(tmp_path / "a.es", corpus(3)[0]), write_lines(tmp_path / "b.es", corpus(1)[0])]
    write_lines(tmp_path / "empty.es", [])
    inputs.append(tmp_path / "empty.es")
    for path in inputs:
        quiet_run(BatchJob(path, tmp_path / (path.name + ".local"), chunk_lines=16), engine)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 << 20)
    try:
        results = translate_files(inputs, tmp_path / "ray", package, workers=2, chunk_lines=16)
    finally:
        ray.shutdown()
    assert {p.name: (r.lines, r.failed) for p, r in results.items()} == {
        "a.es": (len(corpus(3)[0]), 1),
        "b.es": (len(corpus(1)[0]), 1),
        "empty.es": (0, 0),
    }
    for path in inputs:
        assert (tmp_path / "ray" / path.name).read_bytes() == (tmp_path / (path.name + ".local")).read_bytes()
    assert_same_output(tmp_path / "ray" / "a.es", tmp_path / "a.es.local")
    # The same through `rnnmt batch ray`, on a local Ray instance of its own.
    command = [RNNMT, "batch", "ray", *inputs, "--out-dir", tmp_path / "cli", "--model", package]
    done = subprocess.run(
        [*map(str, command), "--workers", "2", "--chunk-lines", "16", "--address", "local"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 3, done.stderr[-3000:]  # lines the model refuses: left empty, listed
    assert "1 line failed" in done.stdout
    for path in inputs:
        assert (tmp_path / "cli" / path.name).read_bytes() == (tmp_path / (path.name + ".local")).read_bytes()


def test_batch_imports_neither_torch_nor_the_server() -> None:
    run_without_torch(
        "import rnnmt.serving.batch.job, rnnmt.serving.batch.backends, rnnmt.serving.batch.shards\n"
        "assert not [m for m in sys.modules if m.startswith('rnnmt.serving.server')], 'server imported'\n"
        "from rnnmt.cli import build_parser\n"
        "build_parser().parse_args(['batch', 'in.txt', '--out', 'out.txt', '--model', 'm'])\n"
    )


@pytest.mark.parametrize("failing", ["a commit", "the last write"])
def test_a_full_disk_stops_the_job_with_what_is_saved_and_the_job_resumes_from_it(
    engine: EngineBackend,
    source: Path,
    reference: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
) -> None:
    """ENOSPC at a write of the progress file (simulated there): the job stops, its message counts the
    lines the progress file holds, and the same job resumes from them to the uninterrupted output."""
    import errno
    import os

    from rnnmt.serving.batch import checkpoint

    out, lines = tmp_path / "out.en", len(source.read_text().splitlines())
    writes = 1 + -(-lines // 8) + 1  # the fresh state, one per chunk of 8 lines, the end
    fail_at = writes // 2 if failing == "a commit" else writes
    write_state, calls = checkpoint.write_state, 0

    def full_disk(output: Path, state: checkpoint.JobState) -> None:
        nonlocal calls
        calls += 1
        if calls == fail_at:
            temporary = checkpoint.temporary_path(progress_path(output))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(temporary))
        write_state(output, state)

    monkeypatch.setattr(checkpoint, "write_state", full_disk)
    with pytest.raises(RnnmtError) as caught:
        quiet_run(BatchJob(source, out, chunk_lines=8), engine)
    saved = read_state(out)
    assert saved is not None and not saved.done and calls == fail_at
    assert saved.next_line == (lines if failing == "the last write" else (fail_at - 2) * 8)
    assert f"cannot write {out}.progress.tmp: {os.strerror(errno.ENOSPC)}" in str(caught.value)
    assert f"\n{saved.next_line:,} of {lines:,} lines are done and saved;" in str(caught.value)
    monkeypatch.undo()
    assert quiet_run(BatchJob(source, out, chunk_lines=8), engine).translated == lines - saved.next_line
    assert_same_output(out, reference)
