"""An aiohttp server under test, on its own event loop in a background thread.

The synchronous ``openai`` client can then talk to it from the test's thread and the async client
from the test's loop. Subclasses say how to start their server in :meth:`start_server`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Self


class ServerThread:
    """Start on enter (port 0: a free port), graceful stop on exit."""

    name = "server"

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start_server(self) -> tuple[Any, int]:
        """Start the server; return its aiohttp runner (for cleanup) and its port."""
        raise NotImplementedError

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                runner, self.port = await self.start_server()
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

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10), f"{self.name} did not start"
        if self._error:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        assert not self._thread.is_alive(), f"{self.name} did not stop"
