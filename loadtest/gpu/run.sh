#!/usr/bin/env bash
# The GPU benchmark recipe: Parakeet-sized random-weight models, both bench modes, JSON results.
#
#   bash loadtest/gpu/run.sh            # on a machine with an NVIDIA GPU, from the repository root
#
# Writes loadtest/results/<gpu>-<size>-{offline,offline-long,stream}.json. bf16 (the `auto` precision
# on CUDA), micro-batches up to 128 at twice that many callers, so a batch is always ready; offline
# also on 20-second clips (the evaluation files joined, as long as the Open ASR leaderboard's), each
# beside the encoder alone (the ceiling) and NeMo's own transcribe(). The stream ramp doubles from
# 64 streams and reports the most that keep p95 end of speech -> final within the issue's objective,
# stop_history + 300 ms: the streams ask for a 160 ms `stop_history`, so 460 ms.
# The 0.6B size alone by default, so one call fits a lent GPU's 15 minutes (the issue asks for 8);
# SIZES="0.6b 1.1b" adds the 1.1B shape, about twice the time again.
set -euo pipefail
cd "$(dirname "$0")/../.."
models=${MODELS_DIR:-/tmp/parakeet-random}
sizes=${SIZES:-0.6b}
gpu=$(python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
export PARAKEET_DEVICE=cuda PARAKEET_PRECISION=bf16 PARAKEET_MICROBATCH_MAX_BATCH=128 PARAKEET_MAX_STREAMS=4096
stop_history_ms=160
stream_ramp=(--ramp --streams 64 --objective-ms $((stop_history_ms + 300)) --stop-history-ms "$stop_history_ms"
             --chunk-ms 160 --files-per-stream 2)
PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" python loadtest/gpu/build_models.py --out "$models" --sizes $sizes
for size in $sizes; do
  model="$models/parakeet-$size-random.nemo"
  parakeet-serve bench offline --model "$model" --concurrency 256 --repeat 20 --nemo-transcribe \
    --json "loadtest/results/$gpu-$size-offline.json"
  parakeet-serve bench offline --model "$model" --concurrency 256 --join-s 20 --repeat 8 --nemo-transcribe \
    --json "loadtest/results/$gpu-$size-offline-long.json"
  parakeet-serve bench stream --model "$model" "${stream_ramp[@]}" --json "loadtest/results/$gpu-$size-stream.json"
  # The ONNX Runtime backend on the same model, per GPU execution provider (needs onnxruntime-gpu;
  # TensorRT also its libraries): offline, and the same stream ramp.
  if python -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    parakeet-serve export --model "$model" --out "$models/onnx-$size"
    for provider in ${ONNX_PROVIDERS:-cuda tensorrt}; do (
      export PARAKEET_BACKEND=onnx PARAKEET_ONNX_PROVIDER=$provider PARAKEET_PRECISION=auto  # ONNX runs fp32
      parakeet-serve bench offline --model "$models/onnx-$size" \
        --concurrency 256 --repeat 20 --json "loadtest/results/$gpu-$size-onnx-$provider-offline.json"
      parakeet-serve bench stream --model "$models/onnx-$size" "${stream_ramp[@]}" \
        --json "loadtest/results/$gpu-$size-onnx-$provider-stream.json"
    ) done
  fi
done
