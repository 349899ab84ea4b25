"""Fakes for testing the router's stages alone: a request, a next stage, a router state."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from inferscale.protocol.table import RoutingTable
from inferscale.router.access import ANONYMOUS, Access
from inferscale.router.access_log import AccessLog
from inferscale.router.context import RequestContext
from inferscale.router.metrics import RouterMetrics
from inferscale.router.settings import RouterSettings
from inferscale.router.stages import Stage
from inferscale.router.state import RouterState
from inferscale.router.table import EndpointTable


class FakeContent:
    def __init__(self, eof: bool) -> None:
        self.eof = eof

    def is_eof(self) -> bool:
        return self.eof


class FakeRequest:
    """What the stages read of an aiohttp request."""

    def __init__(
        self,
        body: bytes | Exception = b"{}",
        headers: dict[str, str] | None = None,
        *,
        delay: float = 0.0,
        path: str = "/v1/chat/completions",
    ) -> None:
        self.body = body
        self.headers = headers or {}
        self.content = FakeContent(eof=delay == 0)
        self.delay = delay
        self.method = "POST"
        self.path = path
        self.storage: dict[Any, Any] = {}
        # A body still on its way has no length yet (as a chunked one); the stages compare
        # a declared length with the limit before they read.
        self.content_length = len(body) if isinstance(body, bytes) else None
        self.client_max_size = 16 * 1024 * 1024

    def __setitem__(self, key: Any, value: Any) -> None:
        self.storage[key] = value

    async def read(self) -> bytes:
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(self.body, Exception):
            raise self.body
        return self.body


class Next(Stage):
    """The stage after the one under test: records what it was handed, answers 299."""

    def __init__(self, answer: web.StreamResponse | Exception | None = None) -> None:
        self.seen: list[RequestContext] = []
        self.answer = answer

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        self.seen.append(ctx)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer or web.Response(status=299, text="next")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def table(models: dict[str, Any] | None = None, version: int = 1) -> EndpointTable:
    live = EndpointTable()
    live.replace(RoutingTable.model_validate({"version": version, "models": models or {}}))
    return live


def endpoint(n: int, ready: bool = True) -> dict[str, Any]:
    return {"pod": f"pod-{n}", "address": f"127.0.0.1:{9000 + n}", "ready": ready}


def state(
    live: EndpointTable | None = None, access: Access | None = None, **settings: Any
) -> RouterState:
    lines: list[str] = []
    clock = Clock()
    log = AccessLog(RouterMetrics(), lines.append, clock, "test")
    made = RouterState(
        RouterSettings(**settings),
        live or table(),
        access or Access(),
        log,
        clock=clock,
        wall=lambda: 1_700_000_000.0,
    )
    made.lines = lines  # type: ignore[attr-defined]
    return made


def context(request: FakeRequest | None = None, **fields: Any) -> RequestContext:
    ctx = RequestContext(request or FakeRequest(), 100.0, 1, ANONYMOUS)  # type: ignore[arg-type]
    for name, value in fields.items():
        setattr(ctx, name, value)
    return ctx


def logged(made: RouterState) -> list[dict[str, Any]]:
    return [json.loads(line) for line in made.lines]  # type: ignore[attr-defined]


class WordEncoder:
    """A stand-in embedding model: bag of words hashed into ``dim`` floats, L2-normalised.

    Texts that share most of their words are similar ("What's the weather?" and "How's the
    weather?" score 2/3), which is all the cache's tests need of a real model.
    """

    name = "bag-of-words"
    max_tokens = 10_000

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls = 0

    def encode_one(self, text: str) -> Any:
        import hashlib

        import numpy as np

        self.calls += 1
        vector = np.zeros(self.dim, dtype=np.float32)
        for word in text.lower().split():
            slot = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
            vector[slot % self.dim] += 1.0
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector

    def encode(self, texts: list[str]) -> Any:
        import numpy as np

        return np.stack([self.encode_one(t) for t in texts])
