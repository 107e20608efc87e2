#!/usr/bin/env bash
# The GPU benchmark recipe: Parakeet-sized random-weight models, both bench modes, JSON results.
#
#   bash loadtest/gpu/run.sh [smoke]      # on a machine with an NVIDIA GPU, from anywhere
#
# Made for a lent machine with no network and no NeMo: when `import nemo` fails it installs the carried
# wheelhouse (.whl, filled here by loadtest/gpu/wheelhouse.sh) into /tmp/site with pip --no-index, and runs
# the package from the tree (python -m parakeet_serve), hub offline, progress bars off. Everything it
# writes (a log, smoke.json, the bench JSONs, server logs) goes to $OUT (default loadtest/results).
#
# First a smoke stage (~30 s: imports, a tiny model offline and streamed in bf16, CUDA graphs asserted); it
# stops the recipe on failure, and `smoke` stops after it. Then, for the 0.6B shape (SIZES="0.6b 1.1b" adds
# 1.1B, about twice the time again), one server shared by every bench: offline at concurrency 256 on the
# demo set sent as PCM (the headline figure) beside NeMo's own transcribe() on the same files, offline on
# 20-second clips, and a ramp of real-time streams from 512 that doubles then bisects to the most that keep
# p95 end of speech -> final within stop_history + 300 ms (the streams ask for 160 ms: 460 ms). Each step
# runs under a timeout (575 s at most in all for the 0.6B shape, within one 10-minute call; ONNX, where it runs,
# adds its own) and the recipe carries on after a failure. WORKERS=2 adds the offline figure again with two
# server processes on one port (PARAKEET_WORKERS, up to 150 s more: a second call's work).
set -uo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-all}
out=${OUT:-loadtest/results}
mkdir -p "$out"
exec > >(tee -a "$out/run.log") 2>&1

if ! python3 -c "import nemo" 2>/dev/null; then
  [ -d .whl ] || { echo "no NeMo here and no .whl wheelhouse (run bash loadtest/gpu/wheelhouse.sh first)"; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/service:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 PARAKEET_HUB_OFFLINE=true TQDM_DISABLE=1 PYTHONUNBUFFERED=1
export PARAKEET_DEVICE=${PARAKEET_DEVICE:-cuda} PARAKEET_PRECISION=bf16 PARAKEET_MICROBATCH_MAX_BATCH=128 \
  PARAKEET_MAX_STREAMS=4096 PARAKEET_LOG_LEVEL=WARNING

step() {  # step SECONDS COMMAND...: run it under a timeout, say how it ended, carry on
  local limit=$1 began=$SECONDS; shift
  echo "== $(date -u +%T) $* (limit ${limit} s)"
  timeout "$limit" "$@"; local rc=$?
  echo "== exit $rc after $((SECONDS - began)) s"
}

step 90 python3 loadtest/gpu/smoke.py "$out"
python3 -c "import json, sys; sys.exit(not json.load(open('$out/smoke.json'))['ok'])" || { echo "smoke failed"; exit 1; }
[ "$mode" = smoke ] && exit 0

serving() {  # serving MODEL PORT [SERVE ARGS]: start a server in the background, wait until it is SERVING
  local model=$1 port=$2; shift 2
  python3 -m parakeet_serve serve --model "$model" --host 127.0.0.1 --port "$port" "${@:---metrics-port=0}" \
    >"$out/server-$(basename "$model" .nemo)-$port.log" 2>&1 &
  server=$!
  timeout 180 python3 - "$port" <<'EOF' || { echo "the server was not ready"; return 1; }
import sys, time, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}"))
while True:
    try:
        if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
            break
    except grpc.RpcError:
        pass
    time.sleep(1)
EOF
}

models=${MODELS_DIR:-/tmp/parakeet-random}
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
stop_history_ms=160
step 120 python3 loadtest/gpu/build_models.py --out "$models" --sizes ${SIZES:-0.6b}
for size in ${SIZES:-0.6b}; do
  model="$models/parakeet-$size-random.nemo"
  target=127.0.0.1:50051
  serving "$model" 50051 || continue
  bench=(python3 -m parakeet_serve bench)
  step 100 "${bench[@]}" offline --server "$target" --model "$model" --pcm --concurrency 256 --repeat 10 \
    --rounds 2 --nemo-transcribe --json "$out/$gpu-$size-offline.json"
  step 45 "${bench[@]}" offline --server "$target" --model "$model" --pcm --concurrency 256 --join-s 20 \
    --repeat 4 --rounds 1 --no-in-process --json "$out/$gpu-$size-offline-long.json"
  step 100 "${bench[@]}" stream --server "$target" --ramp --streams 512 --max-streams 4096 \
    --objective-ms $((stop_history_ms + 300)) --stop-history-ms "$stop_history_ms" --chunk-ms 160 \
    --files-per-stream 2 --json "$out/$gpu-$size-stream.json"
  kill "$server"; wait "$server"
  if [ "${WORKERS:-1}" -gt 1 ]; then  # the offline figure again with several server processes on the port
    PARAKEET_WORKERS=$WORKERS serving "$model" 50052 --metrics-host=127.0.0.1 --metrics-port=9402 || continue
    step 150 python3 -m parakeet_serve bench offline --server 127.0.0.1:50052 --model "$model" --pcm \
      --concurrency 256 --channels $((4 * WORKERS)) --repeat 10 --rounds 1 --no-in-process \
      --json "$out/$gpu-$size-offline-workers$WORKERS.json"
    kill "$server"; wait "$server"
  fi
  # The ONNX Runtime backend per GPU execution provider, where onnxruntime-gpu is installed (the lent machines'
  # onnxruntime is CPU-only and the GPU build is too large to carry, so there it is skipped, and said so).
  if ! python3 -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    echo "== ONNX CUDA/TensorRT skipped: this onnxruntime has no CUDA execution provider"
    continue
  fi
  step 180 python3 -m parakeet_serve export --model "$model" --out "$models/onnx-$size"
  for provider in ${ONNX_PROVIDERS:-cuda tensorrt}; do
    PARAKEET_BACKEND=onnx PARAKEET_ONNX_PROVIDER=$provider PARAKEET_PRECISION=auto \
      step 150 "${bench[@]}" offline --model "$models/onnx-$size" --pcm --concurrency 256 --repeat 10 \
      --no-in-process --rounds 1 --json "$out/$gpu-$size-onnx-$provider-offline.json"
  done
done
ls -l "$out"
