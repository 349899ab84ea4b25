"""The admin API: what the operator pushes to a router and reads back from it.

``/admin/v1/routing-table`` (GET, PUT), ``/admin/v1/credentials`` (GET: version and counts only;
PUT), ``/admin/v1/held`` (GET: held and in-flight requests per model, for the autoscaler) and
``/admin/v1/spend`` (GET: this router's spend, spillover and provider health; PUT: the other
routers' spend), ``/admin/v1/usage`` (GET: the usage ledger's report) and ``/admin/v1/budgets``
(GET: every client's and team's budget counters, :mod:`inferscale.router.budget_use`). The
documents are :mod:`inferscale.protocol`'s.

Failure behaviour: 401 without a bearer token, 403 with a wrong one (or when no token is
configured), 400 for an invalid document, 413 for one over the request size, 409 for an older
version. An invalid credentials document is never quoted back or logged (it holds keys).
"""

from __future__ import annotations

import asyncio
import hmac
import json

from aiohttp import web
from pydantic import ValidationError

from inferscale.api.validation import describe_errors
from inferscale.protocol.credentials import RouterCredentials, StaleCredentialsError, summary
from inferscale.protocol.spend import ElsewhereSpend
from inferscale.protocol.table import RoutingTable, StaleTableError
from inferscale.router.budget_use import budget_report
from inferscale.router.codec import JSON, error_response
from inferscale.router.dispatch import Dispatcher
from inferscale.router.documents import apply_credentials, apply_table, problems
from inferscale.router.state import RouterState
from inferscale.router.usage import UsageQueryError, check_groups, summarize, to_csv, to_json
from inferscale.router.usage_ledger import UsageUnavailable


