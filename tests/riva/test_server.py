"""Server plumbing: health transitions and the probe port, reflection, TLS, mutual TLS, certificate rotation,
limits and connection age."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import riva.client
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from riva.client.proto import riva_asr_pb2

from parakeet_serve.engine import NemoEngine
from parakeet_serve.engine.base import WarmupShape
from parakeet_serve.errors import SettingsError
from parakeet_serve.riva.server import RIVA_ASR_SERVICE
from parakeet_serve.settings import load_settings
from tests.conftest import LoopThread, Served, ServeFactory, pcm16, rpc_code, speechlike, start_server
from tests.riva.test_bad_input import WAV
from tests.test_cli import free_port

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def health_status(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def test_health_is_not_serving_until_loaded_then_serving_then_not_serving_on_drain(serve: ServeFactory) -> None:
    served = serve(load=False, shutdown_grace_s=1)
    assert health_status(served.address) == NOT_SERVING
    assert health_status(served.address, RIVA_ASR_SERVICE) == NOT_SERVING
    asr = served.asr()
    config = riva.client.RecognitionConfig(language_code="en-US")
    with pytest.raises(grpc.RpcError) as info:
        asr.offline_recognize(WAV, config)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "loading" in info.value.details()

    served.loop.run(served.app.load())
    assert health_status(served.address) == SERVING
    assert asr.offline_recognize(WAV, config).results
    # Loaded and warm: the model's objects are out of the collector's full walks until the drain.
    assert gc.get_freeze_count() > 10_000
    assert not any(obj is served.app for obj in gc.get_objects())

    with grpc.insecure_channel(served.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == SERVING
        draining = served.loop.submit(served.app.drain())
        assert next(watch).status == NOT_SERVING
        draining.result(60)
    assert gc.get_freeze_count() == 0


def test_reflection_lists_riva_and_health(serve: ServeFactory) -> None:
    served = serve()
    with grpc.insecure_channel(served.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {RIVA_ASR_SERVICE, "grpc.health.v1.Health"} <= services


def _write(ca: trustme.CA, directory: Path, name: str, common_name: str = "localhost") -> tuple[Path, Path]:
    cert = ca.issue_cert(common_name, "127.0.0.1")
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert.private_key_pem.write_to_path(str(key_path))
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return cert_path, key_path


def _ca_file(ca: trustme.CA, path: Path) -> Path:
    ca.cert_pem.write_to_path(str(path))
    return path


def _tls_asr(served: Served, ca: Path, client: tuple[Path, Path] | None = None) -> riva.client.ASRService:
    extra = {"ssl_client_cert": str(client[0]), "ssl_client_key": str(client[1])} if client else {}
    return served.asr(ssl_root_cert=str(ca), use_ssl=True, **extra)


CONFIG = riva.client.RecognitionConfig(language_code="en-US")


def test_tls_refuses_plaintext_and_serves_clients_that_trust_the_ca(serve: ServeFactory, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = _write(ca, tmp_path, "server")
    served = serve(grpc_tls=True, grpc_cert=cert, grpc_key=key)
    plain = served.asr()
    assert rpc_code(lambda: plain.offline_recognize(WAV, CONFIG)) == grpc.StatusCode.UNAVAILABLE
    stranger = _tls_asr(served, _ca_file(trustme.CA(), tmp_path / "other-ca.pem"))
    assert rpc_code(lambda: stranger.offline_recognize(WAV, CONFIG)) == grpc.StatusCode.UNAVAILABLE
    assert _tls_asr(served, _ca_file(ca, tmp_path / "ca.pem")).offline_recognize(WAV, CONFIG).results


def test_mutual_tls_rejects_clients_without_a_trusted_certificate(serve: ServeFactory, tmp_path: Path) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    cert, key = _write(server_ca, tmp_path, "server")
    served = serve(grpc_tls=True, grpc_cert=cert, grpc_key=key, grpc_client_ca=_ca_file(client_ca, tmp_path / "cc.pem"))
    trust = _ca_file(server_ca, tmp_path / "ca.pem")
    no_cert = _tls_asr(served, trust)
    assert rpc_code(lambda: no_cert.offline_recognize(WAV, CONFIG)) == grpc.StatusCode.UNAVAILABLE
    wrong = _tls_asr(served, trust, _write(trustme.CA(), tmp_path, "rogue", "client"))
    assert rpc_code(lambda: wrong.offline_recognize(WAV, CONFIG)) == grpc.StatusCode.UNAVAILABLE
    good = _tls_asr(served, trust, _write(client_ca, tmp_path, "client", "client"))
    assert good.offline_recognize(WAV, CONFIG).results


def test_rotated_certificate_is_used_for_new_connections_without_dropping_old_ones(
    serve: ServeFactory, tmp_path: Path
) -> None:
    old_ca, new_ca = trustme.CA(), trustme.CA()
    cert, key = _write(old_ca, tmp_path, "server")
    served = serve(grpc_tls=True, grpc_cert=cert, grpc_key=key)
    old_client = _tls_asr(served, _ca_file(old_ca, tmp_path / "old.pem"))
    assert old_client.offline_recognize(WAV, CONFIG).results

    fresh_cert, fresh_key = _write(new_ca, tmp_path, "fresh")  # cert-manager writes new files in place
    os.replace(fresh_key, key)
    os.replace(fresh_cert, cert)
    later = time.time() + 5
    os.utime(cert, (later, later))
    os.utime(key, (later, later))

    new_client = _tls_asr(served, _ca_file(new_ca, tmp_path / "new.pem"))
    assert new_client.offline_recognize(WAV, CONFIG).results
    assert old_client.offline_recognize(WAV, CONFIG).results  # its connection predates the rotation


def test_keepalive_and_message_limits_are_applied(serve: ServeFactory) -> None:
    served = serve(max_upload_mb=1)
    big = b"\x00" * (2 * 1024 * 1024)
    config = riva.client.RecognitionConfig(
        language_code="en-US", encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000
    )
    assert rpc_code(lambda: served.asr().offline_recognize(big, config)) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_health_port_answers_probes_in_plaintext_beside_a_tls_port_and_serves_nothing_else(
    serve: ServeFactory, tmp_path: Path
) -> None:
    cert, key = _write(trustme.CA(), tmp_path, "server")
    served = serve(grpc_tls=True, grpc_cert=cert, grpc_key=key, health_port=free_port(), shutdown_grace_s=1)
    probe = f"localhost:{served.app.server.health_port}"
    assert health_status(probe) == SERVING
    assert health_status(probe, RIVA_ASR_SERVICE) == SERVING
    plain = riva.client.ASRService(riva.client.Auth(uri=probe))
    assert rpc_code(lambda: plain.offline_recognize(WAV, CONFIG)) == grpc.StatusCode.UNIMPLEMENTED

    with grpc.insecure_channel(probe) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == SERVING
        draining = served.loop.submit(served.app.drain())
        assert next(watch).status == NOT_SERVING
        draining.result(60)


def test_health_port_may_not_be_the_grpc_port() -> None:
    with pytest.raises(SettingsError, match="PARAKEET_HEALTH_PORT=50051 is the gRPC port"):
        load_settings(port=50051, health_port=50051)


def _stream_seconds(served: Served, seconds: float) -> grpc.StatusCode:
    """Stream `seconds` of audio in real time; the status the stream ended with."""
    chunk = pcm16(speechlike(0.1))
    cfg = riva.client.StreamingRecognitionConfig(config=riva.client.RecognitionConfig(
        language_code="en-US", encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000))

    def paced() -> Iterator[bytes]:
        for _ in range(int(seconds * 10)):
            time.sleep(0.1)
            yield chunk

    return rpc_code(lambda: list(served.asr().streaming_response_generator(paced(), cfg)))


def test_max_connection_age_closes_old_connections_after_their_grace_and_not_before(serve: ServeFactory) -> None:
    patient = serve(max_connection_age_s=0.5)  # no grace limit: open calls finish however long they take
    assert _stream_seconds(patient, 2.5) == grpc.StatusCode.OK
    strict = serve(max_connection_age_s=0.5, max_connection_age_grace_s=0.5)
    assert _stream_seconds(strict, 2.5) == grpc.StatusCode.UNAVAILABLE


class ThreadRecorder:
    """The real engine and its streamer, noting which thread each model call runs on."""

    def __init__(self, wrapped: object, threads: dict[str, set[str]] | None = None,
                 calls: dict[str, list[tuple]] | None = None) -> None:
        self._wrapped = wrapped
        self.threads: dict[str, set[str]] = {} if threads is None else threads
        self.calls: dict[str, list[tuple]] = {} if calls is None else calls  # each call's arguments

    def __getattr__(self, name: str) -> object:
        value = getattr(self._wrapped, name)
        if name not in ("warmup", "recognise", "streamer", "measure_capacity", "step"):
            return value

        def call(*args: object, **kwargs: object) -> object:
            self.threads.setdefault(name, set()).add(threading.current_thread().name)
            self.calls.setdefault(name, []).append(args)
            result = value(*args, **kwargs)  # type: ignore[operator]
            return ThreadRecorder(result, self.threads, self.calls) if name == "streamer" else result

        return call


def test_every_model_call_runs_on_the_inference_thread(loop_thread: LoopThread, engine: NemoEngine) -> None:
    """Torch's OpenMP keeps a thread team per calling thread; a second team on a 2-core machine made
    every batch a third slower (the streamer was once built on the event loop's thread)."""
    recorder = ThreadRecorder(engine)
    served = start_server(loop_thread, recorder, warmup=True, max_streams=0)
    try:
        served.asr().offline_recognize(pcm16(speechlike(1.0)), riva.client.RecognitionConfig(
            encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000, language_code="en-US"))
        streaming = riva.client.StreamingRecognitionConfig(config=riva.client.RecognitionConfig(
            encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000, language_code="en-US"))
        list(served.asr().streaming_response_generator([pcm16(speechlike(1.0))], streaming))
    finally:
        served.stop()
    assert set(recorder.threads) == {"warmup", "recognise", "streamer", "measure_capacity", "step"}
    assert all(name.startswith("inference") for names in recorder.threads.values() for name in names), \
        recorder.threads


def test_warm_up_runs_at_the_largest_work_and_steps_a_full_batch_of_streams_even_with_a_set_capacity(
        loop_thread: LoopThread, engine: NemoEngine) -> None:
    """On a GPU, NeMo captures its decoder's CUDA graphs again at each larger batch or longer audio: the
    engine is told the largest it will get, and one full batch of streams is stepped before the first client."""
    recorder = ThreadRecorder(engine)
    served = start_server(loop_thread, recorder, warmup=True, max_streams=5, microbatch_max_batch=6,
                          progressive_piece_s=12, max_audio_seconds=90)
    try:
        model = served.asr().stub.GetRivaSpeechRecognitionConfig(
            riva_asr_pb2.RivaSpeechRecognitionConfigRequest()).model_config[0]
    finally:
        served.stop()
    assert recorder.calls["warmup"] == [(WarmupShape(max_batch=6, clip_s=12.0, audio_s=90.0),)]
    assert [args[1] for args in recorder.calls["measure_capacity"]] == [6]
    assert model.parameters["max_streams"] == "5"
