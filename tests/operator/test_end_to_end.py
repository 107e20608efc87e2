"""As far as this machine allows end to end: the operator reconciles the CPU example into manifests, and
the server container it would run (its command and environment, as the image's entrypoint runs them)
starts a demo-model server here that passes the pod's readiness probe and transcribes the sample."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from parakeet_operator.builders import Names
from parakeet_operator.plan import Observed, WarmupState, plan
from parakeet_operator.spec import ParakeetASRSpec
from tests.test_cli import free_port, wait_serving

ROOT = Path(__file__).resolve().parents[2]
IMAGE_ENTRYPOINT = [sys.executable, "-m", "parakeet_serve"]  # the image's ENTRYPOINT ["parakeet-serve"]


def test_the_reconciled_server_container_serves_the_demo_model(tmp_path: Path) -> None:
    example = yaml.safe_load((ROOT / "examples" / "parakeetasr-cpu-demo.yaml").read_text())
    spec = ParakeetASRSpec.model_validate(example["spec"])
    decided = plan(spec, Names("demo", "default"), Observed(apis=frozenset(), warmup=WarmupState("succeeded")))
    (deployment,) = [m for m in decided.apply if m["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    env = {e["name"]: e["value"] for e in server["env"]}
    # Only what a pod gets from its volumes and its own network namespace changes here.
    grpc_port, metrics_port = free_port(), free_port()
    env |= {"PORT": str(grpc_port), "PARAKEET_METRICS_PORT": str(metrics_port),
            "HF_HOME": str(tmp_path / "models" / "huggingface")}
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
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=pod["terminationGracePeriodSeconds"])
    assert process.returncode == 0, stderr[-2000:]
