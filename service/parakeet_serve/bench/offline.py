"""Offline benchmark: `Recognize` at concurrency N over a set of files, beside the in-process engine.

The server side sends each file as it is stored (the server decodes it) from N concurrent
callers and measures per-request latency and RTFx (audio seconds per wall second). The
in-process side decodes the same files and runs the engine on batches of N (at most what the
server's batches hold) in this process,
without gRPC, queue or scheduler: the server's RTFx over the engine's is the server overhead. The
engine's featuriser and encoder alone on the same batches give the compute ceiling both are
fractions of (decoding, words and serving are what the rest costs). With `--nemo-transcribe`,
NeMo's own `transcribe()` on the same files (written as 16 kHz WAV first) is the reference a user
would otherwise pick.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc, riva_audio_pb2

from parakeet_serve.bench.clips import RATE, pcm16, read_audio
from parakeet_serve.bench.report import codes_text, percentile_text, percentiles_ms, table
from parakeet_serve.engine.base import Engine
from parakeet_serve.evaluation import ManifestEntry, corpus_wer


@dataclass(frozen=True)
class OfflineOptions:
    concurrency: int = 8
    warmup_requests: int = 8  # sent before timing: the first batches pay lazy initialisation
    rounds: int = 1  # server and in-process runs alternate this many times; the best of each counts
    pcm: bool = False  # send the files decoded, as 16 kHz LINEAR_PCM: the server then decodes nothing either
    max_batch: int = 32  # the most requests the server's batches hold (its microbatch_max_batch)
    channels: int = 1  # connections the callers share in turn: a server's worker processes get one each

    @property
    def batch(self) -> int:
        """The in-process side's batch: what the server's batches hold with this many callers."""
        return min(self.concurrency, self.max_batch)


@dataclass(frozen=True)
class OfflineReport:
    concurrency: int
    requests: int
    codes: dict[str, int]
    audio_s: float
    wall_s: float
    rtfx: float
    latency_ms: dict[str, float]
    wer: float
    in_process_rtfx: float | None  # None when the engine was not run here
    in_process_wer: float | None
    tokens_per_frame: float | None  # tokens the engine emitted per encoder frame (in process)
    server_overhead_ratio: float | None  # server RTFx / in-process RTFx: 1.0 means the server costs nothing
    round_rtfx: list[float]  # every round's figures, the best of which are above
    round_in_process_rtfx: list[float]
    in_process_batch: int | None = None  # the in-process side's batch size (None when not run)
    boosted_rtfx: float | None = None  # the same requests with word boosting (None when not run)
    boosted_wer: float | None = None
    boosted_throughput_ratio: float | None = None  # boosted RTFx / plain RTFx, best rounds
    nemo_transcribe_rtfx: float | None = None  # NeMo's transcribe() on the same files (None when not run)
    nemo_transcribe_wer: float | None = None
    engine_over_nemo_transcribe: float | None = None  # in-process RTFx / NeMo transcribe() RTFx, best rounds
    encoder_rtfx: float | None = None  # featuriser and encoder alone, in process, best round: the ceiling
    in_process_of_encoder: float | None = None  # in-process RTFx / encoder-only RTFx
    server_of_encoder: float | None = None  # server RTFx / encoder-only RTFx

    def table(self) -> str:
        rows = [
            ("requests (concurrency)", f"{self.requests} ({self.concurrency})"),
            ("status codes", codes_text(self.codes)),
            ("server RTFx (best round)", f"{self.rtfx:.1f}  ({self.audio_s:.1f} s of audio in {self.wall_s:.2f} s)"),
            ("latency ms p50/p95/p99", percentile_text(self.latency_ms)),
            ("WER through the server", f"{self.wer:.2%}"),
        ]
        if self.boosted_rtfx is not None:
            rows += [
                ("server RTFx with word boosting", f"{self.boosted_rtfx:.1f}"),
                ("boosted / plain RTFx", f"{self.boosted_throughput_ratio:.3f}"),
                ("WER with word boosting", f"{self.boosted_wer:.2%}"),
            ]
        if self.in_process_rtfx is not None:
            rows += [
                (f"in-process RTFx (best round, batches of {self.in_process_batch})", f"{self.in_process_rtfx:.1f}"),
                ("server / in-process RTFx", f"{self.server_overhead_ratio:.3f}"),
                ("WER in process", f"{self.in_process_wer:.2%}"),
                ("tokens per encoder frame", f"{self.tokens_per_frame:.3f}"),
            ]
        if self.encoder_rtfx is not None:
            rows += [
                ("encoder-only RTFx (the ceiling)", f"{self.encoder_rtfx:.1f}"),
                ("in-process / encoder-only, server / encoder-only",
                 f"{self.in_process_of_encoder:.3f}, {self.server_of_encoder:.3f}"),
            ]
        if self.nemo_transcribe_rtfx is not None:
            rows += [
                ("NeMo transcribe() RTFx (best round)", f"{self.nemo_transcribe_rtfx:.1f}"),
                ("WER of NeMo transcribe()", f"{self.nemo_transcribe_wer:.2%}"),
            ]
            if self.engine_over_nemo_transcribe is not None:
                rows.append(("in-process / NeMo transcribe() RTFx", f"{self.engine_over_nemo_transcribe:.3f}"))
        return table(rows)


@dataclass(frozen=True)
class ServerRun:
    codes: dict[str, int]
    audio_s: float
    wall_s: float
    latencies_s: list[float]
    wer: float


async def recognize_all(
    target: str,
    entries: Sequence[ManifestEntry],
    options: OfflineOptions,
    progress: Callable[[int], None] = lambda n: None,
    speech_contexts: Sequence[riva_asr_pb2.SpeechContext] = (),
) -> ServerRun:
    """Send every file once from `options.concurrency` callers, after a warm-up; time the files. Every
    request carries `speech_contexts` (word boosting) when given."""
    config = riva_asr_pb2.RecognitionConfig(language_code="en-US", speech_contexts=speech_contexts)
    if options.pcm:
        config.encoding, config.sample_rate_hertz = riva_audio_pb2.LINEAR_PCM, RATE
        decoded = [read_audio(e) for e in entries]
        payloads = [pcm16(a) for a in decoded]
        durations = [e.duration_s or len(a) / RATE for e, a in zip(entries, decoded, strict=True)]
    else:
        payloads = [e.audio.read_bytes() for e in entries]
        durations = [e.duration_s or len(read_audio(e)) / RATE for e in entries]
    async with contextlib.AsyncExitStack() as stack:
        # each with a subchannel pool of its own, or gRPC would share one connection among them
        channels = [await stack.enter_async_context(grpc.aio.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)])) for _ in range(options.channels)]
        stubs = [riva_asr_pb2_grpc.RivaSpeechRecognitionStub(c) for c in channels]
        warmup = [payloads[i % len(payloads)] for i in range(options.warmup_requests)]
        await _drain(stubs, config, warmup, options.concurrency, lambda *_: None)
        outcomes: list[tuple[str, float, str]] = [("", 0.0, "")] * len(payloads)

        def record(i: int, code: str, latency: float, text: str) -> None:
            outcomes[i] = (code, latency, text)
            progress(1)

        started = time.perf_counter()
        await _drain(stubs, config, payloads, options.concurrency, record)
        wall = time.perf_counter() - started
    ok = [i for i, (code, _, _) in enumerate(outcomes) if code == "OK"]
    return ServerRun(
        codes=dict(Counter(code for code, _, _ in outcomes)),
        audio_s=sum(durations[i] for i in ok),
        wall_s=wall,
        latencies_s=[outcomes[i][1] for i in ok],
        wer=corpus_wer([entries[i].text for i in ok], [outcomes[i][2] for i in ok]),
    )


async def _drain(
    stubs: Sequence[riva_asr_pb2_grpc.RivaSpeechRecognitionStub],
    config: riva_asr_pb2.RecognitionConfig,
    payloads: Sequence[bytes],
    concurrency: int,
    record: Callable[[int, str, float, str], None],
) -> None:
    """`concurrency` callers, spread over the stubs' connections, take the next payload as soon as their last
    answer arrives."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(payloads)):
        queue.put_nowait(i)

    async def caller(stub: riva_asr_pb2_grpc.RivaSpeechRecognitionStub) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            began = time.perf_counter()
            try:
                response = await stub.Recognize(riva_asr_pb2.RecognizeRequest(config=config, audio=payloads[i]))
            except grpc.aio.AioRpcError as exc:
                record(i, exc.code().name, time.perf_counter() - began, "")
                continue
            text = " ".join(r.alternatives[0].transcript for r in response.results if r.alternatives)
            record(i, "OK", time.perf_counter() - began, text)

    await asyncio.gather(*(caller(stubs[n % len(stubs)]) for n in range(concurrency)))


