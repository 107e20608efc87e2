"""The GPU recipe's first stage, about 30 s: the imports, a tiny TDT model through offline recognition and a
stream in the serving device and precision (`PARAKEET_DEVICE`, `PARAKEET_PRECISION`), and on CUDA the decoder's
CUDA-graph mode and how often a steady stream step waits for the device. Writes OUT/smoke.json and exits 1 on
any failure, so a lease is not spent on figures that cannot come.

    PYTHONPATH=service:. python loadtest/gpu/smoke.py OUT
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parakeet_serve.engine import load_engine
from parakeet_serve.engine.base import WarmupShape
from parakeet_serve.engine.loader import quiet_nemo
from parakeet_serve.engine.streaming import StreamInput
from parakeet_serve.settings import load_settings
from training.blueprint import Blueprint, build_model, train_tokenizer


def check(folder: Path) -> dict[str, Any]:
    began = time.perf_counter()
    settings = load_settings(model_id="unused")
    tokenizer = train_tokenizer(folder / "tokenizer", vocab_size=64)
    path = folder / "tiny-tdt.nemo"
    build_model(Blueprint(head="tdt"), tokenizer, seed=0).save_to(str(path))
    engine = load_engine(str(path), device=settings.device, precision=settings.precision)
    engine.warmup(WarmupShape(max_batch=4, clip_s=3.0, audio_s=30.0))  # the decoders captured at that shape
    clips = [(np.random.default_rng(k).standard_normal(16000 * (k + 2)) * 0.1).astype(np.float32) for k in range(3)]
    offline = engine.transcribe(clips)
    streamer = engine.streamer(10.0)
    state = streamer.open()
    streamed = streamer.step([StreamInput(state, clips[0], last=True)])
    try:
        syncs: int | str | None = stream_step_syncs(streamer, clips[2])
    except Exception as exc:  # a figure, not a precondition: it must not cost the lease its other figures
        syncs = f"unmeasured: {type(exc).__name__}: {exc}"
    decoding = engine.info.extra["decoding"]
    if engine.device.type == "cuda" and decoding.endswith("cuda_graphs=off"):
        raise RuntimeError(f"the decoder runs without CUDA graphs on the GPU: {decoding}")
    return {"ok": True, "device": str(engine.device), "precision": engine.info.precision, "decoding": decoding,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "offline_items": len(offline), "stream_frames": streamed[0].frames,
            "stream_step_syncs": syncs,
            "seconds": round(time.perf_counter() - began, 1)}


def stream_step_syncs(streamer: Any, clip: np.ndarray) -> int | None:
    """On CUDA, how many operations of a steady stream step (its caches made) wait for the device, as torch's
    sync debug mode flags them: the step reads the features and the decoder's results once each (issue 42)."""
    if not torch.cuda.is_available():
        return None
    state = streamer.open()
    chunk = streamer.samples_for_chunks(1)
    streamer.step([StreamInput(state, clip[:chunk], last=False)])
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            streamer.step([StreamInput(state, clip[chunk : 2 * chunk], last=False)])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in caught)


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    quiet_nemo()
    try:
        with tempfile.TemporaryDirectory(prefix="parakeet-smoke-") as folder:
            result = check(Path(folder))
    except Exception as exc:  # the reason goes into the JSON that comes back, and the recipe stops
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    (out / "smoke.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "traceback"}))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
