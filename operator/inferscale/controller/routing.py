"""Programs the routers: compile the routing table, push it to every router, keep it in a ConfigMap.

kopf glue around the pure :mod:`inferscale.reconcile.routing`. Two indices of its own (the
InferenceRoutes, and the router pods in the routers' namespace) join the ``models`` and
``model_pods`` indices of :mod:`inferscale.controller.cache`. Event handlers only note *that*
something routing reads has changed (a pod's IP, readiness or deletion, a model's or route's
spec, a router's readiness); one :class:`RoutingPublisher` task, started by the first event
(kopf runs handlers only once every index is filled, so the first table is never built from a
half-listed cluster), then:

1. waits ``coalesce_seconds`` so a burst of changes makes one table, and recompiles (in a
   worker thread, then waits at least four times as long as that took before the next one, so
   churn among a thousand models costs a bounded share of a core);
2. gives the table a new version when its content changed: ``max(last + 1, ms since epoch)``,
   where "last" starts from the ConfigMap's version, so versions grow across restarts;
3. PUTs it to every running router pod at ``http://POD_IP:admin_port/admin/v1/routing-table``
   with the bearer token from the admin-token Secret, concurrently, each push bounded by
   ``push_timeout_seconds``;
4. server-side applies the ConfigMap that routers mount (at most once per
   ``configmap_interval_seconds``), so a router that starts while the operator is down serves at
   once.

Failure behaviour: nothing here raises into kopf or ends the task. A router that cannot be
reached, refuses the token (401/403) or the table (400), or holds a newer version (409) is
logged by pod name (never the token) and retried on its own doubling back-off, capped at
``retry_max_seconds``; a 409 also lifts the next version above the router's. A missing or
unreadable Secret stops the pushes (logged once per cause), not the ConfigMap. A failed ConfigMap
write is retried on the same back-off; a 403 names the RBAC gap. Every router is sent the current
table again each ``resync_seconds``, which also re-reads a rotated token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import kopf

from inferscale.api.meta import GROUP, VERSION
from inferscale.api.v1alpha1.inference_route import PLURAL as ROUTE_PLURAL
from inferscale.config import OperatorSettings, RoutingSettings
from inferscale.controller.cache import CHILD_LABELS, json_copy
from inferscale.controller.inference_model import Runtime
from inferscale.errors import Forbidden, KubeApiError, NotFound
from inferscale.kube.client import KubeApi
from inferscale.reconcile.routing import (
    CompiledRoutes,
    ParseCache,
    RouterTarget,
    build_table_configmap,
    compile_routes,
    is_router_pod,
    next_version,
    pod_view,
    router_target,
    router_targets,
    stored_version,
    table_json,
)
from inferscale.router.table import RoutingTable

log = logging.getLogger(__name__)

MEMO_KEY: Final = "routing"
"""Where the shared :class:`RoutingState` lives in kopf's operator-level memo."""

SOURCE_INDICES: Final = ("models", "model_pods", "inference_routes", "router_pods")
"""The kopf indices a table is compiled from (kopf passes them to handlers by these names)."""

CONFIGMAP_MAX_BYTES: Final = 1_000_000
"""Largest table stored in the ConfigMap (the API server refuses objects over 1 MiB)."""

MIN_PAUSE_SECONDS: Final = 0.05
"""Shortest time between two syncs, whatever the settings: the loop can never spin."""

COMPILE_PACING: Final = 4
"""A sync waits at least this many times its last compile's duration before the next one, so
churn among a thousand models costs the operator a bounded share of one core."""

CLOSE_TIMEOUT_SECONDS: Final = 3.0
"""How long the last ConfigMap write may take when the operator stops."""


@dataclass(frozen=True)
class Sources:
    """What one table is compiled from, as read from the indices at one moment."""

    models: list[Mapping[str, Any]]
    routes: list[Mapping[str, Any]]
    pods: list[Mapping[str, Any]]
    routers: list[Mapping[str, Any]]


def read_sources(indices: Mapping[str, Mapping[Any, Iterable[Mapping[str, Any]]]]) -> Sources:
    """Flatten kopf's indices (key -> store of objects) into lists, without awaiting between."""

    def values(name: str) -> list[Mapping[str, Any]]:
        return [obj for store in indices[name].values() for obj in store]

    return Sources(
        models=values("models"),
        routes=values("inference_routes"),
        pods=values("model_pods"),
        routers=values("router_pods"),
    )


