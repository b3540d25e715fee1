"""The translation service: :meth:`TranslatorService.translate` checks a call once and translates it on
the batcher, for every door; and the ``rnnmt.v1.Translator`` gRPC methods over it.

Every request ends with a status code of its own (:func:`~rnnmt.serving.server.call.observe`): its
errors become codes through one table, and an unexpected exception becomes INTERNAL with its traceback
in the log."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import replace
from typing import Any, NoReturn, TypeVar

import grpc

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.segment import Segmented, split_sentences
from rnnmt.serving.core.translator import TextHypothesis, Translator, join_translations
from rnnmt.serving.documents.html import Segment, html_segments, rebuild_text, render
from rnnmt.serving.server import protocol
from rnnmt.serving.server.api_keys import ApiKey, KeyRing
from rnnmt.serving.server.batcher import Batcher, BatcherClosed, DeadlineExpired
from rnnmt.serving.server.call import (
    FORMATS,
    CallError,
    InvalidRequest,
    Observed,
    TranslationCall,
    TranslationFailed,
    observe,
)
from rnnmt.serving.server.detect import LanguageDetector
from rnnmt.serving.server.interceptors import bearer_of
from rnnmt.serving.server.metrics import Metrics
from rnnmt.serving.server.model_repository import (
    MAX_NAME_CHARS,
    ModelRepository,
    ServedModel,
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


def abort_with(error: CallError, context: grpc.aio.ServicerContext) -> Awaitable[NoReturn]:
    """End a gRPC call with ``error``'s code and message (and ``retry-after`` trailing metadata)."""
    if error.retry_after:
        context.set_trailing_metadata((("retry-after", str(error.retry_after)),))
    return context.abort(error.code, error.message)


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

    def __init__(self, metrics: Metrics, max_texts_per_request: int, char_limit: int = 0) -> None:
        self.metrics = metrics
        self.keys = KeyRing()  # the server's, once it starts
        self.max_texts_per_request = max_texts_per_request
        self.char_limit = char_limit
        self.detector = LanguageDetector(lambda: self.repository)
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
        except CallError as exc:
            await abort_with(exc, context)

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        try:
            return await self._observe("GetModelInfo", request, context, self._model_info)
        except CallError as exc:
            await abort_with(exc, context)

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
        except CallError as exc:
            await abort_with(exc, context)
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
        """Run ``handler`` within :func:`~rnnmt.serving.server.call.observe`: its errors become
        :class:`CallError`; a call cancelled this close to its deadline ended by the deadline."""

        async def work(seen: Observed) -> Response:
            seen.model = shorten(getattr(request, "model", "") or self.repository.default)
            seen.texts = len(getattr(request, "texts", ()))
            return await handler(request, context)

        def cancelled() -> grpc.StatusCode:
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= DEADLINE_SLACK
            return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED

        return await observe(self.metrics, method, context.peer(), work, cancelled)

    async def _model_info(self, request: pb.GetModelInfoRequest, _context: Any) -> pb.ModelInfo:
        return self.model_info(request.model)

    def model_info(self, name: str = "") -> pb.ModelInfo:
        """Every version served of every model, or of the model ``name`` (empty: all)."""
        repository = self.repository
        models = repository.models
        if name:
            name = self.model(name).name
            models = {name: models.get(name, {})}
        return protocol.model_info(models, repository.default, self.max_texts_per_request)

    async def _translate(
        self, request: pb.TranslateRequest, context: grpc.aio.ServicerContext
    ) -> pb.TranslateResponse:
        key = self.keys.find(bearer_of(context.invocation_metadata() or ()))
        self.admit(key, sum(len(text) for text in request.texts))
        model = self.model(request.model, request.model_version)
        call = protocol.translation_call(request, context.time_remaining())
        return protocol.translate_response(model, *await self.answer(model, call))

    def admit(self, key: ApiKey | None, characters: int) -> None:
        """Refuse a call of ``characters`` over the server's limit (INVALID_ARGUMENT), or over the limits
        of ``key`` (None: a server without keys); else count it against the key."""
        if self.char_limit and characters > self.char_limit:
            raise InvalidRequest(
                f"the texts have {characters} characters; at most {self.char_limit} per call on this server"
            )
        self.keys.spend(key, characters)

    def model(self, name: str, version: str = "") -> ServedModel:
        """The served model a call names (empty: the default; its latest version); a name is refused
        unread past :data:`MAX_NAME_CHARS`."""
        for field, value in (("model", name), ("model_version", version)):
            if len(value) > MAX_NAME_CHARS:
                raise InvalidRequest(f"{field} is {len(value)} characters long; at most {MAX_NAME_CHARS}")
        return self.repository.get(name, version)

    async def translate(self, model: ServedModel, call: TranslationCall) -> list[list[TextHypothesis]]:
        """Check the call once (size, format, options, room in the queue, sources), then translate its
        texts with ``model``: per text, its hypotheses, best first (an empty text translates to "").
        Its errors are those of :data:`~rnnmt.serving.server.call.STATUS`."""
        texts, limit = call.texts, self.max_texts_per_request
        if len(texts) > limit:
            raise InvalidRequest(f"texts has {len(texts)} entries; at most {limit} per request")
        if call.format not in FORMATS:
            raise InvalidRequest(f"format must be text or html, not {shorten(call.format)!r}")
        if call.format == "html":
            return await self._translate_html(model, call)
        translator = model.translator
        options = translator.default_options.overlay(call.decoding)
        try:
            translator.check_options(options)
        except RnnmtError as exc:
            raise InvalidRequest(f"options.{exc}") from None
        if sum(len(text) for text in texts) > INLINE_TOKENIZE_CHARS:
            self._check_room(fewest_sources(texts, call.split, GLANCE_CHARS))  # at once
            work = self._preparing.submit(self._prepare, translator, texts, call.split)
            # a cancelled call cancels the work, unless it has started
            sources, segmented = await asyncio.wrap_future(work)
        else:
            sources, segmented = self._prepare(translator, texts, call.split)
        todo = [i for i, ids in enumerate(sources) if ids]  # an empty text translates to ""
        self._check_room(len(todo))
        results = [[TextHypothesis("", 0.0)] for _ in sources]
        if todo:
            found = await self._run(model, [sources[i] for i in todo], options, call.timeout)
            for i, hyps in zip(todo, found, strict=True):
                results[i] = hyps
        if segmented is not None:
            results = join_translations(segmented, results)
        return results

    async def answer(
        self, model: ServedModel, call: TranslationCall
    ) -> tuple[list[list[TextHypothesis]], list[tuple[str, float]] | None]:
        """:meth:`translate`, and with ``call.detect_language`` each text's language (language,
        confidence) among every language served, detected meanwhile."""
        if not call.detect_language:
            return await self.translate(model, call), None
        translating = asyncio.ensure_future(self.translate(model, call))
        detecting = asyncio.ensure_future(self.detector.detect(call.texts, self.detector.languages()))
        try:
            return await translating, await detecting
        finally:
            await settle({translating, detecting})

    async def translate_many(self, model: ServedModel, call: TranslationCall) -> list[list[TextHypothesis]]:
        """:meth:`translate` for any number of texts: :attr:`max_texts_per_request` at a time, one part
        after the other, all within the call's timeout."""
        step, timeout = self.max_texts_per_request, call.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        results: list[list[TextHypothesis]] = []
        for start in range(0, len(call.texts), step):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            part = replace(call, texts=call.texts[start : start + step], timeout=left)
            results.extend(await self.translate(model, part))
        return results

    async def _translate_html(self, model: ServedModel, call: TranslationCall) -> list[list[TextHypothesis]]:
        """Each text an HTML document: its segments (:mod:`rnnmt.serving.documents.html`) cut into
        sentences, translated one by one, and put back, inline tags placed by the model's attention
        (aligned one sentence at a time, on a thread: a sentence's placement depends on it alone); scored
        with the mean score of its sentences."""
        if call.decoding.n_best > 1:
            raise InvalidRequest("options.n_best must be 1 with format html")
        deadline = None if call.timeout is None else time.monotonic() + call.timeout
        translator = model.translator
        language, inline = translator.manifest.source_language, translator.attention is not None

        def parse() -> list[list[tuple[Segment, Segmented]]]:
            return [
                [
                    (segment, split_sentences(segment.text, language))
                    for segment in html_segments(text, inline)
                ]
                for text in call.texts
            ]

        big = sum(len(text) for text in call.texts) > INLINE_TOKENIZE_CHARS
        parsed = await asyncio.wrap_future(self._preparing.submit(parse)) if big else parse()
        sentences = [s for segments in parsed for _, cut in segments for s in cut.sentences]
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        inner = replace(call, texts=sentences, format="text", split=False, timeout=left)
        found = iter([hypotheses[0] for hypotheses in await self.translate_many(model, inner)])
        translated = [[(segment, cut, [next(found) for _ in cut.sentences]) for segment, cut in segments]
                      for segments in parsed]  # fmt: skip
        pairs = [(source, best.text) for segments in translated for segment, cut, bests in segments
                 if segment.elements for source, best in zip(cut.sentences, bests, strict=True)]  # fmt: skip
        aligned = iter(
            await asyncio.wrap_future(self._preparing.submit(lambda: [translator.align(*p) for p in pairs]))
            if pairs
            else []
        )
        results = []
        for text, segments in zip(call.texts, translated, strict=True):
            rendered = [
                render(
                    segment,
                    cut,
                    [b.text for b in bests],
                    [next(aligned) for _ in bests] if segment.elements else [],
                )
                for segment, cut, bests in segments
            ]
            scores = [b.score for _, _, bests in segments for b in bests]
            score = sum(scores) / len(scores) if scores else 0.0
            results.append([TextHypothesis(rebuild_text(text, [s for s, _, _ in segments], rendered), score)])
        return results

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
        except TimeoutError:
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
