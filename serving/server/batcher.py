"""Dynamic batching and scheduling: sentences of concurrent requests share engine batches, and batches take
turns on one worker thread per core, a few decoder steps at a time.

**Batching.** A request becomes a :class:`Job`; its sentences are queued, shortest first, in the *group* of
its model (one served version of it: :class:`Model`) and decoding options, so a batch only ever mixes sentences searched with the same settings, and
each sentence gets exactly the result it would get alone (the engine's padding is exact, and a sentence's
rows are computed independently of the others). The queue is bounded in sentences: a job that does not
fit is refused at once with :class:`QueueFull`. A group is *ready* when it holds a full batch
(``max_batch_rows`` rows: sentences × beam), when its oldest sentence has waited ``max_queue_delay``, or
when no worker is busy: sentences wait for company only while the server is working, never on an idle
server. With ``batching=False`` a batch holds the sentences of one job only and never waits.

**Scheduling.** A batch is a :class:`Search` (for a model: :class:`~rnnmt.serving.core.beam_search.BeamSearch`,
made by :class:`TranslatorRunner`), which can be set aside between decoder steps and resumed later. A worker runs its batch for ``quantum`` seconds of steps, then
decides again what to run. A job is *light* until it has used ``heavy_after`` seconds of compute (its
share of each batch it is in, by rows), then *heavy*. Workers run light work first come, first served
(small requests do not slow each other down by preempting), and heavy work only when no light work
waits, the least-served heavy job first (big requests share what small ones leave). So a big request
delays a small one by one quantum at most, and two big requests progress together. Batches set aside
keep their state and count as *live*; a new heavy batch starts only while fewer than ``max_live`` are
live, which bounds memory.

**Cancellation and deadlines.** Between steps, a worker drops the rows of sentences whose job was
cancelled, failed or has passed its deadline (it then fails with :class:`DeadlineExpired`): abandoned work
stops within one decoder step. Queued sentences of a cancelled job are dropped at once, those of an
expired job when a batch is formed.

**Results.** :meth:`Batcher.submit` returns a :class:`Job` whose ``future`` gets, per source, its ``n_best``
translations, or the exception that ended the job (:class:`DeadlineExpired`, :class:`BatcherClosed`, or
the error of a failed search: a batch that fails is searched again job by job, so only the culprit
fails). A cancelled job's future is cancelled and never set.

The batcher knows searches only through a :class:`Runner`, so it can be tested with a fake one; a job holds
its model, so a model no longer served elsewhere lives on until its last job ends. The workers share
each model's translator (a search keeps its state locally; onnxruntime releases the GIL
while it runs, so workers compute in parallel).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.beam_search import BeamSearch, Hypothesis
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.translator import TextHypothesis, Translator
from rnnmt.serving.server.metrics import Metrics

logger = logging.getLogger(__name__)


class QueueFull(RnnmtError):
    """The queue has no room for a job's sentences."""


class DeadlineExpired(RnnmtError):
    """A job's deadline passed before its sentences were translated."""


class BatcherClosed(RnnmtError):
    """The batcher is shutting down."""


class Search(Protocol):
    """One batch's search, advanced a step at a time (see :class:`~rnnmt.serving.core.beam_search.BeamSearch`)."""

    @property
    def done(self) -> bool: ...

    @property
    def alive(self) -> np.ndarray:
        """Batch indices of the sources still searched."""

    def step(self) -> None: ...

    def drop(self, sources: Sequence[int]) -> None:
        """Stop searching these batch indices; the others are unaffected."""

    def results(self) -> list[list[Hypothesis]]:
        """Per source its hypotheses, best first (none for a dropped source)."""


class Model(Hashable, Protocol):
    """A job's model: one served version (:class:`~rnnmt.serving.server.model_repository.ServedModel`).
    Its name and version label the metrics."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def translator(self) -> Translator: ...


class Runner(Protocol):
    """What the batcher runs: searches of a model, and the texts of their hypotheses."""

    def search(self, model: Model, sources: Sequence[Sequence[int]], options: SearchOptions) -> Search:
        """Start (encode) the search of a batch of checked, non-empty sources."""

    def texts(self, model: Model, found: Sequence[Sequence[Hypothesis]]) -> list[list[TextHypothesis]]:
        """The detokenized ``found`` hypotheses, in the same shape."""


class TranslatorRunner:
    """The :class:`Runner` of served models: beam searches over each model's translator."""

    def search(self, model: Model, sources: Sequence[Sequence[int]], options: SearchOptions) -> BeamSearch:
        return BeamSearch(model.translator.backend, sources, options)

    def texts(self, model: Model, found: Sequence[Sequence[Hypothesis]]) -> list[list[TextHypothesis]]:
        texts = iter(model.translator.detokenize([h.tokens for hyps in found for h in hyps]))
        return [[TextHypothesis(next(texts), h.score) for h in hyps] for hyps in found]


