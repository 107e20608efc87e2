"""Write ghz's call data for parakeet-serve from an audio file (default: a bundled demo sample).

    python loadtest/ghz/make_data.py [FILE] [--chunk-ms 100]

`data/recognize.json`: one RecognizeRequest with the whole file (the server decodes it).
`data/streaming.json`: the StreamingRecognize messages: the config, then the audio as 16 kHz
16-bit PCM in `--chunk-ms` pieces, followed by a second of silence so the utterance ends in a
final. With `"stream-interval"` equal to the chunk length, ghz sends them in real time.
Messages are written with protobuf's own JSON mapping (bytes as base64), which ghz reads.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

from google.protobuf import json_format
from riva.client.proto import riva_asr_pb2

from parakeet_serve.bench.clips import RATE, make_clip
from parakeet_serve.bench.timeline import streaming_config
from parakeet_serve.evaluation import ManifestEntry

HERE = Path(__file__).resolve().parent


def recognize_request(audio_file: Path) -> riva_asr_pb2.RecognizeRequest:
    return riva_asr_pb2.RecognizeRequest(
        config=riva_asr_pb2.RecognitionConfig(language_code="en-US", max_alternatives=1), audio=audio_file.read_bytes()
    )


def streaming_requests(audio_file: Path, chunk_ms: float) -> list[riva_asr_pb2.StreamingRecognizeRequest]:
    pcm = make_clip([ManifestEntry(audio_file, 0.0, "")], gap_s=1.0).pcm
    step = int(chunk_ms / 1000 * RATE) * 2
    chunks = [riva_asr_pb2.StreamingRecognizeRequest(audio_content=pcm[i : i + step]) for i in range(0, len(pcm), step)]
    return [streaming_config(), *chunks]


def write(out_dir: Path, audio_file: Path, chunk_ms: float) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    unary, stream = out_dir / "recognize.json", out_dir / "streaming.json"
    unary.write_text(json_format.MessageToJson(recognize_request(audio_file)) + "\n")
    messages = [json_format.MessageToDict(m) for m in streaming_requests(audio_file, chunk_ms)]
    stream.write_text(json.dumps(messages) + "\n")
    return unary, stream


def main() -> None:
    sample = Path(str(resources.files("parakeet_serve").joinpath("samples", "quickstart.wav")))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, nargs="?", default=sample, help="WAV, FLAC or Ogg/Opus file")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="audio per streaming message")
    parser.add_argument("--out", type=Path, default=HERE / "data")
    a = parser.parse_args()
    for path in write(a.out, a.file, a.chunk_ms):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
