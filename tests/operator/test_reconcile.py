"""What reconcile refuses before it calls the API: a spec the operator's own models reject."""

from __future__ import annotations

import asyncio
import logging

import kopf
import pytest

from parakeet_operator.reconcile import reconcile


def test_a_spec_the_models_refuse_is_a_permanent_error_naming_the_field() -> None:
    """The CRD's schema and CEL rules refuse these first; a resource stored before a stricter CRD can still
    hold one, and then nothing is created for it (no Kubernetes call is made: `kube` is None)."""
    body = {"metadata": {"name": "asr", "namespace": "speech"},
            "spec": {"replicas": 2, "autoscaling": {"mode": "hpa"}, "gpu": {"count": -1}}}
    with pytest.raises(kopf.PermanentError) as refused:
        asyncio.run(reconcile(None, body, logging.getLogger("test")))  # type: ignore[arg-type]
    assert str(refused.value) == "invalid spec: gpu.count: Input should be greater than or equal to 0"
