"""One level-based reconcile of a `ParakeetASR`: observe the cluster, plan (pure, `plan.py`), apply every
child that is not already as planned, delete the ones the plan drops, and return the status to write."""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import replace
from typing import Any

import kopf
from pydantic import ValidationError

from parakeet_operator import builders
from parakeet_operator.builders import Names
from parakeet_operator.builders.workload import WARMUP_KEY_ANNOTATION
from parakeet_operator.kube import ApiError, Kube
from parakeet_operator.plan import OPTIONAL_APIS, Observed, WarmupState, plan, refused
from parakeet_operator.spec import WARMUP_RETRY_ANNOTATION, ParakeetASRSpec


async def reconcile(kube: Kube, body: dict[str, Any], logger: logging.Logger | Any,
                    retry_delay_s: float = 10.0) -> dict[str, Any] | None:
    """The status to write, or None for a resource being deleted (nothing is created for it).

    A bad spec is a `kopf.PermanentError`; an API failure a `kopf.TemporaryError` (retried with back-off).
    """
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return None
    names = Names(meta["name"], meta["namespace"])
    try:
        spec = ParakeetASRSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise kopf.PermanentError(f"invalid spec: {reason}") from None
    try:
        observed = await observe(kube, spec, names, body)
        decided = plan(spec, names, observed)
        refusals = []
        for child in decided.apply:
            if not (child["kind"] == "PersistentVolumeClaim" and spec.model_cache.retain_on_delete):
                kopf.append_owner_reference(child, owner=body)  # garbage-collected with the resource
            try:
                done = await kube.apply(child)
            except ApiError as exc:
                if exc.status != 422:
                    raise
                # Not valid Kubernetes (e.g. an affinity the schema passes through): a spec to fix, reported;
                # the other children are still applied.
                refusals.append(f"{child['kind']} {child['metadata']['name']}: {exc.message}")
                continue
            if done != "unchanged":
                _event(body, logger, done.capitalize(), f"{done} {child['kind']} {child['metadata']['name']}")
        if refusals:
            refused(decided, refusals)
        for api_version, kind, name in decided.delete:
            if await kube.delete(api_version, kind, names.namespace, name):
                _event(body, logger, "Deleted", f"deleted {kind} {name}")
    except ApiError as exc:
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=retry_delay_s) from exc
    previous = (body.get("status") or {}).get("conditions") or []
    generation = meta.get("generation", 0)
    conditions = [_stamped(c, previous, generation) for c in decided.conditions]
    for changed in _turned_true(conditions, previous, ("WarmedUp", "Degraded", "Available")):
        _event(body, logger, changed["reason"], changed["message"], warning=changed["type"] == "Degraded")
    return {**decided.status, "observedGeneration": generation, "conditions": conditions}


def _turned_true(conditions: list[dict[str, Any]], previous: list[dict[str, Any]],
                 kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    before = {c.get("type"): c.get("status") for c in previous}
    return [c for c in conditions if c["type"] in kinds and c["status"] == "True" and before.get(c["type"]) != "True"]


def _event(body: dict[str, Any], logger: Any, reason: str, message: str, warning: bool = False) -> None:
    """Log it, and post it as an Event of the resource (what `kubectl describe` shows)."""
    (kopf.warn if warning else kopf.info)(body, reason=reason, message=message)
    (logger.warning if warning else logger.info)(message)


async def observe(kube: Kube, spec: ParakeetASRSpec, names: Names, body: dict[str, Any]) -> Observed:
    apis = frozenset([api for api in OPTIONAL_APIS if await kube.served(api)])
    claim = spec.model_cache.existing_claim
    claim_bound = not claim or await kube.get("v1", "PersistentVolumeClaim", names.namespace, claim) is not None
    deployment = await kube.get("apps/v1", "Deployment", names.namespace, names.name)
    return Observed(apis=apis, warmup=await _warmup_state(kube, spec, names, body, deployment),
                    deployment=deployment, claim_bound=claim_bound)


async def _warmup_state(kube: Kube, spec: ParakeetASRSpec, names: Names, body: dict[str, Any],
                        deployment: dict[str, Any] | None) -> WarmupState:
    retry = (body["metadata"].get("annotations") or {}).get(WARMUP_RETRY_ANNOTATION, "")
    key = builders.warmup_key(spec, names, retry)
    jobs = {job["metadata"]["name"]: job for job in await kube.list("batch/v1", "Job", names.namespace,
                                                                     builders.warmup_selector(names))}
    job_name = names.warmup_job(key)
    superseded = tuple(name for name, job in jobs.items()
                       if name != job_name and not job["metadata"].get("deletionTimestamp"))
    remembered = (body.get("status") or {}).get("warmup") or {}
    on_fleet = ((deployment or {}).get("metadata", {}).get("annotations") or {}).get(WARMUP_KEY_ANNOTATION)
    proven = remembered if remembered.get("key") == key else {"key": key} if on_fleet == key else None
    found = WarmupState("absent", retry=retry, proven=proven, superseded=superseded)
    job = jobs.get(job_name)
    if not spec.warmup.enabled or job is None or proven:  # a remembered proof needs no pod read again
        return found
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if not (status.get("succeeded") or "Complete" in conditions or "Failed" in conditions):
        return replace(found, phase="running")
    result = await _termination_message(kube, names.namespace, job_name)
    if status.get("succeeded") or "Complete" in conditions:
        return replace(found, phase="succeeded", result=result)
    failed = conditions["Failed"]
    why = (result or {}).get("error") or failed.get("message") or "the Job failed"
    return replace(found, phase="failed", reason=f"{failed.get('reason', 'Failed')}: {why}", result=result)


async def _termination_message(kube: Kube, namespace: str, job_name: str) -> dict[str, Any] | None:
    """The JSON line `parakeet-serve warmup` left as its container's termination message (newest pod)."""
    pods = await kube.list("v1", "Pod", namespace, f"job-name={job_name}")
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True):
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((container.get("state") or {}).get("terminated") or {}).get("message")
            if message:
                try:
                    return json.loads(message.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    return {"error": message.strip()[:300]}
    return None


def _stamped(condition: dict[str, str], previous: list[dict[str, Any]], generation: int) -> dict[str, Any]:
    """A condition with its observedGeneration, and the time it last changed (kept while it holds)."""
    before = next((c for c in previous if c.get("type") == condition["type"]), None)
    unchanged = before is not None and before.get("status") == condition["status"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {**condition, "observedGeneration": generation,
            "lastTransitionTime": before.get("lastTransitionTime", now) if unchanged and before else now}
