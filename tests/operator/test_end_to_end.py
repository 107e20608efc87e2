"""As far as this machine allows end to end: the operator reconciles the CPU example (with the Wyoming port on)
into manifests, and the server container it would run (its command and environment, as the image's entrypoint
runs them) starts a demo-model server here that passes the pod's readiness probe and transcribes the sample,
over gRPC and over Wyoming as Home Assistant would."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import soundfile as sf
import yaml
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info

from parakeet_operator.builders import Names
from parakeet_operator.plan import Observed, WarmupState, plan
from parakeet_operator.spec import ParakeetASRSpec
from parakeet_serve.warmup import expected_text, judge, sample_path
from tests.test_cli import free_port, wait_serving

ROOT = Path(__file__).resolve().parents[2]
IMAGE_ENTRYPOINT = [sys.executable, "-m", "parakeet_serve"]  # the image's ENTRYPOINT ["parakeet-serve"]


async def wyoming_describe_and_transcribe(port: int, audio: Path) -> tuple[Info, str]:
    """Home Assistant's questions: what is served (describe), then one utterance's transcript."""
    samples, rate = sf.read(audio, dtype="int16")
    async with AsyncTcpClient("127.0.0.1", port) as client:

        async def until(kind: str) -> Event:
            while True:
                event = await asyncio.wait_for(client.read_event(), 60)
                assert event is not None, f"the connection closed before {kind}"
                if event.type == kind:
                    return event

        await client.write_event(Describe().event())
        info = Info.from_event(await until("info"))
        for message in (Transcribe(), AudioStart(rate=rate, width=2, channels=1),
                        AudioChunk(rate=rate, width=2, channels=1, audio=samples.tobytes()), AudioStop()):
            await client.write_event(message.event())
        return info, Transcript.from_event(await until("transcript")).text


def test_the_reconciled_server_container_serves_the_demo_model_over_grpc_and_wyoming(tmp_path: Path) -> None:
    example = yaml.safe_load((ROOT / "examples" / "parakeetasr-cpu-demo.yaml").read_text())
    example["spec"].setdefault("service", {})["wyomingPort"] = 10300
    spec = ParakeetASRSpec.model_validate(example["spec"])
    decided = plan(spec, Names("demo", "default"), Observed(apis=frozenset(), warmup=WarmupState("succeeded")))
    (deployment,) = [m for m in decided.apply if m["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    env = {e["name"]: e["value"] for e in server["env"]}
    # Only what a pod gets from its volumes and its own network namespace changes here.
    grpc_port, metrics_port, wyoming_port = free_port(), free_port(), free_port()
    assert env["PARAKEET_WYOMING_PORT"] == "10300"  # the port the Services send Home Assistant to
    env |= {"PORT": str(grpc_port), "PARAKEET_METRICS_PORT": str(metrics_port),
            "PARAKEET_WYOMING_PORT": str(wyoming_port), "HF_HOME": str(tmp_path / "models" / "huggingface")}
    assert server["readinessProbe"]["grpc"]["port"] == spec.service.grpc_port  # the probe targets that port
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PARAKEET_", "OTEL_")) and k != "PORT"}
    process = subprocess.Popen([*IMAGE_ENTRYPOINT, *server["args"]], env={**clean, **env},
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_serving(f"127.0.0.1:{grpc_port}", process, timeout=180)  # the readiness probe's question
        check = subprocess.run([*IMAGE_ENTRYPOINT, "transcribe", "--check", "--server", f"127.0.0.1:{grpc_port}"],
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stderr
        assert check.stdout.strip().splitlines()[-1] == f"check passed: 127.0.0.1:{grpc_port} is SERVING demo"
        info, transcript = asyncio.run(wyoming_describe_and_transcribe(wyoming_port, sample_path()))
        assert [model.name for program in info.asr for model in program.models] == ["demo"]
        assert judge(transcript, expected_text("demo")) is None, transcript
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=pod["terminationGracePeriodSeconds"])
    assert process.returncode == 0, stderr[-2000:]
