"""The batcher: its scheduling with a fake runner whose searches step only when the test lets them (no
sleeps, no timing), and its results with the tiny model's translator."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from rnnmt.serving.core.beam_search import Hypothesis
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.translator import TextHypothesis, Translator
from rnnmt.serving.server.batcher import (
    Batcher,
    BatcherClosed,
    DeadlineExpired,
    Job,
    Model,
    QueueFull,
    TranslatorRunner,
)
from rnnmt.serving.server.metrics import Metrics
from rnnmt.serving.server.model_repository import ServedModel

STEPS = 3  # decoder steps of every fake sentence
BROKEN = 666  # a source id whose search fails
OPTIONS = SearchOptions(beam_size=2)


class Steps:
    """The fake searches' shared clock. A step takes one second of its time, is logged, then waits for
    a permit to end: between :meth:`wait` and the next permit, the worker is held at the end of a step,
    before its next decision, so the test can change what that decision sees."""

    def __init__(self) -> None:
        self.time = 0.0
        self.permits = threading.Semaphore(0)
        self.log: list[tuple[int, ...]] = []  # per step taken: the first id of each source stepped
        self.batches: list[tuple[int, ...]] = []  # per search started: the first id of each source
        self.changed = threading.Condition()

    def wait(self, logged: int) -> None:
        """Wait until ``logged`` steps have been taken."""
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.log) >= logged, timeout=30)

    def finish(self) -> None:
        """Let every step from now on end at once."""
        self.permits.release(10_000)

    def record(self, entry: tuple[int, ...], into: list[tuple[int, ...]]) -> None:
        with self.changed:
            into.append(entry)
            self.changed.notify_all()


class FakeSearch:
    """Every sentence takes :data:`STEPS` steps; its hypothesis is its own source ids. A step with a
    :data:`BROKEN` source fails."""

    def __init__(self, steps: Steps, sources: Sequence[Sequence[int]]) -> None:
        self.steps, self.sources = steps, [list(s) for s in sources]
        self.alive = np.arange(len(sources))
        self.dropped: set[int] = set()
        self.taken = 0
        steps.record(tuple(s[0] for s in self.sources), steps.batches)

    @property
    def done(self) -> bool:
        return len(self.alive) == 0

    def step(self) -> None:
        stepped = tuple(self.sources[i][0] for i in self.alive)
        self.steps.time += 1.0
        self.steps.record(stepped, self.steps.log)
        if BROKEN in stepped:
            raise RuntimeError("a broken source")
        assert self.steps.permits.acquire(timeout=30), "the test never let this step end"
        self.taken += 1
        if self.taken == STEPS:
            self.alive = self.alive[:0]

    def drop(self, sources: Sequence[int]) -> None:
        self.dropped.update(int(i) for i in sources)
        self.alive = np.array([i for i in self.alive if i not in self.dropped], dtype=np.int64)

    def results(self) -> list[list[Hypothesis]]:
        return [[] if i in self.dropped else [Hypothesis(s, -1.0)] for i, s in enumerate(self.sources)]


class FakeRunner:
    def __init__(self, steps: Steps) -> None:
        self.steps = steps

    def search(self, model: Model, sources: Sequence[Sequence[int]], options: SearchOptions) -> FakeSearch:
        return FakeSearch(self.steps, sources)

    def texts(self, model: Model, found: Sequence[Sequence[Hypothesis]]) -> list[list[TextHypothesis]]:
        return [[TextHypothesis(" ".join(map(str, h.tokens)), h.score) for h in hyps] for hyps in found]


@contextmanager
def fake_batcher(start: bool = True, **settings: Any) -> Iterator[tuple[Batcher, Steps, Metrics]]:
    """A batcher on the fake runner; one worker, decisions after every step, no waiting for company."""
    steps, metrics = Steps(), Metrics()
    settings = {"workers": 1, "quantum": 0.0, "max_queue_delay": 0.0, **settings}
    batcher = Batcher(FakeRunner(steps), metrics, clock=lambda: steps.time, **settings)
    if start:
        batcher.start()
    try:
        yield batcher, steps, metrics
    finally:
        steps.finish()  # a worker held in a step reaches its next decision
        batcher.close()


TOY = ServedModel("toy", "", None, "")  # the fake runner needs no translator


def submit(batcher: Batcher, *ids: int, deadline: float | None = None) -> Job:
    return batcher.submit(TOY, [[i, 3] for i in ids], OPTIONS, deadline)


def texts(job: Job) -> list[str]:
    return [hyps[0].text for hyps in job.future.result(timeout=30)]


def count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_light_jobs_go_first_come_first_served() -> None:
    with fake_batcher(heavy_after=60.0) as (b, steps, _):
        first = submit(b, 1)
        steps.wait(1)
        second = submit(b, 2)
        steps.finish()
        assert texts(first) == ["1 3"] and texts(second) == ["2 3"]
    assert steps.log == [(1,)] * STEPS + [(2,)] * STEPS


def test_a_heavy_job_yields_to_a_light_one_at_the_next_step() -> None:
    with fake_batcher(heavy_after=1.5) as (b, steps, _):
        heavy = submit(b, 1)
        steps.wait(1)
        steps.permits.release()
        steps.wait(2)  # two seconds of compute at the end of this step: heavy
        light = submit(b, 2)
        steps.finish()
        assert texts(light) == ["2 3"] and texts(heavy) == ["1 3"]
    assert steps.log == [(1,), (1,), (2,), (2,), (2,), (1,)]


def test_heavy_jobs_take_turns_least_served_first() -> None:
    with fake_batcher(heavy_after=0.5) as (b, steps, _):
        first = submit(b, 1)
        steps.wait(1)
        second = submit(b, 2)
        steps.finish()
        assert texts(first) == ["1 3"] and texts(second) == ["2 3"]
    # ties go to the batch already running, so after the newcomer's first step each runs two in a row
    assert steps.log == [(1,), (2,), (2,), (1,), (1,), (2,)]


def test_a_cancelled_job_leaves_its_running_batch_at_the_next_step() -> None:
    with fake_batcher(start=False) as (b, steps, metrics):
        kept, cancelled = submit(b, 1), submit(b, 2)  # queued together: one batch
        b.start()
        steps.wait(1)
        b.cancel(cancelled)
        steps.finish()
        assert texts(kept) == ["1 3"]
    assert steps.log == [(1, 2)] + [(1,)] * (STEPS - 1)
    assert cancelled.future.cancelled()
    assert count(metrics, "rnnmt_sentences_dropped_total", reason="cancelled") == 1
    assert count(metrics, "rnnmt_sentences_translated_total", model="toy", version="") == 1


def test_cancelling_the_future_cancels_the_job() -> None:
    with fake_batcher() as (b, steps, metrics):
        job = submit(b, 1, 2)
        steps.wait(1)
        job.future.cancel()
        other = submit(b, 3)
        steps.finish()
        assert texts(other) == ["3 3"]
    assert steps.log == [(1, 2)] + [(3,)] * STEPS
    assert count(metrics, "rnnmt_sentences_dropped_total", reason="cancelled") == 2


def test_a_deadline_passing_mid_batch_fails_the_job_and_drops_its_rows() -> None:
    with fake_batcher() as (b, steps, metrics):
        job = submit(b, 1, deadline=float("inf"))
        steps.wait(1)
        job.deadline = 0.0  # passed
        later = submit(b, 2)
        steps.finish()
        with pytest.raises(DeadlineExpired):
            job.future.result(timeout=30)
        assert texts(later) == ["2 3"]
    assert steps.log == [(1,)] + [(2,)] * STEPS
    assert count(metrics, "rnnmt_sentences_dropped_total", reason="deadline") == 1


def test_an_expired_job_is_dropped_when_its_batch_is_formed() -> None:
    with fake_batcher(start=False) as (b, steps, metrics):
        expired, alive = submit(b, 1, deadline=0.0), submit(b, 2)
        b.start()
        steps.finish()
        assert texts(alive) == ["2 3"]
        with pytest.raises(DeadlineExpired):
            expired.future.result(timeout=30)
    assert steps.batches == [(2,)]
    assert count(metrics, "rnnmt_sentences_dropped_total", reason="deadline") == 1


def test_a_failing_batch_is_retried_job_by_job_so_only_the_culprit_fails() -> None:
    with fake_batcher(start=False) as (b, steps, _):
        good, bad = submit(b, 1), submit(b, BROKEN)
        b.start()
        steps.finish()
        assert texts(good) == ["1 3"]
        with pytest.raises(RuntimeError, match="broken"):
            bad.future.result(timeout=30)
    assert sorted(steps.batches) == [(1,), (1, BROKEN), (BROKEN,)]


def test_batches_never_mix_options_and_hold_at_most_max_batch_rows() -> None:
    with fake_batcher(start=False, max_batch_rows=4) as (b, steps, _):
        wide = b.submit(TOY, [[i, 3] for i in (1, 2, 3)], SearchOptions(beam_size=2), None)
        greedy = b.submit(TOY, [[4, 3]], SearchOptions(beam_size=1), None)
        b.start()
        steps.finish()
        assert texts(wide) == ["1 3", "2 3", "3 3"] and texts(greedy) == ["4 3"]
    assert sorted(steps.batches) == [(1, 2), (3,), (4,)]


def test_a_job_that_does_not_fit_the_queue_is_refused_at_once() -> None:
    with fake_batcher(start=False, max_queued=3) as (b, _, _):
        submit(b, 1, 2)
        with pytest.raises(QueueFull, match="limit of 3"):
            submit(b, 3, 4)


def test_close_fails_queued_and_running_jobs() -> None:
    with fake_batcher() as (b, steps, _):
        running = submit(b, 1)
        steps.wait(1)
        queued = submit(b, 2)
        closing = threading.Thread(target=b.close)
        closing.start()
        steps.finish()
        closing.join(30)
        assert not closing.is_alive()
        for job in (running, queued):
            with pytest.raises(BatcherClosed):
                job.future.result(timeout=30)
        with pytest.raises(BatcherClosed):
            submit(b, 3)
    assert steps.log == [(1,)]


# -- with the tiny model's translator ----------------------------------------------------------------

LONG = ["perro gato niño come bebe ve agua pan casa leche " * 2] * 6


@pytest.mark.parametrize("batching", [True, False])
def test_results_do_not_depend_on_scheduling(engine: Translator, batching: bool) -> None:
    """Jobs preempted every step, sharing batches or not, get what the translator gives each alone."""
    options = SearchOptions(beam_size=16, n_best=2, max_output_tokens=200)
    sentences = ["El perro come pan.", "Un gato bebe agua.", "El niño ve pan.", *LONG[:2]]
    batcher = Batcher(
        TranslatorRunner(),
        Metrics(),
        workers=2,
        quantum=0.0,
        heavy_after=1e-9,
        max_queue_delay=0.0,
        batching=batching,
    )
    batcher.start()
    try:
        orders = [sentences[i:] + sentences[:i] for i in range(5)]
        model = ServedModel("toy", "", engine, "")
        jobs = [batcher.submit(model, engine.tokenize(order), options, None) for order in orders]
        results = [job.future.result(timeout=60) for job in jobs]
    finally:
        batcher.close()
    for order, found in zip(orders, results, strict=True):
        alone = [engine.translate([sentence], options)[0] for sentence in order]
        assert [[h.text for h in hyps] for hyps in found] == [[h.text for h in hyps] for hyps in alone]
        scores = [h.score for hyps in found for h in hyps]
        assert scores == pytest.approx([h.score for hyps in alone for h in hyps], abs=1e-5)
