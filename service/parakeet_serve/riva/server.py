"""The grpc.aio server: Riva ASR, health, reflection, keepalive, limits, TLS and auth."""

from __future__ import annotations

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

RIVA_ASR_SERVICE = riva_asr_pb2.DESCRIPTOR.services_by_name["RivaSpeechRecognition"].full_name
SERVICES = (RIVA_ASR_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)


class RivaServer:
    """Owns the gRPC server and its health status."""

    def __init__(
        self,
        settings: Settings,
        recognizer: Callable[[], Recognizer],
        model_parameters: Callable[[], dict[str, str]],
    ) -> None:
        self._settings = settings
        interceptors = [BearerTokenInterceptor(settings.auth_token.get_secret_value())] if settings.auth_token else []
        self._server = grpc.aio.server(interceptors=interceptors, options=_channel_options(settings))
        self.health = health.aio.HealthServicer()
        riva_asr_pb2_grpc.add_RivaSpeechRecognitionServicer_to_server(
            RivaAsrServicer(recognizer, model_parameters), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(SERVICES, self._server)
        self.port = self._bind()

    def _bind(self) -> int:
        address = f"{self._settings.host}:{self._settings.port}"
        s = self._settings
        if s.grpc_tls and s.grpc_cert and s.grpc_key:
            return self._server.add_secure_port(
                address, ReloadingCertificates(s.grpc_cert, s.grpc_key, s.grpc_client_ca).credentials()
            )
        return self._server.add_insecure_port(address)

    async def start(self) -> None:
        await self.set_serving(False)
        await self._server.start()

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", RIVA_ASR_SERVICE):
            await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to `grace_s`, then cancel the rest."""
        await self._server.stop(grace_s)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


def _channel_options(s: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", s.max_message_bytes),
        ("grpc.max_send_message_length", s.max_message_bytes),
        ("grpc.keepalive_time_ms", int(s.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(s.keepalive_timeout_s * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 0),
    ]
