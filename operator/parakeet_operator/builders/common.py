"""Names, labels and the pieces every child shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parakeet_operator.spec import ParakeetASRSpec

MANAGER = "parakeet-operator"


@dataclass(frozen=True)
class Names:
    """The names of one resource's children, all derived from its own."""

    name: str
    namespace: str

    @property
    def cache_claim(self) -> str:
        return f"{self.name}-model-cache"

    @property
    def headless(self) -> str:
        return f"{self.name}-headless"

    def warmup_job(self, key: str) -> str:
        return f"{self.name}-warmup-{key}"

    @property
    def pod_regex(self) -> str:
        """This resource's Deployment pods (NAME-HASH-SUFFIX), for PromQL."""
        return f"{self.name}-[a-z0-9]+-[a-z0-9]+"


def selector_labels(names: Names) -> dict[str, str]:
    return {"app.kubernetes.io/name": "parakeet-serve", "app.kubernetes.io/instance": names.name}


def labels(names: Names, component: str = "server") -> dict[str, str]:
    return {**selector_labels(names), "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": MANAGER, "app.kubernetes.io/part-of": "parakeet-serve"}


def metadata(names: Names, name: str | None = None, component: str = "server", **extra: Any) -> dict[str, Any]:
    return {"name": name or names.name, "namespace": names.namespace, "labels": labels(names, component), **extra}


def image(spec: ParakeetASRSpec) -> str:
    return f"{spec.image.repository}:{spec.image.tag}"
