"""Where a batch job's texts are translated: rnnmt gRPC servers through
:class:`~rnnmt.serving.client.TranslatorClient`, or a model package's
:class:`~rnnmt.serving.core.translator.Translator` in this process (never the server's code).

Both backends resolve the decoding options as the server does (0 / ``None`` = the model's default, see
:meth:`~rnnmt.serving.core.options.SearchOptions.overlay`) and raise the same failures, so the job treats
them alike:

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

import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import grpc

from rnnmt.errors import RnnmtError
from rnnmt.serving.client import MIB, TranslatorClient
from rnnmt.serving.core.options import Decoding
from rnnmt.serving.core.package import find_packages
from rnnmt.serving.core.translator import TextHypothesis, Translator

RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
)
TARGET_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")
MAX_MESSAGE_BYTES = 64 * MIB  # the server's own limit (4 MiB by default) is the one that counts
T = TypeVar("T")


class Transient(Exception):
    """The call may succeed later: the server is unavailable, busy, or did not answer in time."""


class Rejected(Exception):
    """The texts were refused for what they are; the message says why (e.g. too many tokens)."""


@dataclass(frozen=True)
class ModelFacts:
    """What a job records and checks about the model: its name, content version and request limit."""

    name: str
    version: str  # the package's content version (ModelPackage.version), as the server reports it
    max_texts_per_request: int  # 0 = no limit


class Backend(Protocol):
    def open(self) -> ModelFacts:
        """Connect, check the decoding options, and describe the model (may raise :class:`Transient`)."""

    def translate(self, texts: Sequence[str]) -> list[list[TextHypothesis]]:
        """Per text its hypotheses, best first (raises :class:`Transient` or :class:`Rejected`)."""

    def close(self) -> None: ...


class EngineBackend:
    """The translator of a model package (or of ``model_name`` in a model repository, by default the first
    by name) on onnxruntime with ``threads`` threads per call; loading it checks the decoding options."""

    def __init__(
        self,
        model_dir: Path,
        model_name: str,
        decoding: Decoding,
        threads: int = 1,
        split_sentences: bool = False,
    ) -> None:
        self.split_sentences = split_sentences
        packages = find_packages(model_dir)
        name = model_name or next(iter(packages))
        if name not in packages:
            raise RnnmtError(f"{model_dir} has no model {name!r}; it has: {', '.join(packages)}")
        self.translator = Translator.from_package(packages[name], threads)
        self.facts = ModelFacts(name, self.translator.version, 0)
        self.options = self.translator.default_options.overlay(decoding)
        try:
            self.translator.check_options(self.options)
        except RnnmtError as exc:
            raise RnnmtError(f"options.{exc}") from None

    def open(self) -> ModelFacts:
        return self.facts

    def translate(self, texts: Sequence[str]) -> list[list[TextHypothesis]]:
        try:
            return self.translator.translate(texts, self.options, self.split_sentences)
        except RnnmtError as exc:
            raise Rejected(str(exc)) from None

    def close(self) -> None:
        """Nothing to release: the translator goes with the object."""


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
    """A :class:`~rnnmt.serving.client.TranslatorClient` of ``servers`` (see :func:`channel_target`), each
    call with a ``timeout`` in seconds and no retries of its own: the job retries :class:`Transient`
    failures. A server that went away is reconnected to within seconds, however long it was down.

    ``tls``, ``ca_file``, ``cert_file``, ``key_file`` and ``token`` are those of the client: TLS / mutual
    TLS and a bearer token.
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
        split_sentences: bool = False,
    ) -> None:
        self.model_name = model_name
        self.decoding = decoding
        self.split_sentences = split_sentences
        try:
            self.client = TranslatorClient(
                channel_target(servers),
                timeout=timeout,
                retries=0,
                tls=tls,
                ca_file=ca_file,
                cert_file=cert_file,
                key_file=key_file,
                token=token,
                max_message_bytes=MAX_MESSAGE_BYTES,
                reconnect_backoff=0.25,
                max_reconnect_backoff=2.0,
            )
        except OSError as exc:
            raise RnnmtError(f"cannot read a TLS file: {exc}") from None

    def open(self) -> ModelFacts:
        info = self._call(lambda: self.client.model_info(self.model_name))
        model = next(m for m in info.models if m.name == (self.model_name or info.default_model))
        self.model_name = model.name
        try:  # an empty text checks the options without translating anything
            self.translate([""])
        except Rejected as exc:
            raise RnnmtError(f"{self.client.target}: {exc}") from None
        return ModelFacts(model.name, model.version, model.limits.max_texts_per_request)

    def translate(self, texts: Sequence[str]) -> list[list[TextHypothesis]]:
        translations = self._call(
            lambda: self.client.translate(
                texts, self.model_name, **asdict(self.decoding), split_sentences=self.split_sentences
            )
        )
        return [[TextHypothesis(h.text, h.score) for h in t.hypotheses] for t in translations]

    def close(self) -> None:
        self.client.close()

    def _call(self, call: Callable[[], T]) -> T:
        """``call()`` with its gRPC failure classified: :class:`Rejected`, :class:`Transient` or an
        :class:`~rnnmt.errors.RnnmtError`."""
        try:
            return call()
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.INVALID_ARGUMENT or "larger than max" in details:
                raise Rejected(details) from None
            if code in RETRYABLE:
                raise Transient(f"{code.name}: {details}") from None
            raise RnnmtError(f"{self.client.target}: {code.name}: {details}") from None
