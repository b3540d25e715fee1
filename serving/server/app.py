"""`rnnmt serve`: the gRPC translation server (``rnnmt.v1.Translator``, health, reflection, metrics).

The server runs on asyncio (grpc.aio): the event loop parses, validates and tokenizes requests, then
hands their sentences to the :class:`~rnnmt.serving.server.batcher.Batcher`, whose worker threads translate
them in shared batches and wake the waiting call. No thread is held by a waiting call, so thousands of
concurrent calls cost memory for their sentences only, which the batcher's queue bounds.

Lifecycle: the port opens first, with health NOT_SERVING and calls refused with UNAVAILABLE while the
models load and translate a warm-up text; then health turns SERVING. On SIGTERM or SIGINT health turns
NOT_SERVING, new calls are refused, calls in flight get ``grace_seconds`` to finish, and :func:`serve`
returns. Every request is isolated: whatever it holds, it ends with a status code of its own, and an
unexpected exception becomes INTERNAL with its traceback in the log.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.options import MAX_BEAM_SIZE, MAX_OUTPUT_TOKENS, Decoding, SearchOptions
from rnnmt.serving.core.translator import TextHypothesis
from rnnmt.serving.server.batcher import Batcher, BatcherClosed, DeadlineExpired, Job, QueueFull
from rnnmt.serving.server.config import ServerConfig
from rnnmt.serving.server.interceptors import (
    AvailabilityInterceptor,
    BearerTokenInterceptor,
    MalformedRequestInterceptor,
    read_tokens,
)
from rnnmt.serving.server.metrics import Metrics, log_json_to_stderr, stderr_as_json
from rnnmt.serving.server.model_repository import ModelRepository, ServedModel, UnknownModel
from rnnmt.v1 import translator_pb2 as pb
from rnnmt.v1 import translator_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Translator"].full_name
STREAM_WINDOW = 16
"""Requests of one TranslateStream translated at once; the stream is not read further meanwhile."""

INLINE_TOKENIZE_CHARS = 1 << 16
"""Requests with more characters are tokenized on a thread, so the event loop keeps serving others."""

Request = TypeVar("Request")
Response = TypeVar("Response")


class ServiceError(Exception):
    """Ends a request with a gRPC status code and a message for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def search_options(options: pb.DecodingOptions, model: ServedModel) -> SearchOptions:
    """A request's options over the model's defaults (0 / absent = default), checked by its engine."""
    decoding = Decoding(
        beam_size=options.beam_size,
        n_best=options.n_best,
        length_penalty=options.length_penalty if options.HasField("length_penalty") else None,
        max_output_tokens=options.max_output_tokens,
    )
    resolved = model.default_options.overlay(decoding)
    try:
        model.engine.check_options(resolved)
    except RnnmtError as exc:
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"options.{exc}") from None
    return resolved


