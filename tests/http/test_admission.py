"""HTTP and gRPC share one scheduler and one admission control: a queue filled by gRPC refuses HTTP with 429."""

from __future__ import annotations

import socket

import httpx
import openai
import pytest

from parakeet_serve.engine import NemoEngine
from parakeet_serve.warmup import sample_path
from tests.conftest import LoopThread
from tests.riva.test_admission import (
    CONFIG,
    HeldEngine,
    assert_abandoned_work_never_reached_the_model,
    busy_server,
    poll,
)
from tests.riva.test_bad_input import WAV
from tests.test_cli import free_port


def test_a_queue_full_of_grpc_work_refuses_http_with_429_and_retry_after(loop_thread: LoopThread,
                                                                         engine: NemoEngine) -> None:
    held = HeldEngine(engine)
    served, first = busy_server(loop_thread, held, http_port=free_port())
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{served.app.http.port}/v1", api_key="x", max_retries=0)
    model = api.models.list().data[0].id
    try:
        second = served.asr().offline_recognize(WAV, CONFIG, future=True)
        poll(lambda: served.app.queue_depth == 1)
        with pytest.raises(openai.RateLimitError) as refused:
            api.audio.transcriptions.create(model=model, file=sample_path().open("rb"))
        assert int(refused.value.response.headers["Retry-After"]) >= 1
        assert refused.value.body["type"] == "rate_limit_error" and "retry" in refused.value.body["message"]
        held.gate.set()
        assert first.result(60).results and second.result(60).results
        assert api.audio.transcriptions.create(model=model, file=sample_path().open("rb")).text is not None
    finally:
        held.gate.set()
        served.stop()


def test_a_draining_server_refuses_new_http_work_with_503_and_finishes_what_it_holds(loop_thread: LoopThread,
                                                                                     engine: NemoEngine) -> None:
    held = HeldEngine(engine)
    served, first = busy_server(loop_thread, held, http_port=free_port(), shutdown_grace_s=30)
    base = f"http://127.0.0.1:{served.app.http.port}"
    api = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
    try:
        draining = served.loop.submit(served.app.drain())
        poll(lambda: httpx.get(f"{base}/readyz").status_code == 503)
        with pytest.raises(openai.InternalServerError) as refused:
            api.audio.transcriptions.create(model="tiny", file=sample_path().open("rb"))
        assert refused.value.status_code == 503 and "shutting down" in refused.value.body["message"]
        assert httpx.get(f"{base}/healthz").status_code == 200  # alive, only not ready
        held.gate.set()
        assert first.result(60).results  # the request it held still gets its transcript
        draining.result(60)
    finally:
        held.gate.set()
        served.stop()


def test_an_http_client_that_hangs_up_has_its_queued_work_dropped_before_compute(loop_thread: LoopThread,
                                                                                 engine: NemoEngine) -> None:
    """As a cancelled gRPC call's: the worker never sees the audio of a client that left."""
    held = HeldEngine(engine)
    served, first = busy_server(loop_thread, held, http_port=free_port())
    audio = sample_path().read_bytes()
    body = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n' + audio +
            b"\r\n--x--\r\n")
    try:
        with socket.create_connection(("127.0.0.1", served.app.http.port)) as sock:
            sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: test\r\n"
                         b"Content-Type: multipart/form-data; boundary=x\r\n"
                         b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
            poll(lambda: served.app.queue_depth == 1)  # queued behind the held work
        # hung up: its job is given up while still queued (the batcher skips it)
        poll(lambda: all(job.reply.cancelled() for job in served.app._scheduler._queue))
        assert_abandoned_work_never_reached_the_model(served, held, first)
    finally:
        held.gate.set()
        served.stop()
