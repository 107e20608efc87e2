"""The model-cache claim."""

from __future__ import annotations

from typing import Any

from parakeet_operator.builders.common import Names, metadata
from parakeet_operator.spec import ParakeetASRSpec


def model_cache_claim(spec: ParakeetASRSpec, names: Names) -> dict[str, Any] | None:
    """The claim to make, or None when the spec names an existing one."""
    cache = spec.model_cache
    if cache.existing_claim:
        return None
    body: dict[str, Any] = {"accessModes": [cache.access_mode], "resources": {"requests": {"storage": cache.size}}}
    if cache.storage_class:
        body["storageClassName"] = cache.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata(names, names.cache_claim,
                                                                                        "model-cache"), "spec": body}
