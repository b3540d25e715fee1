"""A synchronous Python client of the rnnmt gRPC server (used by `rnnmt translate`, `health` and `batch`).

::

    with TranslatorClient("localhost:50051", timeout=10) as client:
        for translation in client.translate(["Hola mundo."], beam_size=5):
            print(translation.hypotheses[0].text)

Every call has a deadline (``timeout`` seconds, per client or per call). Calls failing with UNAVAILABLE
(server starting, restarting, draining, unreachable) are retried by gRPC's own retry policy with
randomised exponential backoff, within the call's deadline; a stream is retried only until its first
response. Errors are raised as :class:`grpc.RpcError` with the server's status code and message.
Imports grpc and the stubs only: no onnxruntime, no torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnnmt.serving.core.options import Decoding
from rnnmt.v1 import admin_pb2 as admin_pb
from rnnmt.v1 import admin_pb2_grpc as admin_grpc
from rnnmt.v1 import translator_pb2 as pb
from rnnmt.v1 import translator_pb2_grpc as pb_grpc

MIB = 1 << 20


def retry_service_config(retries: int, backoff: float, max_backoff: float) -> str:
    """gRPC service config: round-robin over every address the target resolves to (replicas behind one
    DNS name), retrying UNAVAILABLE up to ``retries`` times (gRPC caps attempts at 5)."""
    method_config: dict[str, object] = {
        "name": [{"service": "rnnmt.v1.Translator"}, {"service": "grpc.health.v1.Health"}]
    }
    if retries > 0:
        method_config["retryPolicy"] = {
            "maxAttempts": min(retries + 1, 5),
            "initialBackoff": f"{backoff:.3f}s",
            "maxBackoff": f"{max_backoff:.3f}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [method_config]})


def _read(path: Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def open_channel(
    target: str,
    options: Sequence[tuple[str, object]],
    *,
    tls: bool = False,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> grpc.Channel:
    """A TLS channel to ``target`` when ``tls`` or any of the PEM files is given (``ca_file``: roots,
    default the system's; ``cert_file`` and ``key_file``: a client certificate for mutual TLS), else a
    plaintext one. A PEM file that cannot be read raises :class:`OSError`."""
    if tls or ca_file or cert_file or key_file:
        credentials = grpc.ssl_channel_credentials(_read(ca_file), _read(key_file), _read(cert_file))
        return grpc.secure_channel(target, credentials, options)
    return grpc.insecure_channel(target, options)


def decoding_message(decoding: Decoding) -> pb.DecodingOptions:
    """The DecodingOptions of a request (0 / absent take the model's defaults)."""
    return pb.DecodingOptions(
        beam_size=decoding.beam_size,
        n_best=decoding.n_best,
        length_penalty=decoding.length_penalty,
        max_output_tokens=decoding.max_output_tokens,
    )


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata carrying ``token`` (none without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


class TranslatorClient:
    """A channel to one server, with deadlines, retries, optional TLS / mutual TLS and a bearer token.

    ``tls`` is implied by any of ``ca_file`` (PEM roots; default: the system's), ``cert_file`` and
    ``key_file`` (a client certificate for mutual TLS). ``reconnect_backoff`` and
    ``max_reconnect_backoff`` are the first and the longest wait in seconds between attempts to reconnect
    to a server that went away (default: gRPC's, 1 s up to 120 s).
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = 30.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        tls: bool = False,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        token: str = "",
        max_message_bytes: int = 4 * MIB,
        reconnect_backoff: float | None = None,
        max_reconnect_backoff: float | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._metadata = bearer_metadata(token)
        options: list[tuple[str, object]] = [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", retry_service_config(retries, backoff, max_backoff)),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if reconnect_backoff is not None:
            options.append(("grpc.initial_reconnect_backoff_ms", round(reconnect_backoff * 1000)))
        if max_reconnect_backoff is not None:
            options.append(("grpc.max_reconnect_backoff_ms", round(max_reconnect_backoff * 1000)))
        self._channel = open_channel(
            target, options, tls=tls, ca_file=ca_file, cert_file=cert_file, key_file=key_file
        )
        self._stub = pb_grpc.TranslatorStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> TranslatorClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    @staticmethod
    def request(
        texts: Sequence[str],
        model: str = "",
        beam_size: int = 0,
        n_best: int = 0,
        length_penalty: float | None = None,
        max_output_tokens: int = 0,
        model_version: str = "",
        split_sentences: bool = False,
    ) -> pb.TranslateRequest:
        """A TranslateRequest; 0 / None options take the model's defaults, an empty ``model_version``
        the latest version served; ``split_sentences`` translates each text sentence by sentence."""
        options = decoding_message(Decoding(beam_size, n_best, length_penalty, max_output_tokens))
        return pb.TranslateRequest(
            texts=list(texts),
            model=model,
            options=options,
            model_version=model_version,
            split_sentences=split_sentences,
        )

    def translate(
        self,
        texts: Sequence[str],
        model: str = "",
        beam_size: int = 0,
        n_best: int = 0,
        length_penalty: float | None = None,
        max_output_tokens: int = 0,
        timeout: float | None = None,
        model_version: str = "",
        split_sentences: bool = False,
    ) -> list[pb.Translation]:
        """One translation per text, in order; each has ``hypotheses`` (``text``, ``score``), best first."""
        return list(
            self.translate_response(
                texts,
                model,
                beam_size,
                n_best,
                length_penalty,
                max_output_tokens,
                timeout,
                model_version,
                split_sentences,
            ).translations
        )

    def translate_response(
        self,
        texts: Sequence[str],
        model: str = "",
        beam_size: int = 0,
        n_best: int = 0,
        length_penalty: float | None = None,
        max_output_tokens: int = 0,
        timeout: float | None = None,
        model_version: str = "",
        split_sentences: bool = False,
    ) -> pb.TranslateResponse:
        """Like :meth:`translate`, the whole response: also the model and version that translated."""
        request = self.request(
            texts, model, beam_size, n_best, length_penalty, max_output_tokens, model_version, split_sentences
        )
        return self._stub.Translate(request, timeout=self._timeout(timeout), metadata=self._metadata)

    def translate_stream(
        self,
        batches: Iterable[Sequence[str]],
        model: str = "",
        beam_size: int = 0,
        n_best: int = 0,
        length_penalty: float | None = None,
        max_output_tokens: int = 0,
        timeout: float | None = None,
        model_version: str = "",
        split_sentences: bool = False,
    ) -> Iterator[list[pb.Translation]]:
        """Translate batches over one stream (the server works on several at once): per batch, in order,
        its translations. ``timeout`` bounds the whole stream; ``batches`` may be a lazy iterator."""
        requests = (
            self.request(
                batch,
                model,
                beam_size,
                n_best,
                length_penalty,
                max_output_tokens,
                model_version,
                split_sentences,
            )
            for batch in batches
        )
        responses = self._stub.TranslateStream(
            requests, timeout=self._timeout(timeout), metadata=self._metadata
        )
        for response in responses:
            yield list(response.translations)

    def model_info(self, model: str = "", timeout: float | None = None) -> pb.ModelInfo:
        """The models served (or only ``model``), with languages, version, scores, defaults and limits."""
        return self._stub.GetModelInfo(
            pb.GetModelInfoRequest(model=model), timeout=self._timeout(timeout), metadata=self._metadata
        )

    def reload_models(self, admin_token: str, timeout: float | None = None) -> admin_pb.ReloadModelsResponse:
        """Ask the server to reload its model repository (its admin service, with an admin token)."""
        return admin_grpc.AdminStub(self._channel).ReloadModels(
            admin_pb.ReloadModelsRequest(),
            timeout=self._timeout(timeout),
            metadata=bearer_metadata(admin_token),
        )

    def health(self, service: str = "", timeout: float | None = None) -> str:
        """The standard health status of the server ("") or a service: "SERVING", "NOT_SERVING", ..."""
        response = self._health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self._timeout(timeout)
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def batched(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive lists of at most ``size`` lines, read lazily."""
    it = iter(lines)
    while batch := list(islice(it, size)):
        yield batch
