"""The router's live copy of the routing table, and each endpoint's runtime state.

The table itself (the versioned document the operator pushes) is
:mod:`inferscale.protocol.table`. :class:`EndpointTable` is the in-memory copy the server picks
from. It swaps a new version in at once (one assignment, so a request sees either the old table
or the new one) and refuses a version older than the one it holds. Per-endpoint runtime state
(in-flight count, circuit breaker, scraped engine load) lives on :class:`EndpointState` and
survives a swap for every endpoint that stays, so a push never resets the counts the pickers
balance on.

Pure: no I/O, no clock (callers pass ``now``), no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from inferscale.protocol.table import (
    ModelRoute,
    RouteSettings,
    RoutingTable,
    StaleTableError,
    TableBackend,
    TableEndpoint,
    TableProvider,
)
from inferscale.router.picking import HashRing


class CircuitBreaker:
    """Consecutive failures eject a backend for a while; then one request at a time probes it.

    ``threshold`` failures in a row open the breaker for ``base_s``, doubling with each ejection
    in a row up to ``max_s``; once that runs out, one request at a time goes through (half
    open), and the first that works closes the breaker. Replicas' endpoints and hosted
    providers share it. Slotted: the hot path reads ``ejected_until`` and ``in_flight``.
    """

    __slots__ = ("ejected_until", "ejections", "failures", "in_flight")

    def __init__(self) -> None:
        """Closed, nothing in flight."""
        self.in_flight = 0
        """Requests at the backend now (a half-open breaker lets one through)."""
        self.failures = 0
        """Consecutive failures (connect errors, retryable statuses, broken responses)."""
        self.ejections = 0
        """Consecutive ejections; the ejection time doubles with each."""
        self.ejected_until = 0.0
        """Monotonic time the ejection ends; 0 when the breaker is closed."""

    def available(self, now: float) -> bool:
        """Whether the breaker lets a request through now.

        Closed: yes. Open (ejected): no. Half-open (the ejection ran out): one request at a
        time, whose result closes or reopens the breaker.
        """
        until = self.ejected_until
        if until == 0.0:
            return True
        if now < until:
            return False
        return self.in_flight == 0

    def record_success(self) -> None:
        """Close the breaker."""
        self.failures = 0
        self.ejections = 0
        self.ejected_until = 0.0

    def record_failure(self, now: float, threshold: int, base_s: float, max_s: float) -> bool:
        """Count a failure; eject after ``threshold`` in a row. True when this ejected it."""
        self.failures += 1
        if self.failures < threshold and self.ejected_until == 0.0:
            return False
        # Each ejection in a row doubles the wait, so a dead backend costs one probe per max_s.
        self.ejected_until = now + min(max_s, base_s * float(2 ** min(self.ejections, 16)))
        self.ejections += 1
        return True


class EndpointState(CircuitBreaker):
    """One endpoint's live state: what pickers read and what the proxy updates.

    A plain slotted class, not a pydantic model: the hot path touches it several times per
    request.
    """

    __slots__ = (
        "adapters",
        "address",
        "base_url",
        "engine",
        "kv_usage",
        "pending_prompt_tokens",
        "pod",
        "queued",
        "ready",
        "recent_adapters",
        "weight",
    )

    def __init__(self, spec: TableEndpoint) -> None:
        """Fresh state for ``spec``: nothing in flight, breaker closed."""
        super().__init__()
        self.address = spec.address
        self.base_url = f"http://{spec.address}"
        self.pod = spec.pod
        self.engine = spec.engine
        self.weight = spec.weight
        self.ready = spec.ready
        self.queued = 0
        """Requests waiting in the engine, from its last scrape (0 when unknown or stale)."""
        self.kv_usage = 0.0
        """KV-cache use 0..1, from the engine's last scrape."""
        self.pending_prompt_tokens = 0
        """Estimated prompt tokens of this router's requests here with no first token yet."""
        self.adapters = frozenset(spec.adapters)
        """LoRA adapters loaded here, as the operator last saw."""
        self.recent_adapters: list[str] = []
        """The last distinct adapters this router sent here (``picking.remember_adapter``)."""

    @property
    def key(self) -> str:
        """Stable identity for hashing: the address."""
        return self.address

    def update(self, spec: TableEndpoint) -> None:
        """Take the table's new view of this endpoint, keeping the runtime counters."""
        self.pod = spec.pod
        self.engine = spec.engine
        self.weight = spec.weight
        self.ready = spec.ready
        self.adapters = frozenset(spec.adapters)


