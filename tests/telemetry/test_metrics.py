"""Metrics checked against known work: a real server, the real Riva client, a real scrape."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
import riva.client

from tests.conftest import SAMPLE_RATE, ServeFactory, pcm16, rpc_code, speechlike
from tests.riva.test_admission import poll
from tests.telemetry.scrape import Scrape

CONFIG = riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.LINEAR_PCM,
                                       sample_rate_hertz=SAMPLE_RATE, language_code="en-US")


def test_recognize_counts_audio_requests_codes_and_batches(serve: ServeFactory) -> None:
    served = serve()
    asr = served.asr()
    seconds = (1.5, 2.25, 0.75)
    for i, s in enumerate(seconds):
        assert asr.offline_recognize(pcm16(speechlike(s, seed=i)), CONFIG) is not None
    assert rpc_code(lambda: asr.offline_recognize(b"\x01", CONFIG)) == grpc.StatusCode.INVALID_ARGUMENT
    # the server counts a call once it has answered it: on a busy machine the client can scrape first
    poll(lambda: Scrape(served.metrics_url).value("parakeet_requests_total", rpc="Recognize",
                                                  code="INVALID_ARGUMENT") == 1)
    scrape = Scrape(served.metrics_url)
    assert scrape.value("parakeet_audio_seconds_total", rpc="Recognize") == pytest.approx(sum(seconds))
    assert scrape.value("parakeet_requests_total", rpc="Recognize", code="OK") == 3
    assert scrape.value("parakeet_requests_total", rpc="Recognize", code="INVALID_ARGUMENT") == 1
    assert scrape.value("parakeet_request_duration_seconds_count", rpc="Recognize") == 4
    assert scrape.value("parakeet_real_time_factor_count", rpc="Recognize") == 3  # failed requests have no RTF
    assert scrape.value("parakeet_queue_wait_seconds_count", kind="offline") == 3
    assert scrape.value("parakeet_batch_size_sum", kind="offline") == 3  # one item per batch, one after another
    assert scrape.value("parakeet_inference_seconds_total", kind="offline") > 0
    assert scrape.value("parakeet_inference_seconds_total", kind="offline") == pytest.approx(
        scrape.value("parakeet_inference_duration_seconds_sum", kind="offline"))


def test_model_readiness_and_capacity_are_exported(serve: ServeFactory) -> None:
    not_loaded = serve(load=False)
    assert Scrape(not_loaded.metrics_url).value("parakeet_ready") == 0
    served = serve(max_streams=5, microbatch_max_batch=4, queue_max_factor=3)
    scrape = Scrape(served.metrics_url)
    info = served.app.recognizer().info
    assert scrape.value("parakeet_ready") == 1
    assert scrape.value("parakeet_model_info", model_id=info.model_id, decoder=info.decoder, device="cpu",
                        precision=info.precision) == 1
    assert scrape.value("parakeet_max_streams") == 5
    assert scrape.value("parakeet_queue_capacity") == 12
    assert scrape.value("parakeet_model_load_seconds") > 0
    # Declared on every device so dashboards and rules can name them; samples only on a GPU.
    assert "parakeet_gpu_memory_allocated_bytes" in scrape.families
    assert not scrape.families["parakeet_gpu_memory_allocated_bytes"].samples


def test_refused_streams_count_as_admission_rejections(serve: ServeFactory) -> None:
    served = serve(max_streams=1)
    cfg = riva.client.StreamingRecognitionConfig(config=CONFIG, interim_results=False)
    audio = pcm16(speechlike(1.0))
    release = threading.Event()

    def held_open() -> Iterator[bytes]:
        yield audio
        release.wait(30)

    holder = threading.Thread(
        target=lambda: list(served.asr().streaming_response_generator(held_open(), cfg)), daemon=True
    )
    holder.start()
    poll(lambda: Scrape(served.metrics_url).value("parakeet_active_streams") == 1)
    code = rpc_code(lambda: list(served.asr().streaming_response_generator(iter([audio]), cfg)))
    release.set()
    holder.join(30)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    scrape = Scrape(served.metrics_url)
    assert scrape.value("parakeet_admission_rejections_total", reason="max_streams") == 1
    assert scrape.value("parakeet_requests_total", rpc="StreamingRecognize", code="RESOURCE_EXHAUSTED") == 1
    assert scrape.value("parakeet_requests_total", rpc="StreamingRecognize", code="OK") == 1
    assert scrape.value("parakeet_active_streams") == 0
