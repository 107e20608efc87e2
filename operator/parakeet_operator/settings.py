"""The operator's one validated settings object: `PARAKEET_OPERATOR_*` variables (and CLI flags)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """Configuration of one operator process."""

    model_config = SettingsConfigDict(env_prefix="PARAKEET_OPERATOR_", extra="forbid", frozen=True,
                                      env_ignore_empty=True, use_attribute_docstrings=True)

    namespace: str = ""
    """Watch only this namespace (namespace-scoped RBAC); empty watches every namespace."""
    reconcile_interval_s: float = Field(30.0, gt=0, le=3600)
    """Every resource is reconciled this often too: drift is repaired and warm-ups are followed."""
    discovery_interval_s: float = Field(60.0, ge=0, le=3600)
    """Optional APIs (KEDA, custom metrics, the Prometheus operator) are looked up again after this long."""
    retry_delay_s: float = Field(10.0, gt=0, le=600)
    """Back-off before retrying a failed API call."""
    liveness_port: int = Field(8080, ge=0, le=65535)
    """Port of the liveness endpoint (`/healthz`); 0 serves none."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Level of the operator's log."""


def load_operator_settings(**overrides: Any) -> OperatorSettings:
    """Settings from the environment, explicit values first; a bad value raises one line naming it."""
    try:
        return OperatorSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        reasons = "; ".join(f"PARAKEET_OPERATOR_{str(e['loc'][0]).upper()}={e.get('input')!r}: {e['msg']}"
                            for e in exc.errors())
        raise SystemExit(f"parakeet-operator: invalid settings: {reasons}") from None
