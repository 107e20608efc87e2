"""Every PromQL expression of the dashboards and rules in `dashboards/`, ready for a plain Prometheus.

Grafana variables are replaced by values a Prometheus without Grafana accepts (`$pod` matches
every pod, `$__rate_interval` is one minute, ...), so the same list serves a syntax check with
promtool and queries against a real Prometheus scraping a real server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
RULES = DASHBOARDS / "prometheus-rules.yaml"

GRAFANA_VARIABLES = {
    "namespace": ".*",
    "pod": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}

# $name, ${name} and ${name:format}; a name Grafana does not know here is an error, not a guess.
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)")
# A metric name is not part of a longer name or of a recording rule's `level:metric:ops` name.
_METRIC = re.compile(r"(?<![\w:])parakeet_\w+(?![\w:])")
_HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")
_SELECTOR = re.compile(r'\{namespace="[^"]*",pod=~"[^"]*"\}')


@dataclass(frozen=True)
class Query:
    """One expression: the file it came from, its panel title or rule name, the PromQL, and what holds it."""

    source: str
    title: str
    expr: str
    kind: str = "panel"  # "panel", "record", "alert" or "autoscaler"


def substitute(expr: str) -> str:
    """Replace Grafana's variables by plain values; raises KeyError for an unknown one."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in GRAFANA_VARIABLES:
            raise KeyError(f"unknown Grafana variable ${name} in: {expr}")
        return GRAFANA_VARIABLES[name]

    return _VARIABLE.sub(value, expr)


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(path: Path) -> list[Query]:
    dashboard = json.loads(path.read_text())
    return [
        Query(path.name, panel.get("title", ""), substitute(target["expr"]))
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def rule_queries(path: Path = RULES) -> list[Query]:
    document = yaml.safe_load(path.read_text())
    return [
        Query(path.name, rule.get("record") or rule["alert"], rule["expr"], "record" if "record" in rule else "alert")
        for group in document["groups"]
        for rule in group["rules"]
    ]


def autoscaler_queries() -> list[Query]:
    """The service chart's KEDA triggers, as `helm` renders them, with the release's series selector
    (namespace and pod-name pattern) widened to every series, as Grafana variables are."""
    from tests.charts.render import CI_VALUES, render

    (keda,) = [path for path in CI_VALUES if path.name == "keda-values.yaml"]
    (scaled,) = [doc for doc in render(keda) if doc["kind"] == "ScaledObject"]
    return [
        Query("chart ScaledObject", trigger["name"], _SELECTOR.sub("{}", trigger["metadata"]["query"]), "autoscaler")
        for trigger in scaled["spec"]["triggers"]
    ]


def all_queries() -> list[Query]:
    """Dashboard panel targets first, then rules, then the chart's autoscaler triggers."""
    queries = [query for path in dashboard_files() for query in dashboard_queries(path)]
    return queries + rule_queries() + autoscaler_queries()


def metric_names(exprs: Iterable[str], *, base: bool = False) -> set[str]:
    """The `parakeet_` metrics the expressions read; with `base`, histogram series by their family name."""
    names = {name for expr in exprs for name in _METRIC.findall(expr)}
    if base:
        names = {_HISTOGRAM_SUFFIX.sub("", name) for name in names}
    return names
