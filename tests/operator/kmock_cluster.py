"""Helpers for running the real operator (kopf's `KopfRunner`) against KMock's Kubernetes emulator.

KMock serves the Kubernetes API over real HTTP on the test's event loop, records every request and
stores objects; it does no defaulting, no admission and no garbage collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock as kmocklib
import kopf
import pytest
import yaml
from kopf.testing import KopfRunner

import parakeet_operator.handlers
from tests.operator.rbac import allowed, api_call, chart_rules

HANDLERS = parakeet_operator.handlers.__file__
NS = "speech"
ASR = "asr.parakeet.dev/v1alpha1/parakeetasrs"
ASR_PATH = f"/apis/asr.parakeet.dev/v1alpha1/namespaces/{NS}/parakeetasrs"
OPERATOR_CALLS = kmocklib.headers({"User-Agent": re.compile(r"parakeet-operator/.*")})
OPERATOR_OR_KOPF = kmocklib.headers({"User-Agent": re.compile(r"(parakeet-operator|kopf)/.*")})
KEDA = "keda.sh/v1alpha1/scaledobjects"
CUSTOM_METRICS = "custom.metrics.k8s.io/v1beta2/pods"
SERVICE_MONITORS = "monitoring.coreos.com/v1/servicemonitors"
VERBS = {"get", "list", "watch", "create", "patch", "delete"}


def serve_api(kmock: Any, resource: str, kind: str) -> None:
    """Make the emulator serve (and discovery list) an API, as installing its CRDs would."""
    kmock.resources[resource] = kmocklib.ResourceInfo(kind=kind, singular=kind.lower(), namespaced=True,
                                                      verbs=VERBS, subresources={"status"})


def prepare(kmock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    kmock.resources.load_bundled()  # the built-in APIs, for kopf's discovery
    serve_api(kmock, ASR, "ParakeetASR")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "kmock", "user": {"token": "test-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("PARAKEET_OPERATOR_RECONCILE_INTERVAL_S", "0.3")
    monkeypatch.setenv("PARAKEET_OPERATOR_DISCOVERY_INTERVAL_S", "0")
    monkeypatch.setenv("PARAKEET_OPERATOR_RETRY_DELAY_S", "0.2")
    return kmock


def kopf_settings(events: bool) -> kopf.OperatorSettings:
    """Short timeouts and back-offs, so that a test takes seconds; Events only where a test reads them."""
    settings = kopf.OperatorSettings()
    settings.posting.enabled = events
    settings.watching.connect_timeout = 1
    settings.watching.server_timeout = 5
    settings.watching.client_timeout = 6
    settings.networking.request_timeout = 5
    settings.networking.error_backoffs = [0.1, 0.2, 0.3]
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 0.5
    settings.background.cancellation_polling = 0.1
    settings.execution.default_backoff = 0.1
    return settings


async def eventually(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll `check` until it is truthy (a missing object counts as not yet)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with contextlib.suppress(KeyError, ValueError, TypeError):
            if result := check():
                return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def settle(kmock: Any, quiet: float = 0.3, timeout: float = 5.0) -> None:
    """Wait until nothing has been written for `quiet` seconds (stopping kopf mid-event costs it 5 s)."""
    loop = asyncio.get_running_loop()

    def writes() -> int:
        return sum(len(kmock[m]) for m in (kmocklib.method.POST, kmocklib.method.PATCH, kmocklib.method.DELETE))

    deadline, seen, since = loop.time() + timeout, writes(), loop.time()
    while loop.time() - since < quiet and loop.time() < deadline:
        await asyncio.sleep(0.05)
        if (now := writes()) != seen:
            seen, since = now, loop.time()


@contextlib.asynccontextmanager
async def running_operator(kmock: Any, namespace: str = "", events: bool = False) -> AsyncIterator[KopfRunner]:
    """The operator in KopfRunner's thread (the emulator keeps this loop); it must end cleanly."""
    scope = ["--namespace", namespace] if namespace else ["--all-namespaces"]
    runner = KopfRunner(["run", "--standalone", *scope, HANDLERS], registry=kopf.OperatorRegistry(),
                        settings=kopf_settings(events), timeout=20)
    await asyncio.to_thread(runner.__enter__)
    try:
        await eventually(lambda: kmock["watch", kmocklib.resource(ASR)], "the operator to watch ParakeetASRs")
        yield runner
        await settle(kmock)
    finally:
        await asyncio.to_thread(runner.__exit__, *sys.exc_info())
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None
    assert not [e for e in kmock.errors if not isinstance(e, kmocklib.KubernetesError)], kmock.errors
    assert_allowed_by_the_chart(kmock, namespace)
    gc.collect()  # an unclosed connection shows up as a warning in this test, not a later one


