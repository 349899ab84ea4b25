"""What one request carries through the router's stages (no prompt text: it is never logged).

A stage reads what the stages before it set and adds its own part: the parsed body and model
name (parse), the caller's policy (authenticate), the route's entry (select model), the grant
to settle (admit), a held stream's response (hold), the usage (forward). One slotted object per
request, so handing it on costs an attribute read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from aiohttp import web

from inferscale.router.limits import Policy

if TYPE_CHECKING:
    from inferscale.router.access import Grant
    from inferscale.router.response_cache import StreamTap
    from inferscale.router.table import EndpointState, ModelState


SELECTED_HEADER: Final = "x-inferscale-model"
"""The response header naming the model a selecting route chose."""


class Dialect(Protocol):
    """The client's API when it is not OpenAI's: how its streams are written."""

    def stream(self, status: int, headers: Mapping[str, str]) -> web.StreamResponse:
        """A stream response that writes the pipeline's OpenAI events in this dialect."""
        ...


class RequestContext:
    """One request on its way through the stages."""

    __slots__ = (
        "attempt_start",
        "body",
        "client",
        "committed",
        "cost",
        "dialect",
        "endpoint",
        "fallible",
        "grant",
        "id",
        "model",
        "name",
        "obj",
        "path",
        "policy",
        "prefill_tokens",
        "request",
        "selected",
        "start",
        "status",
        "stream",
        "tap",
        "ttft_host",
        "ttft_work",
        "usage",
    )

    def __init__(self, request: web.Request, start: float, n: int, policy: Policy) -> None:
        """A request that arrived at ``start`` (monotonic), the router's ``n``-th."""
        self.request = request
        self.start = start
        self.id = n
        self.policy = policy
        """The caller's limits and allowed models (anonymous until authenticated)."""
        self.name = ""
        """The served model name the client asked for, once parsed."""
        self.stream = False
        self.body = b""
        """The request body as sent (forwarded byte for byte)."""
        self.obj: dict[str, Any] = {}
        """The body parsed (read by pickers and providers; never changed in place)."""
        self.model: ModelState | None = None
        """The route's table entry, once selected (and refreshed after a hold)."""
        self.endpoint: EndpointState | None = None
        """The endpoint of the current attempt."""
        self.grant: Grant | None = None
        """An admitted request of a limited client: what to settle when it ends."""
        self.committed: web.StreamResponse | None = None
        """A held stream whose headers already went out with a keep-alive."""
        self.status = 200
        """The answer's status, once known (what the access log says)."""
        self.fallible = False
        """Other backends follow: failures raise AttemptFailed instead of answering."""
        self.client = ""
        """The InferenceClient of the caller's key, if it sent a known one."""
        self.usage: dict[str, Any] | None = None
        """The response's token usage, once read."""
        self.cost = 0.0
        """What hosted providers charged for the answer (their prices), once priced."""
        self.path = request.path
        """The OpenAI path that serves the request (a Messages request: chat completions)."""
        self.dialect: Dialect | None = None
        """The client's API when it is not OpenAI's (the answer is translated into it)."""
        self.selected: str | None = None
        """The model a selecting route chose (named in the answer's :data:`SELECTED_HEADER`)."""
        self.tap: StreamTap | None = None
        """Where the forward stage copies a relayed stream for the response cache."""
        self.prefill_tokens = 0
        """Prompt tokens this request adds to its endpoint's ``pending_prompt_tokens`` until
        its first token (or its answer) comes back; 0 once they are taken off."""
        self.ttft_work = 0
        """Prefill work ``predictedTTFT`` expected this attempt to wait for (0: not its
        pick): the first token's delay teaches the model's prefill rate."""
        self.ttft_host = 0
        """Of this prompt, the tokens ``predictedTTFT`` expected to load from the host tier:
        they teach the model's host ratio with the same first token."""
        self.attempt_start = start
        """When the current attempt was picked (monotonic): a held request's wait and a failed
        attempt's time are not the endpoint's prefill."""

    async def open_stream(self, status: int, headers: Mapping[str, str]) -> web.StreamResponse:
        """Start the client's stream (its headers go out now), in the client's dialect."""
        if self.selected is not None:
            headers = {**headers, SELECTED_HEADER: self.selected}
        dialect = self.dialect
        if dialect is None:
            resp = web.StreamResponse(status=status, headers=headers)
        else:
            resp = dialect.stream(status, headers)
        await resp.prepare(self.request)
        return resp

    def name_selected(self, resp: web.StreamResponse) -> web.StreamResponse:
        """``resp``, naming the model a selecting route chose (a stream's headers already do).

        Set here rather than in an ``on_response_prepare`` hook, which every answer of every
        route would pay for.
        """
        if self.selected is not None and not resp.prepared:
            resp.headers[SELECTED_HEADER] = self.selected
        return resp

    def prefilled(self, endpoint: EndpointState) -> None:
        """Take the prompt off ``endpoint``'s prefill queue (once: first token, or end)."""
        endpoint.pending_prompt_tokens -= self.prefill_tokens
        self.prefill_tokens = 0
