"""The dashboards and Prometheus rules in `dashboards/`: promtool checks, rule unit tests, and the
structure every panel needs to work against any Prometheus the variables point at.

promtool comes from Prometheus (Debian's `prometheus` package); without it these tests fail
rather than skip, since nothing else checks that the PromQL parses.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboards.queries import (
    DASHBOARDS,
    RULES,
    all_queries,
    dashboard_files,
    dashboard_queries,
    metric_names,
    panels,
    rule_queries,
)

RULE_TESTS = DASHBOARDS / "tests" / "prometheus-rules.test.yaml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
UNITS = {"s", "percentunit", "short", "bytes", "ops"}

# The metrics contract (histograms by family name); test_prometheus.py checks a real server exports them.
CONTRACT = set(
    """
    parakeet_requests_total parakeet_http_requests_total parakeet_audio_seconds_total parakeet_inference_seconds_total
    parakeet_encoder_input_seconds_total parakeet_admission_rejections_total
    parakeet_real_time_factor parakeet_request_duration_seconds parakeet_queue_wait_seconds
    parakeet_batch_size parakeet_inference_duration_seconds parakeet_interim_latency_seconds
    parakeet_final_latency_seconds parakeet_stream_lag_seconds
    parakeet_active_streams parakeet_max_streams parakeet_queue_depth parakeet_queue_capacity
    parakeet_ready parakeet_model_info parakeet_model_load_seconds
    parakeet_gpu_memory_allocated_bytes parakeet_gpu_memory_reserved_bytes
    """.split()
)
# Range selectors the SLO dashboard may use besides Grafana's own: the burn-rate windows and 30 days.
SLO_WINDOWS = {"5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"}
_RANGE = re.compile(r"\[([^\]]+)\]")
_SELECTOR = re.compile(r"(?<![\w:])(parakeet_\w+)(\{[^}]*\})?")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not on PATH: install Prometheus (Debian/Ubuntu: apt-get install prometheus)")
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False, timeout=120)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in panels(dashboard) if panel.get("type") != "row"]


DASHBOARD_FILES = dashboard_files()
by_name = pytest.mark.parametrize("path", DASHBOARD_FILES, ids=[path.stem for path in DASHBOARD_FILES])


# --- promtool ------------------------------------------------------------------------------------


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, output(result)


def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, output(result)


def rules_file(directory: Path, exprs: list[str]) -> Path:
    """A rule file recording each expression as `check:expr_N`."""
    rules = [{"record": f"check:expr_{n}", "expr": expr} for n, expr in enumerate(exprs)]
    path = directory / "queries.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}, sort_keys=False))
    return path


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses the PromQL of the rules it checks, so each query goes in as a recording rule."""
    queries = [query for path in DASHBOARD_FILES for query in dashboard_queries(path)]

    result = promtool("check", "rules", str(rules_file(tmp_path, [query.expr for query in queries])))

    index = "\n".join(f"check:expr_{n}: {query.source} / {query.title}" for n, query in enumerate(queries))
    assert result.returncode == 0, f"{output(result)}\n{index}"


def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    """The check above would pass vacuously if promtool did not parse rule expressions."""
    result = promtool("check", "rules", str(rules_file(tmp_path, ["sum(rate(parakeet_requests_total[1m])"])))
    assert result.returncode != 0, output(result)


# --- metrics -------------------------------------------------------------------------------------


def test_queries_use_only_exported_metrics() -> None:
    exprs = [query.expr for query in all_queries()]
    unknown = metric_names(exprs, base=True) - CONTRACT
    assert not unknown, f"metrics the service does not export: {sorted(unknown)}"


def test_every_exported_metric_is_shown() -> None:
    exprs = [query.expr for path in DASHBOARD_FILES for query in dashboard_queries(path)]
    assert CONTRACT - metric_names(exprs, base=True) == set()


def test_metric_names_ignore_recording_rules() -> None:
    exprs = [
        "parakeet:latency_errors:ratio_rate1h / 0.01 > 14.4",
        'sum(rate(parakeet_final_latency_seconds_bucket{le="1.5"}[5m]))',
    ]
    assert metric_names(exprs) == {"parakeet_final_latency_seconds_bucket"}
    assert metric_names(exprs, base=True) == {"parakeet_final_latency_seconds"}


# --- dashboards ----------------------------------------------------------------------------------


