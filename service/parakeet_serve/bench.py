"""Streaming benchmark: N concurrent real-time streams of an evaluation set through a server.

Each stream sends its share of the manifest's files one after another, each followed by a gap of
silence, in chunks paced like a microphone. From the responses it measures

* interim latency: arrival of the audio an interim covers (`audio_processed`) -> the interim;
* end of speech -> final: the file's last voiced 10 ms (energy) -> the first final after it;
* streamed-final WER next to the offline WER (`Recognize`) of the same files;
* compute amplification: the server's encoder-input seconds per audio second (stream trailers);
* refusals and errors by gRPC status code.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc, riva_audio_pb2

from parakeet_serve.audio import AudioFormat, decode_audio
from parakeet_serve.evaluation import ManifestEntry, error_counts

RATE = 16000
_SPEECH_DB = -35.0  # a 10 ms frame within this many dB of the file's loudest frame counts as speech


@dataclass(frozen=True)
class StreamBenchOptions:
    streams: int = 8
    chunk_ms: float = 100.0
    gap_s: float = 1.5
    realtime: bool = True
    stop_history_ms: int = 0  # 0: the server's default
    files_per_stream: int = 0  # 0: the manifest is shared out between the streams


@dataclass
class _Clip:
    pcm: bytes
    texts: list[str]
    speech_ends_s: list[float]


@dataclass
class _StreamResult:
    code: str = "OK"
    interim_latencies: list[float] = field(default_factory=list)
    final_latencies: list[float] = field(default_factory=list)
    finals: list[str] = field(default_factory=list)
    audio_s: float = 0.0
    encoder_s: float = 0.0
    reference: str = ""


@dataclass(frozen=True)
class StreamReport:
    streams: int
    admitted: int
    codes: dict[str, int]
    interim_ms: dict[str, float]
    final_ms: dict[str, float]
    streamed_wer: float
    offline_wer: float
    compute_amplification: float
    audio_s: float
    wall_s: float

    def table(self) -> str:
        rows = [
            ("streams (admitted)", f"{self.streams} ({self.admitted})"),
            ("status codes", ", ".join(f"{k} {v}" for k, v in sorted(self.codes.items()))),
            ("interim latency ms p50/p95/p99", _percentile_text(self.interim_ms)),
            ("end of speech -> final ms p50/p95/p99", _percentile_text(self.final_ms)),
            ("streamed-final WER", f"{self.streamed_wer:.2%}"),
            ("offline WER (Recognize)", f"{self.offline_wer:.2%}"),
            ("compute amplification", f"{self.compute_amplification:.3f}"),
            ("audio streamed", f"{self.audio_s:.1f} s in {self.wall_s:.1f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


async def bench_stream(
    target: str,
    entries: Sequence[ManifestEntry],
    options: StreamBenchOptions,
    progress: Callable[[int], None] = lambda n: None,
) -> StreamReport:
    """Run the streams against `target` (HOST:PORT, plaintext) and measure them."""
    clips = _clips(entries, options)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = riva_asr_pb2_grpc.RivaSpeechRecognitionStub(channel)
        started = time.perf_counter()
        results = await asyncio.gather(*(_one_stream(stub, clip, options, progress) for clip in clips))
        wall = time.perf_counter() - started
        offline = await _offline_wer(stub, entries[: sum(len(c.texts) for c in clips)])
    admitted = [r for r in results if r.code == "OK"]
    words = sum(error_counts(r.reference, " ".join(r.finals))[1] for r in admitted)
    errors = sum(error_counts(r.reference, " ".join(r.finals))[0] for r in admitted)
    audio = sum(r.audio_s for r in admitted)
    return StreamReport(
        streams=len(results),
        admitted=len(admitted),
        codes=dict(Counter(r.code for r in results)),
        interim_ms=_percentiles([x for r in admitted for x in r.interim_latencies]),
        final_ms=_percentiles([x for r in admitted for x in r.final_latencies]),
        streamed_wer=errors / max(words, 1),
        offline_wer=offline,
        compute_amplification=sum(r.encoder_s for r in admitted) / audio if audio else 0.0,
        audio_s=audio,
        wall_s=wall,
    )


def _clips(entries: Sequence[ManifestEntry], options: StreamBenchOptions) -> list[_Clip]:
    """Each stream's audio: its files, each followed by silence, as 16-bit PCM at 16 kHz."""
    per_stream = options.files_per_stream or max(1, len(entries) // options.streams)
    gap = np.zeros(int(options.gap_s * RATE), np.float32)
    clips = []
    for s in range(options.streams):
        mine = [entries[(s * per_stream + k) % len(entries)] for k in range(per_stream)]
        parts, ends, offset = [], [], 0
        for entry in mine:
            audio = decode_audio(entry.audio.read_bytes(), AudioFormat(), target_rate=RATE, max_seconds=3600).mono()
            ends.append((offset + _speech_end(audio)) / RATE)
            parts += [audio, gap]
            offset += len(audio) + len(gap)
        pcm = (np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2").tobytes()
        clips.append(_Clip(pcm, [e.text for e in mine], ends))
    return clips


def _speech_end(audio: np.ndarray) -> int:
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    level = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9)
    voiced = np.flatnonzero(level > level.max() + _SPEECH_DB)
    return int((voiced[-1] + 1) * 160) if len(voiced) else len(audio)


async def _one_stream(
    stub: riva_asr_pb2_grpc.RivaSpeechRecognitionStub,
    clip: _Clip,
    options: StreamBenchOptions,
    progress: Callable[[int], None],
) -> _StreamResult:
    chunk = int(options.chunk_ms / 1000 * RATE) * 2
    sent: list[float] = []
    result = _StreamResult(reference=" ".join(clip.texts))

    async def requests() -> AsyncIterator[riva_asr_pb2.StreamingRecognizeRequest]:
        config = riva_asr_pb2.RecognitionConfig(
            encoding=riva_audio_pb2.LINEAR_PCM, sample_rate_hertz=RATE, language_code="en-US",
            endpointing_config=riva_asr_pb2.EndpointingConfig(stop_history=options.stop_history_ms),
        )
        yield riva_asr_pb2.StreamingRecognizeRequest(
            streaming_config=riva_asr_pb2.StreamingRecognitionConfig(config=config, interim_results=True)
        )
        began = time.perf_counter()
        for k, start in enumerate(range(0, len(clip.pcm), chunk)):
            if options.realtime:  # a chunk exists once the microphone has recorded all of it
                await asyncio.sleep(max(0.0, began + (k + 1) * options.chunk_ms / 1000 - time.perf_counter()))
            sent.append(time.perf_counter())
            yield riva_asr_pb2.StreamingRecognizeRequest(audio_content=clip.pcm[start : start + chunk])
            progress(len(clip.pcm[start : start + chunk]) // 2)

    def sent_at(audio_s: float) -> float:
        index = min(max(math.ceil(audio_s * RATE * 2 / chunk) - 1, 0), len(sent) - 1)
        return sent[index]

    pending_ends = list(clip.speech_ends_s)
    call = stub.StreamingRecognize(requests())
    try:
        async for response in call:
            now = time.perf_counter()
            for r in response.results:
                if not r.is_final:
                    result.interim_latencies.append(now - sent_at(r.audio_processed))
                    continue
                result.finals.append(r.alternatives[0].transcript if r.alternatives else "")
                ended = [e for e in pending_ends if e <= r.audio_processed]
                if ended:
                    result.final_latencies.append(now - sent_at(ended[-1]))
                    pending_ends = pending_ends[len(ended) :]
        trailers = dict(await call.trailing_metadata())
        result.audio_s = float(trailers.get("x-parakeet-audio-seconds", 0))
        result.encoder_s = float(trailers.get("x-parakeet-encoder-seconds", 0))
    except grpc.aio.AioRpcError as exc:
        result.code = exc.code().name
    return result


async def _offline_wer(stub: riva_asr_pb2_grpc.RivaSpeechRecognitionStub, entries: Sequence[ManifestEntry]) -> float:
    limit = asyncio.Semaphore(4)

    async def one(entry: ManifestEntry) -> tuple[int, int]:
        async with limit:
            response = await stub.Recognize(
                riva_asr_pb2.RecognizeRequest(
                    config=riva_asr_pb2.RecognitionConfig(language_code="en-US"), audio=entry.audio.read_bytes()
                )
            )
        text = " ".join(r.alternatives[0].transcript for r in response.results if r.alternatives)
        errors, words, _, _ = error_counts(entry.text, text)
        return errors, words

    counts = await asyncio.gather(*(one(e) for e in entries))
    return sum(e for e, _ in counts) / max(sum(w for _, w in counts), 1)


def _percentiles(values_s: Sequence[float]) -> dict[str, float]:
    if not values_s:
        return {}
    ms = np.asarray(values_s) * 1000
    return {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)}


def _percentile_text(p: dict[str, float]) -> str:
    return " / ".join(f"{p[k]:.0f}" for k in ("p50", "p95", "p99")) if p else "-"
