# parakeet-serve images, from one source tree:
#   server (default)  the ASR service: torch (PyPI's CUDA build, which carries the CUDA runtime),
#                     NeMo, onnxruntime-gpu (PARAKEET_BACKEND=onnx, on the same CUDA libraries) and
#                     the bundled demo model; non-root, read-only root filesystem ready
#   operator          the Kubernetes operator: kopf and the source tree, no torch
# Build:  docker build -t parakeet-serve .
#         docker build --target operator -t parakeet-operator .
# Air-gapped clusters: --build-arg BAKE_MODEL=nvidia/parakeet-tdt-0.6b-v2 puts that model's .nemo
# file in the image and makes it the default model, served with the hub switched off.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS server-build
ARG TORCH_VERSION=2.13.0
# The ONNX backend's runtime: onnxruntime-gpu (CUDA and TensorRT providers, CPU too); "onnxruntime"
# for a CPU-only image. The TensorRT provider also needs TensorRT's libraries (PyPI's tensorrt).
ARG ONNXRUNTIME=onnxruntime-gpu
# A pip configuration for the build only (a mirror, a CA bundle, local wheels); pip reads it, and
# so do the build environments it starts, which command-line options would not reach.
ARG PIP_CONFIG_FILE=/dev/null
ARG BAKE_MODEL=""
WORKDIR /src
# torch first, in its own layer: it is most of the image and changes least.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY service ./service
COPY operator ./operator
RUN /opt/venv/bin/pip install --no-cache-dir . "${ONNXRUNTIME}" "sentencepiece>=0.2" \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +
# The baked model is fetched by the same loader the server uses, then kept as a plain .nemo file.
RUN mkdir -p /opt/parakeet \
 && if [ -n "${BAKE_MODEL}" ]; then \
      /opt/venv/bin/python -c "import shutil, sys; from parakeet_serve.engine.loader import resolve_model_file; \
shutil.copy(resolve_model_file(sys.argv[1], None, False), '/opt/parakeet/baked.nemo')" "${BAKE_MODEL}" \
      && rm -rf /root/.cache/huggingface; \
    fi

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS server
ARG BAKE_MODEL=""
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="parakeet-serve" \
      org.opencontainers.image.description="NVIDIA Riva-compatible gRPC speech recognition for Parakeet models" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
# A fixed uid/gid, so that pod securityContexts and volume permissions can name it.
RUN groupadd --gid 10001 parakeet \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin parakeet \
 && mkdir -p /models \
 && chown 10001:10001 /models
COPY --from=server-build /opt/venv /opt/venv
COPY --from=server-build /opt/parakeet /opt/parakeet
# Everything written at run time goes under /models (the model-cache volume) or /tmp (an
# emptyDir on Kubernetes): NeMo unpacks .nemo files into temporary folders, and numba,
# matplotlib and triton keep caches. Empty values are ignored by the server's settings.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    HF_HOME=/models/huggingface \
    NUMBA_CACHE_DIR=/tmp/numba \
    MPLCONFIGDIR=/tmp/matplotlib \
    TRITON_CACHE_DIR=/tmp/triton \
    PARAKEET_MODEL_ID=${BAKE_MODEL:+/opt/parakeet/baked.nemo} \
    PARAKEET_MODEL_NAME=${BAKE_MODEL} \
    PARAKEET_HUB_OFFLINE=${BAKE_MODEL:+true}
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 9400
ENTRYPOINT ["parakeet-serve"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS operator-build
ARG PIP_CONFIG_FILE=/dev/null
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY operator ./operator
# The distribution without its serving dependencies (torch, NeMo), plus the operator's own.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps . \
 && /opt/venv/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['operator']))" > /tmp/operator-requirements.txt \
 && /opt/venv/bin/pip install --no-cache-dir --no-warn-conflicts -r /tmp/operator-requirements.txt

FROM ${BASE_IMAGE} AS operator
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="parakeet-operator" \
      org.opencontainers.image.description="Kubernetes operator for ParakeetASR resources" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=operator-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["parakeet-operator"]

# The default target comes last in a multi-stage build for plain `docker build`.
FROM server
