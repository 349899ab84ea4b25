"""A real sim server on 127.0.0.1 (free port) in a background thread, plus metric helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from inferscale.sim.server import start
from inferscale.sim.settings import SimSettings
from tests.servers import ServerThread

MODEL = "sim-test-model"


class RunningSim(ServerThread):
    """A sim server: start on enter, graceful stop on exit."""

    name = "sim-server"

    def __init__(self, settings: SimSettings, on_crash: Callable[[], None] | None = None):
        self.settings = settings
        self.on_crash = on_crash
        super().__init__()

    async def start_server(self) -> tuple[Any, int]:
        return await start(self.settings, on_crash=self.on_crash)

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, keyed by metric name (labels dropped; one series each)."""
        text = httpx.get(self.base_url + "/metrics", timeout=5).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            key, value = line.rsplit(" ", 1)
            name = key.split("{", 1)[0]
            if name.endswith("_bucket"):
                continue
            out[name] = float(value)
        return out


def make_settings(dialect: str = "vllm", failures: dict | None = None, **engine) -> SimSettings:
    return SimSettings(
        host="127.0.0.1",
        port=0,
        model=MODEL,
        preset="zero",
        engine={"max_model_len": 4096, "kv_capacity_tokens": 65536, **engine},
        metrics_dialect=dialect,
        failures=failures or {},
        shutdown_grace_seconds=2.0,
        max_request_bytes=64 * 1024,
    )


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    """A zero-latency sim shared by a module's functional tests."""
    with RunningSim(make_settings()) as running:
        yield running
