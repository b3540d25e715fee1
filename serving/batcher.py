"""Dynamic batching: sentences of concurrent requests share engine batches, on one worker thread per core.

A request becomes a :class:`Job`; its sentences are queued one by one in the *group* of its model and
decoding options, so a batch only ever mixes sentences that are searched with the same settings, and
each sentence gets exactly the result it would get alone (the engine's padding is exact). The queue is
bounded in sentences: a job that does not fit is refused at once with :class:`QueueFull`.

The workers share each model's engine (a search keeps its state locally; onnxruntime releases the GIL
while it runs, so workers compute in parallel). An idle worker serves, among the groups that are
*ready*, the one whose oldest sentence has waited longest. A group is ready when it holds a full batch
(``max_batch_rows`` rows: sentences × beam), when its oldest sentence has waited ``max_queue_delay``, or
when no worker is busy: sentences wait for company only while the server is working, when more requests
are on their way (their clients are waiting for answers), never on an idle server. Deadlines are checked when a batch is formed: an expired job fails with
:class:`DeadlineExpired` and none of its sentences is computed. A cancelled job's queued sentences are
removed at once. With ``batching=False`` a worker takes one whole job at a time (the engine still splits
it into batches of ``max_batch_rows``), which is what serving the engine without a batcher does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from rnnmt.errors import RnnmtError
from rnnmt.serving.beam_search import Hypothesis, SearchOptions
from rnnmt.serving.engine import Engine
from rnnmt.serving.metrics import Metrics
from rnnmt.serving.translator import TextHypothesis

logger = logging.getLogger(__name__)


class QueueFull(RnnmtError):
    """The queue has no room for a job's sentences."""


class DeadlineExpired(RnnmtError):
    """A job's deadline passed before its sentences were translated."""


class BatcherClosed(RnnmtError):
    """The batcher is shutting down."""


@dataclass(eq=False)
class Job:
    """One request's sentences, translated with one model and one set of options, completed together.

    ``sources`` are source ids (pieces + EOS, at least one piece each). When the job is finished,
    ``on_done(job)`` is called once, from a worker thread, with either ``results`` (per source its
    ``n_best`` translations, best first) or ``error`` set. A cancelled job is never reported.
    """

    model: str
    options: SearchOptions
    sources: Sequence[Sequence[int]]
    deadline: float | None  # time.monotonic() seconds; None = none
    on_done: Callable[[Job], None]
    results: list[list[TextHypothesis]] = field(init=False)
    error: Exception | None = None
    finished: bool = False
    pending: int = field(init=False)

    def __post_init__(self) -> None:
        self.results = [[] for _ in self.sources]
        self.pending = len(self.sources)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and self.deadline <= now


@dataclass(eq=False)
class _Item:
    """One queued sentence: ``job.sources[index]``, queued at ``arrival``."""

    job: Job
    index: int
    arrival: float


GroupKey = tuple[str, SearchOptions]  # model name, decoding options


