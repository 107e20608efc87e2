"""Two-pass streaming through the real Riva client: interims from the streamed pass, each final
`Recognize` on its utterance's audio.

Served on the offline-trained proxy model (`demo-offline`: full attention, per-utterance feature
normalisation, as Parakeet's checkpoints are trained), where the server picks two passes itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from riva.client.proto import riva_asr_pb2

from parakeet_serve.engine import NemoEngine, load_engine
from parakeet_serve.session import LEAD_S
from tests.conftest import LoopThread, Served, start_server
from tests.riva.test_streaming import EVAL, RATE, Result, as_bytes, config, finals, finals_together, offline, stream
from tests.riva.test_streaming import utterances_with_pauses as with_pauses


@pytest.fixture(scope="module")
def proxy_engine() -> NemoEngine:
    return load_engine("demo-offline")


@pytest.fixture(scope="module")
def proxy(loop_thread: LoopThread, proxy_engine: NemoEngine) -> Iterator[Served]:
    served = start_server(loop_thread, proxy_engine, model_id="demo-offline", max_streams=32)
    yield served
    served.stop()


def spans_of(results: list[Result]) -> list[tuple[int, int]]:
    """Each final's audio, in samples: from where the previous final's closed to where its own does."""
    ends = [round(r.audio_processed * RATE) for r in results if r.final]
    return list(zip([0, *ends[:-1]], ends, strict=True))


def test_the_server_streams_a_model_trained_with_full_attention_in_two_passes(proxy: Served) -> None:
    parameters = proxy.app.model_parameters()
    assert parameters["streaming_mode"] == "two_pass"
    assert "lookahead_ms" not in parameters  # a look-ahead choice is for models trained for streaming


def test_each_final_is_recognize_on_its_utterance_audio(proxy: Served) -> None:
    audio, utterances = with_pauses(EVAL[:6], pause_s=1.0, lead_s=0.5)
    results = stream(proxy, as_bytes(audio), chunk_bytes=3200)
    got = [r for r in results if r.final]
    assert len(got) == len(utterances)
    pcm = np.frombuffer(as_bytes(audio), "<i2").astype(np.float32) / 32768  # what the server received
    for result, (start, end), (said_from, said_to) in zip(got, spans_of(results), utterances, strict=True):
        assert start / RATE <= said_from and said_to <= end / RATE  # the whole utterance, in order
        assert result.text == offline(proxy, pcm[start:end])
        assert start / RATE <= result.words[0][1] and result.words[-1][2] <= end / RATE  # stream times


def test_interims_come_before_each_final(proxy: Served) -> None:
    audio, utterances = with_pauses(EVAL[6:9], pause_s=1.0)
    results = stream(proxy, as_bytes(audio), chunk_bytes=3200)
    since_final = 0
    for r in results:
        if r.final:
            assert since_final >= 2
            since_final = 0
        else:
            since_final += 1
    assert sum(r.final for r in results) == len(utterances)
    processed = [r.audio_processed for r in results]
    assert processed == sorted(processed)


def test_chunk_sizes_give_the_same_finals(proxy: Served) -> None:
    audio, _ = with_pauses(EVAL[9:12], pause_s=1.0)
    data = as_bytes(audio)
    by_chunk = {ms: [(r.text, r.audio_processed) for r in stream(proxy, data, chunk_bytes=ms * RATE // 1000 * 2)
                     if r.final] for ms in (10, 100, 1000)}
    assert by_chunk[10] == by_chunk[100] == by_chunk[1000]


def test_sixteen_concurrent_streams_give_the_finals_each_gives_alone(proxy: Served) -> None:
    clips = [as_bytes(with_pauses(EVAL[i : i + 2], pause_s=1.0)[0]) for i in range(0, 32, 2)]
    alone = [finals(stream(proxy, clip, chunk_bytes=3200)) for clip in clips]
    assert finals_together(proxy, clips, timeout_s=180) == alone


def test_a_stream_without_interims_gets_the_same_finals(proxy: Served) -> None:
    audio, _ = with_pauses(EVAL[12:14], pause_s=1.0)
    data = as_bytes(audio)
    quiet = stream(proxy, data, chunk_bytes=3200, cfg=config(interim=False))
    assert all(r.final for r in quiet)
    assert finals(quiet) == finals(stream(proxy, data, chunk_bytes=3200))


def encoder_seconds(served: Served, data: bytes) -> tuple[list[str], float]:
    """A stream's finals and the encoder input it cost (its trailer)."""
    def requests() -> Iterator[riva_asr_pb2.StreamingRecognizeRequest]:
        yield riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config(interim=False))
        for i in range(0, len(data), 3200):
            yield riva_asr_pb2.StreamingRecognizeRequest(audio_content=data[i : i + 3200])

    call = served.asr().stub.StreamingRecognize(requests())
    texts = [r.alternatives[0].transcript for response in call for r in response.results if r.is_final]
    return texts, float(dict(call.trailing_metadata())["x-parakeet-encoder-seconds"])


def test_a_long_pause_is_not_recognised_again(proxy: Served) -> None:
    """The second pass takes at most LEAD_S of the silence before an utterance's first token, so a
    voice agent's long pauses cost the streamed pass only."""
    short, long = (as_bytes(with_pauses(EVAL[14:16], pause_s=pause)[0]) for pause in (1.0, 7.0))
    short_finals, short_cost = encoder_seconds(proxy, short)
    long_finals, long_cost = encoder_seconds(proxy, long)
    # 12 s more audio (two pauses 6 s longer); the streamed pass alone on that much silence:
    silence_finals, silence_cost = encoder_seconds(proxy, bytes(12 * RATE * 2))
    assert len(long_finals) == len(short_finals) == 2 and not silence_finals
    # the second utterance's second pass takes up to LEAD_S more silence; the whole pause would add 6 s
    assert LEAD_S == 1.5
    assert long_cost - short_cost < silence_cost + 2.0