def assert_allowed_by_the_chart(kmock: Any, namespace: str) -> None:
    """Every call kopf or the operator made is allowed by the operator chart's RBAC for this watch scope."""
    rules = chart_rules(namespace)
    calls = {call for request in kmock[OPERATOR_OR_KOPF] if (call := api_call(request))}
    assert calls, "no API call recorded"
    denied = sorted(call for call in calls if not allowed(rules, *call))
    assert not denied, f"calls the operator chart's RBAC does not allow: {denied}"


def alive(kmock: Any, resource: str, name: str) -> bool:
    key = (kmocklib.resource(resource), NS, name)
    return key in kmock.objects and not kmock.objects[key].deleted


def stored(kmock: Any, resource: str, name: str) -> dict[str, Any]:
    return dict(kmock.objects[resource, NS, name])


async def create(kmock: Any, name: str, spec: dict[str, Any]) -> None:
    # KMock makes no uid or resourceVersion: kopf's patches test the version, owner references need the uid.
    body = {"apiVersion": "asr.parakeet.dev/v1alpha1", "kind": "ParakeetASR",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1",
                         "generation": 1},
            "spec": spec}
    assert (await kmock.post(ASR_PATH, json=body)).status == 200


async def merge_patch(kmock: Any, url_path: str, body: dict[str, Any]) -> None:
    response = await kmock.patch(url_path, json=body, headers={"Content-Type": "application/merge-patch+json"})
    assert response.status == 200


async def finish_job(kmock: Any, job: str, message: dict[str, Any] | str, succeeded: bool = True) -> None:
    """What the Job controller and kubelet would leave: a pod terminated with a message, the Job's conditions."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"{job}-x1", "namespace": NS, "labels": {"job-name": job},
                        "creationTimestamp": "2026-11-30T09:00:00Z"},
           "spec": {"containers": [{"name": "warmup", "image": "parakeet-serve"}]},
           "status": {"containerStatuses": [{"name": "warmup", "state": {"terminated": {
               "exitCode": 0 if succeeded else 1,
               "message": message if isinstance(message, str) else json.dumps(message)}}}]}}
    assert (await kmock.post(f"/api/v1/namespaces/{NS}/pods", json=pod)).status == 200
    condition = ({"type": "Complete", "status": "True"} if succeeded else
                 {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                  "message": "Job has reached the specified backoff limit"})
    await merge_patch(kmock, f"/apis/batch/v1/namespaces/{NS}/jobs/{job}/status",
                      {"status": {"succeeded" if succeeded else "failed": 1, "conditions": [condition]}})


def status_of(kmock: Any, name: str) -> dict[str, Any]:
    return stored(kmock, ASR, name).get("status") or {}


def condition(kmock: Any, name: str, kind: str) -> dict[str, Any]:
    """A condition of the resource's status; KeyError while it has none of that type."""
    found = [c for c in status_of(kmock, name).get("conditions", []) if c["type"] == kind]
    if not found:
        raise KeyError(kind)
    return found[0]
