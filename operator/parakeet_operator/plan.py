"""The reconcile decision, pure: from a spec and what the cluster shows, the children that should exist,
the ones that should not, and the status to report. `reconcile.py` gathers the observations and applies
the plan; nothing here talks to the API."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from parakeet_operator import builders
from parakeet_operator.builders import Names
from parakeet_operator.spec import ParakeetASRSpec

KEDA = "keda.sh/v1alpha1"
CUSTOM_METRICS = "custom.metrics.k8s.io/v1beta2"
PROMETHEUS_OPERATOR = "monitoring.coreos.com/v1"
OPTIONAL_APIS = (KEDA, CUSTOM_METRICS, PROMETHEUS_OPERATOR)

WarmupPhase = Literal["absent", "running", "succeeded", "failed"]


@dataclass(frozen=True)
class WarmupState:
    """The warm-up of the spec's current key: its Job as the cluster shows it, and what is remembered of it."""

    phase: WarmupPhase  # of the Job of this key
    reason: str = ""
    result: dict[str, Any] | None = None  # the JSON line of `parakeet-serve warmup` (the termination message)
    retry: str = ""  # the resource's retry annotation, part of the key
    # A success of this key remembered by the resource's status or the Deployment: its Job may be gone (TTL).
    proven: dict[str, Any] | None = None
    superseded: tuple[str, ...] = ()  # warm-up Jobs of other keys, still there


@dataclass(frozen=True)
class Observed:
    apis: frozenset[str]
    warmup: WarmupState
    deployment: dict[str, Any] | None = None  # the live Deployment, if any
    claim_bound: bool = True  # a claim the spec names (existingClaim) exists


