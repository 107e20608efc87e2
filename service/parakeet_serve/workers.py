"""Several server processes on one set of ports (`PARAKEET_WORKERS`).

One event loop answers about 1,200 small `Recognize` requests a second, short of what a GPU gets through
(loadtest/README.md). Here each worker is a whole server (its own model copy, scheduler and inference thread)
bound with `SO_REUSEPORT`, so the kernel spreads new connections among them; this parent process starts them,
serves their metrics summed (prometheus_client's multiprocess mode), passes SIGTERM on so that each drains, and
ends them all when one fails, so that a supervisor restarts the whole set.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable
from multiprocessing.process import BaseProcess

from parakeet_serve.errors import ParakeetError, listening
from parakeet_serve.lifeline import end_with_parent
from parakeet_serve.logs import configure_logging
from parakeet_serve.settings import Settings

log = logging.getLogger(__name__)

Serve = Callable[[Settings], Awaitable[None]]

STOP_GRACE_S = 30.0  # beyond the drain's own grace, before a worker that has not exited is killed


def run_workers(settings: Settings, serve: Serve | None = None) -> int:
    """Serve with `settings.workers` processes until SIGTERM or SIGINT (exit code 0), or until one of them
    exits (its exit code, the others stopped). Each runs `serve` (a module-level function; by default
    `app.serve_until_stopped`)."""
    from parakeet_serve.telemetry.metrics import serve_shared

    directory = tempfile.mkdtemp(prefix="parakeet-metrics-")
    # prometheus_client reads this when a worker imports it: their values then go to files in `directory`
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked threads or CUDA state
    # One record announces the shared Wyoming port: the first worker's.
    quiet = settings.model_copy(update={"wyoming_zeroconf": ""})
    workers = [context.Process(target=_serve_worker, args=(quiet if n else settings, n, serve, os.getpid()),
                               name=f"worker-{n}") for n in range(settings.workers)]
    metrics = None
    try:
        with listening("metrics", settings.metrics_host, settings.metrics_port, "PARAKEET_METRICS_PORT"):
            metrics = serve_shared(settings.metrics_host, settings.metrics_port, directory)
        for worker in workers:
            worker.start()
        log.info("workers started", extra={"workers": [w.pid for w in workers], "port": settings.port})
        return _supervise(workers, stop, settings.shutdown_grace_s + STOP_GRACE_S)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
        if metrics is not None:
            metrics.shutdown()
        shutil.rmtree(directory, ignore_errors=True)


def _supervise(workers: list[BaseProcess], stop: threading.Event, grace_s: float) -> int:
    """Wait for a signal or a worker's exit; then stop the others and return the exit code to end with."""
    failed = None
    while failed is None and not stop.wait(0.2):
        failed = next((w for w in workers if w.exitcode is not None), None)
    if failed is not None:
        log.error("a worker exited; stopping the others", extra={"worker": failed.name, "exit_code": failed.exitcode})
    for worker in workers:
        if worker.is_alive():
            os.kill(worker.pid, signal.SIGTERM)
    for worker in workers:
        worker.join(grace_s)
    if failed is None:
        return 0
    return failed.exitcode if failed.exitcode and failed.exitcode > 0 else 1  # a signal's end (negative) is 1


def _serve_worker(settings: Settings, number: int, serve: Serve | None, parent: int) -> None:
    """One worker process: the single-process server, its log lines marked with its number. It drains and
    ends when its parent does, even one killed outright, so no worker goes on holding the ports."""
    end_with_parent(parent)
    from parakeet_serve.app import serve_until_stopped
    from parakeet_serve.host_memory import retain_freed_memory

    configure_logging(settings.log_level, worker=number)
    retain_freed_memory(settings.host_memory_retain_mb)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    try:
        asyncio.run((serve or serve_until_stopped)(settings))
    except ParakeetError as exc:  # the single-process server's one line (the model or a port)
        print(f"parakeet-serve: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
