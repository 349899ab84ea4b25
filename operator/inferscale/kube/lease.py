"""Leader election with a ``coordination.k8s.io/v1`` Lease, so replicas of the operator never fight.

The usual Kubernetes scheme (client-go's leaderelection): the leader renews the Lease every
``renew_seconds``; another replica takes it over only once ``leaseDurationSeconds`` passed
without a renewal. Every write is a server-side apply conditioned on the ``resourceVersion`` just
read, so two candidates racing for the same Lease cannot both win: the loser gets 409. A leader
that cannot renew before its lease runs out stops leading (the process exits and restarts), as
client-go does, rather than risk two leaders.

:func:`lease_action` is the pure decision; :class:`LeaderElector` does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from inferscale.errors import Conflict, KubeApiError, NotFound
from inferscale.kube.client import KubeApi

log = logging.getLogger(__name__)

LeaseAction = Literal["create", "renew", "takeover", "wait"]
MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    for fmt in (MICROTIME, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def lease_action(lease: dict[str, Any] | None, identity: str, now: datetime) -> LeaseAction:
    """What a candidate should do with the Lease it just read (``None``: it does not exist)."""
    if lease is None:
        return "create"
    spec = lease.get("spec") or {}
    if spec.get("holderIdentity") == identity:
        return "renew"
    if not spec.get("holderIdentity"):
        return "takeover"
    renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds")
    if renewed is None or not isinstance(duration, int):
        return "takeover"  # a malformed Lease must not block leadership forever
    return "takeover" if now >= renewed + timedelta(seconds=duration) else "wait"


@dataclass
class LeaderElector:
    """Acquires and keeps a Lease named ``name`` in ``namespace`` for ``identity``."""

    api: KubeApi
    namespace: str
    name: str
    identity: str
    lease_seconds: int = 15
    renew_seconds: float = 5.0
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def _lease(
        self, lease: dict[str, Any] | None, action: LeaseAction, now: datetime
    ) -> dict[str, Any]:
        spec = (lease or {}).get("spec") or {}
        stamp = now.strftime(MICROTIME)
        transitions = int(spec.get("leaseTransitions") or 0) + (1 if action == "takeover" else 0)
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if lease is not None:
            meta["resourceVersion"] = lease["metadata"]["resourceVersion"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_seconds,
                "acquireTime": stamp if action != "renew" else spec.get("acquireTime", stamp),
                "renewTime": stamp,
                "leaseTransitions": transitions,
            },
        }

    async def try_acquire(self) -> bool:
        """One attempt to become (or stay) the leader; True when this candidate holds the Lease."""
        try:
            lease: dict[str, Any] | None = await self.api.get(
                "coordination.k8s.io/v1", "Lease", self.namespace, self.name
            )
        except NotFound:
            lease = None
        now = self.clock()
        action = lease_action(lease, self.identity, now)
        if action == "wait":
            return False
        try:
            await self.api.apply(
                self._lease(lease, action, now),
                force=action != "create",
                field_manager=f"inferscale-leader-{self.identity}"[:128],
            )
        except Conflict:
            return False  # another candidate wrote first; read again next round
        if action != "renew":
            log.info("became the leader (lease %s/%s, %s)", self.namespace, self.name, action)
        return True

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this candidate leads (True) or ``stop`` is set (False)."""
        waiting_logged = False
        while not stop.is_set():
            try:
                if await self.try_acquire():
                    return True
            except KubeApiError as error:
                log.warning("cannot read or write the leader lease: %s", error)
            if not waiting_logged:
                log.info(
                    "another replica leads; waiting for lease %s/%s", self.namespace, self.name
                )
                waiting_logged = True
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.renew_seconds)
            except TimeoutError:
                pass
        return False

    async def hold(self, stop: asyncio.Event) -> bool:
        """Renew until ``stop`` is set (True) or leadership is lost (False, and ``stop`` is set)."""
        last_renewal = self.clock()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.renew_seconds)
                break
            except TimeoutError:
                pass
            try:
                if await self.try_acquire():
                    last_renewal = self.clock()
                    continue
                log.error("leadership lost to another replica; stopping")
            except KubeApiError as error:
                if self.clock() < last_renewal + timedelta(seconds=self.lease_seconds):
                    log.warning("could not renew the leader lease (will retry): %s", error)
                    continue
                log.error("could not renew the leader lease before it expired: %s", error)
            stop.set()
            return False
        return True

    async def release(self) -> None:
        """Give the Lease up on a clean shutdown, so a standby leads at once; best effort."""
        try:
            lease = await self.api.get("coordination.k8s.io/v1", "Lease", self.namespace, self.name)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            released = self._lease(lease, "renew", self.clock())
            released["spec"]["holderIdentity"] = ""
            await self.api.apply(
                released, force=True, field_manager=f"inferscale-leader-{self.identity}"[:128]
            )
            log.info("released the leader lease %s/%s", self.namespace, self.name)
        except KubeApiError as error:
            log.warning("could not release the leader lease (it will expire): %s", error)
