"""Where a request of a route with several backends goes, in what order (pure).

:func:`plan` turns a model's roles (:class:`~inferscale.router.table.RouteRoles`) and the state
of its replicas at this moment into the steps to try, in order; each step is the model's own
replicas (:data:`LOCAL`) or one backend. The router tries them until one answers; a step fails
over to the next only while nothing has reached the client. The rules:

- **Primaries by weight**: the replicas (the entry's ``weight``) and the hosted or other-model
  primaries share requests by weight. A primary that cannot take a request now (replicas with
  none ready while a hosted primary can; a provider without a key) is left out of the draw.
- **Spillover**: when the replicas were drawn but every ready one has ``inFlightPerReplica``
  requests in flight or, with ``promptTokensPerReplica`` set, would queue more prompt tokens
  than that ahead of this request's first token (saturated), or none is ready (cold start)
  and ``spillover.onColdStart`` is set or the hold queue is full, the spillover backends go
  first, then the replicas (held if none is ready). It is decided per request, so it stops
  by itself as soon as a replica has room again.
- **Spend caps**: while a cap of the route is reached, spillover is off: the request goes to
  the replicas as if there were no spillover (``onCapReached: queue``) or is refused with 503
  (``reject``).
- **Fallback**: the fallback backends come last, in their order, after every other step.

Pure: the caller passes the state, the random draw and what is usable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from inferscale.protocol.table import RouteSettings, TableBackend
from inferscale.router.table import RouteRoles

LOCAL: Final = None
"""A step that means the model's own replicas (held while none is ready)."""

Step = TableBackend | None
SpillReason = Literal["saturated", "cold_start", "hold_full"]


@dataclass(frozen=True)
class Plan:
    """The steps to try, and why spillover leads (if it does)."""

    steps: tuple[Step, ...]
    spill: SpillReason | None = None
    """Set when the first step is a spillover backend."""
    spill_steps: int = 0
    """How many of the first steps are spillover backends (their answers are spilled)."""
    capped: SpillReason | None = None
    """Set when the request would have spilled over but a spend cap stopped it."""
    reject: bool = False
    """The cap's ``onCapReached`` is ``reject``: answer 503 rather than trying anything."""


def saturated(in_flight: list[int], threshold: int) -> bool:
    """Whether every ready replica (their in-flight counts) is at or above ``threshold``."""
    return bool(in_flight) and min(in_flight) >= threshold


def prefill_saturated(pending: list[int], prompt_tokens: int, threshold: int | None) -> bool:
    """Whether no ready replica can take ``prompt_tokens`` more prefill within ``threshold``.

    ``pending`` holds the ready replicas' prompt tokens still waiting for a first token;
    ``threshold`` None means the rule is off.
    """
    return threshold is not None and bool(pending) and min(pending) + prompt_tokens > threshold


def _draw(options: list[tuple[Step, int]], r: float) -> Step:
    total = sum(w for _, w in options)
    x = r * total
    for step, weight in options:
        if x < weight:
            return step
        x -= weight
    return options[-1][0]


def plan(
    roles: RouteRoles,
    settings: RouteSettings,
    *,
    ready: int,
    busy: bool,
    held: int,
    capped: bool,
    usable: Callable[[TableBackend], bool],
    r: float,
) -> Plan:
    """The steps for one request.

    Args:
        roles: the model's backends by role.
        settings: its route settings (spillover, hold queue, spend caps).
        ready: replicas that can take a request now (ready, breaker closed).
        busy: every one of them is saturated (see :func:`saturated`).
        held: requests of this model held now.
        capped: a spend cap of the route is reached.
        usable: whether a backend can take a request now (a provider with a key, a model with
            a ready replica, a provider that serves this path).
        r: a uniform draw in [0, 1) for the weights.
    """
    fallbacks = tuple(b for b in roles.fallback if usable(b))
    others = [(b, b.weight) for b in roles.primaries if usable(b)]
    options: list[tuple[Step, int]] = list(others)
    if roles.serves_locally and roles.local_weight > 0 and (ready > 0 or not others):
        options.insert(0, (LOCAL, roles.local_weight))
    if not options:
        return Plan(fallbacks)
    first = _draw(options, r)
    if first is not LOCAL:
        return Plan((first, *fallbacks))
    reason: SpillReason | None = None
    if ready > 0:
        if busy:
            reason = "saturated"
    elif settings.spillover.on_cold_start:
        reason = "cold_start"
    elif held >= settings.hold_queue.max_requests:
        reason = "hold_full"
    spill = tuple(b for b in roles.spillover if usable(b)) if reason is not None else ()
    if not spill:
        return Plan((LOCAL, *fallbacks))
    if capped:
        reject = settings.spend.on_cap_reached == "reject"
        return Plan(() if reject else (LOCAL, *fallbacks), capped=reason, reject=reject)
    return Plan((*spill, LOCAL, *fallbacks), spill=reason, spill_steps=len(spill))
