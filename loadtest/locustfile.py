"""Locust load test for a Riva-compatible ASR server (parakeet-serve, or NVIDIA Riva itself).

    locust -f loadtest/locustfile.py --headless -u 20 -r 2 -t 60s --host 127.0.0.1:50051

`StreamingUser` holds `StreamingRecognize` sessions like a voice agent: files from a NeMo
manifest (default: the demo model's evaluation set), each followed by silence, sent in chunks at
real-time pace. `RecognizeUser` sends whole files to `Recognize`. Pick one class by naming it
after the options (`... StreamingUser`); both run by default, three streaming users to one.

Locust's statistics get, besides one entry per RPC (`grpc` / `Recognize`, `StreamingRecognize`):

* `latency` / `interim`: audio sent -> the interim result covering it, one sample per interim;
* `latency` / `final`: end of speech -> the final after it, one sample per utterance.

A non-OK status fails the RPC's entry with the status code and the server's sentence.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent
from locust import User, between, events, task
from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc

from parakeet_serve.bench.clips import make_clip
from parakeet_serve.bench.timeline import Timeline, streaming_config
from parakeet_serve.client import rpc_error_text
from parakeet_serve.evaluation import ManifestEntry, demo_manifest, read_manifest

grpc.experimental.gevent.init_gevent()  # gRPC's threads become greenlets, as locust's users are


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--manifest", default="", help="NeMo manifest of the audio to send (default: demo eval set)")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="audio per streaming message")
    parser.add_argument("--gap-s", type=float, default=1.5, help="silence after each file in a stream")
    parser.add_argument("--files-per-stream", type=int, default=3, help="utterances in one streaming session")
    parser.add_argument("--stop-history-ms", type=int, default=0, help="endpointing silence (0: server default)")


_entries: list[ManifestEntry] = []


@events.init.add_listener
def _load_manifest(environment: Any, **_: Any) -> None:
    option = environment.parsed_options.manifest if environment.parsed_options else ""
    _entries.extend(read_manifest(Path(option) if option else demo_manifest()))


class _RivaUser(User):
    abstract = True

    def on_start(self) -> None:
        self._channel = grpc.insecure_channel(self.host or "127.0.0.1:50051")
        self.stub = riva_asr_pb2_grpc.RivaSpeechRecognitionStub(self._channel)
        self.options = self.environment.parsed_options

    def on_stop(self) -> None:
        self._channel.close()

    def fire(self, request_type: str, name: str, seconds: float, length: int = 0,
             failure: grpc.RpcError | None = None) -> None:
        """One locust request event; a failed RPC carries its status code and the server's sentence."""
        exception = RuntimeError(rpc_error_text(failure)) if failure is not None else None
        self.environment.events.request.fire(request_type=request_type, name=name, response_time=seconds * 1000,
                                             response_length=length, exception=exception, context={})


class StreamingUser(_RivaUser):
    """One real-time `StreamingRecognize` session after another."""

    weight = 3
    wait_time = between(0.5, 1.5)

    @task
    def stream(self) -> None:
        files = random.sample(_entries, min(self.options.files_per_stream, len(_entries)))
        timeline = Timeline(make_clip(files, self.options.gap_s), self.options.chunk_ms)
        began = time.perf_counter()
        try:
            for response in self.stub.StreamingRecognize(self._requests(timeline)):
                for kind, latency in timeline.observe(response):
                    self.fire("latency", kind, latency)
        except grpc.RpcError as exc:
            self.fire("grpc", "StreamingRecognize", time.perf_counter() - began, failure=exc)
            return
        self.fire("grpc", "StreamingRecognize", time.perf_counter() - began, len(timeline.clip.pcm))

    def _requests(self, timeline: Timeline) -> Iterator[riva_asr_pb2.StreamingRecognizeRequest]:
        yield streaming_config(self.options.stop_history_ms)
        for due, audio in timeline.chunks():
            time.sleep(max(0.0, due - time.perf_counter()))  # gevent's sleep: other users run meanwhile
            timeline.mark_sent()
            yield riva_asr_pb2.StreamingRecognizeRequest(audio_content=audio)


class RecognizeUser(_RivaUser):
    """Whole files to `Recognize`, as stored (the server decodes them)."""

    weight = 1
    wait_time = between(0.1, 0.5)

    @task
    def recognize(self) -> None:
        entry = random.choice(_entries)
        audio = entry.audio.read_bytes()
        request = riva_asr_pb2.RecognizeRequest(config=riva_asr_pb2.RecognitionConfig(language_code="en-US"),
                                                audio=audio)
        began = time.perf_counter()
        try:
            self.stub.Recognize(request, timeout=60)
        except grpc.RpcError as exc:
            self.fire("grpc", "Recognize", time.perf_counter() - began, failure=exc)
            return
        self.fire("grpc", "Recognize", time.perf_counter() - began, len(audio))
