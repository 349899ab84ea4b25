"""A real sim server on 127.0.0.1 (free port) in a background thread, plus metric helpers.

The server runs on its own event loop in a thread so that the synchronous ``openai`` client
can talk to it from the test's thread, and the async client from the test's loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from inferscale.sim.server import start
from inferscale.sim.settings import SimSettings

MODEL = "sim-test-model"


class RunningSim:
    """Start on enter, graceful stop on exit."""

    def __init__(self, settings: SimSettings, on_crash: Callable[[], None] | None = None):
        self.settings = settings
        self.on_crash = on_crash
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="sim-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                runner, self.port = await start(self.settings, on_crash=self.on_crash)
            except BaseException as error:  # surfaced in __enter__
                self._error = error
                self._ready.set()
                return
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    def __enter__(self) -> RunningSim:
        self._thread.start()
        assert self._ready.wait(10), "sim did not start"
        if self._error:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        assert not self._thread.is_alive(), "sim did not stop"

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
