"""The batcher's scheduling, on the tiny model's engine, observed through job state and metrics (no timing):
abandoned rows leave a running batch, a heavy job yields to a light one, shutdown stops a batch midway."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.translator import Translator
from rnnmt.serving.server.batcher import Batcher, BatcherClosed, DeadlineExpired, Job
from rnnmt.serving.server.metrics import Metrics

LONG = ["perro gato niño come bebe ve agua pan casa leche " * 2] * 20  # a batch of many decoder steps
WIDE = SearchOptions(beam_size=16, max_output_tokens=200)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting for the batcher"
        time.sleep(0.001)


class Done:
    """An ``on_done`` callback that remembers the order in which jobs were reported."""

    def __init__(self) -> None:
        self.order: list[Job] = []
        self.event = threading.Event()

    def __call__(self, job: Job) -> None:
        self.order.append(job)
        self.event.set()


@contextmanager
def batcher(engine: Translator, **settings: float) -> Iterator[tuple[Batcher, Metrics]]:
    metrics = Metrics()
    b = Batcher({"toy": engine}, metrics, max_batch_rows=1024, max_queue_delay=0.0, **settings)  # type: ignore[arg-type]
    b.start()
    try:
        yield b, metrics
    finally:
        b.close()


def count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_cancelled_job_leaves_its_running_batch(engine: Translator) -> None:
    done = Done()
    with batcher(engine, quantum=0.0) as (b, metrics):
        big = b.submit("toy", engine.tokenize(LONG), WIDE, None, done)
        wait_until(lambda: big.service > 0)  # its batch is being searched
        b.cancel(big)
        small = b.submit("toy", engine.tokenize(["El perro come pan."]), SearchOptions(), None, done)
        assert done.event.wait(30)
    assert done.order == [small] and small.results[0][0].text == "The dog eats bread."
    assert count(metrics, "rnnmt_sentences_dropped_total", reason="cancelled") == len(LONG)
    assert count(metrics, "rnnmt_sentences_translated_total", model="toy") == 1


def test_a_heavy_job_yields_to_a_light_one(engine: Translator) -> None:
    done = Done()
    with batcher(engine, quantum=0.0, heavy_after=1e-6) as (b, _):
        big = b.submit("toy", engine.tokenize(LONG), WIDE, None, done)
        wait_until(lambda: big.service > 0)  # heavy after its first step
        small = b.submit("toy", engine.tokenize(["El perro come pan."]), SearchOptions(), None, done)
        wait_until(lambda: len(done.order) == 2)
    assert done.order == [small, big]
    assert small.results[0][0].text == "The dog eats bread."
    assert big.error is None and all(len(hyps) == 1 for hyps in big.results)


def test_light_jobs_are_served_first_come_first_served(engine: Translator) -> None:
    done = Done()
    with batcher(engine, quantum=0.0, heavy_after=60.0) as (b, _):
        first = b.submit("toy", engine.tokenize(LONG), WIDE, None, done)
        wait_until(lambda: first.service > 0)
        second = b.submit("toy", engine.tokenize(["El perro come pan."]), SearchOptions(), None, done)
        wait_until(lambda: len(done.order) == 2)
    assert done.order == [first, second]


def test_a_deadline_passing_mid_batch_drops_the_rows(engine: Translator) -> None:
    done = Done()
    with batcher(engine, quantum=0.0) as (b, metrics):
        job = b.submit("toy", engine.tokenize(LONG), WIDE, time.monotonic() + 60, done)
        wait_until(lambda: job.service > 0)
        job.deadline = time.monotonic()
        assert done.event.wait(30)
    assert isinstance(job.error, DeadlineExpired)
    assert count(metrics, "rnnmt_sentences_dropped_total", reason="deadline") == len(LONG)
    assert count(metrics, "rnnmt_sentences_translated_total", model="toy") == 0


def test_close_stops_a_batch_midway(engine: Translator) -> None:
    done = Done()
    with batcher(engine, quantum=0.0) as (b, metrics):
        job = b.submit("toy", engine.tokenize(LONG), WIDE, None, done)
        wait_until(lambda: job.service > 0)
        b.close()
    assert done.order == [job] and isinstance(job.error, BatcherClosed)
    assert count(metrics, "rnnmt_sentences_translated_total", model="toy") == 0


@pytest.mark.parametrize("batching", [True, False])
def test_results_do_not_depend_on_scheduling(engine: Translator, batching: bool) -> None:
    """Jobs preempted every step, sharing batches or not, get what the engine gives each sentence alone."""
    texts = ["El perro come pan.", "Un gato bebe agua.", "El niño ve pan.", *LONG[:2]]
    done = Done()
    with batcher(engine, quantum=0.0, heavy_after=1e-6, workers=2, batching=batching) as (b, _):
        jobs = [b.submit("toy", engine.tokenize(texts[i:] + texts[:i]), WIDE, None, done) for i in range(5)]
        wait_until(lambda: len(done.order) == len(jobs))
    for i, job in enumerate(jobs):
        expected = [engine.translate([text], WIDE)[0] for text in texts[i:] + texts[:i]]
        assert [[h.text for h in hyps] for hyps in job.results] == [[h.text for h in e] for e in expected]
        scores = [h.score for hyps in job.results for h in hyps]
        assert scores == pytest.approx([h.score for e in expected for h in e], abs=1e-5)
