"""Shared fixtures: tiny models built from a config, and real servers on loopback ports."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import riva.client
import torch

from parakeet_serve.app import Application
from parakeet_serve.engine import NemoEngine, load_engine
from parakeet_serve.engine.loader import quiet_nemo
from parakeet_serve.evaluation import normalise
from parakeet_serve.settings import Settings, load_settings
from parakeet_serve.telemetry import Telemetry
from training.blueprint import Blueprint, build_model, train_tokenizer

HEADS = ("ctc", "rnnt", "tdt", "hybrid_rnnt_ctc", "hybrid_tdt_ctc")
SAMPLE_RATE = 16000
DEMO_EVAL = Path(__file__).resolve().parent.parent / "service" / "parakeet_serve" / "eval"


@dataclass(frozen=True)
class Misheard:
    """An evaluation clip in which the demo model writes `heard` where the voice says `said`: a word to boost."""

    clip: Path
    said: str
    heard: str

    def which(self, transcript: str) -> str | None:
        """`said` or `heard`, whichever word the transcript has (None: neither, or both)."""
        words = set(normalise(transcript).split())
        found = [w for w in (self.said, self.heard) if w in words]
        return found[0] if len(found) == 1 else None

    def corrects(self, plain: str, boosted: str) -> bool:
        """`plain` has the misheard word, and `boosted` is `plain` with that word, and nothing else, put right."""
        right = [self.said if w == self.heard else w for w in normalise(plain).split()]
        return self.which(plain) == self.heard and normalise(boosted).split() == right


MISHEARD = Misheard(DEMO_EVAL / "seen-057.ogg", said="falls", heard="fauls")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the environment: tests start from none of ours."""
    for key in list(os.environ):
        if key.startswith(("PARAKEET_", "OTEL_")) or key == "PORT":
            monkeypatch.delenv(key)


def _models_of_every_head(root: Path, blueprint: Callable[[str], Blueprint], seed: int = 0) -> dict[str, Path]:
    """One randomly initialised `.nemo` file per decoder type, sharing a tokenizer."""
    quiet_nemo()
    tokenizer = train_tokenizer(root / "tokenizer", vocab_size=64)
    paths = {}
    for head in HEADS:
        paths[head] = root / f"{head}.nemo"
        build_model(blueprint(head), tokenizer, seed=seed).save_to(str(paths[head]))
    return paths


def varied_tdt_model(root: Path, blank_bias: float, token_scale: float = 1.0) -> Path:
    """A random TDT model whose durations vary from frame to frame (0 to 4) and that says blank often
    (`blank_bias`): its items leave the decoder's loops at different steps, and a beam search has
    hypotheses at many frames to weigh. `token_scale` sharpens the token outputs."""
    quiet_nemo()
    model = build_model(Blueprint(head="tdt"), train_tokenizer(root / "tokenizer", vocab_size=64), seed=0)
    with torch.no_grad():
        output = model.joint.joint_net[-1]  # the vocabulary, the blank, then the 5 durations
        output.weight[-5:] *= 30
        output.weight[:-5] *= token_scale
        output.bias[-6] += blank_bias
    model.save_to(str(root / "tdt.nemo"))
    return root / "tdt.nemo"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random models of every decoder type, trained as Parakeet's are (full attention)."""
    return _models_of_every_head(tmp_path_factory.mktemp("models"), lambda head: Blueprint(head=head))


@pytest.fixture(scope="session")
def streaming_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random models of every decoder type trained for cache-aware streaming (chunked attention,
    causal convolutions, 240 ms look-ahead)."""
    return _models_of_every_head(tmp_path_factory.mktemp("streaming-models"), lambda head: Blueprint(
        head=head, n_layers=2, d_model=64, streaming=True, att_context=(16, 3)), seed=3)


@pytest.fixture(scope="session")
def engine(tiny_models: dict[str, Path]) -> NemoEngine:
    """The engine behind the server tests: a hybrid TDT-CTC model, as Parakeet's default is."""
    return load_engine(str(tiny_models["hybrid_tdt_ctc"]))


@pytest.fixture(scope="session")
def demo_engine() -> NemoEngine:
    """The bundled demo model, trained on synthetic speech: the tests that assert accuracy use it."""
    return load_engine("demo")


class LoopThread:
    """An asyncio loop in a daemon thread, so synchronous tests can drive async servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@dataclass
class Served:
    """A running server and how to reach it."""

    app: Application
    settings: Settings
    loop: LoopThread

    @property
    def address(self) -> str:
        return f"localhost:{self.app.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.app.metrics_port}/metrics"

    def asr(self, **auth: Any) -> riva.client.ASRService:
        return riva.client.ASRService(riva.client.Auth(uri=self.address, **auth))

    def stop(self) -> None:
        self.loop.run(self.app.drain(), timeout=120)


def start_server(
    loop: LoopThread, engine: NemoEngine, load: bool = True, telemetry: Telemetry | None = None, **overrides: Any
) -> Served:
    """A real server (and metrics endpoint) on ephemeral loopback ports; `load=False` leaves it not yet ready."""
    # A busy test machine lets streams fall behind now and then: lag-based admission is tested where asked for.
    defaults = {"host": "127.0.0.1", "port": 0, "metrics_host": "127.0.0.1", "metrics_port": 0, "warmup": False,
                "max_streams": 8, "max_stream_lag_s": 0}
    settings = load_settings(**{**defaults, **overrides})
    app = Application(settings, engine=engine, telemetry=telemetry)
    loop.run(app.start())
    if load:
        loop.run(app.load())
    return Served(app, settings, loop)


ServeFactory = Callable[..., Served]


@pytest.fixture
def serve(engine: NemoEngine, loop_thread: LoopThread) -> Iterator[ServeFactory]:
    """Start servers with per-test settings; all are drained when the test ends."""
    started: list[Served] = []

    def factory(load: bool = True, telemetry: Telemetry | None = None, **overrides: Any) -> Served:
        started.append(start_server(loop_thread, engine, load, telemetry, **overrides))
        return started[-1]

    yield factory
    for served in started:
        served.stop()


def speechlike(seconds: float, rate: int = SAMPLE_RATE, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Deterministic voiced-sound-like audio (harmonics under a syllable envelope), float32 (channels, n)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    out = []
    for c in range(channels):
        f0 = 110 + 40 * c + 20 * np.sin(2 * np.pi * 0.5 * t)
        phase = 2 * np.pi * np.cumsum(f0) / rate
        voice = sum(np.sin(k * phase) / k for k in range(1, 8))
        envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t + c)) ** 2 / 4
        out.append(0.3 * voice * envelope + 0.005 * rng.standard_normal(t.size))
    return np.clip(np.array(out, dtype=np.float32), -1, 1)


def pcm16(samples: np.ndarray) -> bytes:
    """Interleaved little-endian 16-bit PCM of (channels, n) float samples."""
    return (np.clip(samples.T, -1, 1) * 32767).astype("<i2").tobytes()


def rpc_code(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's new parent may never reap it here)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
