"""One stream's timeline: when each chunk of audio left, and how late each result came after it.

Shared by the asyncio benchmark and the gevent locust users, which differ only in how they wait.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from riva.client.proto import riva_asr_pb2, riva_audio_pb2

from parakeet_serve.bench.clips import RATE, Clip


def streaming_config(stop_history_ms: int = 0) -> riva_asr_pb2.StreamingRecognizeRequest:
    """The first message: 16 kHz PCM with interim results (`stop_history_ms` 0: the server's default)."""
    config = riva_asr_pb2.RecognitionConfig(
        encoding=riva_audio_pb2.LINEAR_PCM, sample_rate_hertz=RATE, language_code="en-US",
        endpointing_config=riva_asr_pb2.EndpointingConfig(stop_history=stop_history_ms),
    )
    return riva_asr_pb2.StreamingRecognizeRequest(
        streaming_config=riva_asr_pb2.StreamingRecognitionConfig(config=config, interim_results=True)
    )


@dataclass
class Timeline:
    """Chunks of `chunk_ms` of the clip; `due` says when a real-time sender may send each one."""

    clip: Clip
    chunk_ms: float
    sent: list[float] = field(default_factory=list)
    interim_latencies: list[float] = field(default_factory=list)
    final_latencies: list[float] = field(default_factory=list)
    finals: list[str] = field(default_factory=list)
    _began: float = 0.0
    _pending_ends: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._chunk_bytes = int(self.chunk_ms / 1000 * RATE) * 2
        self._pending_ends = list(self.clip.speech_ends_s)

    def chunks(self) -> Iterator[tuple[float, bytes]]:
        """(due time on `time.perf_counter`'s clock, audio) for each chunk; call `mark_sent` after each send.

        A chunk is due once a microphone would have recorded all of it.
        """
        self._began = time.perf_counter()
        for k, start in enumerate(range(0, len(self.clip.pcm), self._chunk_bytes)):
            yield self._began + (k + 1) * self.chunk_ms / 1000, self.clip.pcm[start : start + self._chunk_bytes]

    def mark_sent(self) -> None:
        self.sent.append(time.perf_counter())

    def observe(self, response: riva_asr_pb2.StreamingRecognizeResponse) -> list[tuple[str, float]]:
        """Record a response's results; returns ("interim" or "final", latency s) for each one measured.

        Interim: from when the audio it covers was sent. Final: from when the last spoken audio
        before it was sent (a final for an endpoint with no new speech is not a latency sample).
        """
        now, measured = time.perf_counter(), []
        for r in response.results:
            if not r.is_final:
                self.interim_latencies.append(now - self._sent_at(r.audio_processed))
                measured.append(("interim", self.interim_latencies[-1]))
                continue
            self.finals.append(r.alternatives[0].transcript if r.alternatives else "")
            ended = [e for e in self._pending_ends if e <= r.audio_processed]
            if ended:
                self.final_latencies.append(now - self._sent_at(ended[-1]))
                measured.append(("final", self.final_latencies[-1]))
                self._pending_ends = self._pending_ends[len(ended) :]
        return measured

    def _sent_at(self, audio_s: float) -> float:
        index = min(max(math.ceil(audio_s * RATE * 2 / self._chunk_bytes) - 1, 0), len(self.sent) - 1)
        return self.sent[index]
