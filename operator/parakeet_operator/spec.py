"""The `ParakeetASR` spec as typed models: the operator validates each resource with them, and the CRD's
OpenAPI schema is generated from them (`crd.py`), so the two cannot disagree."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP, VERSION, KIND, PLURAL = "asr.parakeet.dev", "v1alpha1", "ParakeetASR", "parakeetasrs"
WARMUP_RETRY_ANNOTATION = f"{GROUP}/warmup-retry"  # on a ParakeetASR: a new value runs the warm-up again
Quantity = str  # a Kubernetes quantity ("50Gi", "500m"); the API server checks the format of those it stores


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule, written once in CEL (the API server's check) and once in Python (the operator's),
    with a test that feeds both the same specs."""

    rule: str
    message: str
    violated: Callable[[ParakeetASRSpec], bool]


CEL_RULES = [
    CelRule("!has(self.replicas) || !has(self.autoscaling) || !has(self.autoscaling.mode) "
            "|| self.autoscaling.mode == 'none'",
            "replicas is set while autoscaling.mode is not none: use one or the other",
            lambda s: s.replicas is not None and s.autoscaling.mode != "none"),
    CelRule("!has(self.rollout) || self.rollout.maxSurge > 0 || self.rollout.maxUnavailable > 0",
            "rollout.maxSurge and rollout.maxUnavailable are both 0: a rollout could never progress",
            lambda s: s.rollout.max_surge == 0 and s.rollout.max_unavailable == 0),
    CelRule("!has(self.autoscaling) || self.autoscaling.minReplicas <= self.autoscaling.maxReplicas",
            "autoscaling.minReplicas is above autoscaling.maxReplicas",
            lambda s: s.autoscaling.min_replicas > s.autoscaling.max_replicas),
]


