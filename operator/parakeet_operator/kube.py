"""A small Kubernetes API client for the operator's children: JSON over aiohttp with kopf's credentials.

kopf watches and patches its own resources but offers no client for others; this one does the few
calls the operator needs (get, server-side apply, delete, list, discovery) and nothing else.
"""

from __future__ import annotations

import json
import ssl
import time
from typing import Any

import aiohttp
import kopf

from parakeet_operator.drift import converged

USER_AGENT = "parakeet-operator/0.1.0"
FIELD_MANAGER = "parakeet-operator"  # owner of what the operator applies, in each child's managedFields
PLURALS = {
    "ConfigMap": "configmaps", "Deployment": "deployments", "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "Job": "jobs", "PersistentVolumeClaim": "persistentvolumeclaims", "Pod": "pods",
    "PodDisruptionBudget": "poddisruptionbudgets", "ScaledObject": "scaledobjects", "Service": "services",
    "ServiceMonitor": "servicemonitors", "ParakeetASR": "parakeetasrs",
}


class ApiError(Exception):
    """The API server refused a call: its status and one line of why."""

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        super().__init__(f"{method} {path}: {status} {message}")
        self.status, self.message = status, message


def path(api_version: str, kind: str, namespace: str, name: str = "") -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{base}/namespaces/{namespace}/{PLURALS[kind]}" + (f"/{name}" if name else "")


class Kube:
    def __init__(self, discovery_interval_s: float) -> None:
        self._info: kopf.ConnectionInfo | None = None
        self._ssl: ssl.SSLContext | bool = False
        self._session: aiohttp.ClientSession | None = None
        self._discovery_interval_s = discovery_interval_s
        self._served: dict[str, tuple[float, bool]] = {}
        self._closed = False

    def configure(self, info: kopf.ConnectionInfo) -> None:
        self._info = info
        self._ssl = info.as_ssl_context()

    async def close(self) -> None:
        self._closed = True  # a session made after this would leak its connections
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, url_path: str, body: Any = None, *, missing_ok: bool = False,
                      content_type: str = "application/json", params: dict[str, str] | None = None) -> Any:
        """The response's JSON; None for a 404 when `missing_ok`; `ApiError` for any other failure."""
        if self._info is None or self._closed:
            raise kopf.TemporaryError("not connected to the Kubernetes API", delay=1)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **self._info.as_http_headers()}
        if body is not None:
            headers["Content-Type"] = content_type
        url = self._info.server.rstrip("/") + url_path
        async with self._session.request(method, url, json=body, headers=headers, params=params,
                                         ssl=self._ssl) as response:
            if response.status == 404 and missing_ok:
                return None
            # An API server answers an unknown path (an API group not served) in plain text, not JSON.
            text = await response.text()
            try:
                data = json.loads(text) if text else None
            except ValueError:
                data = text
            if response.status >= 400:
                message = data.get("message", "") if isinstance(data, dict) else str(data)
                raise ApiError(response.status, method, url_path, message[:200])
            return data

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.request("GET", path(api_version, kind, namespace, name), missing_ok=True)

    async def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        found = await self.request("GET", path(api_version, kind, namespace), params={"labelSelector": selector})
        return (found or {}).get("items", [])

    async def apply(self, manifest: dict[str, Any]) -> str:
        """Server-side apply `manifest` unless the live object already is it (`drift.converged`). What was done.

        Apply lets the API server merge: it removes what the operator set before and no longer sets, and takes
        back fields someone else changed (force); a converged child costs a read and no write."""
        meta = manifest["metadata"]
        args = (manifest["apiVersion"], manifest["kind"], meta["namespace"])
        live = await self.get(*args, meta["name"])
        if live is not None and converged(live, manifest, FIELD_MANAGER):
            return "unchanged"
        await self.request("PATCH", path(*args, meta["name"]), manifest, content_type="application/apply-patch+yaml",
                           params={"fieldManager": FIELD_MANAGER, "force": "true"})
        return "created" if live is None else "patched"

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete if present, its dependents after it (a Job's pod, which the API's default for Jobs would
        orphan); whether it was."""
        if await self.get(api_version, kind, namespace, name) is None:  # a read, not a write, when converged
            return False
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        return await self.request("DELETE", path(api_version, kind, namespace, name), options,
                                  missing_ok=True) is not None

    async def served(self, group_version: str) -> bool:
        """Whether the cluster serves this API group version, looked up again after the discovery interval."""
        checked = self._served.get(group_version)
        if checked is not None and time.monotonic() - checked[0] < self._discovery_interval_s:
            return checked[1]
        found = await self.request("GET", f"/apis/{group_version}", missing_ok=True) is not None
        self._served[group_version] = (time.monotonic(), found)
        return found