def run_in_process(
    engine: Engine, entries: Sequence[ManifestEntry], batch_size: int,
    progress: Callable[[int], None] = lambda n: None,
) -> tuple[float, float, float]:
    """(RTFx, WER, tokens per encoder frame) of the bare engine recognising batches of `batch_size`; the
    files are decoded before the clock starts (issue 19 found decoding Opus to be about half of the time
    measured when it was inside). Decoding costs grow with the tokens per frame: a random model's are
    not a trained one's."""
    batches, rtfx, audio_s = _timed_batches(engine.transcribe, entries, batch_size, progress)
    transcripts = [t for batch in batches for t in batch]
    tokens = sum(len(t.best.tokens) for t in transcripts)
    return (rtfx, corpus_wer([e.text for e in entries], [t.best.text for t in transcripts]),
            tokens / (audio_s / engine.frame_shift_s))


def run_encoder_only(engine: Engine, entries: Sequence[ManifestEntry], batch_size: int,
                     progress: Callable[[int], None] = lambda n: None) -> float:
    """RTFx of the engine's featuriser and encoder alone on the same batches as `run_in_process`."""
    return _timed_batches(engine.encode, entries, batch_size, progress)[1]


def _timed_batches(fn: Callable[[list[Any]], Any], entries: Sequence[ManifestEntry], batch_size: int,
                   progress: Callable[[int], None]) -> tuple[list[Any], float, float]:
    """fn's result per batch of `batch_size` decoded files (timed after a warm-up batch, as the server
    run had), the audio seconds per wall second it took, and the audio seconds."""
    decoded = [read_audio(e) for e in entries]
    fn(decoded[:batch_size])
    results = []
    started = time.perf_counter()
    for start in range(0, len(decoded), batch_size):
        batch = decoded[start : start + batch_size]
        results.append(fn(batch))
        progress(len(batch))
    wall = time.perf_counter() - started
    audio_s = sum(len(a) for a in decoded) / RATE
    return results, audio_s / wall, audio_s


