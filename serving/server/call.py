"""One translation call as every door makes it, and how a call ends, whichever door it came through.

A door (gRPC, ``/v1/translate``, LibreTranslate's routes) reads its request — protobuf, JSON or a form
— into a :class:`TranslationCall` and the served model it names, and hands both to
:meth:`~rnnmt.serving.server.service.TranslatorService.translate`, which answers each text's hypotheses
or raises one of the errors of :data:`STATUS`. Every call of every door runs inside :func:`observe`,
the one place that turns its errors into status codes, logs an unexpected one with its traceback, and
counts, times and logs the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.options import Decoding
from rnnmt.serving.server.api_keys import OverLimit, TooLarge
from rnnmt.serving.server.batcher import BatcherClosed, DeadlineExpired, QueueFull
from rnnmt.serving.server.metrics import Metrics
from rnnmt.serving.server.model_repository import UnknownModel

logger = logging.getLogger(__name__)

T = TypeVar("T")

FORMATS = ("text", "html")


@dataclass(frozen=True)
class TranslationCall:
    """What to translate and how: the texts, the decoding asked for (0 / None: the model's defaults),
    ``format`` (``text``, or ``html``: each text a document whose markup is kept), ``split`` (each text
    translated sentence by sentence, keeping its layout), the seconds it may take (None: no
    deadline), and whether each text's language is detected too (``detect_language``)."""

    texts: Sequence[str]
    decoding: Decoding = field(default_factory=Decoding)
    format: str = "text"
    split: bool = False
    timeout: float | None = None
    detect_language: bool = False


class InvalidRequest(RnnmtError):
    """A request field is out of range; the message names it."""


class TranslationFailed(RnnmtError):
    """The search of a request's sentences failed; the batcher logged why."""


class ClientGone(RnnmtError):
    """The client went away before its call was answered."""


STATUS: dict[type[Exception], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    TooLarge: grpc.StatusCode.INVALID_ARGUMENT,
    OverLimit: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UnknownModel: grpc.StatusCode.NOT_FOUND,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    BatcherClosed: grpc.StatusCode.UNAVAILABLE,
    DeadlineExpired: grpc.StatusCode.DEADLINE_EXCEEDED,
    TranslationFailed: grpc.StatusCode.INTERNAL,
    ClientGone: grpc.StatusCode.CANCELLED,
}
"""The status code of each error a call may end with, its message going to the caller. Any other
exception is unexpected: INTERNAL, with its traceback in the log."""


class CallError(Exception):
    """How a call ends when it fails: the status code and message to answer with, and for a key over
    its limit the seconds after which to retry."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


def call_error(error: Exception) -> CallError | None:
    """The :class:`CallError` of an error of :data:`STATUS` (or one already); None for an unexpected one."""
    if isinstance(error, CallError):
        return error
    for kind, code in STATUS.items():
        if isinstance(error, kind):
            return CallError(code, str(error), getattr(error, "retry_after", 0))
    return None


@dataclass
class Observed:
    """What a call's log line says of it besides its method and outcome, filled in as the call learns
    it: the model's name and the number of texts."""

    model: str = ""
    texts: int = 0


async def observe(
    metrics: Metrics,
    method: str,
    peer: str,
    work: Callable[[Observed], Awaitable[T]],
    cancelled: Callable[[], grpc.StatusCode],
) -> T:
    """Run ``work``, then count, time and log the call. An error it raises becomes a :class:`CallError`
    (:func:`call_error`); anything unexpected is logged with its traceback and becomes INTERNAL. A
    cancelled call (by its client, or at its deadline) is recorded with the code ``cancelled()`` says
    and stays cancelled."""
    start, code, seen = time.perf_counter(), grpc.StatusCode.OK, Observed()
    try:
        return await work(seen)
    except asyncio.CancelledError:
        code = cancelled()
        raise
    except Exception as exc:
        known = call_error(exc)
        if known is None:
            logger.exception("request failed", extra={"fields": {"method": method, "peer": peer}})
            known = CallError(grpc.StatusCode.INTERNAL, "internal error: the server logged it")
        code = known.code
        if known is exc:
            raise
        raise known from None
    finally:
        metrics.record(
            method, code.name, time.perf_counter() - start, model=seen.model, texts=seen.texts, peer=peer
        )
