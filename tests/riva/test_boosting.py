"""Word boosting through the real Riva client on the demo model: Riva's `speech_contexts` fix a known
misrecognition in `Recognize` and in a stream, leave the other requests of a batch untouched, and bad
contexts get INVALID_ARGUMENT with one sentence."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import riva.client
from riva.client.proto import riva_asr_pb2

from parakeet_serve.engine import NemoEngine, load_engine
from tests.conftest import MISHEARD, LoopThread, Served, rpc_code, start_server
from tests.riva.test_streaming import PACKAGE, RATE, as_bytes, config, finals, pcm_of, stream
from tests.telemetry.scrape import Scrape

CLIP, SAID = MISHEARD.clip, MISHEARD.said


@pytest.fixture(scope="module")
def demo(loop_thread: LoopThread, demo_engine: NemoEngine) -> Iterator[Served]:
    # A long batching window, so that requests sent together share one batch.
    served = start_server(loop_thread, demo_engine, model_id="demo", microbatch_window_ms=300, boost_max_phrases=5,
                          boost_max_phrase_chars=30)
    yield served
    served.stop()


def recognition(*boosted: str, boost: float = 20.0) -> riva.client.RecognitionConfig:
    cfg = riva.client.RecognitionConfig(language_code="en-US")
    riva.client.add_word_boosting_to_config(cfg, list(boosted), boost)
    return cfg


def recognize(served: Served, cfg: riva.client.RecognitionConfig, data: bytes | None = None) -> str:
    response = served.asr().offline_recognize(data or CLIP.read_bytes(), cfg)
    return " ".join(r.alternatives[0].transcript for r in response.results)


def test_a_boosted_name_is_heard_in_recognize(demo: Served) -> None:
    plain = recognize(demo, recognition())
    assert MISHEARD.corrects(plain, recognize(demo, recognition(SAID)))
    assert recognize(demo, recognition(SAID, boost=0.0)) == plain  # boost 0: not boosted


def test_a_boosted_request_leaves_the_unboosted_one_in_its_batch_unchanged(demo: Served) -> None:
    other = PACKAGE / "samples" / "quickstart.wav"
    alone = {path: recognize(demo, recognition(), path.read_bytes()) for path in (CLIP, other)}
    before = Scrape(demo.metrics_url)
    futures = {
        "boosted": demo.asr().offline_recognize(CLIP.read_bytes(), recognition(SAID), future=True),
        "same audio": demo.asr().offline_recognize(CLIP.read_bytes(), recognition(), future=True),
        "other audio": demo.asr().offline_recognize(other.read_bytes(), recognition(), future=True),
    }
    texts = {name: f.result(60).results[0].alternatives[0].transcript for name, f in futures.items()}
    after = Scrape(demo.metrics_url)
    batches = after.value("parakeet_batch_size_count", kind="offline") - before.value(
        "parakeet_batch_size_count", kind="offline")
    assert batches == 1, "the three requests did not share one batch"
    assert MISHEARD.corrects(alone[CLIP], texts["boosted"])
    assert texts["same audio"] == alone[CLIP] and texts["other audio"] == alone[other]


def test_a_stream_keeps_its_boost_across_utterances(demo: Served) -> None:
    clip = pcm_of(CLIP)
    pause = np.zeros(RATE, np.float32)
    data = as_bytes(np.concatenate([clip, pause, clip, pause]))
    cfg = config(interim=False)
    plain = finals(stream(demo, data, 3200, cfg))
    riva.client.add_word_boosting_to_config(cfg, [SAID], 20.0)
    boosted = finals(stream(demo, data, 3200, cfg))
    assert len(plain) == len(boosted) == 2
    assert all(MISHEARD.corrects(p, b) for p, b in zip(plain, boosted, strict=True)), (plain, boosted)  # each utterance


def test_streams_with_and_without_a_boost_at_once_keep_their_own_text(demo: Served) -> None:
    data = as_bytes(pcm_of(CLIP))
    plain, boosted = config(interim=False), config(interim=False)
    riva.client.add_word_boosting_to_config(boosted.config, [SAID], 20.0)
    results: dict[str, list[str]] = {}
    threads = [threading.Thread(target=lambda name=name, cfg=cfg: results.__setitem__(
        name, finals(stream(demo, data, 1600, cfg)))) for name, cfg in (("plain", plain), ("boosted", boosted))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert MISHEARD.corrects(results["plain"][0], results["boosted"][0])


@pytest.mark.parametrize(("boosted", "boost", "said"), [
    (["anna"], -10.0, "negative boosts are not supported"),
    (["a", "b", "c", "d", "e", "f"], 20.0, "boosts 6 phrases; this server takes at most 5"),
    (["a very long phrase that goes on and on"], 20.0, "at most 30 characters per phrase"),
])
def test_bad_contexts_are_invalid_argument(demo: Served, boosted: list[str], boost: float, said: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        recognize(demo, recognition(*boosted, boost=boost))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and said in refused.value.details()
    cfg = config()
    riva.client.add_word_boosting_to_config(cfg, boosted, boost)
    code = rpc_code(lambda: list(demo.asr().streaming_response_generator(iter([as_bytes(pcm_of(CLIP))]), cfg)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_the_config_rpc_says_boosting_is_supported_and_how_strong(demo: Served) -> None:
    stub = demo.asr().stub
    model = stub.GetRivaSpeechRecognitionConfig(riva_asr_pb2.RivaSpeechRecognitionConfigRequest()).model_config[0]
    assert model.parameters["word_boosting"] == "true"
    assert float(model.parameters["max_boost"]) == 100 and float(model.parameters["boost_logprob_per_unit"]) > 0


def test_a_ctc_decoding_server_says_it_cannot_boost_and_recognises_anyway(loop_thread: LoopThread,
                                                                           tiny_models: dict[str, Path]) -> None:
    served = start_server(loop_thread, load_engine(str(tiny_models["hybrid_tdt_ctc"]), decoder="ctc"))
    try:
        stub = served.asr().stub
        parameters = stub.GetRivaSpeechRecognitionConfig(
            riva_asr_pb2.RivaSpeechRecognitionConfigRequest()).model_config[0].parameters
        assert parameters["word_boosting"] == "false" and "max_boost" not in parameters
        assert served.asr().offline_recognize(CLIP.read_bytes(), recognition(SAID)).results
    finally:
        served.stop()