@dataclass(eq=False)
class Job:
    """One request's sentences, translated with one model and one set of options, completed together:
    ``future`` gets per source its ``n_best`` translations, best first, or the exception that ended
    the job. ``sources`` are source ids (pieces + EOS, at least one piece each)."""

    model: Model
    options: SearchOptions
    sources: Sequence[Sequence[int]]
    deadline: float | None  # time.monotonic() seconds; None = none
    order: int = 0  # arrival order
    arrival: float = 0.0  # time.monotonic() at submission
    future: Future[list[list[TextHypothesis]]] = field(default_factory=Future)
    results: list[list[TextHypothesis]] = field(init=False)
    finished: bool = False
    error: Exception | None = None
    reason: str = ""  # why it ended early: cancelled, deadline, failed, shutdown
    pending: int = field(init=False)
    service: float = 0.0  # seconds of compute spent on its sentences

    def __post_init__(self) -> None:
        self.results = [[] for _ in self.sources]
        self.pending = len(self.sources)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and self.deadline <= now


GroupKey = tuple[Model, SearchOptions]
Group = dict[Job, deque[int]]  # queued sentence indices per job, jobs in arrival order
Priority = tuple[int, float]  # (0, arrival order) for light work, (1, seconds served) for heavy work


@dataclass(eq=False)
class _Run:
    """A batch being searched: per batch index its (job, sentence index); ``search`` is None until the
    worker that starts it encodes it; ``jobs`` are those that still have rows in it."""

    key: GroupKey
    items: list[tuple[Job, int]]
    search: Search | None = None
    seconds: float = 0.0
    jobs: set[Job] = field(init=False)

    def __post_init__(self) -> None:
        self.jobs = {job for job, _ in self.items}


