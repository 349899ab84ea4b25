"""The sim's HTTP server: the OpenAI API, ``/health`` and ``/metrics`` over the latency model.

``create_app(settings)`` returns an aiohttp application; ``serve(settings)`` runs it until
SIGTERM. Everything a request needs lives on one :class:`SimServer` per app; there are no
module-level singletons.

Failure behaviour: every bad request is answered with an OpenAI error object and a 4xx (400
malformed or wrong-typed body, context too long; 404 unknown model or path; 405 wrong method;
413 body too large); 503 while the cold start lasts or during shutdown. LoRA adapters are
loaded and unloaded as vLLM does it, with vLLM's messages and status codes: 400 for a load
without a name or path or of a name already loaded, 404 for an unload of an unknown name, and
404 for both endpoints when the sim runs without ``--enable-lora``. A client that goes
away mid-request is noticed at once (the app runs with handler cancellation) and its sequence is
cancelled, which frees its batch slot and KV blocks. Injected failures (``FailureSettings``) are
the only 5xx the sim sends on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import struct
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from inferscale.protocol.simtokens import block_hashes, render_chat, token_ids
from inferscale.serving import serve_app
from inferscale.sim.driver import EngineDriver, Ticket
from inferscale.sim.kvpublish import KvEventPublisher
from inferscale.sim.metrics import (
    CONTENT_TYPE,
    RENDERERS,
    render_startup,
    render_vllm_lora_info,
)
from inferscale.sim.model import EngineParams, LatencyModel
from inferscale.sim.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    LoadLoraAdapterRequest,
    UnloadLoraAdapterRequest,
    error_body,
)
from inferscale.sim.settings import SimSettings
from inferscale.sim.startup import StartupPlan
from inferscale.sim.tokens import embedding, output_words, request_seed
from inferscale.sim.weights import read_manifest

_M = TypeVar("_M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SIM_KEY: web.AppKey[SimServer] = web.AppKey("inferscale_sim")
CRASH_EXIT_CODE = 70
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class ApiError(Exception):
    """A request the sim refuses; turned into an OpenAI error response by the middleware."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        """Refuse with ``status`` and an OpenAI error object."""
        super().__init__(message)
        self.status = status
        self.body = error_body(status, message, param=param, code=code)


def _crash() -> None:
    # Failure injection wants an abrupt death, like a segfaulting engine: no cleanup at all.
    os._exit(CRASH_EXIT_CODE)


class SimServer:
    """Per-app state and the request handlers."""

    def __init__(
        self,
        settings: SimSettings,
        params: EngineParams,
        on_crash: Callable[[], None],
        started_before: float = 0.0,
        startup: StartupPlan | None = None,
    ) -> None:
        """Hold the settings; the model is created when the app starts (the cold start)."""
        self.settings = settings
        self.startup = startup
        """The start-up's phases (logged and exported as metrics)."""
        self.started_before = started_before
        self.params = params
        self.on_crash = on_crash
        self.model_name = settings.model
        self.render_metrics = RENDERERS[settings.metrics_dialect]
        self.rng = random.Random(settings.seed)
        self.requests = 0
        self.hung = False
        self.draining = False
        self.created = int(time.time())
        self._driver: EngineDriver | None = None
        self.adapters = settings.adapters()
        """Loaded LoRA adapters, name to path, in load order."""
        self._loading: set[str] = set()
        self.kv_publisher: KvEventPublisher | None = None
        """The KV-events PUB socket, with ``--kv-events-config`` on (once the app started)."""

    @property
    def driver(self) -> EngineDriver:
        """The engine driver (exists once the app has started)."""
        assert self._driver is not None, "the app has not started"
        return self._driver

    async def on_startup(self, _app: web.Application) -> None:
        """Start the engine clock: the cold start counts from here, less ``started_before``."""
        loop = asyncio.get_running_loop()
        start = loop.time() - self.started_before
        events = self.settings.kv_events()
        record = events is not None and events.enable
        model = LatencyModel(
            self.params, start=start, seed=self.settings.seed, record_events=record
        )
        if record:
            assert events is not None
            self.kv_publisher = KvEventPublisher(events, self.params.block_size)
        publish = self.kv_publisher.publish if self.kv_publisher is not None else None
        self._driver = EngineDriver(model, loop, publish)

    async def on_shutdown(self, _app: web.Application) -> None:
        """Report not-ready while in-flight requests finish."""
        self.draining = True

    async def on_cleanup(self, _app: web.Application) -> None:
        """Stop the engine timer and the KV-events socket."""
        if self._driver is not None:
            self._driver.close()
        if self.kv_publisher is not None:
            self.kv_publisher.close()
            self.kv_publisher = None

    # ----- plumbing ------------------------------------------------------------------------

    async def _hang(self) -> None:
        self.hung = True
        await asyncio.Event().wait()

    async def _admit(self) -> None:
        """Failure injection and readiness, in the order a real engine would fail."""
        self.requests += 1
        failures = self.settings.failures
        if self.hung or (
            failures.hang_after_requests is not None
            and self.requests > failures.hang_after_requests
        ):
            await self._hang()
        if failures.crash_after_requests is not None and (
            self.requests > failures.crash_after_requests
        ):
            self.on_crash()
        if self.draining:
            raise ApiError(503, "The server is shutting down.")
        if not self.driver.model.is_ready(self.driver.now()):
            raise ApiError(503, "The model is still loading.", code="model_loading")
        if failures.error_rate and self.rng.random() < failures.error_rate:
            raise ApiError(failures.error_status, "Injected failure.", code="injected_failure")

    async def _parse(self, request: web.Request, kind: type[_M]) -> _M:
        parsed = await self._read(request, kind)
        model = getattr(parsed, "model", None)
        if model != self.model_name and model not in self.adapters:
            raise ApiError(
                404,
                f"The model `{model}` does not exist.",
                param="model",
                code="model_not_found",
            )
        return parsed

    async def _read(self, request: web.Request, kind: type[_M]) -> _M:
        max_bytes = self.settings.max_request_bytes
        if request.content_length is not None and request.content_length > max_bytes:
            raise ApiError(413, f"Request body is larger than {max_bytes} bytes.")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, f"Request body is larger than {max_bytes} bytes.") from None
        try:
            return kind.model_validate_json(body)
        except ValidationError as error:
            raise _validation_error(error) from None

    def _adapter(self, served: str) -> str | None:
        """The LoRA adapter a request's ``model`` names, or None for the base model."""
        return None if served == self.model_name else served

    def _output_len(self, prompt_tokens: int, max_tokens: int | None) -> int:
        limit = self.params.max_model_len
        if max_tokens is None:
            max_tokens = min(self.settings.default_max_tokens, limit - prompt_tokens)
        if max_tokens < 1 or prompt_tokens + max_tokens > limit:
            raise ApiError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {prompt_tokens + max(max_tokens, 1)} tokens ({prompt_tokens} in the "
                f"messages, {max_tokens} in the completion). Please reduce the length of the "
                "messages or completion.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return max_tokens

    def _submit(self, ids: list[int], output: int, *, stream: bool, served: str) -> Ticket:
        bs = self.params.block_size
        hashes = block_hashes(ids, bs) if len(ids) >= bs else ()
        adapter = self._adapter(served)
        return self.driver.submit(len(ids), output, hashes, stream=stream, adapter=adapter)

    async def _finish(self, ticket: Ticket) -> None:
        """Wait for a non-streaming request to end; cancel it if the handler is cancelled."""
        try:
            while not ticket.seq.done:
                await ticket.wait()
        finally:
            if not ticket.seq.done:
                self.driver.cancel(ticket)

    @staticmethod
    def _usage(ticket: Ticket) -> dict[str, object]:
        seq = ticket.seq
        return {
            "prompt_tokens": seq.prompt_tokens,
            "completion_tokens": seq.generated,
            "total_tokens": seq.prompt_tokens + seq.generated,
            "prompt_tokens_details": {"cached_tokens": seq.cached_tokens},
        }

    @staticmethod
    def _timing_headers(ticket: Ticket) -> dict[str, str]:
        # Model-time TTFT and queue time, so tests and benchmarks can read what the sim decided
        # instead of measuring a noisy wall clock.
        seq = ticket.seq
        return {
            "x-inferscale-sim-ttft": repr(seq.ttft or 0.0),
            "x-inferscale-sim-queue-time": repr(seq.queue_time or 0.0),
        }

    async def _stream(
        self,
        request: web.Request,
        ticket: Ticket,
        words: list[str],
        chunk: Callable[[str, bool], bytes],
        tail: Callable[[], bytes],
    ) -> web.StreamResponse:
        """Send each token as it is generated, then the tail (finish, usage, ``[DONE]``)."""
        response = web.StreamResponse(headers=SSE_HEADERS)
        seq = ticket.seq
        try:
            await response.prepare(request)
            sent = 0
            while True:
                if seq.generated > sent:
                    parts = [chunk(words[i], i == 0) for i in range(sent, seq.generated)]
                    sent = seq.generated
                    await response.write(b"".join(parts))
                if seq.done:
                    break
                await ticket.wait()
            await response.write(tail())
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; the finally below frees its sequence
        finally:
            if not seq.done:
                self.driver.cancel(ticket)
        return response

    # ----- endpoints -----------------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``."""
        req = await self._parse(request, ChatCompletionRequest)
        served = req.model
        await self._admit()
        prompt = render_chat((m.role, m.text()) for m in req.messages)
        ids = token_ids(prompt)
        asked = req.max_completion_tokens or req.max_tokens
        output = self._output_len(len(ids), asked)
        words = output_words(request_seed(self.settings.seed, prompt, req.seed), output)
        reason = "length" if asked is not None else "stop"
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        ticket = self._submit(ids, output, stream=bool(req.stream), served=served)
        if not req.stream:
            await self._finish(ticket)
            body = {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": served,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(words)},
                        "logprobs": None,
                        "finish_reason": reason,
                    }
                ],
                "usage": self._usage(ticket),
            }
            return _json(body, headers=self._timing_headers(ticket))

        usage_field = ',"usage":null' if req.include_usage else ""
        head = (
            f'data: {{"id":"{rid}","object":"chat.completion.chunk","created":{created},'
            f'"model":{json.dumps(served)},"choices":[{{"index":0,"delta":'
        )
        end = f',"logprobs":null,"finish_reason":null}}]{usage_field}}}\n\n'

        def chunk(word: str, first: bool) -> bytes:
            role = '"role":"assistant",' if first else ""
            return f'{head}{{{role}"content":{json.dumps(word)}}}{end}'.encode()

        def tail() -> bytes:
            out = f'{head}{{}},"logprobs":null,"finish_reason":"{reason}"}}]{usage_field}}}\n\n'
            if req.include_usage:
                usage = json.dumps(self._usage(ticket))
                out += (
                    f'data: {{"id":"{rid}","object":"chat.completion.chunk","created":{created},'
                    f'"model":{json.dumps(served)},"choices":[],"usage":{usage}}}\n\n'
                )
            return (out + "data: [DONE]\n\n").encode()

        return await self._stream(request, ticket, words, chunk, tail)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/completions`` (one prompt)."""
        req = await self._parse(request, CompletionRequest)
        served = req.model
        await self._admit()
        if isinstance(req.prompt, str):
            prompt = req.prompt
            ids = token_ids(prompt)
        elif req.prompt and all(isinstance(p, int) for p in req.prompt):
            ids = [int(p) for p in req.prompt]
            prompt = ",".join(map(str, ids))
        elif len(req.prompt) == 1:
            prompt = str(req.prompt[0])
            ids = token_ids(prompt)
        else:
            raise ApiError(400, "The sim accepts exactly one prompt per request.", param="prompt")
        if not ids:
            raise ApiError(400, "The prompt is empty.", param="prompt")
        output = self._output_len(len(ids), req.max_tokens)
        words = output_words(request_seed(self.settings.seed, prompt, req.seed), output)
        reason = "length" if req.max_tokens is not None else "stop"
        rid = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        ticket = self._submit(ids, output, stream=bool(req.stream), served=served)
        if not req.stream:
            await self._finish(ticket)
            body = {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": served,
                "choices": [
                    {
                        "index": 0,
                        "text": "".join(words),
                        "logprobs": None,
                        "finish_reason": reason,
                    }
                ],
                "usage": self._usage(ticket),
            }
            return _json(body, headers=self._timing_headers(ticket))

        usage_field = ',"usage":null' if req.include_usage else ""
        head = (
            f'data: {{"id":"{rid}","object":"text_completion","created":{created},'
            f'"model":{json.dumps(served)},"choices":[{{"index":0,"text":'
        )

        def chunk(word: str, _first: bool) -> bytes:
            return (
                f'{head}{json.dumps(word)},"logprobs":null,"finish_reason":null}}]'
                f"{usage_field}}}\n\n"
            ).encode()

        def tail() -> bytes:
            out = f'{head}"","logprobs":null,"finish_reason":"{reason}"}}]{usage_field}}}\n\n'
            if req.include_usage:
                usage = json.dumps(self._usage(ticket))
                out += (
                    f'data: {{"id":"{rid}","object":"text_completion","created":{created},'
                    f'"model":{json.dumps(served)},"choices":[],"usage":{usage}}}\n\n'
                )
            return (out + "data: [DONE]\n\n").encode()

        return await self._stream(request, ticket, words, chunk, tail)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/embeddings``: a prefill-only pass per input, deterministic vectors."""
        req = await self._parse(request, EmbeddingRequest)
        served = req.model
        await self._admit()
        raw = req.input
        inputs: list[str | list[int]] = []
        if isinstance(raw, str):
            inputs.append(raw)
        elif raw and all(isinstance(x, int) for x in raw):
            inputs.append([x for x in raw if isinstance(x, int)])
        else:
            inputs.extend(x for x in raw if isinstance(x, str | list))
        if not inputs:
            raise ApiError(400, "`input` is empty.", param="input")
        token_lists: list[list[int]] = []
        for item in inputs:
            ids = token_ids(item) if isinstance(item, str) else list(item)
            if not ids:
                raise ApiError(400, "An input is empty.", param="input")
            if len(ids) > self.params.max_model_len:
                raise ApiError(
                    400,
                    f"An input has {len(ids)} tokens; the maximum is {self.params.max_model_len}.",
                    param="input",
                    code="context_length_exceeded",
                )
            token_lists.append(ids)
        tickets = [self._submit(ids, 0, stream=False, served=served) for ids in token_lists]
        try:
            for ticket in tickets:
                await self._finish(ticket)
        finally:
            for ticket in tickets:
                if not ticket.seq.done:
                    self.driver.cancel(ticket)
        dims = req.dimensions or self.settings.embedding_dimensions
        data = []
        for index, ids in enumerate(token_lists):
            vec = embedding(zlib.crc32(struct.pack(f"<{len(ids)}I", *ids)), dims)
            value: object = vec
            if req.encoding_format == "base64":
                value = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"object": "embedding", "index": index, "embedding": value})
        total = sum(len(ids) for ids in token_lists)
        body = {
            "object": "list",
            "data": data,
            "model": served,
            "usage": {"prompt_tokens": total, "total_tokens": total},
        }
        return _json(body)

    async def models(self, _request: web.Request) -> web.StreamResponse:
        """``GET /v1/models``."""
        if self.hung:
            await self._hang()
        card = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "inferscale-sim",
            "root": self.model_name,
            "parent": None,
            "max_model_len": self.params.max_model_len,
        }
        # vLLM lists each adapter with its path as root and the base model as parent.
        adapters = [
            card | {"id": name, "root": path, "parent": self.model_name, "max_model_len": None}
            for name, path in self.adapters.items()
        ]
        return _json({"object": "list", "data": [card, *adapters]})

    async def _lora_admit(self) -> None:
        if self.hung:
            await self._hang()
        if not self.settings.enable_lora:
            raise ApiError(404, "LoRA adapters are off: start the sim with --enable-lora.")
        if self.draining:
            raise ApiError(503, "The server is shutting down.")
        if not self.driver.model.is_ready(self.driver.now()):
            raise ApiError(503, "The model is still loading.", code="model_loading")

    async def load_lora_adapter(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/load_lora_adapter``: serve a new adapter after the loading time."""
        await self._lora_admit()
        req = await self._read(request, LoadLoraAdapterRequest)
        name = req.lora_name
        if not name or not req.lora_path:
            raise ApiError(400, "Both 'lora_name' and 'lora_path' must be provided.")
        if name in self.adapters or name in self._loading:
            raise ApiError(400, f"The lora adapter '{name}' has already been loaded.")
        if name == self.model_name:
            # vLLM would accept it and shadow nothing; refusing keeps the base model reachable.
            raise ApiError(400, f"The lora adapter '{name}' has the base model's name.")
        self._loading.add(name)
        try:
            await asyncio.sleep(self.settings.lora_load_seconds)
        finally:
            self._loading.discard(name)
        self.adapters[name] = req.lora_path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_lora_adapter(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/unload_lora_adapter``: stop serving an adapter; running requests finish."""
        await self._lora_admit()
        req = await self._read(request, UnloadLoraAdapterRequest)
        name = req.lora_name
        if not name:
            raise ApiError(400, "'lora_name' needs to be provided to unload a LoRA adapter.")
        if name not in self.adapters:
            raise ApiError(404, f"The lora adapter '{name}' cannot be found.")
        del self.adapters[name]
        self.driver.model.drop_adapter(name)
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def health(self, _request: web.Request) -> web.StreamResponse:
        """``GET /health``: 200 once the cold start is over, 503 before and while draining."""
        if self.hung:
            await self._hang()
        if self.draining or not self.driver.model.is_ready(self.driver.now()):
            return web.Response(status=503)
        return web.Response(status=200)

    async def metrics(self, _request: web.Request) -> web.StreamResponse:
        """``GET /metrics`` in the configured dialect."""
        if self.hung:
            await self._hang()  # a hung engine answers nothing, scrapes included
        self.driver.sync()
        text = self.render_metrics(self.driver.model, self.model_name)
        if self.settings.enable_lora and self.settings.metrics_dialect == "vllm":
            text += render_vllm_lora_info(self.driver.model, time.time())
        if self.startup is not None:
            text += render_startup(self.startup, self.model_name)
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


def _json(
    body: object, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    out = {"Content-Type": "application/json"}
    if headers:
        out.update(headers)
    return web.Response(body=json.dumps(body).encode(), status=status, headers=out)


def _validation_error(error: ValidationError) -> ApiError:
    problems = error.errors(include_url=False, include_input=False)
    if any(p["type"] == "json_invalid" for p in problems):
        return ApiError(400, "The request body is not valid JSON.")
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"])
    detail = "; ".join(
        f"{'.'.join(str(x) for x in p['loc']) or 'body'}: {p['msg']}" for p in problems[:5]
    )
    return ApiError(400, f"Invalid request: {detail}", param=where or None)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every refusal, ours or aiohttp's, with an OpenAI error object."""
    try:
        return await handler(request)
    except ApiError as error:
        headers = {"Content-Type": "application/json"}
        if error.status == 503:
            headers["Retry-After"] = "1"
        return web.Response(body=error.body, status=error.status, headers=headers)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        body = error_body(error.status, error.reason)
        return web.Response(
            body=body, status=error.status, headers={"Content-Type": "application/json"}
        )


def create_app(
    settings: SimSettings,
    *,
    on_crash: Callable[[], None] | None = None,
    started_before: float = 0.0,
) -> web.Application:
    """The sim as an aiohttp app.

    Args:
        settings: validated settings; the engine parameters come from ``settings.engine_params``.
        on_crash: what "crash after N requests" does; the default exits the process at once.
        started_before: seconds of the cold start already spent before the app starts (the
            process's own start-up), so the start-up delay counts from the process's start.
    """
    plan = settings.startup_plan(
        read_manifest(settings.weights_cache) if settings.weights_cache is not None else None
    )
    # The cold start is the plan's: shorter when the weights are in the cache.
    params = settings.engine_params().model_copy(update={"startup_delay_seconds": plan.total})
    server = SimServer(settings, params, on_crash or _crash, started_before, plan)
    # aiohttp checks client_max_size itself too; one byte over ours so that our own check (with
    # its OpenAI error body) is the one that answers.
    app = web.Application(client_max_size=settings.max_request_bytes + 1, middlewares=[_errors])
    app[SIM_KEY] = server
    app.on_startup.append(server.on_startup)
    app.on_shutdown.append(server.on_shutdown)
    app.on_cleanup.append(server.on_cleanup)
    app.router.add_post("/v1/chat/completions", server.chat_completions)
    app.router.add_post("/v1/completions", server.completions)
    app.router.add_post("/v1/embeddings", server.embeddings)
    app.router.add_get("/v1/models", server.models)
    app.router.add_post("/v1/load_lora_adapter", server.load_lora_adapter)
    app.router.add_post("/v1/unload_lora_adapter", server.unload_lora_adapter)
    app.router.add_get("/health", server.health)
    app.router.add_get("/metrics", server.metrics)
    return app


async def start(
    settings: SimSettings,
    *,
    on_crash: Callable[[], None] | None = None,
    started_before: float = 0.0,
) -> tuple[web.AppRunner, int]:
    """Start serving on ``settings.host``/``port``; returns the runner and the bound port."""
    app = create_app(settings, on_crash=on_crash, started_before=started_before)
    # A client that disconnects cancels its handler (serve_app turns that on), which frees its
    # sequence at once instead of at the next write.
    runner, port = await serve_app(
        app, settings.host, settings.port, shutdown_grace_seconds=settings.shutdown_grace_seconds
    )
    return runner, port


async def serve(settings: SimSettings, started_before: float = 0.0) -> None:
    """Serve until SIGTERM or SIGINT, then let in-flight requests finish within the grace period."""
    runner, port = await start(settings, started_before=started_before)
    print(f"inferscale sim: {settings.model} on http://{settings.host}:{port}", flush=True)
    server = runner.app[SIM_KEY]
    if server.startup is not None:
        print(f"inferscale sim: {server.startup.describe()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        # cleanup(): stop listening, report 503 on /health, wait for handlers up to
        # shutdown_timeout, then cancel what is left.
        await runner.cleanup()


def process_age() -> float:
    """Seconds since this process started (Linux ``/proc``; 0 where it cannot be read).

    A real engine's cold start includes its interpreter start and imports, so the sim's
    start-up delay counts from the process's start too, not from the moment it can listen.
    """
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        # Fields after the command name (which may hold spaces) start at field 3; the
        # start time is field 22, in clock ticks since boot.
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0