class Model(BaseModel):
    """Fields shared by every part of the spec: camelCase in YAML, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


OPAQUE_OBJECT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def free_form(description: str) -> Any:
    """A Kubernetes object passed through as given (affinity, resources)."""
    return Field(default_factory=dict, description=description,
                 json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})


class ModelSource(Model):
    id: str = Field("nvidia/parakeet-tdt_ctc-1.1b", min_length=1, max_length=512,
                    description="Hugging Face id, a .nemo path in the image or on the cache, or `demo`.")
    revision: str = Field("", max_length=128, description="Hub revision (branch, tag or commit) to pin.")
    auth_secret_name: str = Field("", description="Secret whose `token` key holds a hub token (HF_TOKEN).")
    offline: bool = Field(False, description="Never contact the hub: load only what the cache holds.")
    decoder: Literal["auto", "tdt", "rnnt", "ctc"] = Field("auto", description="Decoder head.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="Inference precision.")
    language_code: str = Field("en-US", min_length=2, description="Language clients ask for.")
    aliases: list[Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^,\s]+$")]] = Field(
        default_factory=list, max_length=16,
        description="Other model names clients may ask for, e.g. `whisper-1` for apps that hard-code it.")


class Image(Model):
    repository: str = Field("parakeet-serve", min_length=1, description="Server image repository.")
    tag: str = Field("0.1.0", min_length=1, description="Server image tag.")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field("IfNotPresent", description="Pull policy.")
    pull_secrets: list[str] = Field(default_factory=list, description="Names of image pull Secrets.")


class Autoscaling(Model):
    mode: Literal["auto", "keda", "hpa", "none"] = Field(
        "none", description="auto: KEDA when its API is served, else an HPA when a custom-metrics API is, else none.")
    min_replicas: int = Field(1, ge=1, le=1000, description="Fewest replicas (never zero).")
    max_replicas: int = Field(4, ge=1, le=1000, description="Most replicas.")
    target_active_streams_per_pod: int = Field(32, ge=1, description="Open streams per pod that trigger a scale-out.")
    target_queue_wait_p95_seconds: float = Field(0.2, gt=0, description="p95 queue wait that triggers a scale-out.")
    scale_down_stabilization_seconds: int = Field(900, ge=0, le=3600, description="Calm needed before a scale-in.")
    prometheus_server_address: str = Field("http://prometheus-operated.monitoring.svc:9090", pattern="^https?://",
                                           description="Prometheus that KEDA queries.")


class Gpu(Model):
    count: int = Field(1, ge=0, le=16, description="GPUs per pod; 0 runs on CPUs.")
    type: str = Field("", description="GPU product (node label nvidia.com/gpu.product) to schedule on; empty: any.")
    resource_name: str = Field("nvidia.com/gpu", min_length=1, description="Extended resource of the GPU.")


# A made claim's class and access mode are fixed and its size only grows (Kubernetes refuses the rest): refused
# when the edit is made, rather than as a claim the operator can never update. Transition rules (oldSelf) have
# no twin in the operator, which never sees the old spec; has() because the server also checks them on defaults.
_MADE = "(!has(self.existingClaim) || self.existingClaim == '') && (!has(oldSelf.existingClaim) || " \
        "oldSelf.existingClaim == '')"


def _claim_rule(field: str, holds: str, message: str) -> dict[str, str]:
    return {"rule": f"!({_MADE} && has(self.{field}) && has(oldSelf.{field})) || {holds}", "message": message}


CLAIM_RULES = [
    *(_claim_rule(field, f"self.{field} == oldSelf.{field}",
                  f"modelCache.{field} cannot change once the claim is made: name a new claim in "
                  "modelCache.existingClaim instead") for field in ("storageClass", "accessMode")),
    _claim_rule("size", "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
                "modelCache.size cannot shrink: Kubernetes only grows a claim"),
]


class ModelCache(Model):
    model_config = ConfigDict(**Model.model_config, json_schema_extra={"x-kubernetes-validations": CLAIM_RULES})

    size: Quantity = Field("50Gi", description="Size of the claim the operator makes.", json_schema_extra={
        "x-kubernetes-validations": [{"rule": "isQuantity(self)", "message": "modelCache.size is not a quantity "
                                                                             "(e.g. 50Gi)"}]})
    storage_class: str = Field("", description="StorageClass of the claim; empty: the cluster's default.")
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] = Field(
        "ReadWriteOnce", description="ReadWriteMany lets pods on several nodes share the cache.")
    existing_claim: str = Field("", description="Use this claim instead of making one.")
    retain_on_delete: bool = Field(True, description="Keep the claim (and the models) when the resource is deleted.")


class Warmup(Model):
    enabled: bool = Field(True, description="Prove the model loads and transcribes before the rollout.")
    timeout_seconds: int = Field(3600, ge=60, le=86400, description="Longest warm-up (download included).")
    backoff_limit: int = Field(2, ge=0, le=10, description="Retries of the warm-up Job.")
    ttl_seconds_after_finished: int = Field(86400, ge=0, description="How long a finished warm-up Job is kept.")
    expected_text: str = Field("", description="Words the bundled sample must give; empty: exact for the demo "
                                                "model, any words for others.")
    max_wer: float = Field(0.0, ge=0, le=1, description="With expectedText, the word error rate allowed.")


class Tls(Model):
    secret_name: str = Field("", description="kubernetes.io/tls Secret with the serving certificate; empty: no TLS.")
    client_ca_secret_name: str = Field("", alias="clientCASecretName",
                                       description="Secret whose ca.crt signs client certificates (mTLS).")
    health_port: int = Field(8081, ge=1, le=65535, description="Plaintext health-only port for kubelet probes.")


class Auth(Model):
    token_secret_name: str = Field("", description="Secret with the bearer token clients must send; empty: none.")
    token_key: str = Field("token", min_length=1, description="Key of the token in that Secret.")


class Sidecar(Model):
    enabled: bool = Field(False, description="Run an OpenTelemetry Collector as a native sidecar.")
    image: str = Field("otel/opentelemetry-collector-contrib:0.115.1", description="Collector image.")
    exporter_endpoint: str = Field("", description="Where the sidecar sends traces (OTLP/gRPC host:port).")


class Observability(Model):
    service_monitor: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: a ServiceMonitor when the Prometheus operator's API is served.")
    otlp_endpoint: str = Field("", description="OTLP endpoint for traces; empty: none (or the sidecar).")
    otel_collector_sidecar: Sidecar = Field(default_factory=Sidecar, description="Collector sidecar.")


class Rollout(Model):
    max_surge: int = Field(0, ge=0, description="Extra pods during a rollout (0: no spare GPU needed).")
    max_unavailable: int = Field(1, ge=0, description="Pods that may be down during a rollout.")


class ServiceSpec(Model):
    grpc_port: int = Field(50051, ge=1, le=65535, description="gRPC port (Riva's is 50051).")
    metrics_port: int = Field(9400, ge=1, le=65535, description="Prometheus metrics port.")
    http_port: int = Field(0, ge=0, le=65535, description="OpenAI-compatible HTTP API port; 0 leaves it off.")
    wyoming_port: int = Field(0, ge=0, le=65535, description=(
        "Wyoming protocol port (Home Assistant's speech-to-text, usually 10300; plain TCP, no token); "
        "0 leaves it off."))
    headless: bool = Field(True, description="Also make a headless Service for client-side balancing.")
    max_connection_age_seconds: int = Field(900, ge=0, description="GOAWAY to older connections (0: never).")
    max_connection_age_grace_seconds: int = Field(3600, ge=0, description="Then the grace of their calls.")


class Limits(Model):
    max_upload_mib: int = Field(64, ge=1, le=2047, alias="maxUploadMiB",
                                 description="Largest HTTP upload or gRPC message, MiB.")
    max_audio_seconds: float = Field(600, gt=0, le=36000, description="Longest audio of one request.")
    realtime_buffer_mib: float = Field(15, gt=0, le=1024, alias="realtimeBufferMiB", description=(
        "Audio one realtime WebSocket may hold not yet transcribed, MiB; an append past it gets an error event."))
    http_header_timeout_seconds: float = Field(20, gt=0, le=3600, description=(
        "An HTTP request's headers must arrive within this, or it is answered 408 and closed."))
    http_body_timeout_seconds: float = Field(30, gt=0, le=3600, description=(
        "An upload whose body stalls this long is refused with 408."))


class PodOverrides(Model):
    env: list[dict[str, Any]] = Field(default_factory=list, description="Extra container env entries.",
                                      json_schema_extra={"items": OPAQUE_OBJECT})
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra pod annotations.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")


class ParakeetASRSpec(Model):
    """What a `ParakeetASR` asks for: a model served by a warmed-up fleet."""

    model: ModelSource = Field(default_factory=ModelSource, description="The served model.")
    image: Image = Field(default_factory=Image, description="The server image.")
    replicas: int | None = Field(None, ge=0, le=1000, description="Pods, when autoscaling is none.")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling, description="Autoscaling.")
    gpu: Gpu = Field(default_factory=Gpu, description="GPUs per pod.")
    resources: dict[str, Any] = free_form("Container resources; the GPU limit is added from gpu.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods require.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Pod tolerations.",
                                              json_schema_extra={"items": OPAQUE_OBJECT})
    affinity: dict[str, Any] = free_form("Pod affinity.")
    runtime_class_name: str = Field("", description="RuntimeClass of the pods (e.g. nvidia).")
    priority_class_name: str = Field("", description="PriorityClass of the pods.")
    model_cache: ModelCache = Field(default_factory=ModelCache, description="The model-cache volume.")
    warmup: Warmup = Field(default_factory=Warmup, description="The warm-up Job.")
    settings: dict[str, str] = Field(default_factory=dict, description="Server settings (PARAKEET_* variables).",
                                     json_schema_extra={"x-kubernetes-validations": [{
                                         "rule": "self.all(k, k.startsWith('PARAKEET_'))",
                                         "message": "settings keys are PARAKEET_* variables"}]})
    tls: Tls = Field(default_factory=Tls, description="TLS for the gRPC port.")
    auth: Auth = Field(default_factory=Auth, description="Bearer-token authentication.")
    observability: Observability = Field(default_factory=Observability, description="Metrics and traces.")
    drain_seconds: int = Field(600, ge=0, le=86400, description="How long open streams are served after SIGTERM.")
    stream_idle_timeout_seconds: int = Field(60, ge=0, le=86400, description="A stream that sends nothing this "
                                             "long is ended, freeing its slot; 0 never ends one.")
    limits: Limits = Field(default_factory=Limits, description="What one client may send; more is refused.")
    pre_stop_seconds: int = Field(10, ge=0, le=300, description="Wait before SIGTERM so endpoints drop the pod.")
    startup_budget_seconds: int = Field(1800, ge=30, le=86400, description="Longest cold start before a restart.")
    rollout: Rollout = Field(default_factory=Rollout, description="Rolling updates.")
    service: ServiceSpec = Field(default_factory=ServiceSpec, description="The Services.")
    pod: PodOverrides = Field(default_factory=PodOverrides, description="Extra env, annotations and labels.")

    @field_validator("settings")
    @classmethod
    def _server_variables(cls, settings: dict[str, str]) -> dict[str, str]:
        if any(not key.startswith("PARAKEET_") for key in settings):
            raise ValueError("settings keys are PARAKEET_* variables")
        return settings

    @model_validator(mode="after")
    def _consistent(self) -> ParakeetASRSpec:
        # Each check here is also a CEL rule of the CRD (CEL_RULES), so the API server refuses it first.
        for rule in CEL_RULES:
            if rule.violated(self):
                raise ValueError(rule.message)
        return self

    @property
    def fixed_replicas(self) -> int:
        return 1 if self.replicas is None else self.replicas