def model_message(model: ServedModel, max_texts_per_request: int) -> pb.Model:
    """The ModelInfo entry of a served model."""
    manifest, defaults = model.manifest, model.default_options
    scores = {
        key: float(value)
        for key, value in manifest.training.items()
        if key.endswith(("bleu", "chrf")) and isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    return pb.Model(
        name=model.name,
        source_language=manifest.source_language,
        target_language=manifest.target_language,
        version=model.version,
        rnnmt_version=manifest.rnnmt_version,
        quantization=manifest.quantization or "",
        scores=scores,
        defaults=pb.DecodingOptions(
            beam_size=defaults.beam_size,
            n_best=defaults.n_best,
            length_penalty=defaults.length_penalty,
            max_output_tokens=defaults.max_output_tokens,
        ),
        limits=pb.Limits(
            max_input_tokens=manifest.max_input_tokens,
            max_texts_per_request=max_texts_per_request,
            max_beam_size=MAX_BEAM_SIZE,
            max_output_tokens=MAX_OUTPUT_TOKENS,
        ),
    )


def translation_message(hypotheses: list[TextHypothesis]) -> pb.Translation:
    return pb.Translation(hypotheses=[pb.Hypothesis(text=h.text, score=h.score) for h in hypotheses])


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


class TranslatorService(pb_grpc.TranslatorServicer):
    """The ``rnnmt.v1.Translator`` methods over a model repository and a batcher."""

    repository: ModelRepository
    batcher: Batcher

    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics

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
            await context.abort(exc.code, exc.message)

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        try:
            return await self._observe("GetModelInfo", request, context, self._model_info)
        except ServiceError as exc:
            await context.abort(exc.code, exc.message)

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
            await context.abort(exc.code, exc.message)
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
        """Run ``handler``, then count, time and log the request; anything unexpected becomes INTERNAL."""
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        peer = context.peer()
        try:
            return await handler(request, context)
        except ServiceError as exc:
            code = exc.code
            raise
        except asyncio.CancelledError:  # by the client, or by gRPC at the deadline
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            logger.exception("request failed", extra={"fields": {"method": method, "peer": peer}})
            raise ServiceError(code, "internal error: the server logged it") from None
        finally:
            self.metrics.record(
                method,
                code.name,
                time.perf_counter() - start,
                model=getattr(request, "model", "") or self.repository.default,
                texts=len(getattr(request, "texts", ())),
                peer=peer,
            )

    def _model(self, name: str) -> ServedModel:
        try:
            return self.repository.get(name)
        except UnknownModel as exc:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, str(exc)) from None

    async def _model_info(self, request: pb.GetModelInfoRequest, _context: Any) -> pb.ModelInfo:
        models = [self._model(request.model)] if request.model else list(self.repository.models.values())
        limit = self.config.max_texts_per_request
        return pb.ModelInfo(
            models=[model_message(m, limit) for m in models], default_model=self.repository.default
        )

    async def _translate(
        self, request: pb.TranslateRequest, context: grpc.aio.ServicerContext
    ) -> pb.TranslateResponse:
        model = self._model(request.model)
        texts = request.texts
        if len(texts) > self.config.max_texts_per_request:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"texts has {len(texts)} entries; at most {self.config.max_texts_per_request} per request",
            )
        options = search_options(request.options, model)
        if sum(len(text) for text in texts) > INLINE_TOKENIZE_CHARS:
            sources = await asyncio.to_thread(model.engine.tokenize, texts)
        else:
            sources = model.engine.tokenize(texts)
        try:
            model.engine.check_sources(sources)
        except RnnmtError as exc:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        todo = [i for i, ids in enumerate(sources) if ids]  # an empty text translates to ""
        results = [[TextHypothesis("", 0.0)] for _ in texts]
        if todo:
            found = await self._run(model.name, [sources[i] for i in todo], options, context.time_remaining())
            for i, hyps in zip(todo, found, strict=True):
                results[i] = hyps
        return pb.TranslateResponse(translations=[translation_message(h) for h in results], model=model.name)

    async def _run(
        self, model: str, sources: list[list[int]], options: SearchOptions, timeout: float | None
    ) -> list[list[TextHypothesis]]:
        """Translate sources on the batcher, waiting at most ``timeout`` seconds (None: no deadline)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def on_done(_job: Job) -> None:
            loop.call_soon_threadsafe(settle)

        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            job = self.batcher.submit(model, sources, options, deadline, on_done)
        except QueueFull as exc:
            raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
        except BatcherClosed as exc:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        try:
            await asyncio.wait_for(done, timeout)
        except asyncio.TimeoutError:
            self.batcher.cancel(job, "deadline")
            raise ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the translation was done"
            ) from None
        except asyncio.CancelledError:  # by the client, or by gRPC when the deadline passed first
            expired = deadline is not None and time.monotonic() >= deadline
            self.batcher.cancel(job, "deadline" if expired else "cancelled")
            raise
        if isinstance(job.error, DeadlineExpired):
            raise ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, str(job.error))
        if isinstance(job.error, BatcherClosed):
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, str(job.error))
        if job.error is not None:
            raise ServiceError(
                grpc.StatusCode.INTERNAL, "internal error while translating: the server logged it"
            )
        return job.results


class TranslationServer:
    """One server: gRPC (Translator, health, reflection), the models, the batcher and metrics."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config.validate()
        self.metrics = Metrics()
        self.health = health.aio.HealthServicer()
        self.port = 0
        self._unavailable: str | None = "the server is loading its models; retry shortly"
        self.service = TranslatorService(self.config, self.metrics)
        self._server: grpc.aio.Server | None = None
        self._batcher: Batcher | None = None

    def _credentials(self) -> grpc.ServerCredentials | None:
        """The TLS credentials, or None for plaintext; the files are checked with Python's ``ssl`` first,
        as gRPC reports any problem with them only as "Failed to bind"."""
        c = self.config
        if c.tls_cert is None or c.tls_key is None:
            return None
        try:
            pair = (c.tls_key.read_bytes(), c.tls_cert.read_bytes())
            client_ca = c.tls_client_ca.read_bytes() if c.tls_client_ca else None
        except OSError as exc:
            raise RnnmtError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from exc

        def encrypted() -> str:
            raise RnnmtError(f"--tls-key {c.tls_key} is encrypted; gRPC needs an unencrypted key")

        check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        for flag, path in (("--tls-cert", c.tls_cert), ("--tls-client-ca", c.tls_client_ca)):
            if path is None:
                continue
            try:
                check.load_verify_locations(path)
            except ssl.SSLError as exc:
                raise RnnmtError(f"{flag} {path} holds no PEM certificate: {exc.reason}") from exc
        try:
            check.load_cert_chain(c.tls_cert, c.tls_key, password=encrypted)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise RnnmtError(
                    f"--tls-key {c.tls_key} does not match the certificate of --tls-cert {c.tls_cert}"
                ) from exc
            raise RnnmtError(f"--tls-key {c.tls_key} holds no usable PEM private key: {exc}") from exc
        return grpc.ssl_server_credentials([pair], client_ca, require_client_auth=client_ca is not None)

    async def start(self) -> int:
        """Listen, load and warm up the models, then report SERVING; returns the port.

        Raises :class:`RnnmtError` (after closing what it opened) if the port, a TLS file or a model
        package is unusable.
        """
        c = self.config
        tokens = read_tokens(c.auth_token, c.auth_token_file)
        credentials = self._credentials()
        if tokens and credentials is None:
            logger.warning(
                "INSECURE: bearer tokens are accepted over plaintext (--allow-insecure-token): they travel "
                "in clear, for anyone on the network to read and reuse; serve TLS with --tls-cert and --tls-key"
            )
        interceptors: list[grpc.aio.ServerInterceptor] = [
            AvailabilityInterceptor(lambda: self._unavailable, self.metrics),
            MalformedRequestInterceptor(self.metrics),
        ]
        if tokens:
            interceptors.insert(0, BearerTokenInterceptor(tokens, self.metrics))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", c.max_message_bytes),
                ("grpc.max_send_message_length", c.max_message_bytes),
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
            ],
            maximum_concurrent_rpcs=c.max_concurrent_rpcs,
        )
        pb_grpc.add_TranslatorServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{c.host}:{c.port}"
        try:
            port = (
                server.add_secure_port(address, credentials)
                if credentials
                else server.add_insecure_port(address)
            )
        except RuntimeError as exc:
            raise RnnmtError(f"cannot listen on {address}: {exc}") from exc
        await server.start()
        self._server, self.port = server, port
        try:
            if c.metrics_port:
                try:
                    self.metrics.serve(c.metrics_host, c.metrics_port)
                except OSError as exc:
                    raise RnnmtError(
                        f"cannot serve metrics on {c.metrics_host}:{c.metrics_port}: {exc.strerror}"
                    ) from exc
            try:
                repository = await asyncio.to_thread(
                    ModelRepository.load,
                    c.model_dir,
                    c.default_model,
                    c.engine_threads,
                    c.max_batch_rows,
                )
            except OSError as exc:
                raise RnnmtError(f"cannot load the models in {c.model_dir}: {exc}") from exc
        except BaseException:
            await server.stop(None)
            self.metrics.close()
            raise
        self._batcher = Batcher(
            {name: model.engine for name, model in repository.models.items()},
            self.metrics,
            workers=c.worker_count,
            max_batch_rows=c.max_batch_rows,
            max_queue_delay=c.max_queue_delay_ms / 1000,
            max_queued=c.max_queued_sentences,
            batching=c.batching == "on",
        )
        self._batcher.start()
        self.service.attach(repository, self._batcher)
        self._unavailable = None
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "serving",
            extra={
                "fields": {
                    "address": f"{c.host}:{port}",
                    "tls": "mutual" if c.tls_client_ca else "on" if credentials else "off",
                    "auth": "bearer token" if tokens else "off",
                    "models": list(repository.models),
                    "default_model": repository.default,
                    "workers": c.worker_count,
                    "batching": c.batching,
                    "metrics": f"{c.metrics_host}:{c.metrics_port}" if c.metrics_port else None,
                }
            },
        )
        return port

    async def stop(self) -> None:
        """Graceful shutdown: NOT_SERVING, refuse new calls, let calls in flight finish (``grace_seconds``)."""
        self._unavailable = "the server is shutting down"
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.config.grace_seconds)
        if self._batcher is not None:
            await asyncio.to_thread(self._batcher.close)
        self.metrics.close()


async def _serve(config: ServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = TranslationServer(config)
    await server.start()
    await stop.wait()
    logger.info("shutting down", extra={"fields": {"grace_seconds": config.grace_seconds}})
    await server.stop()
    logger.info("stopped")


def serve(config: ServerConfig) -> None:
    """Run a server until SIGTERM or SIGINT, then shut it down gracefully (the `rnnmt serve` command)."""
    log_json_to_stderr()
    with stderr_as_json():  # gRPC's C core logs to stderr too
        asyncio.run(_serve(config))
        gc.collect()  # the server's last references: gRPC shuts down (and logs it) while stderr is JSON
