"""The real operator (kopf's KopfRunner) against KMock's emulated Kubernetes API, asserting on what the API
received and stored: warm-up before the fleet, optional APIs, drift, model changes, API failures, deletion."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import kmock as kmocklib
import pytest

from parakeet_operator import builders
from parakeet_operator.spec import ParakeetASRSpec
from tests.operator.kmock_cluster import (
    ASR,
    ASR_PATH,
    CUSTOM_METRICS,
    KEDA,
    NS,
    OPERATOR_CALLS,
    SERVICE_MONITORS,
    alive,
    condition,
    create,
    eventually,
    finish_job,
    merge_patch,
    prepare,
    running_operator,
    serve_api,
    status_of,
    stored,
)

pytestmark = pytest.mark.asyncio
SPEC = {"model": {"id": "demo"}, "gpu": {"count": 0}, "autoscaling": {"mode": "auto"}}
JOB = builders.Names("asr", NS).warmup_job(builders.warmup_key(ParakeetASRSpec.model_validate(SPEC),
                                                               builders.Names("asr", NS)))
WARMED = {"ok": True, "model": "demo", "device": "cpu", "load_seconds": 4.2, "rtf": 0.02, "error": None,
          "transcript": "the train to the airport leaves at four oh five from platform twenty"}


@pytest.fixture
def k8s(kmock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    return prepare(kmock, tmp_path, monkeypatch)


async def warmed_up(k8s: Any, name: str = "asr", spec: dict[str, Any] | None = None) -> None:
    await create(k8s, name, spec or SPEC)
    await eventually(lambda: alive(k8s, "batch/v1/jobs", JOB), "the warm-up Job")
    await finish_job(k8s, JOB, WARMED)
    await eventually(lambda: alive(k8s, "apps/v1/deployments", name), "the Deployment")


async def test_a_new_resource_gets_its_cache_and_warmup_job_and_no_fleet_until_the_model_is_proven(k8s: Any) -> None:
    async with running_operator(k8s):
        await create(k8s, "asr", SPEC)
        await eventually(lambda: alive(k8s, "batch/v1/jobs", JOB), "the warm-up Job")
        await eventually(lambda: condition(k8s, "asr", "WarmedUp")["reason"] == "Running", "WarmedUp Running")
        assert not alive(k8s, "apps/v1/deployments", "asr")

        await finish_job(k8s, JOB, WARMED)
        await eventually(lambda: alive(k8s, "apps/v1/deployments", "asr"), "the Deployment")
        await eventually(lambda: condition(k8s, "asr", "WarmedUp")["status"] == "True", "WarmedUp True")
        for resource, name in [("v1/services", "asr"), ("v1/services", "asr-headless"),
                               ("policy/v1/poddisruptionbudgets", "asr")]:
            await eventually(lambda r=resource, n=name: alive(k8s, r, n), f"{resource} {name}")

    claim = stored(k8s, "v1/persistentvolumeclaims", "asr-model-cache")
    assert "ownerReferences" not in claim["metadata"]  # retained on delete by default
    job = stored(k8s, "batch/v1/jobs", JOB)
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ParakeetASR" and owner["uid"] == "uid-asr" and owner["controller"] is True
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["warmup"]
    status = status_of(k8s, "asr")
    assert status["warmup"]["transcript"] == WARMED["transcript"] and status["warmup"]["load_seconds"] == 4.2
    assert status["endpoints"]["grpc"] == f"asr.{NS}.svc:50051"
    assert condition(k8s, "asr", "AutoscalerReady")["reason"] == "Fixed"  # neither KEDA nor custom metrics here
    env = {e["name"]: e.get("value") for e in
           stored(k8s, "apps/v1/deployments", "asr")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PARAKEET_MODEL_ID"] == "demo" and env["PARAKEET_HUB_OFFLINE"] == "true"


async def test_a_failed_warmup_degrades_the_resource_with_the_jobs_reason_and_deploys_nothing(k8s: Any) -> None:
    async with running_operator(k8s, events=True):
        await create(k8s, "asr", SPEC)
        await eventually(lambda: alive(k8s, "batch/v1/jobs", JOB), "the warm-up Job")
        await finish_job(k8s, JOB, {"ok": False, "model": "demo", "error": "the model said 'x' instead of 'y'"},
                         succeeded=False)
        degraded = await eventually(lambda: (c := condition(k8s, "asr", "Degraded"))["status"] == "True" and c,
                                    "Degraded")
        assert "BackoffLimitExceeded" in degraded["message"] and "instead of 'y'" in degraded["message"]
        assert status_of(k8s, "asr")["phase"] == "Failed"
        await eventually(lambda: len(k8s["patch", kmocklib.resource(ASR), kmocklib.subresource("status")]) > 4,
                         "a few more reconciles")
    assert not k8s["post", kmocklib.resource("apps/v1/deployments")]
    events = [r.data for r in k8s["post", kmocklib.resource("v1/events")] if r.data["involvedObject"]["name"] == "asr"]
    said = [(e["type"], e["reason"], e["message"]) for e in events]  # what `kubectl describe` shows
    assert ("Normal", "Created", f"created Job {JOB}") in said
    assert [s for s in said if s[0] == "Warning"] == [
        ("Warning", "Failed", degraded["message"])]  # once, when it happened


@pytest.mark.parametrize(
    ("apis", "autoscaler"),
    [((KEDA, CUSTOM_METRICS), "keda.sh/v1alpha1/scaledobjects"),
     ((CUSTOM_METRICS,), "autoscaling/v2/horizontalpodautoscalers")],
    ids=["keda", "hpa"],
)
async def test_the_autoscaler_follows_the_apis_the_cluster_serves(k8s: Any, apis: tuple[str, ...],
                                                                  autoscaler: str) -> None:
    for api in apis:
        serve_api(k8s, api, "ScaledObject" if api == KEDA else "PodMetrics")
    async with running_operator(k8s):
        await warmed_up(k8s)
        await eventually(lambda: alive(k8s, autoscaler, "asr"), autoscaler)
        ready = await eventually(lambda: (c := condition(k8s, "asr", "AutoscalerReady"))["status"] == "True" and c,
                                 "AutoscalerReady")
        assert ready["reason"] == ("KEDA" if KEDA in apis else "HPA")
    assert "replicas" not in stored(k8s, "apps/v1/deployments", "asr")["spec"]


async def test_apis_that_appear_later_are_picked_up_by_the_timer(k8s: Any) -> None:
    async with running_operator(k8s):
        await warmed_up(k8s)
        await eventually(lambda: condition(k8s, "asr", "AutoscalerReady")["reason"] == "Fixed", "Fixed")
        serve_api(k8s, KEDA, "ScaledObject")  # KEDA and the Prometheus operator are installed
        serve_api(k8s, SERVICE_MONITORS, "ServiceMonitor")
        await eventually(lambda: alive(k8s, KEDA, "asr"), "the ScaledObject")
        await eventually(lambda: alive(k8s, SERVICE_MONITORS, "asr"), "the ServiceMonitor")
        await eventually(lambda: condition(k8s, "asr", "AutoscalerReady")["reason"] == "KEDA", "KEDA")
    assert k8s["get /apis/keda.sh/v1alpha1", OPERATOR_CALLS]


async def test_drift_is_repaired(k8s: Any) -> None:
    deployment = f"/apis/apps/v1/namespaces/{NS}/deployments/asr"
    async with running_operator(k8s):
        await warmed_up(k8s)
        await merge_patch(k8s, deployment, {"spec": {"strategy": {"rollingUpdate": {"maxSurge": 3}}}})
        await eventually(lambda: stored(k8s, "apps/v1/deployments", "asr")["spec"]["strategy"]["rollingUpdate"]
                         ["maxSurge"] == 0, "the edited rollout repaired")
        assert (await k8s.delete(deployment)).status == 200
        await eventually(lambda: alive(k8s, "apps/v1/deployments", "asr"), "the deleted Deployment re-created")
    assert len(k8s["post", kmocklib.resource("apps/v1/deployments"), OPERATOR_CALLS]) == 2


async def test_a_model_change_warms_the_new_model_up_before_the_rollout(k8s: Any) -> None:
    new_spec = {**SPEC, "model": {"id": "nvidia/parakeet-tdt-0.6b-v2"}}
    new_job = builders.Names("asr", NS).warmup_job(builders.warmup_key(ParakeetASRSpec.model_validate(new_spec)))

    def served_model() -> str:
        container = stored(k8s, "apps/v1/deployments", "asr")["spec"]["template"]["spec"]["containers"][0]
        return next(e["value"] for e in container["env"] if e["name"] == "PARAKEET_MODEL_ID")

    async with running_operator(k8s):
        await warmed_up(k8s)
        await merge_patch(k8s, f"{ASR_PATH}/asr", {"spec": {"model": {"id": "nvidia/parakeet-tdt-0.6b-v2"}},
                                                    "metadata": {"generation": 2}})
        await eventually(lambda: alive(k8s, "batch/v1/jobs", new_job), "the new warm-up Job")
        await eventually(lambda: condition(k8s, "asr", "WarmedUp")["observedGeneration"] == 2, "generation 2")
        assert served_model() == "demo"  # the old pods keep serving until the new model is proven
        await finish_job(k8s, new_job, {**WARMED, "model": "nvidia/parakeet-tdt-0.6b-v2"})
        await eventually(lambda: served_model() == "nvidia/parakeet-tdt-0.6b-v2", "the rollout to the new model")


async def test_api_failures_are_retried_and_the_operator_carries_on(k8s: Any) -> None:
    failures = [500, 409, 403]

    def refuse(request: Any) -> Any:
        if not failures:
            return NotImplemented  # the emulator serves from now on
        status = failures.pop(0)
        del k8s.objects[request.resource, request.namespace, request.data["metadata"]["name"]]  # stored eagerly
        raise kmocklib.KubernetesError(status=status, reason="Injected", message=f"injected {status}")

    k8s.override["post", kmocklib.resource("apps/v1/deployments")] << refuse
    async with running_operator(k8s):
        await warmed_up(k8s)
        await create(k8s, "second", {**SPEC, "warmup": {"enabled": False}})
        await eventually(lambda: alive(k8s, "apps/v1/deployments", "second"), "the second resource's Deployment")
    assert failures == []
    assert len(k8s["post", kmocklib.resource("apps/v1/deployments")]) == 5


async def test_a_bad_spec_is_reported_and_creates_nothing(k8s: Any) -> None:
    async with running_operator(k8s):
        await create(k8s, "bad", {**SPEC, "replicas": 2})  # replicas with autoscaling: refused by the schema
        degraded = await eventually(lambda: (c := condition(k8s, "bad", "Degraded"))["status"] == "True" and c,
                                    "Degraded")
        assert degraded["reason"] == "InvalidSpec" and "replicas is set while autoscaling.mode" in degraded["message"]
    assert not k8s["post", OPERATOR_CALLS]


async def test_a_deleted_resource_gets_nothing_new(k8s: Any) -> None:
    async with running_operator(k8s):
        await warmed_up(k8s)
        assert (await k8s.delete(f"{ASR_PATH}/asr")).status == 200
        await eventually(lambda: k8s.objects[ASR, NS, "asr"].deleted, "the resource gone")
        since = len(k8s)
        await asyncio.sleep(1.2)  # a negative result needs a quiet period: four reconcile intervals
    late = [r for r in k8s[OPERATOR_CALLS] if r.id >= since and r.method in ("POST", "PATCH")]
    assert late == []



async def test_the_console_script_serves_liveness_reconciles_and_stops_cleanly_on_sigterm(k8s: Any) -> None:
    """`parakeet-operator` as the image runs it: a process of its own, configured by its variables."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PARAKEET_OPERATOR_LIVENESS_PORT": str(port), "PARAKEET_OPERATOR_NAMESPACE": ""}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "parakeet_operator", env=env,
                                                   stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as session:
            async def live() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        return response.status == 200
                return False

            deadline = asyncio.get_running_loop().time() + 30
            while not await live():
                assert asyncio.get_running_loop().time() < deadline, "no liveness endpoint"
                await asyncio.sleep(0.1)
        await eventually(lambda: k8s["watch", kmocklib.resource(ASR)], "the operator to watch")
        await create(k8s, "asr", SPEC)
        await eventually(lambda: alive(k8s, "batch/v1/jobs", JOB), "the warm-up Job")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()[-2000:]
