"""`rnnmt serve`: the gRPC server around :class:`~rnnmt.serving.server.service.TranslatorService` (TLS,
interceptors, health, reflection, metrics), its lifecycle and the process entry.

The server runs on asyncio (grpc.aio): the event loop parses, validates and tokenizes requests, then
hands their sentences to the :class:`~rnnmt.serving.server.batcher.Batcher`, whose worker threads translate
them in shared batches and wake the waiting call. No thread is held by a waiting call, so thousands of
concurrent calls cost memory for their sentences only, which the batcher's queue bounds.

Lifecycle: the port opens first, with health NOT_SERVING and calls refused with UNAVAILABLE while the
models load and translate a warm-up text; then health turns SERVING. The model repository is reloaded
(:meth:`~rnnmt.serving.server.model_repository.ModelRepository.reload`) on SIGHUP, every
``poll_seconds`` if set, and by the admin service; health stays SERVING throughout. On SIGTERM or SIGINT
health turns NOT_SERVING, new calls are refused, calls in flight get ``grace_seconds`` to finish, and
:func:`serve` returns.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
import ssl
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.signing import TrustedKeys
from rnnmt.serving.server.admin import METHOD_PREFIX as ADMIN_PREFIX
from rnnmt.serving.server.admin import SERVICE_NAME as ADMIN_SERVICE
from rnnmt.serving.server.admin import AdminService
from rnnmt.serving.server.api_keys import KeyRing
from rnnmt.serving.server.batcher import Batcher, Runner, TranslatorRunner
from rnnmt.serving.server.config import ServerConfig
from rnnmt.serving.server.interceptors import (
    AvailabilityInterceptor,
    BearerTokenInterceptor,
    ConcurrencyLimitInterceptor,
    MalformedRequestInterceptor,
    read_tokens,
)
from rnnmt.serving.server.metrics import Metrics, log_json_to_stderr, stderr_as_json
from rnnmt.serving.server.model_repository import (
    LoadSettings,
    ModelRepository,
    ReloadReport,
    VersionPolicy,
    release_freed_memory,
    release_when_freed,
)
from rnnmt.serving.server.service import SERVICE_NAME, TranslatorService

if TYPE_CHECKING:
    from rnnmt.serving.http.server import HttpServer
from rnnmt.v1 import admin_pb2_grpc as admin_grpc
from rnnmt.v1 import translator_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)


class TranslationServer:
    """One server: gRPC (Translator, health, reflection), the models, the batcher and metrics. The batcher
    runs its searches with ``runner`` (the served models' beam searches unless told otherwise: the tests
    hand it one whose searches wait for them)."""

    def __init__(self, config: ServerConfig, runner: Runner | None = None) -> None:
        self.config = config.validate()
        self.runner = runner or TranslatorRunner()
        self.metrics = Metrics()
        self.health = health.aio.HealthServicer()
        self.port = 0
        self._unavailable: str | None = "the server is loading its models; retry shortly"
        self.service = TranslatorService(
            self.metrics, self.config.max_texts_per_request, self.config.char_limit
        )
        self.keys = KeyRing()  # no keys until started
        self._server: grpc.aio.Server | None = None
        self._batcher: Batcher | None = None
        self._repository: ModelRepository | None = None
        self._http: HttpServer | None = None
        self._metrics_http: HttpServer | None = None
        self.http_port = 0  # the ports bound, once started (0: that door is off)
        self.metrics_port = 0
        self._reloading = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Listen, load and warm up the models, then report SERVING; returns the port.

        Raises :class:`RnnmtError` (after closing what it opened) if the port, a TLS file or a model
        package is unusable.
        """
        c = self.config
        _, most = resource.getrlimit(resource.RLIMIT_NOFILE)  # the doors cap their connections themselves
        resource.setrlimit(resource.RLIMIT_NOFILE, (most, most))
        keys = KeyRing(read_tokens(c.auth_token, c.auth_token_file), c.api_keys_file, self.metrics)
        admin_keys = KeyRing(read_tokens(c.admin_token, c.admin_token_file, "--admin-token-file"))
        self.keys = self.service.keys = keys
        credentials = self._credentials()
        if (keys.enabled or admin_keys.enabled) and credentials is None:
            logger.warning(
                "INSECURE: bearer tokens are accepted over plaintext (--allow-insecure-token): they travel "
                "in clear, for anyone on the network to read and reuse; serve TLS with --tls-cert and --tls-key"
            )
        server = self._grpc_server(keys, admin_keys)
        self.port = await self._listen(server, credentials)
        self._server = server
        try:
            await self._serve_http(keys)
            await self._serve_metrics()
            repository = await self._load_models()
        except BaseException:
            await server.stop(None)
            for door in (self._http, self._metrics_http):
                if door is not None:
                    await door.stop()
            raise
        self._start_batcher(repository)
        self._repository = repository
        self.metrics.serving((m.name, m.version, m.translator.version) for m in repository.served())
        if c.poll_seconds:
            self._poller = asyncio.ensure_future(self._poll(c.poll_seconds))
        self._unavailable = None
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "serving",
            extra={
                "fields": {
                    "address": f"{c.host}:{self.port}",
                    "tls": "mutual" if c.tls_client_ca else "on" if credentials else "off",
                    "auth": "bearer token" if keys.enabled else "off",
                    "models": [m.label for m in repository.served()],
                    "default_model": repository.default,
                    "admin": "on" if admin_keys.enabled else "off",
                    "trusted_keys": str(c.trusted_keys) if c.trusted_keys else None,
                    "workers": c.worker_count,
                    "batching": c.batching,
                    "metrics": f"{c.metrics_host}:{self.metrics_port}" if self.metrics_port else None,
                    "http": f"{c.host}:{self.http_port}" if self._http else None,
                }
            },
        )
        return self.port

    async def reload(self) -> ReloadReport:
        """Reload the model repository (one reload at a time), record it in the metrics and the log.

        Memory freed goes back to the operating system: what the loads freed at once, and each unloaded
        model's when it is freed (:func:`~rnnmt.serving.server.model_repository.release_when_freed`), once
        the report and the last call on it let go of it. The batcher's finished jobs hold their model in
        reference cycles, which only the cycle collector frees, and an idle server may not run it for
        long: it is run here, so that the unloaded models are freed with the report."""
        assert self._repository is not None, "reload before start"
        repository = self._repository
        async with self._reloading:
            report = await asyncio.to_thread(repository.reload)
            try:
                await asyncio.to_thread(self.keys.reload)
            except RnnmtError as exc:  # the keys read before stay
                logger.error("API keys not reloaded", extra={"fields": {"error": str(exc)}})
        m = self.metrics
        m.reloads.labels("failed" if report.failed else "ok").inc()
        for failure in report.failed:
            m.load_failures.labels(failure.name, failure.version).inc()
        m.serving((model.name, model.version, model.translator.version) for model in repository.served())
        logger.log(
            logging.ERROR if report.failed else logging.INFO,
            "models reloaded",
            extra={
                "fields": {
                    "loaded": [model.label for model in report.loaded],
                    "unloaded": [model.label for model in report.unloaded],
                    "kept": [model.label for model in report.kept],
                    "failed": [f"{f.path}: {f.error}" for f in report.failed],
                }
            },
        )
        if report.unloaded:
            gc.collect()
        await asyncio.to_thread(release_freed_memory)
        for model in report.unloaded:
            m.unfreed.inc()
            release_when_freed(model.translator, asyncio.get_running_loop(), m.unfreed.dec)
        return report

    async def _poll(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.reload()
            except Exception:  # a reload that failed unexpectedly: the models served stay, polling goes on
                logger.exception("reload failed")

    async def stop(self) -> None:
        """Graceful shutdown: NOT_SERVING, refuse new calls, let calls in flight finish (``grace_seconds``;
        then gRPC cancels those left, and HTTP answers them 503), stop the batcher, and the metrics last."""
        self._unavailable = "the server is shutting down"
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        await self.health.enter_graceful_shutdown()
        await asyncio.gather(
            *([self._server.stop(self.config.grace_seconds)] if self._server is not None else []),
            *([self._http.stop()] if self._http is not None else []),
        )
        if self._batcher is not None:
            await asyncio.to_thread(self._batcher.close)
        if self._metrics_http is not None:
            await self._metrics_http.stop()

    # -- start-up steps ---------------------------------------------------------------------------------

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

    def _grpc_server(self, keys: KeyRing, admin_keys: KeyRing) -> grpc.aio.Server:
        """The gRPC server with its interceptors (bearer tokens if any, the concurrency limit, availability,
        malformed requests) and services: the translator, health, reflection and, with admin tokens, the
        admin service."""
        c = self.config
        limit = ConcurrencyLimitInterceptor(c.max_concurrent_rpcs, self.metrics)
        interceptors: list[grpc.aio.ServerInterceptor] = [
            limit,
            AvailabilityInterceptor(lambda: self._unavailable, self.metrics),
            MalformedRequestInterceptor(self.metrics),
        ]
        if keys.enabled:
            interceptors.insert(
                0,
                BearerTokenInterceptor(
                    keys, self.metrics, lambda method: not method.startswith(ADMIN_PREFIX)
                ),
            )
        if admin_keys.enabled:
            interceptors.insert(
                0,
                BearerTokenInterceptor(
                    admin_keys, self.metrics, lambda method: method.startswith(ADMIN_PREFIX)
                ),
            )
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", c.max_message_bytes),
                ("grpc.max_send_message_length", c.max_message_bytes),
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
            ],
            maximum_concurrent_rpcs=limit.grpc_limit,
        )
        pb_grpc.add_TranslatorServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        services = [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME]
        if admin_keys.enabled:
            admin_grpc.add_AdminServicer_to_server(AdminService(self.reload), server)
            services.append(ADMIN_SERVICE)
        reflection.enable_server_reflection(services, server)
        return server

    async def _listen(self, server: grpc.aio.Server, credentials: grpc.ServerCredentials | None) -> int:
        """Open the port, with health NOT_SERVING; returns the port."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{self.config.host}:{self.config.port}"
        try:
            port = (
                server.add_secure_port(address, credentials)
                if credentials
                else server.add_insecure_port(address)
            )
        except RuntimeError as exc:
            raise RnnmtError(f"cannot listen on {address}: {exc}") from exc
        await server.start()
        return port

    async def _serve_http(self, keys: KeyRing) -> None:
        """Serve the HTTP door, if ``http_port`` is set (refusing calls like gRPC while unavailable)."""
        c = self.config
        if c.http_port is None:
            return
        # starlette and uvicorn only when asked for
        from rnnmt.serving.http.api import allowed_hosts, http_app
        from rnnmt.serving.http.calls import Door
        from rnnmt.serving.http.protocol import Limits
        from rnnmt.serving.http.server import HttpServer

        door = Door(keys, c.max_message_bytes, lambda: self._unavailable, self.metrics)
        app = http_app(self.service, door, allowed_hosts(c.host, c.http_allowed_hosts))
        self._http = HttpServer(
            "HTTP",
            app,
            c.host,
            c.http_port,
            c.grace_seconds,
            Limits.of(c),
            c.tls_cert,
            c.tls_key,
            c.tls_client_ca,
        )
        self.http_port = await self._http.start()

    async def _serve_metrics(self) -> None:
        """Serve the Prometheus metrics over HTTP, if ``metrics_port`` is set: on the event loop, within
        the limits of the HTTP door."""
        c = self.config
        if c.metrics_port is None:
            return
        from prometheus_client import make_asgi_app

        from rnnmt.serving.http.protocol import Limits
        from rnnmt.serving.http.server import HttpServer

        app = make_asgi_app(self.metrics.registry)
        self._metrics_http = HttpServer(
            "metrics", app, c.metrics_host, c.metrics_port, c.grace_seconds, Limits.of(c)
        )
        self.metrics_port = await self._metrics_http.start()

    async def _load_models(self) -> ModelRepository:
        """Find, verify, load and warm up the models, on a thread (health checks keep being answered)."""
        c = self.config
        policy = VersionPolicy.parse(c.version_policy)
        trusted = TrustedKeys.load(c.trusted_keys) if c.trusted_keys else None
        settings = LoadSettings(c.engine_threads, c.max_batch_rows, trusted)
        try:
            return await asyncio.to_thread(
                ModelRepository.load, c.model_dir, c.default_model, policy, settings
            )
        except OSError as exc:
            raise RnnmtError(f"cannot load the models in {c.model_dir}: {exc}") from exc

    def _start_batcher(self, repository: ModelRepository) -> None:
        """Start the batcher's workers over the models and hand both to the service."""
        c = self.config
        self._batcher = Batcher(
            self.runner,
            self.metrics,
            workers=c.worker_count,
            max_batch_rows=c.max_batch_rows,
            max_queue_delay=c.max_queue_delay_ms / 1000,
            max_queued=c.max_queued_sentences,
            batching=c.batching == "on",
        )
        self._batcher.start()
        self.service.attach(repository, self._batcher)

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)


async def _serve(config: ServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = TranslationServer(config)
    await server.start()
    reloads: set[asyncio.Future[ReloadReport]] = set()

    def reload() -> None:
        future = asyncio.ensure_future(server.reload())
        reloads.add(future)
        future.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
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
