"""What every benchmark prints and saves: percentiles, a readable table, and JSON with the machine."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parakeet_serve import __version__

QUANTILES = (50, 95, 99)


def percentiles_ms(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds; empty when nothing was measured."""
    if not values_s:
        return {}
    ms = np.asarray(values_s) * 1000
    return {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in QUANTILES}


def percentile_text(p: dict[str, float]) -> str:
    return " / ".join(f"{p[f'p{q}']:.0f}" for q in QUANTILES) if p else "-"


def codes_text(codes: dict[str, int]) -> str:
    """Status codes and their counts, e.g. `OK 61, RESOURCE_EXHAUSTED 61`."""
    return ", ".join(f"{code} {count}" for code, count in sorted(codes.items()))


def table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def machine() -> dict[str, Any]:
    """The machine the benchmark ran on, so runs on different hardware are not compared blindly."""
    import torch

    info: dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "nemo": _version("nemo_toolkit"),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "parakeet_serve": __version__,
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                       "count": torch.cuda.device_count(), "cuda": torch.version.cuda, "driver": _driver()}
    return info


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _driver() -> str | None:
    """The NVIDIA driver's version, from nvidia-smi where it is installed."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def write_json(path: Path, mode: str, context: dict[str, Any], results: Any) -> None:
    """One run as JSON: when, on what, against what, with which options, and the figures."""
    document = {
        "mode": mode,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **context,
        "results": dataclasses.asdict(results) if dataclasses.is_dataclass(results) else results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_server(target: str) -> dict[str, Any]:
    """The served model as the server reports it (GetRivaSpeechRecognitionConfig)."""
    import grpc
    from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = riva_asr_pb2_grpc.RivaSpeechRecognitionStub(channel)
        config = stub.GetRivaSpeechRecognitionConfig(riva_asr_pb2.RivaSpeechRecognitionConfigRequest(), timeout=10)
    return {"models": [{"name": m.model_name, "parameters": dict(m.parameters)} for m in config.model_config]}