def test_dashboard_uids_and_titles_are_unique() -> None:
    dashboards = [load(path) for path in DASHBOARD_FILES]
    assert {dashboard["title"] for dashboard in dashboards} == {
        "Parakeet ASR / Service overview",
        "Parakeet ASR / SLOs",
    }
    uids = [dashboard["uid"] for dashboard in dashboards]
    assert all(uids) and len(set(uids)) == len(uids)


@by_name
def test_variables(path: Path) -> None:
    variables = {variable["name"]: variable for variable in load(path)["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "pod"}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert variables["namespace"]["query"] == "label_values(parakeet_model_info, namespace)"
    assert variables["pod"]["query"] == 'label_values(parakeet_model_info{namespace=~"$namespace"}, pod)'
    for name in ("namespace", "pod"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert (variable["multi"], variable["includeAll"], variable["allValue"]) == (True, True, ".*"), name


@by_name
def test_panel_ids_are_unique(path: Path) -> None:
    ids = [panel["id"] for panel in panels(load(path))]
    assert len(ids) == len(set(ids)), sorted(ids)


@by_name
def test_panels_query_the_chosen_datasource(path: Path) -> None:
    for panel in query_panels(load(path)):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


@by_name
def test_graphs_have_units(path: Path) -> None:
    for panel in query_panels(load(path)):
        if panel["type"] in ("timeseries", "stat"):
            assert panel["fieldConfig"]["defaults"].get("unit") in UNITS, panel["title"]


@by_name
def test_panels_fit_the_grid(path: Path) -> None:
    for panel in panels(load(path)):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]


@by_name
def test_every_query_filters_namespace_and_pod(path: Path) -> None:
    unfiltered = [
        f"{panel['title']}: {name}{matchers}"
        for panel in query_panels(load(path))
        for target in panel["targets"]
        for name, matchers in _SELECTOR.findall(target["expr"])
        if 'namespace=~"$namespace"' not in matchers or 'pod=~"$pod"' not in matchers
    ]
    assert not unfiltered, "\n".join(unfiltered)


def test_overview_rates_use_the_rate_interval() -> None:
    for panel in query_panels(load(DASHBOARDS / "parakeet-overview.json")):
        for target in panel["targets"]:
            ranges = _RANGE.findall(target["expr"])
            assert set(ranges) <= {"$__rate_interval"}, (panel["title"], ranges)
            if "rate(" in target["expr"] or "increase(" in target["expr"]:
                assert ranges, panel["title"]


def test_slo_ranges_are_the_slo_windows() -> None:
    for panel in query_panels(load(DASHBOARDS / "parakeet-slo.json")):
        for target in panel["targets"]:
            ranges = set(_RANGE.findall(target["expr"]))
            assert ranges <= SLO_WINDOWS | {"$__range", "$__rate_interval"}, (panel["title"], ranges)


# --- rules ---------------------------------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_recorded_series_keep_the_namespace() -> None:
    for rule in rules():
        if "record" in rule:
            assert rule["record"].startswith("parakeet:"), rule["record"]
            aggregations = re.findall(r"\b(?:sum|max|min|avg|count)\s+by\s*\(([^)]*)\)", rule["expr"])
            assert aggregations, rule["record"]
            for labels in aggregations:
                assert "namespace" in {label.strip() for label in labels.split(",")}, rule["record"]


def test_slo_windows_are_all_recorded() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for slo in ("availability", "latency"):
        for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
            assert f"parakeet:{slo}_errors:ratio_rate{window}" in recorded


def test_alerts_are_labelled_and_described() -> None:
    alerts = [rule for rule in rules() if "alert" in rule]
    assert {alert["alert"] for alert in alerts} >= {
        "ParakeetAvailabilityFastBurn",
        "ParakeetAvailabilitySlowBurn",
        "ParakeetLatencyFastBurn",
        "ParakeetLatencySlowBurn",
        "ParakeetNotReady",
        "ParakeetQueueSaturated",
        "ParakeetStreamsSaturated",
    }
    for alert in alerts:
        assert alert["labels"]["severity"] in ("page", "ticket"), alert["alert"]
        assert {"summary", "description"} <= set(alert["annotations"]), alert["alert"]
        if "Burn" in alert["alert"]:
            assert alert["labels"]["slo"] in ("availability", "latency"), alert["alert"]


def test_rule_queries_name_every_rule() -> None:
    assert [query.title for query in rule_queries()] == [rule.get("record") or rule["alert"] for rule in rules()]
