"""A demo-model server shared by the load-test checks (they assert the harness, not the speed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from parakeet_serve.engine import NemoEngine
from tests.conftest import LoopThread, Served, start_server


@pytest.fixture(scope="module")
def demo_server(demo_engine: NemoEngine, loop_thread: LoopThread) -> Iterator[Served]:
    served = start_server(loop_thread, demo_engine, max_streams=8)
    yield served
    served.stop()