@dataclass
class _RouterState:
    """What the publisher knows about one router pod (by uid)."""

    delivered: tuple[int, int] | None = None
    """(restarts, version) the router last accepted: a restarted process must get it again."""
    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = None
    ready: bool = False


class RoutingPublisher:
    """Compiles the routing table and delivers it to the routers and the ConfigMap."""

    def __init__(
        self,
        api: KubeApi,
        settings: RoutingSettings,
        namespace: str,
        read: Callable[[], Sources],
        *,
        client: httpx.AsyncClient | None = None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wire the collaborators; ``client`` defaults to one with the push timeout."""
        self.api = api
        self.settings = settings
        self.namespace = namespace
        self.read = read
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.push_timeout_seconds),
            # Pod IPs are never reached through an HTTP proxy from the environment.
            trust_env=False,
        )
        self.own_client = client is None
        self.wall_ms = wall_ms
        self.monotonic = monotonic
        self.dirty = asyncio.Event()
        self.table: RoutingTable | None = None
        self.text = ""
        self.floor = 0
        """The highest version known anywhere (ours, the ConfigMap's, a router's)."""
        self.routers: dict[str, _RouterState] = {}
        self.problems: tuple[str, ...] = ()
        self.parse_cache: ParseCache = {}
        """Model specs already validated, by uid and generation (only the compiler uses it)."""
        self.token: str | None = None
        self.token_retry_at = 0.0
        self.token_problem: str | None = None
        self.stored = -1
        """Version last written to the ConfigMap."""
        self.store_at = 0.0
        self.store_failures = 0
        self.store_error: str | None = None
        self.pause = settings.coalesce_seconds
        self.next_resync = 0.0
        self.floor_loaded = False

    # -- the loop -------------------------------------------------------------------------

    def notify(self) -> None:
        """Something routing reads changed: recompile soon."""
        self.dirty.set()

    async def run(self) -> None:
        """Publish until cancelled; one sync per burst of changes, retry or resync."""
        self.next_resync = self.monotonic() + self.settings.resync_seconds
        while True:
            timeout = max(0.0, self.wake_at() - self.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dirty.wait(), timeout)
            changed = self.dirty.is_set()
            if self.monotonic() >= self.next_resync:
                self.resync()
                changed = True  # the safety net recompiles too
            # Coalesce: the first change of a burst waits for the rest of it.
            await asyncio.sleep(max(self.pause, MIN_PAUSE_SECONDS))
            changed = changed or self.dirty.is_set()
            self.dirty.clear()
            try:
                # A retry alone (a router back, the ConfigMap) sends the table it has.
                await self.sync(recompile=changed)
            except Exception:
                # This task alone keeps the routers current: a bug met by one sync is logged
                # with its traceback and the next sync tries again, rather than ending it.
                log.exception("routing table sync failed")
                await asyncio.sleep(self.settings.retry_max_seconds)

    def wake_at(self) -> float:
        """When the loop must run even without a change: a retry, a pending write, a resync."""
        at = self.next_resync
        if self.table is None:
            return at
        pending = [s for s in self.routers.values() if s.delivered != self._want(s)]
        if pending:
            retry = min(s.retry_at for s in pending)
            if self.token is None:
                retry = max(retry, self.token_retry_at)
            at = min(at, retry)
        if self.stored != self.table.version:
            at = min(at, self.store_at)
        return at

    def resync(self) -> None:
        """Send every router the table again and re-read the token (it may have rotated)."""
        self.next_resync = self.monotonic() + self.settings.resync_seconds
        for state in self.routers.values():
            state.delivered = None
        self.token = None
        self.token_retry_at = 0.0

    async def sync(self, recompile: bool = True) -> None:
        """Recompile; on a change take a new version; deliver where it is missing and due."""
        if not self.floor_loaded:
            self.floor = max(self.floor, await self._stored_floor())
            self.floor_loaded = True
        sources = self.read()
        if recompile or self.table is None:
            await self._compile(sources)
        targets = self._track(router_targets(sources.routers))
        now = self.monotonic()
        due = [
            t
            for t in targets
            if self.routers[t.uid].delivered != self._want(self.routers[t.uid], t)
            and self.routers[t.uid].retry_at <= now
        ]
        token = await self._token() if due else None
        pushes = [self._push(t, token) for t in due] if token is not None else []
        await asyncio.gather(self._store(), *pushes)

    async def _compile(self, sources: Sources) -> None:
        started = self.monotonic()
        # In a worker thread: a thousand models take tens of milliseconds to compile, compare
        # and serialise, which kopf's event loop must not stall for. The lists were taken on
        # the loop, and kopf replaces index entries rather than changing them, so the thread
        # reads a consistent snapshot; this task waits for it, so nothing else touches self.
        compiled, table, text = await asyncio.to_thread(self._build, sources)
        self.pause = max(
            self.settings.coalesce_seconds, COMPILE_PACING * (self.monotonic() - started)
        )
        self._report(compiled.problems)
        if table is None:
            return
        self.floor, self.table, self.text = table.version, table, text
        log.info(
            "routing table version %d: %d models, %d ready endpoints",
            table.version,
            len(table.models),
            sum(e.ready for m in table.models.values() for e in m.endpoints),
        )

    def _build(self, sources: Sources) -> tuple[CompiledRoutes, RoutingTable | None, str]:
        """Compile; a new table (and its JSON) only when the content changed."""
        compiled = compile_routes(
            sources.models, sources.routes, sources.pods, cache=self.parse_cache
        )
        if self.table is not None and compiled.models == self.table.models:
            return compiled, None, ""
        table = RoutingTable(
            version=next_version(self.floor, self.wall_ms()), models=compiled.models
        )
        return compiled, table, table_json(table)

    # -- routers --------------------------------------------------------------------------

    def _want(self, state: _RouterState, target: RouterTarget | None = None) -> tuple[int, int]:
        restarts = target.restarts if target is not None else (state.delivered or (0, 0))[0]
        return (restarts, self.table.version if self.table is not None else -1)

    def _track(self, targets: list[RouterTarget]) -> list[RouterTarget]:
        """Keep state for the routers that exist; one that just turned Ready is due now."""
        live = {t.uid for t in targets}
        for uid in [u for u in self.routers if u not in live]:
            del self.routers[uid]
        for target in targets:
            state = self.routers.setdefault(target.uid, _RouterState())
            if target.ready and not state.ready:
                state.retry_at = 0.0  # newly Ready: its table now, not after a back-off
            state.ready = target.ready
            if state.delivered is not None and state.delivered[0] != target.restarts:
                state.delivered = None  # its process restarted: the table it held is gone
        return targets

    async def _push(self, target: RouterTarget, token: str) -> None:
        assert self.table is not None
        version = self.table.version
        url = f"http://{target.ip}:{self.settings.admin_port}/admin/v1/routing-table"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            response = await self.client.put(url, content=self.text.encode(), headers=headers)
        except httpx.HTTPError as error:
            self._failed(target, f"unreachable at {target.ip}: {type(error).__name__}: {error}")
            return
        if response.status_code == 200:
            state = self.routers[target.uid]
            if state.failures:
                log.info(
                    "router %s/%s took routing table version %d after %d failed pushes",
                    target.namespace,
                    target.name,
                    version,
                    state.failures,
                )
            state.delivered = (target.restarts, version)
            state.failures, state.retry_at, state.last_error = 0, 0.0, None
            return
        detail = _error_message(response)
        if response.status_code == 409:
            # The router holds a newer table (another writer, a clock that went back): take a
            # version above its own and send everyone the table again.
            held = await self._held_version(target, token)
            self.floor = max(self.floor, held if held is not None else version)
            self.table = None
            self.notify()
            self._failed(target, f"refused version {version} as stale (holds {held}): {detail}")
        elif response.status_code in (401, 403):
            self.token = None  # re-read: the Secret may have been rotated since
            self._failed(
                target,
                f"refused the admin token ({response.status_code}): the Secret "
                f"{self.namespace}/{self.settings.admin_token_secret} key "
                f"{self.settings.admin_token_key!r} must hold the token the router was given",
            )
        elif response.status_code == 400:
            self._failed(target, f"refused routing table version {version} as invalid: {detail}")
        else:
            self._failed(target, f"answered {response.status_code}: {detail}")

    async def read_routers(self, path: str, timeout: float) -> tuple[list[Any], list[str]]:
        """GET ``path`` (a JSON admin endpoint) from every Ready router.

        Returns the documents of the routers that answered and, in words, why the others did
        not (never the token). No Ready router gives two empty lists.
        """
        targets = [t for t in router_targets(self.read().routers) if t.ready]
        if not targets:
            return [], []
        token = await self._token()
        if token is None:
            return [], [self.token_problem or "no admin token for the routers"]
        headers = {"Authorization": f"Bearer {token}"}

        async def one(target: RouterTarget) -> Any:
            url = f"http://{target.ip}:{self.settings.admin_port}{path}"
            response = await self.client.get(url, headers=headers, timeout=timeout)
            if response.status_code != 200:
                if response.status_code in (401, 403):
                    self.token = None  # rotated: re-read before the next round
                raise ValueError(f"answered {response.status_code}")
            return response.json()

        results = await asyncio.gather(*(one(t) for t in targets), return_exceptions=True)
        docs: list[Any] = []
        errors: list[str] = []
        for target, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                errors.append(f"router {target.namespace}/{target.name}: {_describe(result)}")
            else:
                docs.append(result)
        return docs, errors

    async def _held_version(self, target: RouterTarget, token: str) -> int | None:
        url = f"http://{target.ip}:{self.settings.admin_port}/admin/v1/routing-table"
        try:
            response = await self.client.get(url, headers={"Authorization": f"Bearer {token}"})
            held = response.json().get("version") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return held if isinstance(held, int) and not isinstance(held, bool) else None

    def _failed(self, target: RouterTarget, why: str) -> None:
        state = self.routers[target.uid]
        state.failures += 1
        delay = min(
            self.settings.retry_max_seconds,
            self.settings.retry_initial_seconds * 2 ** min(state.failures - 1, 20),
        )
        state.retry_at = self.monotonic() + delay
        # A router that is still starting refuses connections for a moment: that is expected,
        # so only Ready routers, and a cause that changed, are worth a warning.
        level = logging.WARNING if state.ready and why != state.last_error else logging.DEBUG
        state.last_error = why
        log.log(
            level,
            "push to router %s/%s failed (%d in a row, next try in %.1fs): %s",
            target.namespace,
            target.name,
            state.failures,
            delay,
            why,
        )

    async def _token(self) -> str | None:
        """The admin token from its Secret (cached until a router refuses it, or a resync)."""
        if self.token is not None:
            return self.token
        if self.monotonic() < self.token_retry_at:
            return None
        token, problem = await self._read_token()
        where = f"Secret {self.namespace}/{self.settings.admin_token_secret}"
        if token is None:
            self.token_retry_at = self.monotonic() + self.settings.retry_max_seconds
            if problem != self.token_problem:
                log.warning(
                    "routing tables are not pushed to routers: %s; routers keep serving the "
                    "ConfigMap's table",
                    problem,
                )
            self.token_problem = problem
            return None
        if self.token_problem is not None:
            log.info("admin token found in %s: pushing to routers again", where)
        self.token, self.token_problem = token, None
        return token

    async def _read_token(self) -> tuple[str | None, str]:
        """(token, "") or (None, why not); never the token's value in the why."""
        name, key = self.settings.admin_token_secret, self.settings.admin_token_key
        where = f"Secret {self.namespace}/{name}"
        try:
            secret = await self.api.get("v1", "Secret", self.namespace, name)
        except NotFound:
            return None, f"{where} does not exist"
        except Forbidden as error:
            return None, f"reading {where} is forbidden (RBAC): {error.message}"
        except KubeApiError as error:
            return None, f"reading {where} failed: {error}"
        raw = (secret.get("data") or {}).get(key)
        if not isinstance(raw, str):
            return None, f"{where} has no key {key!r}"
        try:
            token = base64.b64decode(raw, validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            return None, f"{where} key {key!r} is not valid base64 text"
        if not token:
            return None, f"{where} key {key!r} is empty"
        return token, ""

    # -- the ConfigMap --------------------------------------------------------------------

    async def _stored_floor(self) -> int:
        """The version in the ConfigMap, so a restarted operator's versions keep growing."""
        name = self.settings.configmap_name
        try:
            cm = await self.api.get("v1", "ConfigMap", self.namespace, name)
        except NotFound:
            return 0
        except KubeApiError as error:
            log.warning(
                "ConfigMap %s/%s unreadable (%s): versions start from the clock",
                self.namespace,
                name,
                error,
            )
            return 0
        return stored_version((cm.get("data") or {}).get(self.settings.configmap_key)) or 0

    async def _store(self) -> None:
        table = self.table
        if table is None or self.stored == table.version or self.monotonic() < self.store_at:
            return
        where = f"ConfigMap {self.namespace}/{self.settings.configmap_name}"
        if len(self.text) > CONFIGMAP_MAX_BYTES:
            self.stored = table.version  # it would be refused: say so once per version
            log.error(
                "routing table version %d is %d bytes, too large for %s: routers still get "
                "pushes, but a restarted router starts from an older table",
                table.version,
                len(self.text),
                where,
            )
            return
        obj = build_table_configmap(
            self.settings.configmap_name, self.namespace, self.settings.configmap_key, self.text
        )
        try:
            await self.api.apply(obj)
        except KubeApiError as error:
            self.store_failures += 1
            delay = min(
                self.settings.retry_max_seconds,
                self.settings.retry_initial_seconds * 2 ** min(self.store_failures - 1, 20),
            )
            self.store_at = self.monotonic() + delay
            hint = " (RBAC: the operator's Role must allow configmaps get, create, patch)"
            why = f"{error}{hint if isinstance(error, Forbidden) else ''}"
            # The same cause again is a debug line: a missing namespace must not flood the log.
            level = logging.WARNING if why != self.store_error else logging.DEBUG
            self.store_error = why
            log.log(
                level,
                "writing %s failed (%d in a row, next try in %.1fs): %s",
                where,
                self.store_failures,
                delay,
                why,
            )
            return
        if self.store_error is not None:
            log.info("%s written again (version %d)", where, table.version)
        self.stored = table.version
        self.store_failures = 0
        self.store_error = None
        self.store_at = self.monotonic() + self.settings.configmap_interval_seconds

    def _report(self, problems: tuple[str, ...]) -> None:
        """Log what the compile left out, each sentence once while it lasts."""
        for problem in problems:
            if problem not in self.problems:
                log.warning("routing: %s", problem)
        self.problems = problems

    async def close(self) -> None:
        """Write a table the ConfigMap does not have yet (bounded), then release the client."""
        try:
            if self.table is not None and self.stored != self.table.version:
                self.store_at = 0.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._store(), CLOSE_TIMEOUT_SECONDS)
        finally:
            if self.own_client:
                await self.client.aclose()


def _error_message(response: httpx.Response) -> str:
    """The router's OpenAI-style error message, else the start of the body."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
    return str(message)[:500]


def _describe(error: BaseException) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    if isinstance(error, httpx.HTTPError):
        return f"unreachable: {type(error).__name__}"
    return str(error) or type(error).__name__


# -- kopf glue ---------------------------------------------------------------------------


@dataclass
class RoutingState:
    """Shared through kopf's memo: the publisher, its task, and what each object looked like."""

    publisher: RoutingPublisher | None = None
    task: asyncio.Task[None] | None = None
    views: dict[tuple[str, ...], object] = field(default_factory=dict)
    """Routing's view of each watched object, so only changes that matter wake the publisher."""


def _settings(memo: Any) -> OperatorSettings | None:
    runtime = memo.get("runtime")
    return runtime.settings if isinstance(runtime, Runtime) else None


def _state(memo: Any, indices: Mapping[str, Any]) -> RoutingState | None:
    """The shared state, with its publisher started on the first call that has the indices."""
    state = memo.get(MEMO_KEY)
    runtime = memo.get("runtime")
    if not isinstance(state, RoutingState) or not isinstance(runtime, Runtime):
        return None
    if not runtime.settings.routing.enabled:
        return None
    if state.publisher is None:
        if not all(name in indices for name in SOURCE_INDICES):
            return None
        sources = {name: indices[name] for name in SOURCE_INDICES}
        state.publisher = RoutingPublisher(
            runtime.api,
            runtime.settings.routing,
            runtime.settings.router_namespace,
            lambda: read_sources(sources),
        )
        state.task = asyncio.get_running_loop().create_task(
            state.publisher.run(), name="routing table publisher"
        )
    return state


def _changed(memo: Any, indices: Mapping[str, Any], key: tuple[str, ...], view: object) -> None:
    """Record ``view`` of an object (``None``: it is gone); wake the publisher if it differs."""
    state = _state(memo, indices)
    if state is None or state.publisher is None:
        return
    if view is None:
        changed = state.views.pop(key, None) is not None
    else:
        changed = state.views.get(key) != view
        state.views[key] = view
    if changed:
        state.publisher.notify()


def _key(kind: str, body: Mapping[str, Any]) -> tuple[str, ...]:
    meta = body.get("metadata") or {}
    return (kind, str(meta.get("namespace")), str(meta.get("name")))


def _spec_view(type: str | None, body: Mapping[str, Any]) -> object:
    # The generation moves with every spec change (and only then); deletion starts when the
    # timestamp appears.
    if type == "DELETED":
        return None
    meta = body.get("metadata") or {}
    return (meta.get("generation"), bool(meta.get("deletionTimestamp")))


def _is_router(body: kopf.Body, memo: Any, **_: Any) -> bool:
    settings = _settings(memo)
    if settings is None or not settings.routing.enabled:
        return False
    return is_router_pod(body, settings.router_namespace, settings.routing.router_labels)


_ROUTE_META: Final = ("name", "namespace", "creationTimestamp", "deletionTimestamp", "generation")
_ROUTER_META: Final = ("name", "namespace", "uid", "labels", "deletionTimestamp")
_ROUTER_STATUS: Final = ("phase", "podIP", "podIPs", "conditions", "containerStatuses")


@kopf.index(GROUP, VERSION, ROUTE_PLURAL)
def inference_routes(body: kopf.Body, **_: Any) -> Any:
    """InferenceRoutes by (namespace, name): their specs shape the routes."""
    meta = body["metadata"]
    snapshot = {
        "metadata": {k: meta.get(k) for k in _ROUTE_META},
        "spec": body.get("spec") or {},
    }
    return {(str(meta["namespace"]), str(meta["name"])): json_copy(snapshot)}


@kopf.index("", "v1", "pods", when=_is_router)
def router_pods(body: kopf.Body, **_: Any) -> Any:
    """Router pods by (namespace, name), reduced to what a push needs."""
    meta = body["metadata"]
    status = body.get("status") or {}
    # A copy of the few fields a push reads: kopf's body is a view it replaces on the next event.
    snapshot = {
        "metadata": {k: meta.get(k) for k in _ROUTER_META},
        "status": {k: status.get(k) for k in _ROUTER_STATUS},
    }
    return {(str(meta["namespace"]), str(meta["name"])): json_copy(snapshot)}


@kopf.on.startup()
async def routing_startup(memo: Any, **_: Any) -> None:
    """Make the shared state; the publisher starts with the first event (indices complete)."""
    if not isinstance(memo.get(MEMO_KEY), RoutingState):
        memo[MEMO_KEY] = RoutingState()


@kopf.on.cleanup()
async def routing_cleanup(memo: Any, **_: Any) -> None:
    """Stop the publisher; store a table the ConfigMap does not have yet."""
    state = memo.get(MEMO_KEY)
    if not isinstance(state, RoutingState) or state.publisher is None:
        return
    if state.task is not None:
        state.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await state.task
    await state.publisher.close()


@kopf.on.event(GROUP, VERSION, "inferencemodels")
async def routing_model_event(type: str | None, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """A model appeared, changed its spec, started deleting or is gone."""
    _changed(memo, kwargs, _key("model", body), _spec_view(type, body))


@kopf.on.event(GROUP, VERSION, ROUTE_PLURAL)
async def routing_route_event(type: str | None, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """A route appeared, changed its spec, started deleting or is gone."""
    _changed(memo, kwargs, _key("route", body), _spec_view(type, body))


@kopf.on.event("", "v1", "pods", labels=CHILD_LABELS)
async def routing_model_pod_event(
    type: str | None, body: kopf.Body, memo: Any, **kwargs: Any
) -> None:
    """An engine pod got an IP, turned (un)Ready, started deleting or is gone."""
    view = None if type == "DELETED" else (pod_view(body) or "not an engine pod")
    _changed(memo, kwargs, _key("pod", body), view)


@kopf.on.event("", "v1", "pods", when=_is_router)
async def routing_router_pod_event(
    type: str | None, body: kopf.Body, memo: Any, **kwargs: Any
) -> None:
    """A router pod started, turned Ready, restarted, started deleting or is gone."""
    # The target carries readiness and restarts: a router that just turned Ready, or whose
    # process restarted, is sent the table at once.
    view = None if type == "DELETED" else (router_target(body) or "not a push target")
    _changed(memo, kwargs, _key("router", body), view)
