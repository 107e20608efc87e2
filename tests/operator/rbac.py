"""The operator chart's RBAC rules, and whether an API call the operator made is one they allow."""

from __future__ import annotations

from functools import cache
from typing import Any

from tests.charts.render import OPERATOR_CHART, render

ROLE_KINDS = ("ClusterRole", "Role")


@cache
def chart_rules(watch_namespace: str = "") -> tuple[dict[str, Any], ...]:
    docs = render(sets={"watchNamespace": watch_namespace}, chart=OPERATOR_CHART)
    return tuple(rule for doc in docs if doc["kind"] in ROLE_KINDS for rule in doc["rules"])


def api_call(request: Any) -> tuple[str, str, str] | None:
    """(verb, API group, resource[/subresource]) of a recorded request; None for discovery (allowed to all)."""
    resource = request.resource
    if resource is None or resource.plural is None:
        return None
    method = str(request.method).upper().rsplit(".", 1)[-1]
    if method == "GET":
        watching = str(request.params.get("watch", "")).lower() in ("true", "1")
        verb = "get" if request.name else "watch" if watching else "list"
    else:
        verb = {"POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}[method]
    plural = f"{resource.plural}/{request.subresource}" if request.subresource else resource.plural
    return verb, resource.group or "", plural


def allowed(rules: tuple[dict[str, Any], ...], verb: str, group: str, resource: str) -> bool:
    return any(group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
               for rule in rules)