def run_nemo_transcribe(model: Any, entries: Sequence[ManifestEntry], batch_size: int) -> tuple[float, float]:
    """(RTFx, WER) of NeMo's own `model.transcribe()` on the files, decoded and written as 16 kHz WAV
    before the clock starts (as the engine's run decodes before its clock); bf16 autocast on CUDA, as
    the engine's `auto` precision."""
    import contextlib

    import soundfile
    import torch

    decoded = [read_audio(e) for e in entries]
    cuda = next(model.parameters()).is_cuda
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, samples in enumerate(decoded):
            paths.append(str(Path(folder) / f"{i}.wav"))
            soundfile.write(paths[-1], samples, RATE)
        precision = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
        with precision:
            model.transcribe(paths[:batch_size], batch_size=batch_size, verbose=False)  # warm-up
            started = time.perf_counter()
            out = model.transcribe(paths, batch_size=batch_size, verbose=False)
            wall = time.perf_counter() - started
    texts = [getattr(o, "text", o) for o in out]
    return sum(len(a) for a in decoded) / RATE / wall, corpus_wer([e.text for e in entries], texts)


def report(
    options: OfflineOptions, server: Sequence[ServerRun], in_process: Sequence[tuple[float, float, float]],
    boosted: Sequence[ServerRun] = (), nemo_transcribe: Sequence[tuple[float, float]] = (),
    encoder_only: Sequence[float] = (),
) -> OfflineReport:
    """The best round of each side (the one least disturbed by whatever else the machine ran);
    latencies and status codes of all rounds (plain requests only)."""
    rtfx = [_rtfx(r) for r in server]
    best = server[max(range(len(server)), key=rtfx.__getitem__)]
    best_boosted = max(boosted, key=_rtfx, default=None)
    engine_best = max(in_process, default=None)
    reference = max(nemo_transcribe, default=None)
    ceiling = max(encoder_only, default=None)
    codes: Counter[str] = Counter()
    for run in server:
        codes.update(run.codes)
    return OfflineReport(
        concurrency=options.concurrency,
        requests=sum(codes.values()),
        codes=dict(codes),
        audio_s=round(best.audio_s, 3),
        wall_s=round(best.wall_s, 3),
        rtfx=max(rtfx),
        latency_ms=percentiles_ms([x for run in server for x in run.latencies_s]),
        wer=best.wer,
        in_process_rtfx=engine_best[0] if engine_best else None,
        in_process_wer=engine_best[1] if engine_best else None,
        tokens_per_frame=round(engine_best[2], 4) if engine_best else None,
        server_overhead_ratio=max(rtfx) / engine_best[0] if engine_best and engine_best[0] else None,
        round_rtfx=[round(x, 2) for x in rtfx],
        round_in_process_rtfx=[round(x, 2) for x, _, _ in in_process],
        in_process_batch=options.batch if engine_best else None,
        boosted_rtfx=_rtfx(best_boosted) if best_boosted else None,
        boosted_wer=best_boosted.wer if best_boosted else None,
        boosted_throughput_ratio=_rtfx(best_boosted) / max(rtfx) if best_boosted and max(rtfx) else None,
        nemo_transcribe_rtfx=reference[0] if reference else None,
        nemo_transcribe_wer=reference[1] if reference else None,
        engine_over_nemo_transcribe=engine_best[0] / reference[0] if engine_best and reference else None,
        encoder_rtfx=ceiling,
        in_process_of_encoder=engine_best[0] / ceiling if engine_best and ceiling else None,
        server_of_encoder=max(rtfx) / ceiling if ceiling else None,
    )


def _rtfx(run: ServerRun) -> float:
    return run.audio_s / run.wall_s if run.wall_s else 0.0
