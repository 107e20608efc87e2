"""The server Deployment and the warm-up Job: one pod template's worth of shared parts."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from parakeet_operator.builders.common import Names, image, labels, metadata, selector_labels
from parakeet_operator.spec import Limits, ParakeetASRSpec

CACHE_MOUNT = "/models"
TLS_MOUNT, CLIENT_CA_MOUNT = "/etc/parakeet/tls", "/etc/parakeet/client-ca"
PROBE_PERIOD_S = 10
WARMUP_KEY_ANNOTATION = "asr.parakeet.dev/warmup-key"
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}}


def warmup_key(spec: ParakeetASRSpec, names: Names, retry: str = "") -> str:
    """Everything that shapes the warm-up Job (its pod, deadline and retries), and the resource's retry
    annotation (`spec.WARMUP_RETRY_ANNOTATION`). Kubernetes refuses any change to a Job's pod, so a new key is a
    new Job."""
    shape = {"job": _warmup_spec(spec, names), "retry": retry}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:10]


def deployment(spec: ParakeetASRSpec, names: Names, replicas: int | None, warmed_key: str = "") -> dict[str, Any]:
    """The server fleet; `replicas` None leaves the count to an autoscaler. `warmed_key` is the warm-up that
    proved this model, recorded on the Deployment (not its pods: a new proof of the same pods rolls nothing)."""
    pod = _pod(spec, names)
    pod["terminationGracePeriodSeconds"] = spec.pre_stop_seconds + spec.drain_seconds + 15
    pod["containers"] = [_server(spec, names)]
    if spec.tls.secret_name:
        pod["volumes"].append({"name": "tls", "secret": {"secretName": spec.tls.secret_name}})
        if spec.tls.client_ca_secret_name:
            pod["volumes"].append({"name": "client-ca", "secret": {"secretName": spec.tls.client_ca_secret_name}})
    sidecar = spec.observability.otel_collector_sidecar
    if sidecar.enabled:  # a native sidecar: started before the server, stopped after its drain
        pod["initContainers"] = [{
            "name": "otel-collector", "image": sidecar.image, "restartPolicy": "Always",
            "args": ["--config=/etc/otelcol/config.yaml"],
            "ports": [{"name": "otlp-grpc", "containerPort": 4317, "protocol": "TCP"}],
            "volumeMounts": [{"name": "otel-config", "mountPath": "/etc/otelcol", "readOnly": True}],
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
            "securityContext": CONTAINER_SECURITY,
        }]
        pod["volumes"].append({"name": "otel-config", "configMap": {"name": f"{names.name}-otel-collector"}})
    body: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(names)},
        "revisionHistoryLimit": 5,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {
            "maxSurge": spec.rollout.max_surge, "maxUnavailable": spec.rollout.max_unavailable}},
        "template": {
            "metadata": {
                "labels": {**labels(names), **spec.pod.labels},
                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(spec.service.metrics_port),
                                "prometheus.io/path": "/metrics", **spec.pod.annotations},
            },
            "spec": pod,
        },
    }
    if replicas is not None:
        body = {"replicas": replicas, **body}
    meta = metadata(names, annotations={WARMUP_KEY_ANNOTATION: warmed_key}) if warmed_key else metadata(names)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": body}


def warmup_job(spec: ParakeetASRSpec, names: Names, retry: str = "") -> dict[str, Any]:
    """`parakeet-serve warmup` on the cache, on the serving hardware; its JSON line is the termination message."""
    key = warmup_key(spec, names, retry)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": metadata(names, names.warmup_job(key), "warmup", annotations={WARMUP_KEY_ANNOTATION: key}),
            "spec": _warmup_spec(spec, names)}


def warmup_selector(names: Names) -> str:
    """The warm-up Jobs of one resource, whatever their key."""
    return ",".join(f"{k}={v}" for k, v in labels(names, "warmup").items())


def _warmup_spec(spec: ParakeetASRSpec, names: Names) -> dict[str, Any]:
    args = ["warmup"]
    if spec.warmup.expected_text:
        args += ["--expected-text", spec.warmup.expected_text, "--max-wer", f"{spec.warmup.max_wer:g}"]
    container = {
        "name": "warmup", "image": image(spec), "imagePullPolicy": spec.image.pull_policy, "args": args,
        "env": _unique([*_model_env(spec), {"name": "PARAKEET_HUB_OFFLINE", "value": _bool(spec.model.offline)}]),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": _resources(spec), "securityContext": CONTAINER_SECURITY, "volumeMounts": _mounts(),
    }
    return {
        "backoffLimit": spec.warmup.backoff_limit,
        "activeDeadlineSeconds": spec.warmup.timeout_seconds,
        "ttlSecondsAfterFinished": spec.warmup.ttl_seconds_after_finished,
        # Not the server's selector labels: its Services and PodDisruptionBudget must not pick this pod up (it
        # serves nothing, and a Job has no scale for the budget to count against).
        "template": {"metadata": {"labels": {**labels(names, "warmup"), "app.kubernetes.io/name": "parakeet-warmup"}},
                     "spec": {**_pod(spec, names), "restartPolicy": "Never", "containers": [container]}},
    }


def _server(spec: ParakeetASRSpec, names: Names) -> dict[str, Any]:
    probe_port = spec.tls.health_port if spec.tls.secret_name else spec.service.grpc_port
    ports = [{"name": "grpc", "containerPort": spec.service.grpc_port, "protocol": "TCP"},
             {"name": "metrics", "containerPort": spec.service.metrics_port, "protocol": "TCP"}]
    if spec.service.http_port:
        ports.append({"name": "http", "containerPort": spec.service.http_port, "protocol": "TCP"})
    if spec.service.wyoming_port:
        ports.append({"name": "wyoming", "containerPort": spec.service.wyoming_port, "protocol": "TCP"})
    if spec.tls.secret_name:
        ports.append({"name": "health", "containerPort": spec.tls.health_port, "protocol": "TCP"})
    mounts = _mounts()
    if spec.tls.secret_name:  # directories, not subPaths, so a rotated Secret reaches the server
        mounts.append({"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True})
        if spec.tls.client_ca_secret_name:
            mounts.append({"name": "client-ca", "mountPath": CLIENT_CA_MOUNT, "readOnly": True})
    return {
        "name": "server", "image": image(spec), "imagePullPolicy": spec.image.pull_policy, "args": ["serve"],
        "ports": ports,
        "env": _unique([*_model_env(spec), *_server_env(spec, names), *spec.pod.env]),
        # Liveness and readiness wait for the startup probe: a cold model load is not a hung server.
        "startupProbe": _probe(probe_port, math.ceil(spec.startup_budget_seconds / PROBE_PERIOD_S)),
        "readinessProbe": _probe(probe_port, 2),
        "livenessProbe": _probe(probe_port, 6),
        "lifecycle": {"preStop": {"sleep": {"seconds": spec.pre_stop_seconds}}},
        "resources": _resources(spec), "securityContext": CONTAINER_SECURITY, "volumeMounts": mounts,
    }


def _probe(port: int, failures: int) -> dict[str, Any]:
    return {"grpc": {"port": port}, "periodSeconds": PROBE_PERIOD_S, "timeoutSeconds": 5, "failureThreshold": failures}


def _model_env(spec: ParakeetASRSpec) -> list[dict[str, Any]]:
    """What the server and the warm-up share: the same model, loaded the same way."""
    model = spec.model
    env = [
        {"name": "PARAKEET_MODEL_ID", "value": model.id},
        {"name": "PARAKEET_DECODER", "value": model.decoder},
        {"name": "PARAKEET_DEVICE", "value": "cpu" if spec.gpu.count == 0 else "auto"},
        {"name": "PARAKEET_PRECISION", "value": model.precision},
        {"name": "PARAKEET_LANGUAGE_CODE", "value": model.language_code},
        {"name": "HF_HOME", "value": f"{CACHE_MOUNT}/huggingface"},
        {"name": "PARAKEET_LOG_LEVEL", "value": "INFO"},
    ]
    if model.revision:
        env.append({"name": "PARAKEET_MODEL_REVISION", "value": model.revision})
    if model.aliases:
        env.append({"name": "PARAKEET_MODEL_ALIASES", "value": ",".join(model.aliases)})
    if model.auth_secret_name:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": model.auth_secret_name,
                                                                        "key": "token"}}})
    return env + [{"name": name, "value": value} for name, value in sorted(spec.settings.items())]


def _server_env(spec: ParakeetASRSpec, names: Names) -> list[dict[str, Any]]:
    offline = spec.model.offline or spec.warmup.enabled  # a warm-up filled the cache
    service = spec.service
    env = [
        {"name": "PARAKEET_HUB_OFFLINE", "value": _bool(offline)},
        {"name": "PORT", "value": str(service.grpc_port)},
        {"name": "PARAKEET_METRICS_PORT", "value": str(service.metrics_port)},
        *([{"name": "PARAKEET_HTTP_PORT", "value": str(service.http_port)}] if service.http_port else []),
        *([{"name": "PARAKEET_WYOMING_PORT", "value": str(service.wyoming_port)}] if service.wyoming_port else []),
        {"name": "PARAKEET_SHUTDOWN_GRACE_S", "value": str(spec.drain_seconds)},
        {"name": "PARAKEET_STREAM_IDLE_TIMEOUT_S", "value": str(spec.stream_idle_timeout_seconds)},
        *_limits_env(spec.limits),
        {"name": "PARAKEET_MAX_CONNECTION_AGE_S", "value": str(service.max_connection_age_seconds)},
        {"name": "PARAKEET_MAX_CONNECTION_AGE_GRACE_S", "value": str(service.max_connection_age_grace_seconds)},
    ]
    if spec.tls.secret_name:
        env += [{"name": "PARAKEET_GRPC_TLS", "value": "true"},
                {"name": "PARAKEET_GRPC_CERT", "value": f"{TLS_MOUNT}/tls.crt"},
                {"name": "PARAKEET_GRPC_KEY", "value": f"{TLS_MOUNT}/tls.key"},
                {"name": "PARAKEET_HEALTH_PORT", "value": str(spec.tls.health_port)}]
        if spec.tls.client_ca_secret_name:
            env.append({"name": "PARAKEET_GRPC_CLIENT_CA", "value": f"{CLIENT_CA_MOUNT}/ca.crt"})
    if spec.auth.token_secret_name:
        env.append({"name": "PARAKEET_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": spec.auth.token_secret_name, "key": spec.auth.token_key}}})
    tracing = spec.observability
    endpoint = "http://127.0.0.1:4317" if tracing.otel_collector_sidecar.enabled else tracing.otlp_endpoint
    if endpoint:
        env.append({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": endpoint})
    return [*env, {"name": "OTEL_SERVICE_NAME", "value": names.name}]


def _limits_env(limits: Limits) -> list[dict[str, Any]]:
    return [{"name": name, "value": f"{value:g}"} for name, value in (
        ("PARAKEET_MAX_UPLOAD_MB", limits.max_upload_mib),
        ("PARAKEET_MAX_AUDIO_SECONDS", limits.max_audio_seconds),
        ("PARAKEET_REALTIME_MAX_BUFFER_MIB", limits.realtime_buffer_mib),
        ("PARAKEET_HTTP_HEADER_TIMEOUT_S", limits.http_header_timeout_seconds),
        ("PARAKEET_HTTP_BODY_TIMEOUT_S", limits.http_body_timeout_seconds),
    )]


def _pod(spec: ParakeetASRSpec, names: Names) -> dict[str, Any]:
    """Scheduling, security and volumes of a GPU pod, shared by the server and the warm-up."""
    node_selector = dict(spec.node_selector)
    if spec.gpu.type:
        node_selector["nvidia.com/gpu.product"] = spec.gpu.type
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,  # neither pod calls the Kubernetes API
        "securityContext": POD_SECURITY,
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}},
                    {"name": "model-cache", "persistentVolumeClaim": {
                        "claimName": spec.model_cache.existing_claim or names.cache_claim}}],
    }
    optional = {"nodeSelector": node_selector, "tolerations": spec.tolerations, "affinity": spec.affinity,
                "runtimeClassName": spec.runtime_class_name, "priorityClassName": spec.priority_class_name,
                "imagePullSecrets": [{"name": s} for s in spec.image.pull_secrets]}
    return {**pod, **{key: value for key, value in optional.items() if value}}


def _mounts() -> list[dict[str, Any]]:
    return [{"name": "tmp", "mountPath": "/tmp"}, {"name": "model-cache", "mountPath": CACHE_MOUNT}]


def _resources(spec: ParakeetASRSpec) -> dict[str, Any]:
    resources = {key: dict(value) for key, value in spec.resources.items()}
    if spec.gpu.count:
        resources.setdefault("limits", {})[spec.gpu.resource_name] = spec.gpu.count
    return resources


def _unique(env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per name, the last one given winning (spec.pod.env over the operator's): server-side apply
    refuses a list with two entries of one name."""
    return list({entry["name"]: entry for entry in env}.values())


def _bool(value: bool) -> str:
    return "true" if value else "false"
