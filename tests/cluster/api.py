"""What the tests do to the real API server themselves: a few JSON calls as the admin, and the controllers an
envtest control plane lacks (the Job controller's and the Deployment controller's status writes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.cluster.control_plane import ADMIN_TOKEN, ControlPlane

JOBS, DEPLOYMENTS = "/apis/batch/v1/namespaces/{ns}/jobs", "/apis/apps/v1/namespaces/{ns}/deployments"
ASRS = "/apis/asr.parakeet.dev/v1alpha1/namespaces/{ns}/parakeetasrs"


class Refused(Exception):
    """The API server refused a call: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class Api:
    def __init__(self, plane: ControlPlane, token: str = ADMIN_TOKEN) -> None:
        self.client = httpx.Client(base_url=plane.url, verify=str(plane.ca_file), timeout=30,
                                   headers={"Authorization": f"Bearer {token}", "User-Agent": "parakeet-tests"})

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
             **params: str) -> Any:
        response = self.client.request(method, path, json=body, params=params,
                                       headers={"Content-Type": content_type} if body is not None else {})
        if response.status_code >= 400:  # Status JSON, or plain text for a path the server does not serve
            is_json = response.headers.get("content-type", "").startswith("application/json")
            raise Refused(response.status_code, response.json().get("message", "") if is_json else response.text)
        return response.json()

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.call("GET", path)
        except Refused as refused:
            if refused.status == 404:
                return None
            raise

    def create(self, path: str, body: dict[str, Any], **params: str) -> dict[str, Any]:
        return self.call("POST", path, body, **params)

    def merge(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str) -> None:
        self.call("DELETE", path, {"propagationPolicy": "Background"})

    def namespace(self, name: str) -> str:
        self.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    # -- the controllers this control plane lacks --------------------------------------------------------

    def finish_job(self, namespace: str, name: str, message: str, succeeded: bool = True,
                   reason: str = "BackoffLimitExceeded") -> None:
        """What the Job controller and kubelet leave: a pod terminated with `message`, the Job's conditions
        (the API server checks their order: the target condition first, then Complete or Failed)."""
        # the pod's own spec aside: its priority and runtime classes need objects a real cluster would have
        pod = self.create(f"/api/v1/namespaces/{namespace}/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": f"{name}-", "namespace": namespace, "labels": {"job-name": name}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "warmup", "image": "parakeet-serve"}]},
        })["metadata"]["name"]
        self.call("PATCH", f"/api/v1/namespaces/{namespace}/pods/{pod}/status", {"status": {
            "phase": "Succeeded" if succeeded else "Failed",
            "containerStatuses": [{"name": "warmup", "image": "parakeet-serve", "imageID": "", "ready": False,
                                   "restartCount": 0, "state": {"terminated": {
                                       "exitCode": 0 if succeeded else 1, "reason": "Completed" if succeeded
                                       else "Error", "message": message, "startedAt": _now(),
                                       "finishedAt": _now()}}}]}},
                  content_type="application/merge-patch+json")
        now = _now()
        conditions = ([("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "CompletionsReached")]
                      if succeeded else [("FailureTarget", reason), ("Failed", reason)])
        status: dict[str, Any] = {
            "startTime": now, "ready": 0, "terminating": 0,
            "conditions": [{"type": kind, "status": "True", "reason": why, "message": why,
                            "lastProbeTime": now, "lastTransitionTime": now} for kind, why in conditions]}
        if succeeded:
            status |= {"succeeded": 1, "completionTime": now, "uncountedTerminatedPods": {}}
        else:
            status |= {"failed": 1, "uncountedTerminatedPods": {}}
        self.call("PATCH", f"{JOBS.format(ns=namespace)}/{name}/status", {"status": status},
                  content_type="application/merge-patch+json")

    def roll_out(self, namespace: str, name: str) -> None:
        """What the Deployment controller reports once every pod of the current template is ready."""
        deployment = self.call("GET", f"{DEPLOYMENTS.format(ns=namespace)}/{name}")
        replicas = deployment["spec"].get("replicas", 1)
        self.call("PATCH", f"{DEPLOYMENTS.format(ns=namespace)}/{name}/status", {"status": {
            "observedGeneration": deployment["metadata"]["generation"], "replicas": replicas,
            "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}},
                  content_type="application/merge-patch+json")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll `check` until it is truthy (a missing field counts as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if result := check():
                return result
        except (KeyError, TypeError, IndexError, StopIteration):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
