"""A real Kubernetes control plane for the tests: kube-apiserver and etcd, built from their Go modules and
started on loopback, as controller-runtime's envtest runs them (no kubelet, scheduler or controllers).

    python -m tests.cluster.control_plane build   # once per machine (cached); about 6 minutes cold on 2 cores
    python -m tests.cluster.control_plane serve   # one in the foreground, for poking at it with helm or curl

The binaries are cached by version under ~/.cache/parakeet-serve/control-plane. The server authenticates an
admin by a static token and service accounts by tokens it signs itself, authorises with RBAC (so the
operator chart's Role is what decides), enforces owner-reference permissions as OpenShift does, and writes
an audit log of every request, from which the tests count an operator's writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KUBERNETES = "v1.34.4"
ETCD = "v3.6.4"
CACHE = Path.home() / ".cache" / "parakeet-serve" / "control-plane" / f"kubernetes-{KUBERNETES}-etcd-{ETCD}"
ADMIN_TOKEN = "parakeet-test-admin"  # a loopback test server's credential
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Request
    verbs: [create, update, patch, delete, deletecollection]
  - level: Metadata
"""
ETCD_MAIN = """\
package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


# -- building ---------------------------------------------------------------------------------------------

def build(cache: Path = CACHE) -> Path:
    """The folder holding `kube-apiserver` and `etcd`, built first where it does not yet."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:  # two test runs at once build once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cache / "kube-apiserver").exists():
            _build_kube_apiserver(cache)
        if not (cache / "etcd").exists():
            _build_etcd(cache)
    return cache


def _go(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    done = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)} failed in {cwd}:\n{done.stderr[-4000:]}")
    return done.stdout


def _wrapper(cache: Path, name: str) -> Path:
    folder = cache / "src" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "go.mod").write_text(f"module parakeet.test/{name}\n\ngo 1.24\n")
    return folder


def _build_kube_apiserver(cache: Path) -> None:
    """k8s.io/kubernetes requires its staging modules at v0.0.0 (replaced by folders in its own tree), so a
    wrapper module replaces each with its published twin, v0.X.Y for v1.X.Y."""
    folder = _wrapper(cache, "kube-apiserver")
    found = json.loads(_go(["mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES}"], folder))
    staging = [line.split()[0] for line in Path(found["GoMod"]).read_text().splitlines()
               if "=> ./staging/src/" in line]
    published = "v0." + KUBERNETES.removeprefix("v1.")
    with open(folder / "go.mod", "a") as mod:
        mod.writelines(f"replace {module} => {module} {published}\n" for module in staging)
    _go(["get", f"k8s.io/kubernetes/cmd/kube-apiserver@{KUBERNETES}"], folder)
    minor = KUBERNETES.split(".")[1]
    stamp = " ".join(f"-X k8s.io/component-base/version.{key}={value}" for key, value in  # what /version says
                     {"gitVersion": KUBERNETES, "gitMajor": "1", "gitMinor": minor}.items())
    _go(["build", "-trimpath", f"-ldflags=-s -w {stamp}", "-o", str(cache / "kube-apiserver.new"),
         "k8s.io/kubernetes/cmd/kube-apiserver"], folder)
    (cache / "kube-apiserver.new").rename(cache / "kube-apiserver")


def _build_etcd(cache: Path) -> None:
    """etcd's root module carries replace directives (so `go install` refuses it): build its server's main."""
    folder = _wrapper(cache, "etcd")
    (folder / "main.go").write_text(ETCD_MAIN)
    _go(["get", f"go.etcd.io/etcd/server/v3@{ETCD}"], folder)
    _go(["mod", "tidy"], folder)
    _go(["build", "-trimpath", "-ldflags=-s -w", "-o", str(cache / "etcd.new"), "."], folder)
    (cache / "etcd.new").rename(cache / "etcd")


# -- running ----------------------------------------------------------------------------------------------

