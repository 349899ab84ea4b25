"""InferenceClient usage in status: the routers' budget counters, every status round.

Called by the route status reporter (:mod:`inferscale.controller.route_status`) once per round
with the Ready routers and the admin token: reads ``GET /admin/v1/budgets`` from each, merges
them (:func:`inferscale.reconcile.client_usage.combine_reports`) and patches each
InferenceClient whose ``status.usage`` or ``UsageReported`` condition changed.

Failure behaviour: nothing raises. A router that does not answer, answers an error or sends an
invalid report is left out (said once in the log); with no report at all the clients keep their
last figures and their condition turns False. A failed status write is logged and tried again
next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError

from inferscale.api.meta import GROUP, VERSION
from inferscale.api.v1alpha1.inference_client import KIND as CLIENT_KIND
from inferscale.config import RoutingSettings
from inferscale.errors import KubeApiError, NotFound
from inferscale.kube.client import KubeApi
from inferscale.protocol.budgets import BudgetReport
from inferscale.reconcile.client_usage import (
    CONDITION_USAGE,
    client_usage_status,
    combine_reports,
)
from inferscale.reconcile.routing import RouterTarget

log = logging.getLogger(__name__)

ObjectKey = tuple[str, str]


@dataclass
class ClientUsageReporter:
    """Reads the routers' budget counters and writes the clients' ``status.usage``."""

    api: KubeApi
    settings: RoutingSettings
    read_clients: Callable[[], list[Mapping[str, Any]]]
    written: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    """Per client, the ``usage`` and ``UsageReported`` condition last written (until the
    index shows them): the only parts of the status this reporter owns."""
    said: set[str] = field(default_factory=set)

    async def round(
        self,
        client: httpx.AsyncClient,
        targets: list[RouterTarget],
        headers: Mapping[str, str],
        now_text: str,
    ) -> None:
        """Read every router's report, then write the clients' statuses that changed."""
        clients = self.read_clients()
        if not clients:
            return
        reports = await asyncio.gather(*(self._read(client, t, headers) for t in targets))
        combined = combine_reports(r for r in reports if r is not None)
        limit = asyncio.Semaphore(8)
        writes = []
        live: set[ObjectKey] = set()
        for obj in clients:
            meta = obj.get("metadata") or {}
            key = (str(meta.get("namespace")), str(meta.get("name")))
            live.add(key)
            if meta.get("deletionTimestamp"):
                continue
            previous = self._previous(obj, key)
            patch = client_usage_status(obj, combined, previous, now_text)
            if patch is not None:
                writes.append(self._write(limit, key, patch, previous))
        for key in [k for k in self.written if k not in live]:
            del self.written[key]
        await asyncio.gather(*writes)

    def _previous(self, obj: Mapping[str, Any], key: ObjectKey) -> dict[str, Any]:
        """The status as seen, with this reporter's own parts as last written.

        Our last write stands in for what the index shows for one round only: after that the
        index is the truth (another writer may have replaced the conditions meanwhile).
        """
        status = obj.get("status")
        seen: dict[str, Any] = dict(status) if isinstance(status, Mapping) else {}
        mine = self.written.get(key)
        if mine is None:
            return seen
        mine["rounds"] += 1
        if mine["rounds"] > 1:
            del self.written[key]
            return seen
        conditions = [
            c
            for c in seen.get("conditions") or []
            if isinstance(c, Mapping) and c.get("type") != CONDITION_USAGE
        ]
        if mine.get("condition") is not None:
            conditions.append(mine["condition"])
        return {**seen, "usage": mine.get("usage"), "conditions": conditions}

    async def _read(
        self, client: httpx.AsyncClient, target: RouterTarget, headers: Mapping[str, str]
    ) -> BudgetReport | None:
        url = f"http://{target.ip}:{self.settings.admin_port}/admin/v1/budgets"
        where = f"router {target.namespace}/{target.name}"
        try:
            response = await client.get(
                url, headers=dict(headers), timeout=self.settings.push_timeout_seconds
            )
        except httpx.HTTPError as error:
            log.debug("%s: budgets not read: %s", where, type(error).__name__)
            return None
        if response.status_code != 200:
            self._say(f"{where} answered {response.status_code} to GET /admin/v1/budgets")
            return None
        try:
            return BudgetReport.model_validate_json(response.content)
        except ValidationError:
            self._say(f"{where} sent an invalid budget report")
            return None

    async def _write(
        self,
        limit: asyncio.Semaphore,
        key: ObjectKey,
        patch: dict[str, Any],
        previous: Mapping[str, Any],
    ) -> None:
        async with limit:
            try:
                await self.api.patch_status(f"{GROUP}/{VERSION}", CLIENT_KIND, *key, patch)
            except NotFound:
                return  # deleted meanwhile
            except KubeApiError as error:
                log.warning("writing the usage of InferenceClient %s/%s failed: %s", *key, error)
                return
        conditions = patch.get("conditions", previous.get("conditions")) or []
        mine = [c for c in conditions if c.get("type") == CONDITION_USAGE]
        self.written[key] = {
            "usage": patch["usage"] if "usage" in patch else previous.get("usage"),
            "condition": mine[0] if mine else None,
            "rounds": 0,
        }

    def _say(self, problem: str) -> None:
        if problem not in self.said:
            self.said.add(problem)
            log.warning("client usage: %s", problem)
