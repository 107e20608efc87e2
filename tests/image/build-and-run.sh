#!/usr/bin/env bash
# Build the image for real and run it: no docker engine and no registry here, so podman builds on a
# locally made Debian base (build-base.sh) with chroot isolation, and buildah runs the image's
# commands (sharing the host's network) as its non-root user.
#   1. build target `server`; run `parakeet-serve warmup` in it and check its JSON line;
#   2. serve the demo model from the image and transcribe the bundled sample through gRPC from
#      outside, with the host's `parakeet-serve transcribe --check`;
#   3. SIGTERM the served image: it drains and exits 0;
#   4. build target `operator` and check it holds kopf and the source tree, and no torch.
# Usage: tests/image/build-and-run.sh   (from the repository root, with .venv installed; as root)
# Torch comes from /opt/wheels when that holds a wheel of it (this machine's CPU build), else PyPI;
# pip in the build trusts the host's CA bundle ($PIP_CERT), for networks that inspect TLS.
set -euo pipefail
cd "$(dirname "$0")/../.."
base=localhost/parakeet-base:bookworm
image=localhost/parakeet-serve:test
operator=localhost/parakeet-operator:test
host_cli=.venv/bin/parakeet-serve

step() { printf '\n=== %s\n' "$*"; }

step "base image"
bash tests/image/build-base.sh "$base"

build_args=(--isolation=chroot --build-arg "BASE_IMAGE=$base" --build-arg "REVISION=$(git rev-parse --short HEAD)")
# pip in the build: the host's CA bundle and local wheels, through a pip configuration file.
pip_dir=$(mktemp -d)
{
  echo "[global]"
  if [ -f "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" ]; then echo "cert = /pip/ca.crt"; fi
  if compgen -G "/opt/wheels/torch-*.whl" >/dev/null; then echo "find-links = /wheels"; fi
} > "$pip_dir/pip.conf"
cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$pip_dir/ca.crt" 2>/dev/null || true
build_args+=(--volume "$pip_dir:/pip:ro" --build-arg PIP_CONFIG_FILE=/pip/pip.conf)
if [ -d /opt/wheels ]; then build_args+=(--volume /opt/wheels:/wheels:ro); fi

step "build target server"
time podman build "${build_args[@]}" --target server -t "$image" .
podman image inspect "$image" --format 'user={{.Config.User}} entrypoint={{.Config.Entrypoint}} cmd={{.Config.Cmd}} ports={{.Config.ExposedPorts}}'
podman image inspect "$image" --format '{{.Size}}' | awk '{printf "image size: %.2f GB\n", $1 / 1e9}'

container=$(buildah from "$image")
cleanup() { kill "${server_pid:-0}" 2>/dev/null || true; buildah rm "$container" >/dev/null 2>&1 || true; }
trap cleanup EXIT
# As Kubernetes runs it: uid 10001, writable only /tmp (an emptyDir there) and /models (the cache).
run_in_image() { buildah run --isolation chroot --user 10001:10001 --mount type=tmpfs,destination=/tmp "$container" -- "$@"; }

step "the root filesystem is not writable by the image's user"
if run_in_image python3 -c "open('/opt/venv/written-at-run-time', 'w')" 2>/dev/null; then
  echo "FAIL: uid 10001 could write into /opt/venv"; exit 1
fi
echo "ok: /opt/venv is read-only to uid 10001"

step "parakeet-serve warmup --model demo"
warmup_line=$(run_in_image parakeet-serve warmup --model demo --log-level WARNING | tail -1)
echo "$warmup_line"
python3 -c "import json, sys; r = json.loads(sys.argv[1]); assert r['ok'] and r['model'] == 'demo', r" "$warmup_line"

step "serve the demo model from the image, transcribe through gRPC from outside"
port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
metrics=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
run_in_image parakeet-serve serve --model demo --host 127.0.0.1 --port "$port" --metrics-port "$metrics" &
server_pid=$!
for _ in $(seq 180); do
  if "$host_cli" transcribe --server "127.0.0.1:$port" --check >/tmp/image-transcribe.txt 2>&1; then break; fi
  sleep 2
done
cat /tmp/image-transcribe.txt
grep -q "^check passed" /tmp/image-transcribe.txt
curl -fsS "http://127.0.0.1:$metrics/metrics" | grep -E '^parakeet_(ready|requests_total)' | head -5
step "SIGTERM drains the server in the image and it exits 0"
# buildah does not forward signals: signal the server process itself, as the kubelet would.
pkill -TERM -f "^/opt/venv/bin/python.* serve --model demo --host 127.0.0.1 --port $port"
status=0; wait "$server_pid" || status=$?; server_pid=
echo "server exit status: $status"
[ "$status" -eq 0 ]

step "build target operator"
time podman build "${build_args[@]}" --target operator -t "$operator" .
op=$(buildah from "$operator")
buildah run --isolation chroot --user 10001:10001 "$op" -- python3 -c \
  "import importlib.util as u, kopf, parakeet_operator.handlers; assert u.find_spec('torch') is None; print('operator image: kopf', kopf.__version__, 'and the handlers, without torch')"
buildah run --isolation chroot --user 10001:10001 "$op" -- parakeet-operator --help | head -3
buildah rm "$op" >/dev/null
podman image inspect "$operator" --format '{{.Size}}' | awk '{printf "operator image size: %.2f GB\n", $1 / 1e9}'
step "image checks passed"