def free_port() -> int:
    """`parakeet_serve.net.free_port`'s twin: the system tools' installer runs this module before the venv exists."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ControlPlane:
    """A running kube-apiserver and its etcd."""

    url: str
    ca_file: Path
    audit_log: Path
    folder: Path
    processes: list[subprocess.Popen[bytes]]

    def kubeconfig(self, token: str = ADMIN_TOKEN, name: str = "admin") -> Path:
        """A kubeconfig for `helm` and kopf that authenticates with `token`."""
        path = self.folder / f"kubeconfig-{name}"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": name,
            "clusters": [{"name": "test", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": "test", "user": name}}],
        }))
        return path

    def audit(self) -> list[dict[str, Any]]:
        """Every request the server has answered so far, oldest first."""
        with open(self.audit_log) as log:
            return [event for line in log if line.strip() and (event := json.loads(line))["stage"] ==
                    "ResponseComplete"]

    def stop(self) -> None:
        for process in reversed(self.processes):  # the API server before its storage
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _credentials(folder: Path) -> tuple[Path, Path, Path, Path]:
    """A CA, the server's certificate (127.0.0.1) and key, and the key that signs service-account tokens."""
    import trustme
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    ca = trustme.CA()
    served = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(folder / "ca.crt"))
    served.cert_chain_pems[0].write_to_path(str(folder / "server.crt"))
    served.private_key_pem.write_to_path(str(folder / "server.key"))
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "sa.key").write_bytes(signing.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                                          serialization.NoEncryption()))
    (folder / "sa.pub").write_bytes(signing.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return folder / "ca.crt", folder / "server.crt", folder / "server.key", folder / "sa.key"


def start(folder: Path, binaries: Path | None = None, timeout_s: float = 90.0) -> ControlPlane:
    binaries = binaries or build()
    ca, cert, key, signing = _credentials(folder)
    (folder / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n')
    (folder / "audit-policy.yaml").write_text(AUDIT_POLICY)
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
    logs = open(folder / "control-plane.log", "wb")  # noqa: SIM115  (held by the processes)
    etcd = subprocess.Popen([
        str(binaries / "etcd"), "--data-dir", str(folder / "etcd"), "--name", "test",
        "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"test={peer_url}", "--unsafe-no-fsync", "--log-level", "warn",
    ], stdout=logs, stderr=subprocess.STDOUT)
    audit_log = folder / "audit.log"
    apiserver = subprocess.Popen([
        str(binaries / "kube-apiserver"), "--etcd-servers", etcd_url,
        "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", str(api_port),
        "--cert-dir", str(folder / "certs"), "--tls-cert-file", str(cert), "--tls-private-key-file", str(key),
        "--token-auth-file", str(folder / "tokens.csv"),
        "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
        "--service-account-key-file", str(folder / "sa.pub"), "--service-account-signing-key-file", str(signing),
        "--authorization-mode", "RBAC", "--service-cluster-ip-range", "10.0.0.0/24", "--allow-privileged",
        # No controller makes the `default` ServiceAccount here; OpenShift-like clusters check that whoever
        # sets blockOwnerDeletion may set finalizers on the owner.
        "--disable-admission-plugins", "ServiceAccount",
        "--enable-admission-plugins", "OwnerReferencesPermissionEnforcement",
        "--audit-policy-file", str(folder / "audit-policy.yaml"), "--audit-log-path", str(audit_log),
        "--audit-log-format", "json", "--audit-log-mode", "blocking", "--profiling=false", "--v", "0",
    ], stdout=logs, stderr=subprocess.STDOUT)
    plane = ControlPlane(f"https://127.0.0.1:{api_port}", ca, audit_log, folder, [etcd, apiserver])
    try:
        _wait_ready(plane, timeout_s)
    except BaseException:
        plane.stop()
        raise
    return plane


def _wait_ready(plane: ControlPlane, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=plane.url, verify=str(plane.ca_file),
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        while True:
            for process in plane.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited with {process.returncode}: "
                                       + _tail(plane.folder / "control-plane.log"))
            with contextlib.suppress(httpx.HTTPError):
                # readyz includes the bootstrap of RBAC's default roles and the `default` namespace
                if client.get("/readyz").status_code == 200 and client.get("/api/v1/namespaces/default").is_success:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("kube-apiserver was not ready in time: " + _tail(plane.folder / "control-plane.log"))
            time.sleep(0.2)


def _tail(path: Path, size: int = 3000) -> str:
    return path.read_bytes()[-size:].decode(errors="replace")


@contextlib.contextmanager
def running(folder: Path | None = None) -> Iterator[ControlPlane]:
    with tempfile.TemporaryDirectory(prefix="control-plane-") as temporary:
        plane = start(folder or Path(temporary))
        try:
            yield plane
        finally:
            plane.stop()


def main(argv: list[str]) -> None:
    command = argv[1] if len(argv) > 1 else "build"
    started = time.monotonic()
    if command == "build":
        print(f"kube-apiserver {KUBERNETES} and etcd {ETCD} in {build()} ({time.monotonic() - started:.0f} s)")
    elif command == "serve":
        with running() as plane:
            print(f"serving {plane.url}; KUBECONFIG={plane.kubeconfig()}; Ctrl-C stops it", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    else:
        raise SystemExit(f"usage: python -m tests.cluster.control_plane [build|serve], not {command!r}")


if __name__ == "__main__":
    main(sys.argv)
