"""The grpc.aio server: Riva ASR, health, reflection, keepalive, limits, TLS and auth.

An optional second, plaintext server carries only health, for kubelet probes: they cannot speak TLS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc

from parakeet_serve.recognizer import Recognizer
from parakeet_serve.riva.auth import BearerTokenInterceptor
from parakeet_serve.riva.servicer import RivaAsrServicer
from parakeet_serve.riva.tls import ReloadingCertificates
from parakeet_serve.settings import Settings
from parakeet_serve.telemetry import Telemetry

RIVA_ASR_SERVICE = riva_asr_pb2.DESCRIPTOR.services_by_name["RivaSpeechRecognition"].full_name
SERVICES = (RIVA_ASR_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)


class RivaServer:
    """Owns the gRPC server and its health status."""

    def __init__(
        self,
        settings: Settings,
        recognizer: Callable[[], Recognizer],
        model_parameters: Callable[[], dict[str, str]],
        closing: asyncio.Event,
        telemetry: Telemetry,
    ) -> None:
        self._settings = settings
        self._servicer = RivaAsrServicer(recognizer, model_parameters, closing, settings.stop_history_ms, telemetry,
                                         settings.stream_idle_timeout_s)
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self.health: health.aio.HealthServicer | None = None
        self.port = 0
        self.health_port = 0

    async def start(self) -> None:
        """Build, bind and start the server; grpc.aio servers belong to the loop they are made on."""
        s = self._settings
        interceptors = [BearerTokenInterceptor(s.auth_token.get_secret_value())] if s.auth_token else []
        self._server = grpc.aio.server(interceptors=interceptors, options=_channel_options(s))
        self.health = health.aio.HealthServicer()
        riva_asr_pb2_grpc.add_RivaSpeechRecognitionServicer_to_server(self._servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(SERVICES, self._server)
        self.port = self._bind(self._server)
        await self.set_serving(False)
        await self._server.start()
        if s.health_port:
            self._health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            self.health_port = self._health_server.add_insecure_port(f"{s.host}:{s.health_port}")
            await self._health_server.start()

    def _bind(self, server: grpc.aio.Server) -> int:
        s = self._settings
        address = f"{s.host}:{s.port}"
        if s.grpc_tls and s.grpc_cert and s.grpc_key:
            return server.add_secure_port(
                address, ReloadingCertificates(s.grpc_cert, s.grpc_key, s.grpc_client_ca).credentials()
            )
        return server.add_insecure_port(address)

    async def set_serving(self, serving: bool) -> None:
        if self.health is None:
            return
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", RIVA_ASR_SERVICE):
            await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING for good, refuse new RPCs, let in-flight ones finish for up to `grace_s`,
        then cancel the rest (open health watches count as in flight)."""
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace_s)
        if self._health_server is not None:  # probes see NOT_SERVING, not a refused connection, until the end
            await self._health_server.stop(0)


def _channel_options(s: Settings) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_receive_message_length", s.max_message_bytes),
        ("grpc.max_send_message_length", s.max_message_bytes),
        ("grpc.keepalive_time_ms", int(s.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(s.keepalive_timeout_s * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", int(s.workers > 1)),  # alone, a taken port is an error, not a shared one
    ]
    if s.max_connection_age_s:  # GOAWAY after this age: clients reconnect, through the balancer, elsewhere
        options.append(("grpc.max_connection_age_ms", int(s.max_connection_age_s * 1000)))
        if s.max_connection_age_grace_s:
            options.append(("grpc.max_connection_age_grace_ms", int(s.max_connection_age_grace_s * 1000)))
    return options
