"""The ``rnnmt.v1.Admin`` service: reloading the model repository of a running server.

It is served only when the server has admin tokens, and the :class:`~rnnmt.serving.server.interceptors.
BearerTokenInterceptor` of those tokens guards it (translation tokens are not admin tokens)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from rnnmt.serving.server import protocol
from rnnmt.serving.server.model_repository import ReloadReport
from rnnmt.v1 import admin_pb2 as admin_pb
from rnnmt.v1 import admin_pb2_grpc as admin_grpc

SERVICE_NAME = admin_pb.DESCRIPTOR.services_by_name["Admin"].full_name
METHOD_PREFIX = f"/{SERVICE_NAME}/"


class AdminService(admin_grpc.AdminServicer):
    """ReloadModels over the server's reload (which serializes reloads and records their metrics)."""

    def __init__(self, reload: Callable[[], Awaitable[ReloadReport]]) -> None:
        self.reload = reload

    async def ReloadModels(
        self, request: admin_pb.ReloadModelsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb.ReloadModelsResponse:
        return protocol.reload_response(await self.reload())