class AdminApi:
    """The admin handlers of one router."""

    def __init__(self, state: RouterState, dispatcher: Dispatcher, token: str | None) -> None:
        """Serve ``state``; ``token`` is the bearer token (``None``: every call is refused)."""
        self.state = state
        self.dispatcher = dispatcher
        self.token = token.encode() if token else None

    def routes(self, app: web.Application) -> None:
        """Add the admin API's routes to ``app``."""
        add = app.router
        add.add_get("/admin/v1/routing-table", self.get_table)
        add.add_put("/admin/v1/routing-table", self.put_table)
        add.add_get("/admin/v1/credentials", self.get_credentials)
        add.add_put("/admin/v1/credentials", self.put_credentials)
        add.add_get("/admin/v1/held", self.get_held)
        add.add_get("/admin/v1/spend", self.get_spend)
        add.add_put("/admin/v1/spend", self.put_spend)
        add.add_get("/admin/v1/usage", self.get_usage)
        add.add_get("/admin/v1/budgets", self.get_budgets)

    def _auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or len(header) <= 7:
            return error_response(
                401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if self.token is None:
            return error_response(403, "the admin API is disabled: no token is configured")
        if not hmac.compare_digest(header[7:].encode(), self.token):
            return error_response(403, "invalid token")
        return None

    async def get_table(self, request: web.Request) -> web.StreamResponse:
        """``GET /admin/v1/routing-table``: the table held."""
        if (refused := self._auth(request)) is not None:
            return refused
        held = self.state.table.table
        if held is None:
            return error_response(404, "no routing table yet")
        return _json_body(held.model_dump_json(by_alias=True).encode())

    async def put_table(self, request: web.Request) -> web.StreamResponse:
        """``PUT /admin/v1/routing-table``: install a newer table."""
        if (refused := self._auth(request)) is not None:
            return refused
        try:
            table = RoutingTable.model_validate_json(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, "routing table too large")
        except ValidationError as error:
            return error_response(400, f"invalid routing table: {problems(error)}")
        try:
            changed = apply_table(self.state.table, table, "admin API")
        except StaleTableError as error:
            return error_response(409, str(error), code="stale_version")
        return _json({"version": table.version, "changed": changed, "models": len(table.models)})

    async def get_credentials(self, request: web.Request) -> web.StreamResponse:
        """``GET /admin/v1/credentials``: version and counts held (never a key or digest)."""
        if (refused := self._auth(request)) is not None:
            return refused
        credentials = self.state.access.credentials
        if credentials is None:
            return error_response(404, "no credentials yet")
        return _json(summary(credentials))

    async def put_credentials(self, request: web.Request) -> web.StreamResponse:
        """``PUT /admin/v1/credentials``: install newer credentials."""
        if (refused := self._auth(request)) is not None:
            return refused
        try:
            credentials = RouterCredentials.model_validate_json(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, "credentials too large")
        except ValidationError as error:
            return error_response(400, f"invalid credentials: {problems(error)}")
        try:
            changed = apply_credentials(self.state.access, credentials, "admin API")
        except StaleCredentialsError as error:
            return error_response(409, str(error), code="stale_version")
        return _json({"version": credentials.version, "changed": changed})

    async def get_usage(self, request: web.Request) -> web.StreamResponse:
        """``GET /admin/v1/usage?by=client,model,day&since=<epoch s>&format=json|csv``.

        The usage ledger summed by the ``by`` groups (:data:`inferscale.router.usage.GROUPS`):
        with Redis, every router's records; else this router's. 400 for an unknown group,
        format or a ``since`` that is no number; 404 while the ledger is off; 503 while its
        store cannot be read.
        """
        if (refused := self._auth(request)) is not None:
            return refused
        ledger = self.state.ledger
        if ledger is None:
            return error_response(404, "the usage ledger is off (usage_ledger: false)")
        query = request.query
        fmt = query.get("format", "json")
        try:
            by = check_groups(query.get("by", "client,model,day").split(","))
            since = float(query.get("since", "0"))
            if fmt not in ("json", "csv") or since != since:
                raise UsageQueryError("format: json or csv; since: epoch seconds")
        except ValueError as error:
            return error_response(400, str(error))
        try:
            records = await ledger.read(since)
            # Summing many records takes a while: a thread, so requests keep being served.
            rows = await asyncio.to_thread(summarize, records, by)
        except UsageUnavailable as error:
            return error_response(503, str(error))
        if fmt == "csv":
            return web.Response(text=to_csv(rows, by), content_type="text/csv")
        return _json_body(to_json(rows, by).encode())

    async def get_budgets(self, request: web.Request) -> web.StreamResponse:
        """``GET /admin/v1/budgets``: every budget counter in the current UTC day and month.

        Shared ones read from Redis (this router's own view, with a ``problem``, while it is
        unreachable); the operator writes them into the InferenceClients' status.
        """
        if (refused := self._auth(request)) is not None:
            return refused
        state = self.state
        report = await budget_report(state.access, state.id_prefix, state.wall())
        return _json_body(report.model_dump_json(by_alias=True, exclude_none=True).encode())

    async def get_held(self, request: web.Request) -> web.StreamResponse:
        """``GET /admin/v1/held``: held and in-flight requests per model, for the autoscaler.

        ``inFlight`` counts requests at the model's replicas, ``hostedInFlight`` those a hosted
        provider answers for it now (spilled over, or failed over). ``pendingPromptTokens`` is the
        estimated prompt tokens its replicas have yet to prefill (the autoscaler's work signal,
        :mod:`inferscale.autoscaler.signals`); held requests are counted by ``held`` only.
        """
        if (refused := self._auth(request)) is not None:
            return refused
        state = self.state
        hosted = self.dispatcher.hosted_in_flight
        models = {
            name: {
                "held": state.held.get(name, 0),
                "inFlight": sum(e.in_flight for e in m.endpoints),
                "pendingPromptTokens": sum(e.pending_prompt_tokens for e in m.endpoints),
                "hostedInFlight": hosted.get(name, 0),
                "readyEndpoints": len(m.ready),
            }
            for name, m in state.table.models.items()
        }
        return _json({"version": state.table.version, "models": models})

    async def get_spend(self, request: web.Request) -> web.StreamResponse:
        """``GET /admin/v1/spend``: this router's spend per route, spillover, provider health."""
        if (refused := self._auth(request)) is not None:
            return refused
        report = self.dispatcher.report(self.state.wall())
        return _json_body(report.model_dump_json(by_alias=True).encode())

    async def put_spend(self, request: web.Request) -> web.StreamResponse:
        """``PUT /admin/v1/spend``: what the other routers spent (the operator's sum)."""
        if (refused := self._auth(request)) is not None:
            return refused
        try:
            doc = ElsewhereSpend.model_validate_json(await request.read())
        except ValidationError as error:
            return error_response(400, f"invalid spend: {describe_errors(error)[0]}")
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, "spend document too large")
        self.state.spend.set_elsewhere(
            doc.hour_start,
            doc.day_start,
            {route: (s.hour, s.day) for route, s in doc.routes.items()},
        )
        return _json({"routes": len(doc.routes)})


def _json(doc: object) -> web.Response:
    return _json_body(json.dumps(doc).encode())


def _json_body(body: bytes) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": JSON})
