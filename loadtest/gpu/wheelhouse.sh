#!/usr/bin/env bash
# Fills a wheelhouse for a GPU machine with no network: the wheels this project's server and benchmarks
# need (NeMo ASR, the gRPC stack) beyond what its image already has (Python 3.12, torch 2.11 CUDA 13,
# transformers, lightning 2.6, numpy, grpcio, protobuf, ...). Run here, with PyPI in reach:
#
#   bash loadtest/gpu/wheelhouse.sh [OUT]      # OUT defaults to .whl (git-ignored); its *.whl are replaced
#
# and there, from the repository root (no resolver: the list below is the exact delta):
#
#   pip install --no-index --no-deps .whl/*.whl && pip install --no-index --no-deps --no-build-isolation -e .
#
# Left out on purpose, for size (the wheelhouse and the tree travel together under 64 MiB):
# av (33 MiB; imported only to decode compressed uploads, the benchmarks send WAV) and wandb (19 MiB; NeMo
# declares it, `import nemo.collections.asr` does not import it), so `pip check` names those two.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-.whl}
limit_mib=56
pip=(${PYTHON:-python3} -m pip --disable-pip-version-check)

# Pins: the versions tested in the development venv (nemo_toolkit 3.0.0), for cp312 manylinux x86_64.
wheels=(
  # NeMo 3.0.0 asks for lightning>2.2.1,<=2.4.0 (2.6 breaks `import nemo`); lightning 2.4.0 in turn asks
  # for packaging<25 and fsspec<2026, older than the image's.
  nemo_toolkit==3.0.0 lightning==2.4.0 packaging==24.2 fsspec==2025.12.0
  # NeMo's own dependencies (asr extra) that the image lacks
  aistore==2.0.0 braceexpand==0.1.7 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 hydra-core==1.3.2
  omegaconf==2.3.0 humanize==4.17.0 msgspec==0.23.0 overrides==7.7.0 tenacity==9.2.1 smart-open==9.0.4
  text-unidecode==1.3 webdataset==1.0.2 kaldialign==0.12.0 lhotse==1.33.0 audioread==3.1.0 cytoolz==1.2.0
  intervaltree==3.2.1 librosa==0.11.0 decorator==5.3.2 pooch==1.9.0 platformdirs==4.14.9
  soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0
  whisper-normalizer==0.1.15 indic-numtowords==1.1.0 more-itertools==11.2.1 text2num==3.1.0
  nv-one-logger-core==2.3.1 nv-one-logger-training-telemetry==2.3.1
  nv-one-logger-pytorch-lightning-integration==2.3.1 strenum==0.4.15 toml==0.10.2
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  # The gRPC stack as the project uses it: grpc_health/grpc_reflection/riva's generated code require
  # grpcio >= their own version (the image predates grpcio 1.85) and protobuf >= 7.35.1.
  grpcio==1.85.4 protobuf==7.36.2 grpcio-tools==1.85.4 grpcio-health-checking==1.85.1
  grpcio-reflection==1.85.1 nvidia-riva-client==2.28.0 websockets==15.0.1 googleapis-common-protos==1.76.0
  # The project's own (HTTP server, settings, telemetry)
  starlette==1.10.0 uvicorn==0.55.0 python-multipart==0.0.34 pydantic-settings==2.16.3 python-dotenv==1.2.4
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions==0.66b2
  opentelemetry-proto==1.45.2 opentelemetry-exporter-otlp-common==0.66b2
  opentelemetry-exporter-otlp-proto-common==1.45.2 opentelemetry-exporter-otlp-proto-grpc==1.45.2
  opentelemetry-exporter-otlp-proto-http==1.45.2 opentelemetry-exporter-http-transport==0.66b2
)
# Published as source only: built here (pure Python, so a py3-none-any wheel).
sdists=(antlr4-python3-runtime==4.9.3)

mkdir -p "$out"
rm -f "$out"/*.whl
"${pip[@]}" download --quiet --no-deps --only-binary=:all: --dest "$out" \
  --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "${wheels[@]}"
"${pip[@]}" wheel --quiet --no-deps --wheel-dir "$out" "${sdists[@]}"

# One wheel per pin, then the size against the budget.
count=$(find "$out" -maxdepth 1 -name '*.whl' | wc -l)
expected=$((${#wheels[@]} + ${#sdists[@]}))
[ "$count" -eq "$expected" ] || { echo "expected $expected wheels in $out, found $count" >&2; exit 1; }
bytes=$(find "$out" -maxdepth 1 -name '*.whl' -printf '%s\n' | awk '{s += $1} END {print s}')
echo "$count wheels, $(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}') MiB in $out"
[ "$bytes" -le $((limit_mib * 1048576)) ] || { echo "over the ${limit_mib} MiB budget" >&2; exit 1; }
