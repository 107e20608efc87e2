"""Run the real `helm` on the service chart: lint, render, and pick objects out of what it renders."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "parakeet-serve"
OPERATOR_CHART = ROOT / "charts" / "parakeet-operator"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
PROMETHEUS_OPERATOR = ("monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule")
RELEASE, NAMESPACE = "asr", "speech"
FULLNAME = f"{RELEASE}-parakeet-serve"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("helm")
    if binary is None:
        pytest.fail("helm is not on PATH: run tests/tools/install-system-tools.sh")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def template_args(values: Path | None = None, sets: dict[str, Any] | None = None,
                  api_versions: tuple[str, ...] = (), release: str = RELEASE, chart: Path = CHART) -> list[str]:
    args = ["template", release, str(chart), "--namespace", NAMESPACE]
    if values is not None:
        args += ["-f", str(values)]
    for key, value in (sets or {}).items():  # JSON, so that numbers stay numbers
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    for api in api_versions:
        args += ["--api-versions", api]
    return args


def render(values: Path | None = None, sets: dict[str, Any] | None = None,
           api_versions: tuple[str, ...] = (), release: str = RELEASE, chart: Path = CHART) -> list[dict[str, Any]]:
    """Every object the chart renders (hooks and tests included)."""
    result = helm(*template_args(values, sets, api_versions, release, chart))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_error(sets: dict[str, Any]) -> str:
    """What `helm template` says when it refuses the values."""
    result = helm(*template_args(sets=sets))
    assert result.returncode != 0, f"helm accepted {sets}"
    return result.stderr


def one(docs: list[dict[str, Any]], kind: str, name: str = FULLNAME) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


def server_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """A container's variables: plain values as strings, the others as their `valueFrom`."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
