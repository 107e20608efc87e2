"""Cache-aware streaming in the engine: each frame encoded once, the same tokens as offline.

Tiny random models trained for streaming (chunked attention, causal convolutions) are built at
test time for every decoder type; their streamed tokens must equal their offline tokens for any
chunking of the audio and any mix of streams in a batch, because the computation is the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from parakeet_serve.engine import NemoEngine, load_engine
from parakeet_serve.engine.nemo.stream_model import NemoStreamModel
from parakeet_serve.engine.streaming import Streamer, StreamInput, StreamState, measure_capacity
from parakeet_serve.engine.types import TokenSpan
from parakeet_serve.errors import ModelLoadError
from tests.conftest import HEADS, speechlike
from training.blueprint import Blueprint, build_model, train_tokenizer


def stream_all(streamer: Streamer, audios: list[np.ndarray], chunk_samples: list[int]) -> list[list[TokenSpan]]:
    """Stream each audio in its own chunk size, all streams stepped together; tokens per stream."""
    states = [streamer.open() for _ in audios]
    tokens: list[list[TokenSpan]] = [[] for _ in audios]
    positions = [0] * len(audios)
    while any(p < len(a) for p, a in zip(positions, audios, strict=True)):
        batch = []
        for i, audio in enumerate(audios):
            if positions[i] < len(audio):
                chunk = audio[positions[i] : positions[i] + chunk_samples[i]]
                positions[i] += len(chunk)
                batch.append((i, StreamInput(states[i], chunk, last=positions[i] >= len(audio))))
        for (i, _), out in zip(batch, streamer.step([b for _, b in batch]), strict=True):
            tokens[i].extend(out.tokens)
    return tokens


def paused_in_turn(streamer: Streamer, audios: list[np.ndarray],
                   restart: bool = False) -> tuple[list[list[TokenSpan]], dict[str, float]]:
    """Streams that pause in turn, as with push-to-talk: all start together, at each later step one
    more stops sending (one encoder chunk a step for those still talking, half a chunk's features
    left pending; with `restart`, its encoder restarted as after a two-pass stream's final), then
    all finish. The tokens per stream, and for their pending features, encoder caches and decoder
    states the memory held while most were paused over their own size."""
    states = [streamer.open() for _ in audios]
    tokens: list[list[TokenSpan]] = [[] for _ in audios]
    first = streamer.samples_for_chunks(1)
    later = streamer.samples_for_chunks(2) - first

    def send(rows: range, start: list[int], stop: list[int], last: bool = False) -> None:
        inputs = [StreamInput(states[i], audios[i][start[i] : stop[i]], last=last) for i in rows]
        for i, out in zip(rows, streamer.step(inputs), strict=True):
            tokens[i].extend(out.tokens)

    sent = [first + later // 2] * len(audios)
    send(range(len(audios)), [0] * len(audios), sent)
    for k in range(1, len(audios)):  # stream k - 1 has paused
        if restart:
            states[k - 1].start_utterance(restart_encoder=True)
        send(range(k, len(audios)), sent, [n + later for n in sent])
        sent = [n + later if i >= k else n for i, n in enumerate(sent)]
    held = {part: held_over_own(states, part) for part in ("features", "caches", "decoder")}
    send(range(len(audios)), sent, [len(a) for a in audios], last=True)
    return tokens, held


def held_over_own(states: list[StreamState], part: str) -> float:
    """The bytes of the arrays a part of the streams' states (`features`, `caches`, `decoder`) keeps
    alive, over the bytes of the part itself."""
    alive: dict[int, int] = {}
    own = 0
    for array in (a for st in states for a in arrays_in(getattr(st, part))):
        if isinstance(array, torch.Tensor):
            storage = array.untyped_storage()
            alive[storage.data_ptr()] = storage.nbytes()
            own += array.numel() * array.element_size()
        else:
            root = array
            while isinstance(root.base, np.ndarray):
                root = root.base
            alive[id(root)] = root.nbytes
            own += array.nbytes
    return sum(alive.values()) / own


def arrays_in(value: Any) -> Iterator[torch.Tensor | np.ndarray]:
    """The tensors and arrays in `value`, through lists, tuples and dataclasses."""
    if isinstance(value, torch.Tensor | np.ndarray):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from arrays_in(item)
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from arrays_in(getattr(value, f.name))


def detokenized(engine: NemoEngine, spans: list[TokenSpan]) -> str:
    return engine.detokenize([t.token_id for t in spans]).strip()


def clips() -> list[np.ndarray]:
    return [speechlike(2.1, seed=1)[0], speechlike(1.05, seed=2)[0], speechlike(0.6, seed=3)[0]]


@pytest.mark.parametrize("head", HEADS)
def test_streamed_tokens_equal_offline_for_any_chunking(streaming_models: dict[str, Path], head: str) -> None:
    engine = load_engine(str(streaming_models[head]))
    audios = clips()
    offline = [t.best.text for t in engine.transcribe(audios)]
    streamer = engine.streamer(10.0)
    for sizes in ([160, 800, 16000], [16000, 160, 800]):  # 10 ms, 50 ms and 1 s chunks, in a shared batch
        streamed = [detokenized(engine, spans) for spans in stream_all(streamer, audios, sizes)]
        assert streamed == offline


def test_paused_streams_hold_no_more_than_twice_their_own_caches(streaming_models: dict[str, Path]) -> None:
    """A stream's caches are slices of the batch it was last encoded in; a paused stream (push-to-talk)
    must not keep every other stream's caches of that step alive, and resumes where it left off."""
    engine = load_engine(str(streaming_models["rnnt"]))
    streamer = engine.streamer(10.0)
    seconds = streamer.samples_for_chunks(8) / engine.sample_rate
    audios = [speechlike(seconds, seed=20 + i)[0] for i in range(6)]
    tokens, held = paused_in_turn(streamer, audios)
    assert max(held.values()) <= 2.0, held  # before: features 5.1x, caches and decoder states 3.5x
    assert [detokenized(engine, t) for t in tokens] == [t.best.text for t in engine.transcribe(audios)]
    assert any(tokens), "the random model emits tokens on speech-like audio"


def test_each_frame_is_encoded_once(streaming_models: dict[str, Path]) -> None:
    engine = load_engine(str(streaming_models["hybrid_tdt_ctc"]))
    streamer = engine.streamer(10.0)
    state = streamer.open()
    audio = speechlike(10.0)[0]
    outputs = [streamer.step([StreamInput(state, audio[i : i + 1600])])[0] for i in range(0, len(audio), 1600)]
    last = streamer.step([StreamInput(state, np.zeros(0, np.float32), last=True)])[0]
    assert outputs[-1].audio_s <= 10.0
    assert last.audio_s == pytest.approx(10.0)
    # the subsampling's 9 feature frames of context per 32-frame chunk are all that is fed twice
    assert last.encoder_input_s / last.audio_s == pytest.approx(41 / 32, abs=0.02)
    assert state.features is None or state.features.shape[1] < 32  # nothing encoded is kept


def test_state_stays_bounded_over_a_long_stream(streaming_models: dict[str, Path]) -> None:
    engine = load_engine(str(streaming_models["ctc"]))
    streamer = engine.streamer(10.0)
    state = streamer.open()
    audio = speechlike(2.0)[0]
    sizes = []
    for k in range(60):  # two minutes of audio, the decoder restarted as after finals
        streamer.step([StreamInput(state, audio)])
        if k % 10 == 0:
            state.start_utterance(restart_encoder=k % 20 == 0)
        sizes.append(_state_bytes(state))
    assert max(sizes[20:]) <= max(sizes[:20]) * 1.05
    assert len(state.audio) < 2 * streamer.samples_for_chunks(1)


def test_decoder_reset_starts_a_new_utterance_at_the_current_frame(streaming_models: dict[str, Path]) -> None:
    engine = load_engine(str(streaming_models["rnnt"]))
    streamer = engine.streamer(10.0)
    state = streamer.open()
    audio = speechlike(2.0)[0]
    streamer.step([StreamInput(state, audio)])
    state.start_utterance(restart_encoder=False)
    reset_at = state.frames
    out = streamer.step([StreamInput(state, audio, last=True)])[0]
    assert out.tokens, "the random model emits tokens on speech-like audio"
    assert min(t.start_frame for t in out.tokens) >= reset_at


def after_a_pause(engine: NemoEngine, first: np.ndarray, endpoint_s: float) -> tuple[Any, list[tuple]]:
    """A stream of `first`, a pause that ends an utterance at `endpoint_s` (0: none, one utterance
    throughout) and a later utterance: the encoder's caches after the pause, and the later tokens."""
    streamer = engine.streamer(10.0)
    state = streamer.open(endpoint_s=endpoint_s)
    out = streamer.step([StreamInput(state, np.concatenate([first, np.zeros(16000, np.float32)]))])[0]
    assert bool(out.endpoints) == bool(endpoint_s), "the pause ends the utterance where asked"
    caches = state.caches
    later = streamer.step([StreamInput(state, speechlike(1.5, seed=9)[0], last=True)])[0]
    assert later.tokens, "the random model emits tokens on speech-like audio"
    return caches, [(t.token_id, t.start_frame, t.confidence) for t in later.tokens]


def alike(a: list[tuple], b: list[tuple]) -> bool:
    """The same tokens at the same frames, confidences within 1e-3 (a whole-utterance model's running
    feature normalisation remembers a stream's audio by about 1e-4; restarting its encoder or not moves
    them by about 4e-3)."""
    return [t[:2] for t in a] == [t[:2] for t in b] and all(abs(x[2] - y[2]) < 1e-3 for x, y in zip(a, b, strict=True))


def test_after_a_final_a_model_trained_for_streaming_keeps_hearing_the_stream(
    streaming_models: dict[str, Path],
) -> None:
    """Its encoder runs on through an endpoint as through any pause (only the decoder restarts): a
    restarted encoder misheard the demo model's next first words."""
    engine = load_engine(str(streaming_models["rnnt"]))
    one = speechlike(2.0, seed=4)[0]
    ended, whole = after_a_pause(engine, one, 0.5)[0], after_a_pause(engine, one, 0.0)[0]
    assert all(torch.equal(a, b) for a, b in zip(ended, whole, strict=True))


def test_after_a_final_a_whole_utterance_model_encodes_without_the_audio_before(
    tiny_models: dict[str, Path],
) -> None:
    """It has never attended to an utterance before the one it hears, so its encoder restarts."""
    engine = load_engine(str(tiny_models["rnnt"]))
    one, other = speechlike(2.0, seed=4)[0], speechlike(2.0, seed=5)[0]
    later = after_a_pause(engine, one, 0.5)[1]
    assert alike(later, after_a_pause(engine, other, 0.5)[1])
    assert not alike(later, after_a_pause(engine, one, 0.0)[1])


def test_an_utterance_ends_after_its_silence_even_inside_one_step(streaming_models: dict[str, Path]) -> None:
    engine = load_engine(str(streaming_models["rnnt"]))
    streamer = engine.streamer(10.0)
    state = streamer.open(endpoint_s=0.5)
    silence = np.zeros(16000, np.float32)
    audio = np.concatenate([speechlike(3.0, seed=6)[0], silence, speechlike(1.0, seed=7)[0], silence])
    piece, ends, tokens = 16000, [], 0  # a second per step; ends: (audio pushed, last token) in s
    for start in range(0, len(audio), piece):
        out = streamer.step([StreamInput(state, audio[start : start + piece])])[0]
        pushed = (start + piece) / 16000
        ends += [(pushed, out.tokens[k - 1].start_frame * engine.frame_shift_s) for k in out.endpoints if k]
        tokens += len(out.tokens)
    assert tokens, "the random model emits tokens on speech-like audio"
    assert ends and ends[0][0] >= 3.5  # not while the speech goes on, whatever the decoder's pauses
    assert any(last < 4.0 for _, last in ends)  # an utterance ended in the pause, even within a 1 s step


def test_full_attention_models_stream_with_bounded_context(tiny_models: dict[str, Path]) -> None:
    """A model trained with full attention streams over chunks of 4 frames and a bounded left
    context; its text may differ from offline (see the engine's docstring), its timeline may not."""
    engine: NemoEngine = load_engine(str(tiny_models["hybrid_tdt_ctc"]))
    streamer = engine.streamer(2.0)
    audio = speechlike(4.0)[0]
    state = streamer.open()
    outputs = [streamer.step([StreamInput(state, audio[i : i + 3200])])[0] for i in range(0, len(audio), 3200)]
    last = streamer.step([StreamInput(state, np.zeros(0, np.float32), last=True)])[0]
    assert streamer.chunk_s == pytest.approx(4 * engine.frame_shift_s)
    assert abs(last.frames - len(audio) / engine.sample_rate / engine.frame_shift_s) <= 1.5
    assert all(t.start_frame < last.frames for out in outputs for t in out.tokens)
    assert state.caches is not None and state.caches[0].shape[2] <= 2.0 / engine.frame_shift_s + 4


def test_capacity_is_measured_and_positive(streaming_models: dict[str, Path]) -> None:
    engine = load_engine(str(streaming_models["ctc"]))
    streamer = engine.streamer(10.0)
    assert measure_capacity(streamer, engine.sample_rate, batch=4) >= 1
    assert measure_capacity(streamer, engine.sample_rate, batch=4, two_pass=True) >= 1  # the offline pass too


def _state_bytes(state: StreamState) -> int:
    caches = [c.numel() * c.element_size() for c in state.caches or ()]
    arrays = [a.nbytes for a in (state.features, state.pre_encode) if a is not None]
    return state.audio.nbytes + sum(arrays) + sum(caches)


def test_whole_utterance_normalisation_becomes_running_statistics(tiny_models: dict[str, Path]) -> None:
    """Parakeet checkpoints normalise each mel band over the whole utterance; a stream cannot wait
    for it, so it normalises with the statistics of everything heard so far. When the stream ends
    those are the utterance's statistics, so the last frames match offline featurisation."""
    engine: NemoEngine = load_engine(str(tiny_models["ctc"]))
    assert engine.model.preprocessor.featurizer.normalize == "per_feature"
    streamer = engine.streamer(2.0)
    audio = speechlike(6.0)[0]
    state = streamer.open()
    for i in range(0, len(audio), 16000):
        streamer._featurize([StreamInput(state, audio[i : i + 16000], last=i + 16000 >= len(audio))])
    offline, length = engine.model.preprocessor(input_signal=torch.from_numpy(audio)[None],
                                           length=torch.tensor([len(audio)]))
    assert state.features is not None
    n = state.features.shape[1]
    assert int(length[0]) == state.next_feature == n
    assert np.allclose(state.features[:, -50:], offline[0, :, n - 50 : n].numpy(), atol=1e-3)


def test_streams_are_featurised_in_one_batch_as_each_would_be_alone(tiny_models: dict[str, Path]) -> None:
    """One featuriser call per step for all streams: padding the shorter segments changes none of their frames."""
    model = load_engine(str(tiny_models["ctc"])).streamer(10.0).model
    segments = [speechlike(s, seed=i)[0] for i, s in enumerate((0.05, 0.33, 1.0))]
    together = model.log_mels(segments)
    for segment, features in zip(segments, together, strict=True):
        (alone,) = model.log_mels([segment])
        assert features.shape == alone.shape == (alone.shape[0], len(segment) // 160)
        assert np.allclose(features, alone, atol=1e-4)


def test_a_last_chunk_shorter_than_one_encoder_frame_is_left_out(tiny_models: dict[str, Path]) -> None:
    """A flush whose few new feature frames make no encoder frame has nothing to encode: it must
    end the stream cleanly (the encoder raises on an empty chunk; a GPU benchmark met it)."""
    engine: NemoEngine = load_engine(str(tiny_models["tdt"]))
    streamer = engine.streamer(2.0)
    audio = speechlike(2.0)[0]
    hop = 160
    for samples in range(16000, 16000 + 32 * hop, hop):  # every tail length, for chunks of 32 features
        state = streamer.open()
        for i in range(0, samples, 2560):
            streamer.step([StreamInput(state, audio[i : min(i + 2560, samples)])])
        last = streamer.step([StreamInput(state, np.zeros(0, np.float32), last=True)])[0]
        assert last.frames == pytest.approx(samples / engine.sample_rate / engine.frame_shift_s, abs=1.5)


@pytest.fixture(scope="module")
def multi_lookahead(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cache-aware model of the shape of NVIDIA's multi-look-ahead FastConformers."""
    root = tmp_path_factory.mktemp("multi-lookahead")
    bp = Blueprint(head="hybrid_tdt_ctc", n_layers=2, d_model=64, streaming=True,
                   att_context=((16, 3), (16, 1), (16, 0)))
    build_model(bp, train_tokenizer(root / "tokenizer", vocab_size=64), seed=3).save_to(str(root / "m.nemo"))
    return root / "m.nemo"


def test_a_multi_lookahead_model_streams_and_recognises_with_the_lookahead_chosen(multi_lookahead: Path) -> None:
    audios, texts = clips(), set()
    for lookahead_ms, chunk_frames in ((None, 4), (240, 4), (80, 2), (0, 1)):
        engine = load_engine(str(multi_lookahead), lookahead_ms=lookahead_ms)
        assert engine.info.extra["lookaheads_ms"] == "240,80,0"
        assert engine.info.extra["lookahead_ms"] == f"{(chunk_frames - 1) * 80}"  # the first by default
        streamer = engine.streamer(10.0)
        assert streamer.chunk_s == pytest.approx(chunk_frames * engine.frame_shift_s)
        offline = [t.best.text for t in engine.transcribe(audios)]
        for sizes in ([160, 800, 16000], [16000, 160, 800]):
            assert [detokenized(engine, spans) for spans in stream_all(streamer, audios, sizes)] == offline
        texts.add(tuple(offline))
    assert len(texts) > 1  # the look-ahead really changes what the encoder sees


def test_a_lookahead_the_model_was_not_trained_with_is_refused(
    multi_lookahead: Path, tiny_models: dict[str, Path]
) -> None:
    with pytest.raises(ModelLoadError, match="lookahead_ms=500 is not one this model was trained with: 240, 80, 0 ms"):
        load_engine(str(multi_lookahead), lookahead_ms=500)
    with pytest.raises(ModelLoadError, match="trained with full attention"):
        load_engine(str(tiny_models["rnnt"]), lookahead_ms=80)


@pytest.mark.parametrize("head", HEADS)
def test_bf16_weights_stream_as_they_transcribe_offline(streaming_models: dict[str, Path], head: str) -> None:
    """bf16 stores the networks in bf16 (a CPU without bf16 instructions cannot run a transducer's
    LSTM under autocast alone): every decoder type must stream on them as it transcribes offline."""
    engine = load_engine(str(streaming_models[head]), device="cpu", precision="bf16")
    assert {p.dtype for p in engine.model.encoder.parameters()} == {torch.bfloat16}
    audios = clips()
    offline = [t.best.text for t in engine.transcribe(audios)]
    streamed = [detokenized(engine, spans) for spans in stream_all(engine.streamer(10.0), audios, [800, 1600, 16000])]
    assert any(offline), "random weights that emit nothing would prove nothing"
    assert streamed == offline


def test_a_new_stream_starts_with_caches_in_the_encoders_dtype(streaming_models: dict[str, Path]) -> None:
    """A stream joining a batch of bf16 streams: fp32 initial caches would promote the whole step (every stream's
    caches and its attention) to fp32, doubling the memory and time bf16 saves on a GPU."""
    engine = load_engine(str(streaming_models["rnnt"]), device="cpu", precision="bf16")
    streamer = engine.streamer(10.0)
    audio = clips()[0]
    first, second = streamer.open(), streamer.open()
    one = streamer.samples_for_chunks(1)
    streamer.step([StreamInput(first, audio[:one], last=False)])
    streamer.step([StreamInput(first, audio[one : 2 * one], last=False), StreamInput(second, audio[:one], last=False)])
    dtypes = {t.dtype for state in (first, second) for t in arrays_in(state.caches)
              if isinstance(t, torch.Tensor) and t.is_floating_point()}
    assert dtypes == {torch.bfloat16}


@pytest.mark.parametrize("trained", ["for streaming", "with full attention"])
def test_the_encoders_output_lengths_are_worked_out_on_the_host(
    trained: str, streaming_models: dict[str, Path], tiny_models: dict[str, Path]
) -> None:
    """A stream step takes its encoded lengths from NeMo's formula instead of reading the device's (one wait
    for a GPU less); they must be the lengths the encoder itself gives, for chunks of any length."""
    models = streaming_models if trained == "for streaming" else tiny_models
    engine = load_engine(str(models["rnnt"]), device="cpu")
    stream_model = NemoStreamModel(engine, 10.0)
    encoder = engine.model.encoder
    lengths = np.arange(1, 70, dtype=np.int64)  # feature frames: less than one encoder frame, to several chunks
    signal = torch.randn(len(lengths), encoder._feat_in, int(lengths.max()))
    for starting in (True, False):
        channel, time, channel_len = encoder.get_initial_cache_state(batch_size=len(lengths))
        with torch.inference_mode():
            _, device_lengths, *_ = encoder.cache_aware_stream_step(
                processed_signal=signal, processed_signal_length=torch.from_numpy(lengths), cache_last_channel=channel,
                cache_last_time=time, cache_last_channel_len=channel_len,
                keep_all_outputs=encoder.att_context_style != "regular",
                drop_extra_pre_encoded=0 if starting else stream_model.geometry.drop)
        assert stream_model.encoded_lengths(lengths, starting) == device_lengths.tolist()
