"""kopf handlers: a few lines each, all delegating to `reconcile`. kopf imports this module to run them."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from parakeet_operator.kube import Kube
from parakeet_operator.reconcile import reconcile
from parakeet_operator.settings import load_operator_settings
from parakeet_operator.spec import GROUP, PLURAL, VERSION

SETTINGS = load_operator_settings()  # kopf reads the decorators' intervals at import
RESOURCE = (GROUP, VERSION, PLURAL)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/operator"
    settings.posting.level = logging.INFO  # what reconcile does to a resource shows up as its Events
    # Watching one namespace, there is nothing to scan for: listing namespaces needs cluster-wide rights that
    # the chart's namespaced install does not grant (kopf would retry for a minute before it falls back).
    settings.scanning.disabled = bool(SETTINGS.namespace)
    memo.kube = Kube(SETTINGS.discovery_interval_s)


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        memo.kube.configure(info)
    return info


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.kube.close()


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)  # the spec, or an annotation (the warm-up retry)
@kopf.timer(*RESOURCE, interval=SETTINGS.reconcile_interval_s, initial_delay=SETTINGS.reconcile_interval_s)
async def reconcile_resource(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    try:
        status = await reconcile(memo.kube, dict(body), logger, SETTINGS.retry_delay_s)
    except kopf.PermanentError as exc:
        if (body.status or {}).get("lastFailure") != str(exc):  # once, not on every timer tick
            kopf.warn(dict(body), reason="InvalidSpec", message=str(exc))
        patch.status.update(_failed(str(exc), body))
        raise
    if status is not None:  # only what changed: a converged resource costs no write
        current = body.status or {}
        patch.status.update({key: value for key, value in status.items() if current.get(key) != value})


def _failed(message: str, body: kopf.Body) -> dict[str, Any]:
    generation = body.metadata.get("generation", 0)
    return {"phase": "Failed", "lastFailure": message, "observedGeneration": generation,
            "conditions": [{"type": "Degraded", "status": "True", "reason": "InvalidSpec", "message": message,
                            "observedGeneration": generation}]}
