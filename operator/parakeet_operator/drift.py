"""Whether a live object already is what the operator would apply, so that a converged child costs no write.

The API server normalises what it stores (`nvidia.com/gpu: 1` comes back as `"1"`, an HPA target of `0.15` as
`"150m"`) and adds defaults, so the check is semantic: every field the operator sets is present with the same
value (quantities compared by value), and the operator owns no field, in the server's own bookkeeping of
server-side apply (`managedFields`), that it no longer sets (a removed toleration must go).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

# Where Kubernetes keeps quantities in the children: maps of resource name to quantity, and single fields.
QUANTITY_KEYS = frozenset({"limits", "requests", "sizeLimit", "averageValue"})
_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "n": Decimal("1e-9"),
             "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
             "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)")


def converged(live: dict[str, Any], desired: dict[str, Any], manager: str) -> bool:
    owned = next((entry.get("fieldsV1", {}) for entry in live["metadata"].get("managedFields") or []
                  if entry.get("manager") == manager and entry.get("operation") == "Apply"), None)
    return owned is not None and contains(live, desired) and owned_within(owned, desired)


def contains(live: Any, desired: Any, quantity: bool = False) -> bool:
    """Whether `live` has every field `desired` sets, with the same value (fields the server adds are ignored)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            key in live and contains(live[key], value, quantity or key in QUANTITY_KEYS)
            for key, value in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(contains, live, desired))
    if live == desired:
        return True
    return quantity and (value := _quantity(desired)) is not None and _quantity(live) == value


def _quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity's value ("1.5Gi", "150m", "1e3", 2), or None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    match = _QUANTITY.fullmatch(str(value).strip())
    if match is None:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]
    except InvalidOperation:
        return None


def owned_within(fields: dict[str, Any], desired: Any) -> bool:
    """Whether every field in a `managedFields` entry (fieldsV1: `f:` a field, `k:` a list item by its keys,
    `v:` a set member, `i:` a list index) is still one that `desired` sets."""
    for path, below in fields.items():
        if path == ".":
            continue
        kind, _, raw = path.partition(":")
        if kind == "f":
            if not isinstance(desired, dict) or raw not in desired:
                return False
            child = desired[raw]
        elif kind == "k":
            keys = json.loads(raw)
            child = next((item for item in desired if isinstance(item, dict)
                          and all(item.get(k) == v for k, v in keys.items())), None) \
                if isinstance(desired, list) else None
            if child is None:
                return False
        elif kind == "v":
            if not isinstance(desired, list) or json.loads(raw) not in desired:
                return False
            continue
        elif kind == "i":
            if not isinstance(desired, list) or int(raw) >= len(desired):
                return False
            child = desired[int(raw)]
        else:
            return False
        if below and not owned_within(below, child):
            return False
    return True
