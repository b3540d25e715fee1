"""The ``rnnmt.v1.Translator`` service: each request is checked once, then translated on the batcher.

Every request ends with a status code of its own: its errors become codes through one table,
:data:`STATUS`, and an unexpected exception becomes INTERNAL with its traceback in the log."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import Any, NoReturn, TypeVar

import grpc

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.segment import Segmented
from rnnmt.serving.core.translator import TextHypothesis, Translator, join_translations
from rnnmt.serving.documents.html import html_texts, put_back
from rnnmt.serving.server import protocol
from rnnmt.serving.server.api_keys import KeyRing, OverLimit, TooLarge
from rnnmt.serving.server.batcher import Batcher, BatcherClosed, DeadlineExpired, QueueFull
from rnnmt.serving.server.interceptors import bearer_of
from rnnmt.serving.server.metrics import Metrics
from rnnmt.serving.server.model_repository import (
    MAX_NAME_CHARS,
    ModelRepository,
    ServedModel,
    UnknownModel,
    shorten,
)
from rnnmt.v1 import translator_pb2 as pb
from rnnmt.v1 import translator_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Translator"].full_name
STREAM_WINDOW = 16
"""Requests of one TranslateStream translated at once; the stream is not read further meanwhile."""

INLINE_TOKENIZE_CHARS = 1 << 16
"""Requests with more characters are tokenized on a thread (:data:`PREPARING`), so the event loop keeps
serving others."""

PREPARING = 2
"""Requests over :data:`INLINE_TOKENIZE_CHARS` tokenized at once, each on a thread of the service's. One
holds its texts cut into sentences and pieces meanwhile (some 30 times the text's size), so further big
requests wait their turn (cutting sentences is Python, holding the GIL: more threads would not end the
work much sooner)."""

WORDS = re.compile(r"\w[^\n]*")
"""From a word character to the end of its line. A word character always tokenizes to a piece, so a text,
or a line of a text cut into sentences, with one gives at least one source to translate."""

GLANCE_CHARS = 256
"""Characters of each text of a big request read on the event loop for a first, quick lower bound of its
sources, before it waits for a thread (:data:`PREPARING`) to be counted in full and tokenized."""

DEADLINE_SLACK = 0.05
"""A call that gRPC cancels this close to its deadline (seconds) was ended by the deadline: the server's
view of a client's deadline (arrival time + the timeout sent) runs late by the request's transit time,
so gRPC's own deadline timer fires a few milliseconds before it."""

Request = TypeVar("Request")
Response = TypeVar("Response")


class InvalidRequest(RnnmtError):
    """A request field is out of range; the message names it."""


class TranslationFailed(RnnmtError):
    """The search of a request's sentences failed; the batcher logged why."""


STATUS: dict[type[Exception], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    TooLarge: grpc.StatusCode.INVALID_ARGUMENT,
    OverLimit: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UnknownModel: grpc.StatusCode.NOT_FOUND,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    BatcherClosed: grpc.StatusCode.UNAVAILABLE,
    DeadlineExpired: grpc.StatusCode.DEADLINE_EXCEEDED,
    TranslationFailed: grpc.StatusCode.INTERNAL,
}
"""The status code of each error a request may end with, its message going to the caller. Any other
exception is unexpected: INTERNAL, with its traceback in the log."""


def status_of(error: Exception) -> grpc.StatusCode | None:
    """The status code of a request's error in :data:`STATUS`; None for an unexpected one."""
    return next((status for kind, status in STATUS.items() if isinstance(error, kind)), None)


class ServiceError(Exception):
    """How :meth:`TranslatorService._observe` ends a request: the status code and message to abort with,
    and for a key over its limit the seconds after which to retry."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after

    async def abort(self, context: grpc.aio.ServicerContext) -> NoReturn:
        if self.retry_after:
            context.set_trailing_metadata((("retry-after", str(self.retry_after)),))
        await context.abort(self.code, self.message)


async def settle(tasks: set[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and return once every one of them has ended, even if this coroutine is cancelled
    meanwhile (it then raises CancelledError at the end)."""
    for task in tasks:
        task.cancel()
    interrupted = False
    while waiting := [task for task in tasks if not task.done()]:
        try:
            await asyncio.wait(waiting)
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError


def fewest_sources(texts: Sequence[str], split: bool, chars: int = sys.maxsize) -> int:
    """A lower bound of the sources to translate that ``texts`` give, one per text or, with ``split``,
    one per sentence (a line is one sentence or more), counted without tokenizing them (:data:`WORDS`),
    from the first ``chars`` characters of each text."""
    if split:
        return sum(1 for text in texts for _ in WORDS.finditer(text, 0, chars))
    return sum(1 for text in texts if WORDS.search(text, 0, chars))


class TranslatorService(pb_grpc.TranslatorServicer):
    """The ``rnnmt.v1.Translator`` methods over a model repository and a batcher."""

    repository: ModelRepository
    batcher: Batcher

    def __init__(self, metrics: Metrics, max_texts_per_request: int) -> None:
        self.metrics = metrics
        self.keys = KeyRing()  # the server's, once it starts
        self.max_texts_per_request = max_texts_per_request
        self._preparing = ThreadPoolExecutor(PREPARING, thread_name_prefix="rnnmt-prepare")

    def attach(self, repository: ModelRepository, batcher: Batcher) -> None:
        """Start serving these models (calls are refused by the server until then)."""
        self.repository = repository
        self.batcher = batcher

    async def Translate(
        self, request: pb.TranslateRequest, context: grpc.aio.ServicerContext
    ) -> pb.TranslateResponse:
        try:
            return await self._observe("Translate", request, context, self._translate)
        except ServiceError as exc:
            await exc.abort(context)

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        try:
            return await self._observe("GetModelInfo", request, context, self._model_info)
        except ServiceError as exc:
            await exc.abort(context)

    async def TranslateStream(
        self, request_iterator: AsyncIterator[pb.TranslateRequest], context: grpc.aio.ServicerContext
    ) -> None:
        """Up to :data:`STREAM_WINDOW` requests are translated concurrently; responses keep request order.

        The call reads on one task and translates each request on a task of its own, and it does not
        end before every one of them has ended (:func:`settle`): once gRPC finishes a call, its context
        must not be touched, and a task still reading it crashes the process. That is also why this
        handler writes with ``context.write`` instead of being an async generator, which gRPC would
        leave suspended at a ``yield``, to be closed by the garbage collector after the call ended.
        """
        loop = asyncio.get_running_loop()
        pending: asyncio.Queue[asyncio.Future[pb.TranslateResponse] | None] = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_WINDOW)
        tasks: set[asyncio.Future[Any]] = set()

        def track(future: asyncio.Future[Any]) -> asyncio.Future[Any]:
            tasks.add(future)
            future.add_done_callback(forget)
            return future

        def forget(future: asyncio.Future[Any]) -> None:
            tasks.discard(future)
            if not future.cancelled():
                future.exception()  # a response the call no longer waits for: its error was recorded

        async def read() -> None:
            try:
                async with aclosing(aiter(request_iterator)) as requests:  # type: ignore[type-var]
                    async for request in requests:
                        await slots.acquire()
                        pending.put_nowait(
                            track(
                                asyncio.ensure_future(
                                    self._observe("TranslateStream", request, context, self._translate)
                                )
                            )
                        )
            except Exception as exc:  # the request stream broke: end the call with the error, in order
                failed: asyncio.Future[pb.TranslateResponse] = track(loop.create_future())
                failed.set_exception(exc)
                pending.put_nowait(failed)
            pending.put_nowait(None)

        track(asyncio.ensure_future(read()))
        try:
            while (current := await pending.get()) is not None:
                response = await current
                slots.release()
                await context.write(response)
        except ServiceError as exc:
            await exc.abort(context)
        finally:
            await settle(tasks)

    # -- one request -----------------------------------------------------------------------------------

    async def _observe(
        self,
        method: str,
        request: Request,
        context: grpc.aio.ServicerContext,
        handler: Callable[[Request, grpc.aio.ServicerContext], Awaitable[Response]],
    ) -> Response:
        """Run ``handler``, then count, time and log the request. An error it raises becomes a
        :class:`ServiceError` with its code in :data:`STATUS`; anything unexpected becomes INTERNAL."""
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        peer = context.peer()
        try:
            return await handler(request, context)
        except asyncio.CancelledError:  # by the client, or by gRPC at the deadline
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= DEADLINE_SLACK
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            known = status_of(exc)
            if known is not None:
                code = known
                raise ServiceError(code, str(exc), getattr(exc, "retry_after", 0)) from None
            code = grpc.StatusCode.INTERNAL
            logger.exception("request failed", extra={"fields": {"method": method, "peer": peer}})
            raise ServiceError(code, "internal error: the server logged it") from None
        finally:
            self.metrics.record(
                method,
                code.name,
                time.perf_counter() - start,
                model=shorten(getattr(request, "model", "") or self.repository.default),
                texts=len(getattr(request, "texts", ())),
                peer=peer,
            )

    async def _model_info(self, request: pb.GetModelInfoRequest, _context: Any) -> pb.ModelInfo:
        return self.model_info(request)

    def model_info(self, request: pb.GetModelInfoRequest) -> pb.ModelInfo:
        """Every version served of every model, or of the model ``request.model`` names."""
        repository = self.repository
        models = repository.models
        if request.model:
            name = self._model(request.model).name
            models = {name: models.get(name, {})}
        return protocol.model_info(models, repository.default, self.max_texts_per_request)

    async def _translate(
        self, request: pb.TranslateRequest, context: grpc.aio.ServicerContext
    ) -> pb.TranslateResponse:
        key = self.keys.find(bearer_of(context.invocation_metadata() or ()))
        self.keys.spend(key, sum(len(text) for text in request.texts))
        return await self.translate(request, context.time_remaining())

    async def translate(self, request: pb.TranslateRequest, timeout: float | None) -> pb.TranslateResponse:
        """Check the request once (model, size, options, room in the queue, sources), then translate its
        non-empty texts within ``timeout`` seconds (None: no deadline). Its errors are those of
        :data:`STATUS`."""
        texts, limit = request.texts, self.max_texts_per_request
        if len(texts) > limit:
            raise InvalidRequest(f"texts has {len(texts)} entries; at most {limit} per request")
        if request.format not in ("", "text", "html"):
            raise InvalidRequest(f"format must be text or html, not {shorten(request.format)!r}")
        if request.format == "html":
            return await self._translate_html(request, timeout)
        model = self._model(request.model, request.model_version)
        translator = model.translator
        options = translator.default_options.overlay(protocol.decoding(request.options))
        try:
            translator.check_options(options)
        except RnnmtError as exc:
            raise InvalidRequest(f"options.{exc}") from None
        if sum(len(text) for text in texts) > INLINE_TOKENIZE_CHARS:
            self._check_room(fewest_sources(texts, request.split_sentences, GLANCE_CHARS))  # at once
            work = self._preparing.submit(self._prepare, translator, texts, request.split_sentences)
            # a cancelled call cancels the work, unless it has started
            sources, segmented = await asyncio.wrap_future(work)
        else:
            sources, segmented = self._prepare(translator, texts, request.split_sentences)
        todo = [i for i, ids in enumerate(sources) if ids]  # an empty text translates to ""
        self._check_room(len(todo))
        results = [[TextHypothesis("", 0.0)] for _ in sources]
        if todo:
            found = await self._run(model, [sources[i] for i in todo], options, timeout)
            for i, hyps in zip(todo, found, strict=True):
                results[i] = hyps
        if segmented is not None:
            results = join_translations(segmented, results)
        return protocol.translate_response(model, results)

    async def translate_many(
        self, request: pb.TranslateRequest, timeout: float | None
    ) -> pb.TranslateResponse:
        """:meth:`translate` for any number of texts: :attr:`max_texts_per_request` at a time, one part after
        the other, all within ``timeout`` seconds, answered as one response."""
        step, deadline = self.max_texts_per_request, None if timeout is None else time.monotonic() + timeout
        out = pb.TranslateResponse()
        for start in range(0, max(1, len(request.texts)), step):
            part = pb.TranslateRequest()
            part.CopyFrom(request)
            del part.texts[:]
            part.texts.extend(request.texts[start : start + step])
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            response = await self.translate(part, left)
            out.translations.extend(response.translations)
            out.model, out.model_version = response.model, response.model_version
        return out

    async def _translate_html(
        self, request: pb.TranslateRequest, timeout: float | None
    ) -> pb.TranslateResponse:
        """Each text an HTML document: its texts between tags translated sentence by sentence and put back
        (:mod:`rnnmt.serving.documents.html`), scored with their mean score."""
        if request.options.n_best > 1:
            raise InvalidRequest("options.n_best must be 1 with format html")
        if sum(len(text) for text in request.texts) > INLINE_TOKENIZE_CHARS:
            parsed = await asyncio.wrap_future(
                self._preparing.submit(lambda: [html_texts(t) for t in request.texts])
            )
        else:
            parsed = [html_texts(text) for text in request.texts]
        inner = pb.TranslateRequest(
            model=request.model,
            model_version=request.model_version,
            options=request.options,
            split_sentences=True,
        )
        inner.texts.extend(t for texts, _, _ in parsed for t in texts)
        response = await self.translate_many(inner, timeout)
        found = iter(response.translations)
        out = pb.TranslateResponse(model=response.model, model_version=response.model_version)
        for texts, spans, text in parsed:
            best = [next(found).hypotheses[0] for _ in texts]
            score = sum(h.score for h in best) / len(best) if best else 0.0
            out.translations.add().hypotheses.add(
                text=put_back(text, spans, [h.text for h in best]), score=score
            )
        return out

    def _model(self, name: str, version: str = "") -> ServedModel:
        """The served model a request names; a name is refused unread past :data:`MAX_NAME_CHARS`."""
        for field, value in (("model", name), ("model_version", version)):
            if len(value) > MAX_NAME_CHARS:
                raise InvalidRequest(f"{field} is {len(value)} characters long; at most {MAX_NAME_CHARS}")
        return self.repository.get(name, version)

    def _prepare(
        self, translator: Translator, texts: Sequence[str], split: bool
    ) -> tuple[list[list[int]], list[Segmented] | None]:
        """The checked sources of ``texts``, one per text or, with ``split``, one per sentence, once the
        queue has room for a lower bound of them (:func:`fewest_sources`): a request that cannot be
        queued is refused before it is cut and tokenized."""
        self._check_room(fewest_sources(texts, split))
        try:
            return translator.prepare_split(texts) if split else (translator.prepare(texts), None)
        except RnnmtError as exc:
            raise InvalidRequest(str(exc)) from None

    def _check_room(self, sources: int) -> None:
        """Refuse ``sources`` to translate (a lower bound of them, or all) that the queue can never hold
        (INVALID_ARGUMENT: retrying would not help) or has no room for now (RESOURCE_EXHAUSTED)."""
        limit = self.batcher.max_queued
        if sources > limit:
            raise InvalidRequest(
                f"the request has at least {sources} sentences to translate, more than the server's queue "
                f"can ever hold ({limit}); send them in smaller requests"
            )
        self.batcher.check_room(sources)

    async def _run(
        self, model: ServedModel, sources: list[list[int]], options: SearchOptions, timeout: float | None
    ) -> list[list[TextHypothesis]]:
        """Translate sources on the batcher, waiting at most ``timeout`` seconds (None: no deadline)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.batcher.submit(model, sources, options, deadline)
        result = asyncio.wrap_future(job.future)
        # Once this call stops waiting, the job may still fail (the batcher closing): that error is nobody's.
        result.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:  # shielded: the job is cancelled below, with the reason
            return await asyncio.wait_for(asyncio.shield(result), timeout)
        except asyncio.TimeoutError:
            self.batcher.cancel(job, "deadline")
            raise DeadlineExpired("the deadline passed before the translation was done") from None
        except asyncio.CancelledError:  # by the client, or by gRPC when the deadline passed first
            expired = deadline is not None and time.monotonic() >= deadline - DEADLINE_SLACK
            self.batcher.cancel(job, "deadline" if expired else "cancelled")
            raise
        except (DeadlineExpired, BatcherClosed):
            raise
        except Exception as exc:
            raise TranslationFailed("internal error while translating: the server logged it") from exc
