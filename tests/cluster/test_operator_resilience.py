"""The operator under what a live cluster does to it: writes refused by an admission webhook (500, 409, 403), its
children edited or deleted by hand, and its console script run as the image runs it, stopped by SIGTERM."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import trustme

from tests.cluster.api import DEPLOYMENTS, Api, eventually
from tests.cluster.conftest import OperatorIdentity, running_operator, writes_by
from tests.cluster.control_plane import ControlPlane, free_port
from tests.cluster.test_operator import INTERVAL_S, SPEC, Cluster

WEBHOOKS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


@contextlib.contextmanager
def refusing_webhook(api: Api, namespace: str, codes: list[int]) -> Iterator[list[int]]:
    """An admission webhook that refuses the next Deployment writes in `namespace` with `codes`, one each."""
    ca = trustme.CA()

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answer: dict[str, Any] = {"uid": review["request"]["uid"], "allowed": not codes}
            if codes:
                code = codes.pop(0)
                answer["status"] = {"code": code, "message": f"injected {code}"}
            body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                               "response": answer}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    name = f"refuse-{namespace}"
    api.create(WEBHOOKS, {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                          "metadata": {"name": name}, "webhooks": [{
        "name": "refuse.parakeet.test", "failurePolicy": "Fail", "sideEffects": "None", "timeoutSeconds": 5,
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"url": f"https://127.0.0.1:{server.server_address[1]}/",
                         "caBundle": base64.b64encode(ca.cert_pem.bytes()).decode()},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "rules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                   "resources": ["deployments"]}]}]})
    try:
        yield codes
    finally:
        api.delete(f"{WEBHOOKS}/{name}")
        server.shutdown()


def test_refused_writes_are_retried_and_the_operator_carries_on(
        admin: Api, namespace: str, control_plane: ControlPlane, operator_identity: OperatorIdentity,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster(admin, namespace)
    since = len(control_plane.audit())
    with refusing_webhook(admin, namespace, [500, 409, 403]) as codes, \
            running_operator(operator_identity, monkeypatch, INTERVAL_S):
        cluster.warm_up(SPEC)  # its Deployment is refused three times first
        assert codes == []
        cluster.create({**SPEC, "warmup": {"enabled": False}}, "second")
        eventually(lambda: cluster.deployment("second"), "the second resource's Deployment")
    refused = [e["responseStatus"]["code"] for e in writes_by(control_plane, operator_identity.username, since)
               if e["objectRef"]["resource"] == "deployments" and e["responseStatus"]["code"] >= 400]
    assert refused == [500, 409, 403]


def test_a_child_kubernetes_refuses_as_invalid_is_reported_and_the_fix_goes_through(
        admin: Api, namespace: str, operator_identity: OperatorIdentity, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CRD passes `affinity` through as given; a Job with an empty node selector term list is not valid."""
    cluster = Cluster(admin, namespace)
    bad = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    with running_operator(operator_identity, monkeypatch, INTERVAL_S):
        cluster.create({**SPEC, "affinity": bad})
        degraded = eventually(lambda: (c := cluster.condition("Degraded"))["reason"] == "Refused" and c, "Refused")
        assert "the API server refused Job asr-warmup-" in degraded["message"]
        assert "nodeSelectorTerms: Required value" in degraded["message"]
        assert cluster.resource()["status"]["phase"] == "Failed"
        assert ("Warning", "Refused", degraded["message"]) in cluster.events()
        cluster.edit({"spec": {"affinity": None}})
        cluster.one_job()
        eventually(lambda: cluster.condition("Degraded")["status"] == "False", "no longer Degraded")


def test_a_child_edited_or_deleted_by_hand_is_repaired(admin: Api, namespace: str,
                                                       operator_identity: OperatorIdentity,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster(admin, namespace)
    path = f"{DEPLOYMENTS.format(ns=namespace)}/asr"
    with running_operator(operator_identity, monkeypatch, INTERVAL_S):
        cluster.warm_up(SPEC)
        admin.merge(path, {"spec": {"strategy": {"rollingUpdate": {"maxSurge": 3}}}})
        eventually(lambda: cluster.deployment()["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0,
                   "the edited rollout repaired")
        first = cluster.deployment()["metadata"]["uid"]
        admin.delete(path)
        eventually(lambda: (d := cluster.deployment()) and d["metadata"]["uid"] != first, "the Deployment re-created")


def test_the_console_script_serves_liveness_reconciles_and_stops_cleanly_on_sigterm(
        admin: Api, namespace: str, operator_identity: OperatorIdentity) -> None:
    """`parakeet-operator` as the image runs it: a process of its own, configured by its variables."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PARAKEET_")}
    env = {**clean, "KUBECONFIG": str(operator_identity.kubeconfig), "PARAKEET_OPERATOR_LIVENESS_PORT": str(port),
           "PARAKEET_OPERATOR_NAMESPACE": namespace}
    process = subprocess.Popen([sys.executable, "-m", "parakeet_operator"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        def live() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            return False

        eventually(live, "the liveness endpoint")
        cluster = Cluster(admin, namespace)
        cluster.create(SPEC)
        try:
            cluster.one_job()
        except AssertionError:
            process.send_signal(signal.SIGTERM)
            raise AssertionError(process.communicate(timeout=30)[1][-3000:]) from None
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr[-2000:]