class Batcher:
    """Queues jobs and translates them with ``engines[model]`` on ``workers`` threads."""

    def __init__(
        self,
        engines: Mapping[str, Engine],
        metrics: Metrics,
        *,
        workers: int = 1,
        max_batch_rows: int = 256,
        max_queue_delay: float = 0.002,
        max_queued: int = 4096,
        batching: bool = True,
    ) -> None:
        self.engines = engines
        self.metrics = metrics
        self.max_batch_rows = max_batch_rows
        self.max_queue_delay = max_queue_delay
        self.max_queued = max_queued
        self.batching = batching
        self._groups: dict[GroupKey, deque[_Item]] = {}
        self._queued = 0
        self._closed = False
        self._busy = 0  # workers translating a batch
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._work, name=f"rnnmt-worker-{w}", daemon=True) for w in range(workers)
        ]
        metrics.watch_queue(lambda: self._queued)

    @property
    def queued(self) -> int:
        """Sentences waiting for a worker."""
        return self._queued

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(
        self,
        model: str,
        sources: Sequence[Sequence[int]],
        options: SearchOptions,
        deadline: float | None,
        on_done: Callable[[Job], None],
    ) -> Job:
        """Queue a job of checked, non-empty sources; :class:`QueueFull` or :class:`BatcherClosed` if not."""
        job = Job(model, options, sources, deadline, on_done)
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if self._queued + len(sources) > self.max_queued:
                raise QueueFull(
                    f"the server is busy: {self._queued} sentences are queued, {len(sources)} more would "
                    f"exceed its limit of {self.max_queued}; retry later"
                )
            now = time.monotonic()
            self._groups.setdefault((model, options), deque()).extend(
                _Item(job, i, now) for i in range(len(sources))
            )
            self._queued += len(sources)
            self.metrics.received.labels(model).inc(len(sources))
            self._cond.notify()  # one idle worker; it wakes another if it leaves work behind
        return job

    def cancel(self, job: Job, reason: str = "cancelled") -> None:
        """Forget a job: its queued sentences are dropped (counted for ``reason``), results of those in
        progress are discarded, and it is not reported."""
        with self._cond:
            self._end(job, reason)

    def close(self) -> None:
        """Stop the workers after their current batch; queued jobs fail with :class:`BatcherClosed`."""
        error = BatcherClosed("the server shut down before the request was translated")
        with self._cond:
            self._closed = True
            jobs = {item.job: None for group in self._groups.values() for item in group}
            ended = [job for job in jobs if self._end(job, "shutdown", error)]
            self._cond.notify_all()
        self._report(ended)
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    # -- under the lock ------------------------------------------------------------------------------

    def _end(self, job: Job, reason: str, error: Exception | None = None) -> bool:
        """Mark a job finished with ``error`` and drop its queued sentences, counted as dropped for
        ``reason``; False if it had already finished."""
        if job.finished:
            return False
        job.finished, job.error = True, error
        key = (job.model, job.options)
        group = self._groups.get(key, deque())
        kept = deque(item for item in group if item.job is not job)
        if kept:
            self._groups[key] = kept
        else:
            self._groups.pop(key, None)
        if dropped := len(group) - len(kept):
            self._queued -= dropped
            self.metrics.dropped.labels(reason).inc(dropped)
        return True

    def _ready(self, key: GroupKey, group: deque[_Item], now: float) -> bool:
        return (
            not self.batching
            or self._busy == 0
            or len(group) * key[1].beam_size >= self.max_batch_rows
            or now - group[0].arrival >= self.max_queue_delay
        )

    def _next_batch(self) -> tuple[GroupKey, list[_Item], list[Job]] | None:
        """Wait for a ready group and take a batch from it: (group, its items, jobs that expired).

        Returns None once the batcher is closed.
        """
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                ready = [
                    (group[0].arrival, key)
                    for key, group in self._groups.items()
                    if self._ready(key, group, now)
                ]
                if not ready:
                    oldest = min((g[0].arrival for g in self._groups.values()), default=None)
                    self._cond.wait(None if oldest is None else oldest + self.max_queue_delay - now)
                    continue
                key = min(ready, key=lambda r: r[0])[1]
                items, expired = self._take(key, now)
                if items or expired:
                    self._busy += bool(items)
                    if self._groups:
                        self._cond.notify()
                    return key, items, expired
            return None

    def _take(self, key: GroupKey, now: float) -> tuple[list[_Item], list[Job]]:
        """Pop a batch from a group's head, ending the jobs whose deadline has passed instead."""
        limit = max(1, self.max_batch_rows // key[1].beam_size) if self.batching else self.max_queued
        items: list[_Item] = []
        expired: list[Job] = []
        while (group := self._groups.get(key)) and len(items) < limit:
            job = group[0].job
            if job.expired(now):
                self._end(
                    job, "deadline", DeadlineExpired("the deadline passed while the request was queued")
                )
                expired.append(job)
                continue
            while group and group[0].job is job and len(items) < limit:
                items.append(group.popleft())
                self._queued -= 1
            if not group:
                del self._groups[key]
            if not self.batching:
                break
        return items, expired

    # -- on a worker ---------------------------------------------------------------------------------

    def _work(self) -> None:
        while (taken := self._next_batch()) is not None:
            key, items, expired = taken
            self._report(expired)
            if not items:
                continue
            try:
                self._translate(key, items)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify()  # a partial batch waiting for company may go now

    def _translate(self, key: GroupKey, items: list[_Item]) -> None:
        """Search one batch; if it fails and mixes jobs, search each job alone so only the culprit fails."""
        model, options = key
        engine = self.engines[model]
        start = time.perf_counter()
        try:
            found = engine.translate_ids([item.job.sources[item.index] for item in items], options)
            texts = iter(engine.detokenize([h.tokens for hyps in found for h in hyps]))
        except Exception as exc:
            jobs = list({item.job: None for item in items})
            if len(jobs) > 1:
                for job in jobs:
                    self._translate(key, [item for item in items if item.job is job])
                return
            logger.exception("translation failed", extra={"fields": {"model": model}})
            with self._cond:
                ended = self._end(jobs[0], "failed", exc)
            self._report([jobs[0]] if ended else [])
            return
        self._record(model, options, items, found, time.perf_counter() - start)
        done: list[Job] = []
        with self._cond:
            for item, hyps in zip(items, found, strict=True):
                job = item.job
                job.results[item.index] = [TextHypothesis(next(texts), h.score) for h in hyps]
                job.pending -= 1
                if job.pending == 0 and not job.finished:
                    job.finished = True
                    done.append(job)
        self._report(done)

    def _record(
        self,
        model: str,
        options: SearchOptions,
        items: list[_Item],
        found: list[list[Hypothesis]],
        seconds: float,
    ) -> None:
        m = self.metrics
        m.batch_rows.observe(len(items) * options.beam_size)
        m.batch_seconds.observe(seconds)
        m.sentences.labels(model).inc(len(items))
        m.tokens.labels(model, "source").inc(sum(len(i.job.sources[i.index]) - 1 for i in items))
        m.tokens.labels(model, "target").inc(sum(len(hyps[0].tokens) for hyps in found))

    @staticmethod
    def _report(jobs: list[Job]) -> None:
        for job in jobs:
            job.on_done(job)
