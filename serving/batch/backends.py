"""Where a batch job's texts are translated: rnnmt gRPC servers, or the engine in this process.

Both backends resolve the decoding options exactly as the server does (0 / ``None`` = the model's
default) and raise the same failures, so the job treats them alike:

- :class:`Transient`: worth retrying later (``UNAVAILABLE``, ``RESOURCE_EXHAUSTED``, ``DEADLINE_EXCEEDED``);
- :class:`Rejected`: the texts themselves were refused (``INVALID_ARGUMENT``: too long for the model; or a
  message over the server's size limit); sent again as they are, they fail again;
- :class:`~rnnmt.errors.RnnmtError`: anything else, which stops the job.

Several servers share the load through gRPC's own ``round_robin`` policy: a single ``HOST:PORT`` is a DNS
name (``dns:///HOST:PORT``, every address it resolves to, re-resolved when connections fail, as with a
headless Kubernetes service or a Compose service with replicas); a comma-separated list is resolved once
to an ``ipv4:`` target; any gRPC target (``dns:``, ``ipv4:``, ``ipv6:``, ``unix:``) is used as given.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import grpc

from rnnmt.errors import RnnmtError
from rnnmt.serving.client import bearer_metadata, decoding_message, open_channel
from rnnmt.serving.core.options import Decoding
from rnnmt.serving.core.translator import TextHypothesis
from rnnmt.serving.server.model_repository import find_packages, load_model
from rnnmt.v1 import translator_pb2 as pb
from rnnmt.v1 import translator_pb2_grpc as pb_grpc

RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
)
TARGET_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")
MAX_MESSAGE_BYTES = 64 << 20  # the server's own limit (4 MiB by default) is the one that counts
T = TypeVar("T")


class Transient(Exception):
    """The call may succeed later: the server is unavailable, busy, or did not answer in time."""


class Rejected(Exception):
    """The texts were refused for what they are; the message says why (e.g. too many tokens)."""


@dataclass(frozen=True)
class ModelFacts:
    """What a job records and checks about the model: its name, content version and request limit."""

    name: str
    version: str  # the first 16 hex digits of the package manifest's sha256, as the server reports it
    max_texts_per_request: int  # 0 = no limit


class Backend(Protocol):
    def open(self) -> ModelFacts:
        """Connect, check the decoding options, and describe the model (may raise :class:`Transient`)."""

    def translate(self, texts: Sequence[str]) -> list[list[TextHypothesis]]:
        """Per text its hypotheses, best first (raises :class:`Transient` or :class:`Rejected`)."""

    def close(self) -> None: ...


class EngineBackend:
    """The onnxruntime engine of a model package (or of ``model_name`` in a model repository)."""

    def __init__(self, model_dir: Path, model_name: str, decoding: Decoding, threads: int = 1) -> None:
        packages = find_packages(model_dir)
        name = model_name or next(iter(packages))
        if name not in packages:
            raise RnnmtError(f"{model_dir} has no model {name!r}; it has: {', '.join(packages)}")
        self.model = load_model(name, packages[name], threads, max_batch_rows=256)
        self.options = self.model.default_options.overlay(decoding)
        try:
            self.model.engine.check_options(self.options)
        except RnnmtError as exc:
            raise RnnmtError(f"options.{exc}") from None

    def open(self) -> ModelFacts:
        return ModelFacts(self.model.name, self.model.version, 0)

    def translate(self, texts: Sequence[str]) -> list[list[TextHypothesis]]:
        try:
            return self.model.engine.translate(texts, self.options)
        except RnnmtError as exc:
            raise Rejected(str(exc)) from None

    def close(self) -> None:
        """Nothing to release: the engine goes with the object."""


def channel_target(servers: str) -> str:
    """The gRPC target of ``--server``: see the module docstring."""
    servers = servers.strip()
    if servers.startswith(TARGET_SCHEMES):
        return servers
    addresses = [a.strip() for a in servers.split(",") if a.strip()]
    if not addresses:
        raise RnnmtError("--server needs HOST:PORT, a comma-separated list of them, or a gRPC target")
    if len(addresses) == 1:
        return f"dns:///{addresses[0]}"
    resolved = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise RnnmtError(f"--server: {address!r} is not HOST:PORT")
        try:
            infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            raise RnnmtError(f"--server: cannot resolve {host!r} to an IPv4 address: {exc}") from None
        resolved += [f"{info[4][0]}:{port}" for info in infos]
    return "ipv4:" + ",".join(dict.fromkeys(resolved))


class GrpcBackend:
    """Translate requests over one channel to ``servers``, each call with a ``timeout`` in seconds.

    ``tls``, ``ca_file``, ``cert_file``, ``key_file`` and ``token`` are those of
    :class:`~rnnmt.serving.client.TranslatorClient`: TLS / mutual TLS and a bearer token.
    """

    def __init__(
        self,
        servers: str,
        model_name: str,
        decoding: Decoding,
        timeout: float | None,
        *,
        tls: bool = False,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        token: str = "",
    ) -> None:
        self.target = channel_target(servers)
        self.model_name = model_name
        self.decoding = decoding
        self.timeout = timeout
        self._metadata = bearer_metadata(token)
        options = [
            ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # notice a restarted server within seconds, however long it was down
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        try:
            self._channel = open_channel(
                self.target, options, tls=tls, ca_file=ca_file, cert_file=cert_file, key_file=key_file
            )
        except OSError as exc:
            raise RnnmtError(f"cannot read a TLS file: {exc}") from None
        self._stub = pb_grpc.TranslatorStub(self._channel)

    def open(self) -> ModelFacts:
        info = self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(model=self.model_name))
        model = next(m for m in info.models if m.name == (self.model_name or info.default_model))
        self.model_name = model.name
        try:  # an empty text checks the options without translating anything
            self._call(self._stub.Translate, self._request([""]))
        except Rejected as exc:
            raise RnnmtError(f"{self.target}: {exc}") from None
        return ModelFacts(model.name, model.version, model.limits.max_texts_per_request)

    def translate(self, texts: Sequence[str]) -> list[list[TextHypothesis]]:
        response = self._call(self._stub.Translate, self._request(texts))
        return [[TextHypothesis(h.text, h.score) for h in t.hypotheses] for t in response.translations]

    def close(self) -> None:
        self._channel.close()

    def _request(self, texts: Sequence[str]) -> pb.TranslateRequest:
        return pb.TranslateRequest(
            texts=list(texts), model=self.model_name, options=decoding_message(self.decoding)
        )

    def _call(self, method: Callable[..., T], request: object) -> T:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.INVALID_ARGUMENT or "larger than max" in details:
                raise Rejected(details) from None
            if code in RETRYABLE:
                raise Transient(f"{code.name}: {details}") from None
            raise RnnmtError(f"{self.target}: {code.name}: {details}") from None
