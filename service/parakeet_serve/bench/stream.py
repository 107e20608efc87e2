"""Streaming benchmark: N concurrent real-time streams of an evaluation set through a server.

Each stream sends its share of the manifest's files one after another, each followed by a gap of
silence, in chunks paced like a microphone; the streams' starts are spread over `stagger_s`, as
independent callers' are. From the responses it measures

* interim latency: arrival of the audio an interim covers (`audio_processed`) -> the interim;
* end of speech -> final: the file's last voiced 10 ms (energy) -> the first final after it;
* streamed-final WER next to the offline WER (`Recognize`) of the same files;
* compute amplification: the server's encoder-input seconds per audio second (stream trailers);
* refusals and errors by gRPC status code.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace

import grpc
from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc

from parakeet_serve.bench.clips import Clip, make_clip
from parakeet_serve.bench.offline import OfflineOptions, recognize_all
from parakeet_serve.bench.report import codes_text, percentile_text, percentiles_ms, table
from parakeet_serve.bench.timeline import Timeline, streaming_config
from parakeet_serve.evaluation import ManifestEntry, corpus_wer


@dataclass(frozen=True)
class StreamBenchOptions:
    streams: int = 8
    chunk_ms: float = 100.0
    gap_s: float = 1.5
    realtime: bool = True
    stop_history_ms: int = 0  # 0: the server's default
    files_per_stream: int = 0  # 0: the manifest is shared out between the streams
    offline_wer: bool = True  # also recognise the streamed files with Recognize, for the WER beside
    # Stream k of n starts k/n of this later. Callers who start at once stay in phase: every stream's
    # step then reaches the server in the same few milliseconds, a burst independent callers never make.
    stagger_s: float = 1.0


@dataclass
class _StreamResult:
    reference: str
    timeline: Timeline
    code: str = "OK"
    audio_s: float = 0.0
    encoder_s: float = 0.0


@dataclass(frozen=True)
class StreamReport:
    streams: int
    admitted: int
    codes: dict[str, int]
    interim_ms: dict[str, float]
    final_ms: dict[str, float]
    streamed_wer: float
    offline_wer: float | None
    compute_amplification: float
    audio_s: float
    wall_s: float

    def table(self) -> str:
        return table([
            ("streams (admitted)", f"{self.streams} ({self.admitted})"),
            ("status codes", codes_text(self.codes)),
            ("interim latency ms p50/p95/p99", percentile_text(self.interim_ms)),
            ("end of speech -> final ms p50/p95/p99", percentile_text(self.final_ms)),
            ("streamed-final WER", f"{self.streamed_wer:.2%}"),
            ("offline WER (Recognize)", "-" if self.offline_wer is None else f"{self.offline_wer:.2%}"),
            ("compute amplification", f"{self.compute_amplification:.3f}"),
            ("audio streamed", f"{self.audio_s:.1f} s in {self.wall_s:.1f} s"),
        ])


async def bench_stream(
    target: str,
    entries: Sequence[ManifestEntry],
    options: StreamBenchOptions,
    progress: Callable[[int], None] = lambda n: None,
) -> StreamReport:
    """Run the streams against `target` (HOST:PORT, plaintext) and measure them."""
    assigned = _assign(entries, options)
    clips = [make_clip(files, options.gap_s) for files in assigned]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = riva_asr_pb2_grpc.RivaSpeechRecognitionStub(channel)
        started = time.perf_counter()
        results = await asyncio.gather(*(_one_stream(stub, clip, options, progress, options.stagger_s * k / len(clips))
                                         for k, clip in enumerate(clips)))
        wall = time.perf_counter() - started
    admitted = [r for r in results if r.code == "OK"]
    # the admitted streams' files only: a refused stream's files would count on one side of the comparison
    heard = [files for files, r in zip(assigned, results, strict=True) if r.code == "OK"]
    offline_wer = None
    if options.offline_wer and heard:
        streamed = list({id(e): e for files in heard for e in files}.values())
        offline_wer = (await recognize_all(target, streamed, OfflineOptions(concurrency=4, warmup_requests=0))).wer
    audio = sum(r.audio_s for r in admitted)
    return StreamReport(
        streams=len(results),
        admitted=len(admitted),
        codes=dict(Counter(r.code for r in results)),
        interim_ms=percentiles_ms([x for r in admitted for x in r.timeline.interim_latencies]),
        final_ms=percentiles_ms([x for r in admitted for x in r.timeline.final_latencies]),
        streamed_wer=corpus_wer([r.reference for r in admitted], [" ".join(r.timeline.finals) for r in admitted]),
        offline_wer=offline_wer,
        compute_amplification=sum(r.encoder_s for r in admitted) / audio if audio else 0.0,
        audio_s=audio,
        wall_s=wall,
    )


def _assign(entries: Sequence[ManifestEntry], options: StreamBenchOptions) -> list[list[ManifestEntry]]:
    """Each stream's files, shared out from the manifest (or `files_per_stream` each, wrapping round)."""
    per_stream = options.files_per_stream or max(1, len(entries) // options.streams)
    return [[entries[(s * per_stream + k) % len(entries)] for k in range(per_stream)] for s in range(options.streams)]


async def _one_stream(
    stub: riva_asr_pb2_grpc.RivaSpeechRecognitionStub,
    clip: Clip,
    options: StreamBenchOptions,
    progress: Callable[[int], None],
    delay_s: float = 0.0,
) -> _StreamResult:
    await asyncio.sleep(delay_s)
    timeline = Timeline(clip, options.chunk_ms)

    async def requests() -> AsyncIterator[riva_asr_pb2.StreamingRecognizeRequest]:
        yield streaming_config(options.stop_history_ms)
        # Audio only once admitted: a write in flight when a refusal arrives turns it into INTERNAL (grpc#36066).
        await call.initial_metadata()
        if call.done():
            return
        for due, audio in timeline.chunks():
            if options.realtime:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            timeline.mark_sent()
            yield riva_asr_pb2.StreamingRecognizeRequest(audio_content=audio)
            progress(len(audio) // 2)

    result = _StreamResult(reference=" ".join(clip.texts), timeline=timeline)
    call = stub.StreamingRecognize(requests())
    try:
        async for response in call:
            timeline.observe(response)
        trailers = dict(await call.trailing_metadata())
        result.audio_s = float(trailers.get("x-parakeet-audio-seconds", 0))
        result.encoder_s = float(trailers.get("x-parakeet-encoder-seconds", 0))
    except grpc.aio.AioRpcError as exc:
        result.code = exc.code().name
    return result


@dataclass(frozen=True)
class RampReport:
    objective_ms: float
    streams_held: int  # the most streams that were all admitted, error-free and within the objective
    trials: list[StreamReport]

    def table(self) -> str:
        rows = [(f"{t.streams} streams", trial_text(t, self.objective_ms)) for t in self.trials]
        return table([*rows, ("streams held", f"{self.streams_held} (p95 end of speech -> final "
                                              f"<= {self.objective_ms:.0f} ms)")])


def holds(report: StreamReport, objective_ms: float) -> bool:
    """Every stream admitted and answered OK, and the p95 end of speech -> final within the objective."""
    return (report.admitted == report.streams and bool(report.final_ms)
            and report.final_ms["p95"] <= objective_ms)


async def ramp_streams(
    target: str,
    entries: Sequence[ManifestEntry],
    options: StreamBenchOptions,
    objective_ms: float,
    max_streams: int = 4096,
    progress: Callable[[int], None] = lambda n: None,
    on_trial: Callable[[str], None] = lambda line: None,
) -> RampReport:
    """The largest stream count that holds: double from `options.streams` until one fails, then bisect.

    `on_trial` gets each trial's verdict as it ends: a ramp runs for minutes.
    """
    trials: list[StreamReport] = []

    async def trial(n: int) -> bool:
        trials.append(await bench_stream(target, entries, replace(options, streams=n, offline_wer=False), progress))
        on_trial(f"{n} streams: {trial_text(trials[-1], objective_ms)}")
        return holds(trials[-1], objective_ms)

    good, bad, n = 0, max_streams + 1, max(1, options.streams)
    while n <= max_streams:
        if not await trial(n):
            bad = n
            break
        good, n = n, n * 2
    while bad - good > max(1, good // 8):  # bisect to within an eighth
        middle = (good + bad) // 2
        good, bad = (middle, bad) if await trial(middle) else (good, middle)
    return RampReport(objective_ms, good, trials)


def trial_text(t: StreamReport, objective_ms: float) -> str:
    verdict = "holds" if holds(t, objective_ms) else "fails"
    codes = codes_text(t.codes)
    return f"{verdict}: final p50/p95/p99 {percentile_text(t.final_ms)} ms, interim p95 " \
           f"{t.interim_ms.get('p95', float('nan')):.0f} ms, {codes}"