@dataclass
class Plan:
    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[tuple[str, str, str]] = field(default_factory=list)  # (apiVersion, kind, name)
    conditions: list[dict[str, str]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def plan(spec: ParakeetASRSpec, names: Names, observed: Observed) -> Plan:
    p = Plan()
    claim = builders.model_cache_claim(spec, names)
    if claim is not None:
        p.apply.append(claim)
    claim_name = spec.model_cache.existing_claim or names.cache_claim
    p.conditions.append(_condition(
        "CacheReady", observed.claim_bound, "ClaimPresent" if observed.claim_bound else "ClaimMissing",
        f"model cache {claim_name}" + ("" if observed.claim_bound else " does not exist")))
    key = builders.warmup_key(spec, names, observed.warmup.retry)
    warmed = _warmup(spec, names, observed.warmup, key, p)
    if warmed:
        p.apply.extend(_serving(spec, names, observed, key if spec.warmup.enabled else "", p))
    else:  # the old pods (if any) keep serving the old model until the new one is proven
        p.conditions.append(_condition("AutoscalerReady", False, "WaitingForWarmup", "no fleet before the warm-up"))
    _fleet_status(spec, names, observed, warmed, p)
    return p


def _warmup(spec: ParakeetASRSpec, names: Names, state: WarmupState, key: str, p: Plan) -> bool:
    """Add the warm-up Job when one is due; True once the current model is proven (or warm-up is off)."""
    # A Job cannot be changed: one of an older key is deleted (its pod with it), never patched.
    p.delete.extend(("batch/v1", "Job", job) for job in state.superseded)
    if not spec.warmup.enabled:
        p.status["lastFailure"] = None
        p.conditions.append(_condition("WarmedUp", True, "Disabled", "warm-up is disabled in the spec"))
        return True
    job = names.warmup_job(key)
    if state.phase == "succeeded" or state.proven:
        proof = {"key": key, "job": job, **{k: (state.result or state.proven or {}).get(k) for k in
                                            ("model", "device", "load_seconds", "transcript", "rtf")}}
        p.status["warmup"] = proof
        p.status["lastFailure"] = None  # recovered
        p.conditions.append(_condition("WarmedUp", True, "Succeeded",
                                       f"{spec.model.id} loaded in {proof['load_seconds'] or '?'} s and said "
                                       f"{json.dumps(proof['transcript'] or '')}"))
        return True
    if state.phase == "failed":
        p.conditions.append(_condition("WarmedUp", False, "Failed", f"warm-up Job {job} failed: {state.reason}"))
        p.status["lastFailure"] = f"warm-up of {spec.model.id}: {state.reason}"
        return False
    if state.phase == "absent":
        p.apply.append(builders.warmup_job(spec, names, state.retry))
    p.conditions.append(_condition("WarmedUp", False, "Running", f"warm-up Job {job} is loading {spec.model.id}"))
    return False


def _serving(spec: ParakeetASRSpec, names: Names, observed: Observed, warmed_key: str,
             p: Plan) -> list[dict[str, Any]]:
    mode = spec.autoscaling.mode
    if mode == "auto":
        mode = "keda" if KEDA in observed.apis else "hpa" if CUSTOM_METRICS in observed.apis else "none"
    children = [builders.deployment(spec, names, spec.fixed_replicas if mode == "none" else None, warmed_key),
                *builders.services(spec, names), builders.pod_disruption_budget(spec, names)]
    missing = mode == "keda" and KEDA not in observed.apis
    if mode == "keda" and not missing:
        children.append(builders.scaled_object(spec, names))
    elif mode == "hpa":
        children.append(builders.horizontal_pod_autoscaler(spec, names))
    if mode != "hpa":  # the autoscaler of the other kind, left from an earlier mode or API
        p.delete.append(("autoscaling/v2", "HorizontalPodAutoscaler", names.name))
    if mode != "keda" and KEDA in observed.apis:
        p.delete.append((KEDA, "ScaledObject", names.name))
    p.conditions.append(_condition(
        "AutoscalerReady", not missing, "ApiMissing" if missing else mode.upper() if mode != "none" else "Fixed",
        f"KEDA's API ({KEDA}) is not served" if missing else {
            "keda": "a KEDA ScaledObject scales the fleet", "hpa": "an HPA on Pods metrics scales the fleet",
            "none": f"fixed at {spec.fixed_replicas} replicas"}[mode]))
    if spec.observability.otel_collector_sidecar.enabled:
        children.append(builders.otel_collector_config(spec, names))
    monitor = spec.observability.service_monitor
    if monitor == "on" or (monitor == "auto" and PROMETHEUS_OPERATOR in observed.apis):
        children.append(builders.service_monitor(names))
    return children


def _fleet_status(spec: ParakeetASRSpec, names: Names, observed: Observed, warmed: bool, p: Plan) -> None:
    status = (observed.deployment or {}).get("status", {})
    desired = (observed.deployment or {}).get("spec", {}).get("replicas", 0)
    ready, updated = status.get("readyReplicas", 0), status.get("updatedReplicas", 0)
    available = ready > 0
    progressing = observed.deployment is not None and (updated < desired or ready < desired)
    p.conditions.append(_condition("Available", available, "ReplicasReady" if available else "NoReadyReplicas",
                                   f"{ready}/{desired} pods ready"))
    p.conditions.append(_condition("Progressing", progressing or not warmed, "Rolling" if progressing else
                                   "WarmingUp" if not warmed else "Stable", f"{updated}/{desired} pods updated"))
    failed = [c for c in p.conditions if c["type"] in ("WarmedUp", "CacheReady") and c["reason"] in
              ("Failed", "ClaimMissing")]
    p.conditions.append(_condition("Degraded", bool(failed), failed[0]["reason"] if failed else "AsExpected",
                                   failed[0]["message"] if failed else "no failure"))
    phase = ("Failed" if failed else "Ready" if available and not progressing else
             "WarmingUp" if not warmed else "Deploying")
    selector = ",".join(f"{k}={v}" for k, v in builders.common.selector_labels(names).items())
    port = spec.service.grpc_port
    p.status.update({
        "phase": phase, "replicas": desired, "readyReplicas": ready, "ready": f"{ready}/{desired}",
        "selector": selector,
        "endpoints": {"grpc": f"{names.name}.{names.namespace}.svc:{port}",
                      "headless": f"dns:///{names.headless}.{names.namespace}.svc:{port}" if spec.service.headless
                      else "",
                      "metrics": f"http://{names.name}.{names.namespace}.svc:{spec.service.metrics_port}/metrics"},
    })


def refused(p: Plan, refusals: list[str]) -> None:
    """The plan as it went: children the API server refused as invalid make the resource Degraded and Failed."""
    message = "the API server refused " + "; ".join(refusals)
    p.conditions = [c for c in p.conditions if c["type"] != "Degraded"]
    p.conditions.append(_condition("Degraded", True, "Refused", message))
    p.status.update(phase="Failed", lastFailure=message)


def _condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}
