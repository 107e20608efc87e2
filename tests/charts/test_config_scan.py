"""A misconfiguration scan (checkov, offline) of the Dockerfile and of the chart as rendered for each CI
values file: no finding, except the checks `.checkov.yaml` skips, each with its reason there."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.charts.render import CHART, CI_VALUES, OPERATOR_CHART, PROMETHEUS_OPERATOR, ROOT, helm, template_args

CONFIG = ROOT / ".checkov.yaml"


def checkov(*args: str) -> dict[str, Any]:
    binary = shutil.which("checkov")
    if binary is None:
        pytest.fail("checkov is not on PATH: run tests/tools/install-system-tools.sh")
    result = subprocess.run([binary, "--config-file", str(CONFIG), "--output", "json", *args],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    report = json.loads(result.stdout)
    return report if isinstance(report, dict) else {"results": {}, "summary": {"failed": 0, "passed": 0}}


def failures(report: dict[str, Any]) -> list[str]:
    return [f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in report["results"].get("failed_checks", [])]


def test_the_dockerfile_has_no_misconfiguration() -> None:
    report = checkov("--file", str(ROOT / "Dockerfile"), "--framework", "dockerfile")
    assert report["summary"]["passed"] > 50
    assert failures(report) == []


def test_the_rendered_charts_have_no_misconfiguration(tmp_path: Path) -> None:
    renders = [(CHART, values) for values in CI_VALUES]
    renders += [(OPERATOR_CHART, values) for values in sorted((OPERATOR_CHART / "ci").glob("*-values.yaml"))]
    for chart, values in renders:
        rendered = helm(*template_args(values, api_versions=PROMETHEUS_OPERATOR, chart=chart))
        assert rendered.returncode == 0, rendered.stderr
        (tmp_path / f"{chart.name}-{values.name}").write_text(rendered.stdout)
    report = checkov("--directory", str(tmp_path), "--framework", "kubernetes")
    assert report["summary"]["passed"] > 500
    assert failures(report) == []
