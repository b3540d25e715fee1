"""The settings of `rnnmt serve`: one dataclass, its command-line flags and their environment variables.

Every flag ``--some-flag`` has the variable ``RNNMT_SOME_FLAG``; a flag on the command line wins over the
variable, which wins over the default. Importing this module is cheap (no grpc, no onnxruntime), so the
``rnnmt`` parser can use it for every command.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from rnnmt.errors import RnnmtError

MIB = 1 << 20


@dataclass(frozen=True)
class ServerConfig:
    """Everything `rnnmt serve` can be told; see :func:`add_server_arguments` for what each field does."""

    model_dir: Path
    default_model: str = ""
    version_policy: str = "latest"
    poll_seconds: float = 0.0
    trusted_keys: Path | None = None
    host: str = "127.0.0.1"
    port: int = 50051
    workers: int = 0
    engine_threads: int = 1
    batching: str = "on"
    max_batch_rows: int = 256
    max_queue_delay_ms: float = 2.0
    max_queued_sentences: int = 4096
    max_texts_per_request: int = 256
    char_limit: int = 0
    max_message_bytes: int = 4 * MIB
    max_concurrent_rpcs: int = 1000
    grace_seconds: float = 10.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_token: str = ""
    auth_token_file: Path | None = None
    api_keys_file: Path | None = None
    allow_insecure_token: bool = False
    admin_token: str = ""
    admin_token_file: Path | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    http_port: int | None = None
    http_allowed_hosts: str = ""
    http_max_connections: int = 1000
    http_idle_seconds: int = 5
    http_read_seconds: float = 30.0

    @property
    def worker_count(self) -> int:
        """Translator worker threads: ``workers``, or one per CPU core this process may use."""
        return self.workers or len(os.sched_getaffinity(0))

    def validate(self) -> ServerConfig:
        """Return self if the settings are coherent, else raise an :class:`RnnmtError` naming the flag."""
        checks = [
            (0 <= self.port <= 65535, "--port must be 0 (any free port) to 65535"),
            (_port_or_off(self.metrics_port), "--metrics-port must be 0 (any free port) to 65535"),
            (_port_or_off(self.http_port), "--http-port must be 0 (any free port) to 65535"),
            (self.http_max_connections >= 1, "--http-max-connections must be at least 1"),
            (self.http_idle_seconds >= 1, "--http-idle-seconds must be at least 1"),
            (self.http_read_seconds > 0, "--http-read-seconds must be above 0"),
            (
                all(_host_pattern(name.strip()) for name in self.http_allowed_hosts.split(",")),
                "--http-allowed-hosts must be host names, * or wildcards like *.example.com, comma-separated",
            ),
            (self.workers >= 0, "--workers must be 0 (one per core) or more"),
            (self.engine_threads >= 0, "--engine-threads must be 0 (onnxruntime's default) or more"),
            (self.batching in ("on", "off"), "--batching must be on or off"),
            (self.max_batch_rows >= 1, "--max-batch-rows must be at least 1"),
            (self.max_queue_delay_ms >= 0, "--max-queue-delay-ms must be 0 or more"),
            (self.max_texts_per_request >= 1, "--max-texts-per-request must be at least 1"),
            (self.char_limit >= 0, "--char-limit must be 0 (none) or more"),
            (
                self.max_queued_sentences >= self.max_texts_per_request,
                "--max-queued-sentences must be at least --max-texts-per-request",
            ),
            (self.max_message_bytes >= 1024, "--max-message-bytes must be at least 1024"),
            (self.max_concurrent_rpcs >= 1, "--max-concurrent-rpcs must be at least 1"),
            (self.grace_seconds >= 0, "--grace-seconds must be 0 or more"),
            (self.poll_seconds >= 0, "--poll-seconds must be 0 (off) or more"),
            (
                not (self.admin_token and self.admin_token_file),
                "give --admin-token or --admin-token-file, not both",
            ),
            (
                not (self.admin_token or self.admin_token_file)
                or self.tls_cert is not None
                or self.allow_insecure_token,
                "an admin token over plaintext travels in clear: add --tls-cert and --tls-key "
                "(or --allow-insecure-token on a network you trust)",
            ),
            ((self.tls_cert is None) == (self.tls_key is None), "--tls-cert and --tls-key go together"),
            (self.tls_client_ca is None or self.tls_cert is not None, "--tls-client-ca needs --tls-cert"),
            (
                not (self.auth_token and self.auth_token_file),
                "give --auth-token or --auth-token-file, not both",
            ),
            (
                not (self.auth_token or self.auth_token_file or self.api_keys_file)
                or self.tls_cert is not None
                or self.allow_insecure_token,
                "a bearer token over plaintext travels in clear: add --tls-cert and --tls-key "
                "(or --allow-insecure-token on a network you trust)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise RnnmtError(message)
        return self


_HELP = {
    "model_dir": "a model repository (one package folder per model) or a single model package",
    "default_model": "the model of requests that name none (default: the only or first by name)",
    "version_policy": "versions served of each model with version folders: latest, all or latest:N",
    "poll_seconds": "look for new, changed or removed packages every this many seconds and reload (0 = off; "
    "SIGHUP and the admin service reload too)",
    "trusted_keys": "serve only packages signed by one of these Ed25519 public keys (a .pub file or a folder of them)",
    "host": "address to listen on (0.0.0.0 or :: = every interface)",
    "port": "gRPC port (0 = any free port, printed at startup)",
    "workers": "engine worker threads, sharing the models (0 = one per CPU core)",
    "engine_threads": "onnxruntime intra-op threads per worker (0 = onnxruntime's default)",
    "batching": "merge sentences of concurrent requests into shared engine batches",
    "max_batch_rows": "rows (sentences × beam size) per engine batch",
    "max_queue_delay_ms": "longest a sentence waits for its batch to fill before it is translated anyway",
    "max_queued_sentences": "sentences waiting for a worker; a request that does not fit is refused "
    "with RESOURCE_EXHAUSTED (INVALID_ARGUMENT if it has more sentences than the whole queue)",
    "max_texts_per_request": "texts in one TranslateRequest",
    "char_limit": "characters of the texts of one call, summed, on every door (a file's texts on "
    "/translate_file); more is INVALID_ARGUMENT / 400. 0: no limit",
    "max_message_bytes": "largest gRPC message received or sent",
    "max_concurrent_rpcs": "calls in progress at once; more are refused with RESOURCE_EXHAUSTED",
    "grace_seconds": "on SIGTERM/SIGINT, how long calls in flight may take to finish",
    "tls_cert": "PEM certificate chain: serve TLS instead of plaintext",
    "tls_key": "PEM private key of --tls-cert",
    "tls_client_ca": "PEM CA bundle: require client certificates signed by it (mutual TLS)",
    "auth_token": "require 'authorization: Bearer <token>' metadata (health checks stay open)",
    "auth_token_file": "like --auth-token, one accepted token per line",
    "api_keys_file": "API keys with limits, one per line: NAME KEY [REQUESTS_PER_MINUTE CHARACTERS_PER_MINUTE] "
    "(0 = no limit); accepted like tokens, as bearer tokens or LibreTranslate's api_key; over a limit, "
    "RESOURCE_EXHAUSTED / HTTP 429 with retry-after; read again on reload",
    "allow_insecure_token": "accept a bearer token without TLS, where it travels in clear (logged as a warning)",
    "admin_token": "serve the admin service (rnnmt.v1.Admin: reload), callable with this bearer token only",
    "admin_token_file": "like --admin-token, one accepted token per line",
    "metrics_host": "address the metrics listen on (plain HTTP, no authentication)",
    "metrics_port": "Prometheus metrics over HTTP on this port (0 = any free port, printed at startup; "
    "unset or 'off' = off)",
    "http_port": "also serve the HTTP/JSON API, LibreTranslate's API and a page to try it on this port, on "
    "--host with the same models, batcher, limits, token and TLS (0 = any free port, printed at startup; "
    "unset or 'off' = off)",
    "http_allowed_hosts": "Host headers the HTTP door answers, comma-separated (a port aside; *.example.com "
    "wildcards; * = any); empty = localhost, 127.0.0.1, [::1] and --host when --host is a loopback "
    "address, else any (refusing other names keeps web pages from reaching the door by DNS rebinding)",
    "http_max_connections": "connections open at once on the HTTP door, and on the metrics port; a new one "
    "beyond is closed at once (logged at most once a minute)",
    "http_idle_seconds": "close an HTTP or metrics connection that sends nothing for this long, before its "
    "first request or between requests",
    "http_read_seconds": "longest an HTTP or metrics client may take to send a request's headers (from its "
    "first byte; a TLS handshake too), then its body; longer is answered 408 and the connection closed",
}


def _port_or_off(port: int | None) -> bool:
    return port is None or 0 <= port <= 65535


def _host_pattern(name: str) -> bool:
    """Whether ``name`` is empty, ``*`` or a name with at most a leading ``*.`` (Starlette's patterns)."""
    return name in ("", "*") or "*" not in name.removeprefix("*.")


def _optional_port(text: str) -> int | None:
    """A port flag or variable of a door that is off unless set: a number, or empty or ``off`` for off."""
    if text.strip().lower() in ("", "off"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number or off, not {text!r}") from None


def _boolean(text: str) -> bool:
    """The value of a yes/no flag or variable: true/yes/on/1 or false/no/off/0 (any case)."""
    value = text.strip().lower()
    if value in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value in ("true", "yes", "on", "1")
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per :class:`ServerConfig` field, its default taken from the environment when set.

    A yes/no field is a flag that needs no value (``--allow-insecure-token``) but takes one too
    (``--allow-insecure-token false``), like its variable (``RNNMT_ALLOW_INSECURE_TOKEN=true``).
    """
    for f in fields(ServerConfig):
        env = "RNNMT_" + f.name.upper()
        kinds: dict[str, Callable[[str], Any]] = {
            "int": int,
            "int | None": _optional_port,
            "float": float,
            "str": str,
            "bool": _boolean,
        }
        kind = kinds.get(str(f.type), Path)
        shown = "hidden" if f.name in ("auth_token", "admin_token") else "%(default)s"
        extra: dict[str, Any] = {"choices": ["on", "off"]} if f.name == "batching" else {}
        if kind is _boolean:
            extra.update(nargs="?", const=True, metavar="BOOL")
        if f.default is MISSING:
            extra["required"] = env not in os.environ
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=kind,
            default=os.environ.get(env, None if f.default is MISSING else f.default),
            help=f"{_HELP[f.name]} [env {env}; default: {shown}]",
            **extra,
        )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The validated config of parsed :func:`add_server_arguments` flags."""
    return ServerConfig(**{f.name: getattr(args, f.name) for f in fields(ServerConfig)}).validate()