class Batcher:
    """Queues jobs and runs their searches with ``runner`` on ``workers`` threads."""

    def __init__(
        self,
        runner: Runner,
        metrics: Metrics,
        *,
        workers: int = 1,
        max_batch_rows: int = 256,
        max_queue_delay: float = 0.002,
        max_queued: int = 4096,
        batching: bool = True,
        quantum: float = 0.02,
        heavy_after: float = 0.5,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.runner = runner
        self.metrics = metrics
        self.max_batch_rows = max_batch_rows
        self.max_queue_delay = max_queue_delay
        self.max_queued = max_queued
        self.batching = batching
        self.quantum = quantum
        self.heavy_after = heavy_after
        self.clock = clock  # measures compute: quanta and each job's service
        self.max_live = 2 * workers
        self._groups: dict[GroupKey, Group] = {}
        self._runs: set[_Run] = set()  # live: running or parked
        self._parked: list[_Run] = []
        self._queued = 0
        self._order = itertools.count()
        self._closed = False
        self._busy = 0  # workers running a batch
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._work, name=f"rnnmt-worker-{w}", daemon=True) for w in range(workers)
        ]
        metrics.watch_queue(lambda: self._queued)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(
        self,
        model: Model,
        sources: Sequence[Sequence[int]],
        options: SearchOptions,
        deadline: float | None,
    ) -> Job:
        """Queue a job of checked, non-empty sources; :class:`QueueFull` or :class:`BatcherClosed` if not."""
        shortest_first = deque(sorted(range(len(sources)), key=lambda i: len(sources[i])))
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            self.check_room(len(sources))
            job = Job(model, options, sources, deadline, next(self._order), time.monotonic())
            self._groups.setdefault((model, options), {})[job] = shortest_first
            self._queued += len(sources)
            self.metrics.received.labels(model.name, model.version).inc(len(sources))
            self._cond.notify()  # one idle worker; it wakes another if it leaves work behind
        job.future.add_done_callback(lambda future: self.cancel(job) if future.cancelled() else None)
        return job

    def check_room(self, sentences: int) -> None:
        """:class:`QueueFull` unless the queue has room for ``sentences`` more now (as :meth:`submit` checks)."""
        with self._cond:
            if self._queued + sentences > self.max_queued:
                raise QueueFull(
                    f"the server is busy: {self._queued} sentences are queued, {sentences} more would "
                    f"exceed its limit of {self.max_queued}; retry later"
                )

    def cancel(self, job: Job, reason: str = "cancelled") -> None:
        """Forget a job: its queued sentences are dropped (counted for ``reason``), those being searched
        leave their batch at the next step, and its future is cancelled."""
        with self._cond:
            self._end(job, reason)
        job.future.cancel()

    def close(self) -> None:
        """Fail every job with :class:`BatcherClosed` and stop the workers (within one decoder step)."""
        error = BatcherClosed("the server shut down before the request was translated")
        with self._cond:
            self._closed = True
            jobs = {job: None for group in self._groups.values() for job in group}
            jobs.update((job, None) for run in self._runs for job in run.jobs)
            ended = [job for job in jobs if self._end(job, "shutdown", error)]
            self._cond.notify_all()
        self._report(ended)
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    # -- under the lock ------------------------------------------------------------------------------

    def _end(self, job: Job, reason: str, error: Exception | None = None) -> bool:
        """Mark a job finished with ``error`` and drop its queued sentences, counted as dropped for
        ``reason``; False if it had already finished. Its rows in batches leave at their next step."""
        if job.finished:
            return False
        job.finished, job.error, job.reason = True, error, reason
        key = (job.model, job.options)
        group = self._groups.get(key, {})
        if job in group:
            dropped = len(group.pop(job))
            self._queued -= dropped
            self.metrics.dropped.labels(reason).inc(dropped)
            if not group:
                del self._groups[key]
        return True

    def _priority(self, jobs: Iterable[Job]) -> Priority:
        """The priority of work for ``jobs``: that of its most urgent unfinished job (smallest first);
        work left only for finished jobs comes first, to be cleared at once."""
        return min(
            [
                (0, job.order) if job.service < self.heavy_after else (1, job.service)
                for job in jobs
                if not job.finished
            ],
            default=(0, -1),
        )

    def _ready(self, key: GroupKey, group: Group, now: float) -> bool:
        return (
            not self.batching
            or self._busy == 0
            or sum(map(len, group.values())) * key[1].beam_size >= self.max_batch_rows
            or now - next(iter(group)).arrival >= self.max_queue_delay
        )

    def _choose(self, run: _Run | None, now: float) -> _Run | GroupKey | None:
        """The most urgent of: ``run`` (going on), a parked run, a new batch of a ready group; ties go to
        work already started, so a job's batches finish before more of them start."""
        candidates: list[tuple[Priority, int, _Run | GroupKey]] = []
        if run is not None:
            candidates.append((self._priority(run.jobs), 0, run))
        candidates.extend((self._priority(p.jobs), 1, p) for p in self._parked)
        for key, group in self._groups.items():
            if self._ready(key, group, now):
                priority = self._priority(group)
                if priority[0] == 0 or len(self._runs) < self.max_live:
                    candidates.append((priority, 2, key))
        return min(candidates, key=lambda c: c[:2])[2] if candidates else None

    def _take(self, key: GroupKey, now: float) -> tuple[list[tuple[Job, int]], list[Job]]:
        """A batch from a group, most urgent jobs first, ending the jobs whose deadline has passed instead."""
        group = self._groups[key]
        limit = max(1, self.max_batch_rows // key[1].beam_size)
        items: list[tuple[Job, int]] = []
        expired: list[Job] = []
        for job in sorted(group, key=lambda j: self._priority([j])):
            if job.expired(now):
                self._end(
                    job, "deadline", DeadlineExpired("the deadline passed while the request was queued")
                )
                expired.append(job)
                continue
            indices = group[job]
            while indices and len(items) < limit:
                items.append((job, indices.popleft()))
                self._queued -= 1
            if not indices:
                del group[job]
            if len(items) == limit or not self.batching:
                break
        if not group:
            self._groups.pop(key, None)
        return items, expired

    def _next(self, run: _Run | None) -> tuple[_Run | None, list[Job]]:
        """The run a worker goes on with (``run`` itself, a parked one or a new batch; None once closed),
        and the jobs found expired meanwhile, for the caller to report. An unfinished ``run`` is parked
        if other work goes first."""
        expired: list[Job] = []
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                choice = self._choose(run, now)
                if choice is None:  # wait for work, or for a group's delay to end
                    delays = [
                        next(iter(g)).arrival + self.max_queue_delay - now for g in self._groups.values()
                    ]
                    self._cond.wait(min((d for d in delays if d > 0), default=None))
                    continue
                if choice is run:
                    return run, expired
                if run is not None:
                    self._parked.append(run)
                    self._busy -= 1
                    run = None
                    self._cond.notify()  # an idle worker may take it
                if isinstance(choice, _Run):
                    self._parked.remove(choice)
                    self._busy += 1
                    return choice, expired
                items, late = self._take(choice, now)
                expired.extend(late)
                if items:
                    fresh = _Run(choice, items)
                    self._runs.add(fresh)
                    self._busy += 1
                    if self._groups:
                        self._cond.notify()
                    return fresh, expired
            return None, expired

    # -- on a worker ---------------------------------------------------------------------------------

    def _work(self) -> None:
        run: _Run | None = None
        while True:
            run, expired = self._next(run)
            self._report(expired)
            if run is None:
                return
            try:
                self._advance(run)
            except Exception as exc:
                self._failed(run, exc)
                run = None
                continue
            assert run.search is not None
            if run.search.done:
                self._complete(run)
                run = None

    def _advance(self, run: _Run) -> None:
        """Start the run if it is new, then search for a quantum, dropping abandoned rows between steps."""
        model, options = run.key
        start = self.clock()
        if run.search is None:
            sources = [job.sources[index] for job, index in run.items]
            run.search = self.runner.search(model, sources, options)
        search = run.search
        rows = Counter(run.items[i][0] for i in search.alive)  # each job's share of the rows
        while True:
            self._drop_abandoned(run)
            if search.done:
                break
            search.step()
            if self.clock() - start >= self.quantum:
                break
        elapsed = self.clock() - start
        run.seconds += elapsed
        total = max(1, sum(rows.values()))
        with self._cond:
            for job, count in rows.items():
                job.service += elapsed * count / total

    def _drop_abandoned(self, run: _Run) -> None:
        """Drop the rows of jobs that were cancelled, failed or passed their deadline."""
        now = time.monotonic()
        if not any(job.finished or job.expired(now) for job in run.jobs):
            return
        assert run.search is not None
        with self._cond:
            expired = [job for job in run.jobs if not job.finished and job.expired(now)]
            for job in expired:
                self._end(
                    job, "deadline", DeadlineExpired("the deadline passed before the translation was done")
                )
            gone = {job for job in run.jobs if job.finished}
            run.jobs -= gone
            dropped = [i for i in run.search.alive if run.items[i][0] in gone]
            for reason, count in Counter(run.items[i][0].reason for i in dropped).items():
                self.metrics.dropped.labels(reason).inc(count)
        self._report(expired)
        run.search.drop(dropped)

    def _complete(self, run: _Run) -> None:
        """Hand a finished search's translations to their jobs; report the jobs that are now complete."""
        model, options = run.key
        assert run.search is not None
        found = run.search.results()
        kept = [i for i, hyps in enumerate(found) if hyps]
        texts = iter(self.runner.texts(model, [found[i] for i in kept]))
        done: list[Job] = []
        with self._cond:
            self._runs.discard(run)
            self._busy -= 1
            for i in kept:
                job, index = run.items[i]
                job.results[index] = next(texts)
                job.pending -= 1
                if job.pending == 0 and not job.finished:
                    job.finished = True
                    done.append(job)
            self._cond.notify()  # a partial batch waiting for company may go now
        m = self.metrics
        m.batch_rows.observe(len(run.items) * options.beam_size)
        m.batch_seconds.observe(run.seconds)
        m.sentences.labels(model.name, model.version).inc(len(kept))
        m.tokens.labels(model.name, model.version, "source").inc(
            sum(len(run.items[i][0].sources[run.items[i][1]]) - 1 for i in kept)
        )
        m.tokens.labels(model.name, model.version, "target").inc(sum(len(found[i][0].tokens) for i in kept))
        self._report(done)

    def _failed(self, run: _Run, exc: Exception) -> None:
        """A search failed: if it mixed jobs, each is searched again on its own (parked), so only the
        culprit fails; a single job fails with ``exc``."""
        with self._cond:
            self._runs.discard(run)
            self._busy -= 1
            jobs = {job: None for job, _ in run.items if not job.finished}
            if len(jobs) > 1:
                for job in jobs:
                    alone = _Run(run.key, [item for item in run.items if item[0] is job])
                    self._runs.add(alone)
                    self._parked.append(alone)
                self._cond.notify_all()
                return
            model = run.key[0]
            logger.exception(
                "translation failed",
                exc_info=exc,
                extra={"fields": {"model": model.name, "version": model.version}},
            )
            ended = [job for job in jobs if self._end(job, "failed", exc)]
        self._report(ended)

    @staticmethod
    def _report(jobs: list[Job]) -> None:
        """Resolve the futures of finished jobs (outside the lock: their callbacks run here)."""
        for job in jobs:
            try:
                if job.error is None:
                    job.future.set_result(job.results)
                else:
                    job.future.set_exception(job.error)
            except InvalidStateError:  # cancelled by its waiter meanwhile
                pass