class RouteRoles:
    """A model's backends other than its own endpoints, sorted by role (compiled per table)."""

    __slots__ = (
        "fallback",
        "local_weight",
        "mirror",
        "primaries",
        "route_id",
        "serves_locally",
        "spillover",
    )

    def __init__(self, entry: ModelRoute) -> None:
        """Sort ``entry``'s backends by role, keeping their order."""
        self.route_id = entry.route_id or ""
        self.serves_locally = entry.serves_locally
        self.local_weight = entry.weight if entry.serves_locally else 0
        by_role: dict[str, list[TableBackend]] = {}
        for backend in entry.backends:
            by_role.setdefault(backend.role, []).append(backend)
        self.primaries = [b for b in by_role.get("primary", []) if b.weight > 0]
        self.spillover = by_role.get("spillover", [])
        self.fallback = by_role.get("fallback", [])
        self.mirror = by_role.get("mirror", [])


class ModelState:
    """A served model's compiled route: its settings and the endpoints that may be picked."""

    __slots__ = (
        "adapter_slots",
        "base",
        "counter",
        "endpoints",
        "name",
        "ready",
        "ring",
        "roles",
        "route",
    )

    def __init__(
        self,
        name: str,
        route: RouteSettings,
        endpoints: list[EndpointState],
        roles: RouteRoles | None = None,
        base: str | None = None,
        adapter_slots: int = 1,
    ) -> None:
        """Compile; ``ready`` holds the endpoints whose pods are Ready (pickers choose here)."""
        self.name = name
        self.route = route
        self.endpoints = endpoints
        self.roles = roles
        """Provider and other-model backends; None for a plain model (the fast path)."""
        self.base = base
        """For a LoRA adapter's name: its base model's name, whose endpoints serve it."""
        self.adapter_slots = adapter_slots
        """Adapters one of its engines holds on its GPUs at once (adapter routing)."""
        weighted = route.strategy == "weighted"
        self.ready = [e for e in endpoints if e.ready and (e.weight > 0 or not weighted)]
        self.counter = 0
        """Requests picked so far (round robin; rotation among equals)."""
        self.ring: HashRing | None = None
        """The prefixHash ring over the ready endpoints, built once per table."""
        if route.strategy == "prefixHash":
            self.ring = HashRing(
                [e.key for e in self.ready], route.prefix_hash.replicas_per_endpoint
            )

    def candidates(self, now: float) -> list[EndpointState]:
        """Ready endpoints whose breaker lets a request through now."""
        ready = self.ready
        for e in ready:
            if e.ejected_until != 0.0:
                break
        else:
            return ready  # the common case: nothing ejected, no copy
        return [e for e in ready if e.available(now)]


class EndpointTable:
    """The live routing table: swapped atomically, never rolled back to an older version."""

    def __init__(self) -> None:
        """An empty table (version -1: any pushed table is newer)."""
        self.table: RoutingTable | None = None
        self.version = -1
        self.models: dict[str, ModelState] = {}
        self.providers: dict[str, TableProvider] = {}
        """Hosted providers by ``<namespace>/<name>``, as the table held names them."""
        self._states: dict[str, EndpointState] = {}
        self._listeners: list[Callable[[EndpointTable], None]] = []

    def subscribe(self, listener: Callable[[EndpointTable], None]) -> None:
        """Call ``listener(self)`` after every swap (the hold queue wakes held requests)."""
        self._listeners.append(listener)

    def replace(self, table: RoutingTable) -> bool:
        """Install ``table``; False when it is the one already held (same version and content).

        Raises:
            StaleTableError: its version is older than the one held, or equal with other
                content.
        """
        if table.version < self.version:
            raise StaleTableError(
                f"routing table version {table.version} is older than {self.version}"
            )
        if table.version == self.version:
            if self.table is not None and table == self.table:
                return False
            raise StaleTableError(
                f"routing table version {table.version} is already held with other content"
            )
        states: dict[str, EndpointState] = {}
        models: dict[str, ModelState] = {}
        for name, model in table.models.items():
            endpoints: list[EndpointState] = []
            for spec in model.endpoints:
                # One state per address across models: an address is one engine process.
                state = states.get(spec.address) or self._states.get(spec.address)
                if state is None:
                    state = EndpointState(spec)
                else:
                    state.update(spec)
                states[spec.address] = state
                endpoints.append(state)
            roles = RouteRoles(model) if model.backends or not model.serves_locally else None
            models[name] = ModelState(name, model.route, endpoints, roles)
            for adapter in model.adapters:
                # The base model's endpoints under the adapter's name, without its other
                # backends: a provider or another model does not have the adapter.
                models[adapter] = ModelState(
                    adapter, model.route, endpoints, base=name, adapter_slots=model.adapter_slots
                )
        # The swap: readers on the event loop see the old or the new table, never a mixture.
        self.models, self._states, self.table, self.version = models, states, table, table.version
        self.providers = table.providers
        for listener in self._listeners:
            listener(self)
        return True

    def endpoints(self) -> Iterable[EndpointState]:
        """Every endpoint of every model, once each."""
        return self._states.values()
