"""Dashboards and rules against a real Prometheus scraping a real server (the demo model) under load.

Prometheus (Debian's package, installed by `tests/tools/install-system-tools.sh`) scrapes the
server's metrics every second with the labels Kubernetes would add and evaluates our rule file.
After recognition and streaming traffic through the Riva client, every dashboard panel's query
and every rule's expression must return data, and every metric they name must be one the server
exports.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import openai
import pytest
import riva.client
from riva.client.proto import riva_asr_pb2

from parakeet_serve.engine import NemoEngine
from parakeet_serve.net import free_port
from tests.conftest import LoopThread, Served, rpc_code, start_server
from tests.dashboards.queries import REPO, Query, all_queries, metric_names
from tests.riva.test_streaming import EVAL, RATE, as_bytes, config, pcm_of, utterances_with_pauses
from tests.telemetry.scrape import Scrape

RULES = REPO / "dashboards" / "prometheus-rules.yaml"
# Panels that can only have data on a GPU: their queries must run, but return nothing on a CPU.
GPU_ONLY = ("parakeet_gpu_memory_",)


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}",
                                    timeout=30) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result = body["data"]["result"]
        return result if isinstance(result, list) else [{"value": result}]

    def wait_for(self, expr: str, predicate, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):  # not up yet
                if predicate(self.query(expr)):
                    return
            assert time.monotonic() < deadline, f"Prometheus never satisfied {expr}"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def served(loop_thread: LoopThread, demo_engine: NemoEngine) -> Iterator[Served]:
    # A queue of one, so that a burst of HTTP requests meets 429s (server failures for the SLO panels).
    served = start_server(loop_thread, demo_engine, model_id="demo", max_streams=2, http_port=free_port(),
                          microbatch_max_batch=1, queue_max_factor=1)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def prometheus(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run tests/tools/install-system-tools.sh"
    root = tmp_path_factory.mktemp("prometheus")
    (root / "prometheus.yml").write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{
            "job_name": "parakeet",
            "static_configs": [{"targets": [f"127.0.0.1:{served.app.metrics_port}"],
                                "labels": {"namespace": "test", "pod": "parakeet-0"}}],
        }],
    }))
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=(root / "prometheus.log").open("w"),
    )
    try:
        prom = Prometheus(f"http://127.0.0.1:{port}")
        prom.wait_for('up{job="parakeet"}', lambda r: r and r[0]["value"][1] == "1")
        yield prom
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def loaded(served: Served, prometheus: Prometheus) -> Prometheus:
    """Recognize requests (one bad), streams with interim results and endpoints, one refused stream, and
    HTTP transcriptions (one bad, some refused)."""
    asr = served.asr()
    http = openai.OpenAI(base_url=f"http://127.0.0.1:{served.app.http.port}/v1", api_key="x", max_retries=0)
    assert http.audio.transcriptions.create(model="demo", file=EVAL[0].audio.open("rb")).text
    with contextlib.suppress(openai.BadRequestError):
        http.audio.transcriptions.create(model="whisper-1", file=EVAL[0].audio.open("rb"))
    assert any(_burst_refused(http) for _ in range(10)), "no burst of HTTP requests was refused"
    offline = riva.client.RecognitionConfig(language_code="en-US")
    for entry in EVAL[:6]:
        assert asr.offline_recognize(entry.audio.read_bytes(), offline).results
    assert rpc_code(lambda: asr.offline_recognize(b"not audio", offline)) == grpc.StatusCode.INVALID_ARGUMENT
    assert asr.stub.GetRivaSpeechRecognitionConfig(riva_asr_pb2.RivaSpeechRecognitionConfigRequest())

    release = threading.Event()
    audio, _ = utterances_with_pauses(EVAL[6:9], pause_s=1.0)
    data = as_bytes(audio)

    def paced() -> Iterator[bytes]:  # about 4x real time, in 100 ms chunks
        for i in range(0, len(data), 3200):
            yield data[i : i + 3200]
            time.sleep(0.025)
        release.wait(60)

    streams = [threading.Thread(target=lambda: list(served.asr().streaming_response_generator(paced(), config())))
               for _ in range(2)]
    for t in streams:
        t.start()
    prometheus.wait_for("parakeet_active_streams", lambda r: r and r[0]["value"][1] == "2")
    refused = rpc_code(lambda: list(asr.streaming_response_generator(iter([as_bytes(pcm_of(EVAL[0].audio))]),
                                                                     config())))
    assert refused == grpc.StatusCode.RESOURCE_EXHAUSTED
    release.set()
    for t in streams:
        t.join(120)
    # Wait until Prometheus has scraped the finished traffic, then a few more times for rate().
    expected = Scrape(served.metrics_url).sum("parakeet_requests_total")
    prometheus.wait_for("sum(parakeet_requests_total)", lambda r: r and float(r[0]["value"][1]) == expected)
    time.sleep(3)
    return prometheus


def _burst_refused(http: openai.OpenAI) -> bool:
    """Eight transcriptions at once; whether the full queue refused any with 429."""
    def one(_: int) -> bool:
        try:
            http.audio.transcriptions.create(model="demo", file=EVAL[0].audio.open("rb"))
        except openai.RateLimitError:
            return True
        return False

    with ThreadPoolExecutor(8) as pool:
        return any(list(pool.map(one, range(8))))


def has_data(result: list[dict]) -> bool:
    values = [float(s["value"][1]) for s in result if "value" in s] + [
        float(v[1]) for s in result for v in s.get("values", [])]
    return any(math.isfinite(v) for v in values)


QUERIES = all_queries()


def test_the_dashboards_and_rules_have_queries() -> None:
    sources = {q.source for q in QUERIES}
    assert {"parakeet-overview.json", "parakeet-slo.json", "prometheus-rules.yaml", "chart ScaledObject"} <= sources
    assert len(QUERIES) > 40


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.source}:{q.title}")
def test_every_query_returns_data_from_a_real_prometheus(loaded: Prometheus, query: Query) -> None:
    # An autoscaler's `or vector(0)` would answer anyway: the measured part must answer on its own.
    result = loaded.query(query.expr.removesuffix(" or vector(0)") if query.kind == "autoscaler" else query.expr)
    if query.kind == "alert" or any(prefix in query.expr for prefix in GPU_ONLY):
        return  # it ran; a healthy server fires no alert, and a CPU has no GPU memory to report
    assert has_data(result), f"no data for {query.title!r}: {query.expr}"


def test_every_metric_named_is_exported_by_the_server(loaded: Prometheus, served: Served) -> None:
    scrape = Scrape(served.metrics_url)
    exported = set(scrape.families) | {name for name, _ in scrape.samples}
    named = metric_names([q.expr for q in QUERIES])
    assert named, "no metric names found"
    assert sorted(named - exported) == []


def test_counters_in_prometheus_match_the_work_done(loaded: Prometheus) -> None:
    seconds = sum(len(pcm_of(e.audio)) / RATE for e in EVAL[:6])
    (sample,) = loaded.query('parakeet_audio_seconds_total{rpc="Recognize"}')
    assert float(sample["value"][1]) == pytest.approx(seconds, rel=1e-3)
    (ok,) = loaded.query('parakeet_requests_total{rpc="Recognize", code="OK"}')
    assert ok["value"][1] == "6"
    assert np.isclose(float(loaded.query("sum(parakeet_final_latency_seconds_count)")[0]["value"][1]), 6)
