"""The ghz configurations, checked against the proto and a live server (ghz itself is not installable here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
from google.protobuf import json_format
from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc

from parakeet_serve.bench.clips import make_clip
from parakeet_serve.evaluation import ManifestEntry
from tests.conftest import Served

ROOT = Path(__file__).resolve().parents[2]
GHZ = ROOT / "loadtest" / "ghz"
SAMPLE = ROOT / "service" / "parakeet_serve" / "samples" / "quickstart.wav"
# The keys ghz's config file accepts (its `config` struct) that these files use or could.
GHZ_KEYS = {"name", "call", "host", "insecure", "concurrency", "total", "timeout", "duration", "stream-interval",
            "data-file", "connections", "qps", "cacert", "cert", "key", "metadata", "format", "output", "tags"}


def make_data(out: Path) -> tuple[riva_asr_pb2.RecognizeRequest, list[riva_asr_pb2.StreamingRecognizeRequest]]:
    subprocess.run([sys.executable, str(GHZ / "make_data.py"), "--out", str(out)], check=True, capture_output=True)
    unary = json_format.Parse((out / "recognize.json").read_text(), riva_asr_pb2.RecognizeRequest())
    stream = [json_format.ParseDict(m, riva_asr_pb2.StreamingRecognizeRequest())
              for m in json.loads((out / "streaming.json").read_text())]
    return unary, stream


def test_configs_name_real_methods_and_their_data_files() -> None:
    service = riva_asr_pb2.DESCRIPTOR.services_by_name["RivaSpeechRecognition"]
    for name, method in (("recognize.json", "Recognize"), ("streaming.json", "StreamingRecognize")):
        config = json.loads((GHZ / name).read_text())
        assert set(config) <= GHZ_KEYS, set(config) - GHZ_KEYS
        assert config["call"] == f"{service.full_name}.{method}" and service.methods_by_name[method]
        assert config["data-file"] == f"data/{name}" and "proto" not in config  # reflection
    assert json.loads((GHZ / "streaming.json").read_text())["stream-interval"] == "100ms"


def test_generated_data_is_accepted_by_the_server(demo_server: Served, tmp_path: Path) -> None:
    unary, stream = make_data(tmp_path)
    assert stream[0].HasField("streaming_config") and stream[0].streaming_config.interim_results
    chunks = [m.audio_content for m in stream[1:]]
    assert all(len(c) == 3200 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 3200  # 100 ms of 16 kHz PCM
    with grpc.insecure_channel(demo_server.address) as channel:
        stub = riva_asr_pb2_grpc.RivaSpeechRecognitionStub(channel)
        offline = stub.Recognize(unary, timeout=60)
        responses = list(stub.StreamingRecognize(iter(stream), timeout=120))
    assert offline.results and offline.results[0].alternatives[0].transcript
    finals = [r for resp in responses for r in resp.results if r.is_final]
    assert finals and all(f.alternatives[0].transcript for f in finals)


def test_streaming_data_is_the_sample_as_pcm_then_a_second_of_silence(tmp_path: Path) -> None:
    _, stream = make_data(tmp_path)
    pcm = b"".join(m.audio_content for m in stream[1:])
    assert pcm == make_clip([ManifestEntry(SAMPLE, 0.0, "")], gap_s=1.0).pcm
    assert pcm[-32000:] == bytes(32000)
