"""Delivers one versioned document to every router pod and keeps the last one in an object.

The routing table (:mod:`inferscale.controller.routing`) and the credentials
(:mod:`inferscale.controller.credentials`) reach the routers the same way, so both publishers
are this class with a different document. One :class:`RouterPublisher` task per document:

1. waits ``coalesce_seconds`` after the first change so a burst makes one document, and
   recompiles (a subclass's :meth:`~RouterPublisher.build`), then waits at least four times as
   long as that took before the next one, so churn costs a bounded share of a core;
2. gives the document a new version when its content changed: ``max(last + 1, ms since
   epoch)``, where "last" starts from the stored object's version, so versions grow across
   restarts;
3. PUTs it to every running router pod at ``http://POD_IP:admin_port`` + the document's admin
   path, with the bearer token from the admin-token Secret, concurrently, each push bounded by
   ``push_timeout_seconds``;
4. server-side applies the object that routers mount (a ConfigMap for the table, a Secret for
   the credentials), at most once per ``configmap_interval_seconds``, so a router that starts
   while the operator is down has it at once.

Failure behaviour: nothing here raises into kopf or ends the task. A router that cannot be
reached, refuses the token (401/403) or the document (400), or holds a newer version (409) is
logged by pod name (never the token or the document) and retried on its own doubling back-off,
capped at ``retry_max_seconds``; a 409 also lifts the next version above the router's. A missing
or unreadable admin-token Secret stops the pushes (logged once per cause), not the stored object.
A failed write of that object is retried on the same back-off; a 403 names the RBAC gap. Every
router is sent the current document again each ``resync_seconds``, which also re-reads a rotated
token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

import httpx

from inferscale.config import OperatorSettings, RoutingSettings
from inferscale.controller.inference_model import Runtime
from inferscale.errors import Forbidden, KubeApiError, NotFound
from inferscale.kube.client import KubeApi
from inferscale.protocol.versions import stored_version
from inferscale.reconcile.routing import (
    RouterTarget,
    next_version,
    router_target,
    router_targets,
)

STORE_MAX_BYTES: Final = 1_000_000
"""Largest document stored in the ConfigMap or Secret (the API server refuses objects over
1 MiB)."""

MIN_PAUSE_SECONDS: Final = 0.05
"""Shortest time between two syncs, whatever the settings: the loop can never spin."""

COMPILE_PACING: Final = 4
"""A sync waits at least this many times its last compile's duration before the next one, so
churn among a thousand models costs the operator a bounded share of one core."""

CLOSE_TIMEOUT_SECONDS: Final = 3.0
"""How long the last write of the stored object may take when the operator stops."""


class Versioned(Protocol):
    """A document with a version that routers compare."""

    @property
    def version(self) -> int:
        """Monotonic version."""
        ...


class RouterSources(Protocol):
    """What a document is compiled from: whatever it is, it lists the router pods."""

    @property
    def routers(self) -> Sequence[Mapping[str, Any]]:
        """Router pod snapshots (from the ``router_pods`` index)."""
        ...


DocT = TypeVar("DocT", bound=Versioned)
SourcesT = TypeVar("SourcesT", bound=RouterSources)


@dataclass
class RouterState:
    """What a publisher knows about one router pod (by uid)."""

    delivered: tuple[int, int] | None = None
    """(restarts, version) the router last accepted: a restarted process must get it again."""
    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = None
    ready: bool = False


class RouterPublisher(Generic[SourcesT, DocT]):
    """Compiles one document and delivers it to the routers and the stored object.

    Subclasses say what the document is: :meth:`build`, :meth:`store_object`,
    :meth:`stored_text`, and the class variables; their sources list the router pods.
    """

    WHAT: ClassVar[str]
    """The document in log lines: ``routing table``, ``credentials``."""
    ADMIN_PATH: ClassVar[str]
    """Where routers take it: ``/admin/v1/...``."""
    STORE_KIND: ClassVar[str]
    """Kind of the object that keeps it: ``ConfigMap`` or ``Secret``."""
    STORE_VERBS_HINT: ClassVar[str]
    """What a 403 on the stored object means, for the log line."""
    LOG_PREFIX: ClassVar[str]
    """How a compile problem starts in the log: ``routing``, ``credentials``."""

    def __init__(
        self,
        api: KubeApi,
        settings: RoutingSettings,
        namespace: str,
        read: Callable[[], SourcesT],
        *,
        store_name: str,
        client: httpx.AsyncClient | None = None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wire the collaborators; ``client`` defaults to one with the push timeout."""
        self.api = api
        self.settings = settings
        self.namespace = namespace
        self.read = read
        self.store_name = store_name
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.push_timeout_seconds),
            # Pod IPs are never reached through an HTTP proxy from the environment.
            trust_env=False,
        )
        self.own_client = client is None
        self.wall_ms = wall_ms
        self.monotonic = monotonic
        self.dirty = asyncio.Event()
        self.document: DocT | None = None
        self.text = ""
        self.floor = 0
        """The highest version known anywhere (ours, the stored object's, a router's)."""
        self.routers: dict[str, RouterState] = {}
        self.token: str | None = None
        self.token_retry_at = 0.0
        self.token_problem: str | None = None
        self.stored = -1
        """Version last written to the stored object."""
        self.store_at = 0.0
        self.store_failures = 0
        self.store_error: str | None = None
        self.pause = settings.coalesce_seconds
        self.next_resync = 0.0
        self.floor_loaded = False
        self.problems: tuple[str, ...] = ()
        """The last compile's problems (each is logged once while it lasts)."""
        self.log = logging.getLogger(type(self).__module__)
        """The subclass's module logger: each document's lines under its own name."""

    # -- what subclasses say --------------------------------------------------------------

    async def build(self, sources: SourcesT) -> tuple[DocT, str] | None:
        """The document at :meth:`next_version` and its JSON, or ``None`` if unchanged."""
        raise NotImplementedError

    def router_pods(self, sources: SourcesT) -> Sequence[Mapping[str, Any]]:
        """The router pods (snapshots) in ``sources``."""
        return sources.routers

    def store_object(self, text: str) -> dict[str, Any]:
        """The object that keeps ``text`` for routers that start."""
        raise NotImplementedError

    def stored_text(self, obj: Mapping[str, Any]) -> str | None:
        """The document's text in a stored object (``None`` when absent or unreadable)."""
        raise NotImplementedError

    def announce(self, document: DocT) -> None:
        """Log a new version (counts only: never what a document holds)."""
        self.log.info("%s version %d", self.WHAT, document.version)

    def report_problems(self, problems: tuple[str, ...]) -> None:
        """Log what the compile left out, each sentence once while it lasts."""
        for problem in problems:
            if problem not in self.problems:
                self.log.warning("%s: %s", self.LOG_PREFIX, problem)
        self.problems = problems

    def next_version(self) -> int:
        """The version of the next document: above every known one, else the wall clock."""
        return next_version(self.floor, self.wall_ms())

    # -- the loop -------------------------------------------------------------------------

    def notify(self) -> None:
        """Something the document reads changed: recompile soon."""
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
                # A retry alone (a router back, the stored object) sends what it has.
                await self.sync(recompile=changed)
            except Exception:
                # This task alone keeps the routers current: a bug met by one sync is logged
                # with its traceback and the next sync tries again, rather than ending it.
                self.log.exception("%s sync failed", self.WHAT)
                await asyncio.sleep(self.settings.retry_max_seconds)

    def wake_at(self) -> float:
        """When the loop must run even without a change: a retry, a pending write, a resync."""
        at = self.next_resync
        if self.document is None:
            return at
        pending = [s for s in self.routers.values() if s.delivered != self._want(s)]
        if pending:
            retry = min(s.retry_at for s in pending)
            if self.token is None:
                retry = max(retry, self.token_retry_at)
            at = min(at, retry)
        if self.stored != self.document.version:
            at = min(at, self.store_at)
        return at

    def resync(self) -> None:
        """Send every router the document again and re-read the token (it may have rotated)."""
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
        if recompile or self.document is None:
            await self._compile(sources)
        targets = self._track(router_targets(self.router_pods(sources)))
        now = self.monotonic()
        due = [
            t
            for t in targets
            if self.routers[t.uid].delivered != self._want(self.routers[t.uid], t)
            and self.routers[t.uid].retry_at <= now
        ]
        token = await self._token() if due and self.document is not None else None
        pushes = [self._push(t, token) for t in due] if token is not None else []
        await asyncio.gather(self._store(), *pushes)

    async def _compile(self, sources: SourcesT) -> None:
        started = self.monotonic()
        built = await self.build(sources)
        self.pause = max(
            self.settings.coalesce_seconds, COMPILE_PACING * (self.monotonic() - started)
        )
        if built is None:
            return
        document, text = built
        self.floor, self.document, self.text = document.version, document, text
        self.announce(document)

    # -- routers --------------------------------------------------------------------------

    def _want(self, state: RouterState, target: RouterTarget | None = None) -> tuple[int, int]:
        restarts = target.restarts if target is not None else (state.delivered or (0, 0))[0]
        return (restarts, self.document.version if self.document is not None else -1)

    def _track(self, targets: list[RouterTarget]) -> list[RouterTarget]:
        """Keep state for the routers that exist; one that just turned Ready is due now."""
        live = {t.uid for t in targets}
        for uid in [u for u in self.routers if u not in live]:
            del self.routers[uid]
        for target in targets:
            state = self.routers.setdefault(target.uid, RouterState())
            if target.ready and not state.ready:
                state.retry_at = 0.0  # newly Ready: its document now, not after a back-off
            state.ready = target.ready
            if state.delivered is not None and state.delivered[0] != target.restarts:
                state.delivered = None  # its process restarted: what it held is gone
        return targets

    async def _push(self, target: RouterTarget, token: str) -> None:
        assert self.document is not None
        version = self.document.version
        url = f"http://{target.ip}:{self.settings.admin_port}{self.ADMIN_PATH}"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            response = await self.client.put(url, content=self.text.encode(), headers=headers)
        except httpx.HTTPError as error:
            self._failed(target, f"unreachable at {target.ip}: {type(error).__name__}: {error}")
            return
        if response.status_code == 200:
            state = self.routers[target.uid]
            if state.failures:
                self.log.info(
                    "router %s/%s took %s version %d after %d failed pushes",
                    target.namespace,
                    target.name,
                    self.WHAT,
                    version,
                    state.failures,
                )
            state.delivered = (target.restarts, version)
            state.failures, state.retry_at, state.last_error = 0, 0.0, None
            return
        detail = _error_message(response)
        if response.status_code == 409:
            # The router holds a newer document (another writer, a clock that went back): take
            # a version above its own and send everyone the document again.
            held = await self._held_version(target, token)
            self.floor = max(self.floor, held if held is not None else version)
            self.document = None
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
            self._failed(target, f"refused {self.WHAT} version {version} as invalid: {detail}")
        else:
            self._failed(target, f"answered {response.status_code}: {detail}")

    async def read_routers(self, path: str, timeout: float) -> tuple[list[Any], list[str]]:
        """GET ``path`` (a JSON admin endpoint) from every Ready router.

        Returns the documents of the routers that answered and, in words, why the others did
        not (never the token). No Ready router gives two empty lists.
        """
        targets = [t for t in router_targets(self.router_pods(self.read())) if t.ready]
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
        url = f"http://{target.ip}:{self.settings.admin_port}{self.ADMIN_PATH}"
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
        self.log.log(
            level,
            "%s push to router %s/%s failed (%d in a row, next try in %.1fs): %s",
            self.WHAT,
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
                self.log.warning(
                    "%s is not pushed to routers: %s; routers keep what the %s %s/%s holds",
                    self.WHAT,
                    problem,
                    self.STORE_KIND,
                    self.namespace,
                    self.store_name,
                )
            self.token_problem = problem
            return None
        if self.token_problem is not None:
            self.log.info("admin token found in %s: pushing %s to routers again", where, self.WHAT)
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
        token, problem = secret_text(secret, key)
        if token is None:
            return None, f"{where} {problem}"
        token = token.strip()
        if not token:
            return None, f"{where} key {key!r} is empty"
        return token, ""

    # -- the stored object ----------------------------------------------------------------

    async def _stored_floor(self) -> int:
        """The version in the stored object, so a restarted operator's versions keep growing."""
        where = f"{self.STORE_KIND} {self.namespace}/{self.store_name}"
        try:
            obj = await self.api.get("v1", self.STORE_KIND, self.namespace, self.store_name)
        except NotFound:
            return 0
        except KubeApiError as error:
            self.log.warning("%s unreadable (%s): versions start from the clock", where, error)
            return 0
        return stored_version(self.stored_text(obj)) or 0

    async def _store(self) -> None:
        document = self.document
        if document is None or self.stored == document.version or self.monotonic() < self.store_at:
            return
        where = f"{self.STORE_KIND} {self.namespace}/{self.store_name}"
        if len(self.text) > STORE_MAX_BYTES:
            self.stored = document.version  # it would be refused: say so once per version
            self.log.error(
                "%s version %d is %d bytes, too large for %s: routers still get pushes, but a "
                "restarted router starts from an older one",
                self.WHAT,
                document.version,
                len(self.text),
                where,
            )
            return
        try:
            await self.api.apply(self.store_object(self.text))
        except KubeApiError as error:
            self.store_failures += 1
            delay = min(
                self.settings.retry_max_seconds,
                self.settings.retry_initial_seconds * 2 ** min(self.store_failures - 1, 20),
            )
            self.store_at = self.monotonic() + delay
            hint = f" (RBAC: {self.STORE_VERBS_HINT})"
            why = f"{error}{hint if isinstance(error, Forbidden) else ''}"
            # The same cause again is a debug line: a missing namespace must not flood the log.
            level = logging.WARNING if why != self.store_error else logging.DEBUG
            self.store_error = why
            self.log.log(
                level,
                "writing %s failed (%d in a row, next try in %.1fs): %s",
                where,
                self.store_failures,
                delay,
                why,
            )
            return
        if self.store_error is not None:
            self.log.info("%s written again (version %d)", where, document.version)
        self.stored = document.version
        self.store_failures = 0
        self.store_error = None
        self.store_at = self.monotonic() + self.settings.configmap_interval_seconds

    async def close(self) -> None:
        """Store a document the stored object does not have yet (bounded); release the client."""
        try:
            if self.document is not None and self.stored != self.document.version:
                self.store_at = 0.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._store(), CLOSE_TIMEOUT_SECONDS)
        finally:
            if self.own_client:
                await self.client.aclose()


def secret_text(secret: Mapping[str, Any], key: str) -> tuple[str | None, str]:
    """(the text under ``key`` of a Secret's ``data``, "") or (None, why not); never the value."""
    data = secret.get("data")
    raw = data.get(key) if isinstance(data, Mapping) else None
    if not isinstance(raw, str):
        return None, f"has no key {key!r}"
    try:
        return base64.b64decode(raw, validate=True).decode(), ""
    except (binascii.Error, UnicodeDecodeError):
        return None, f"key {key!r} is not valid base64 text"


def _describe(error: BaseException) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    if isinstance(error, httpx.HTTPError):
        return f"unreachable: {type(error).__name__}"
    return str(error) or type(error).__name__


def _error_message(response: httpx.Response) -> str:
    """The router's OpenAI-style error message, else the start of the body."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
    return str(message)[:500]


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a background loop of the operator and wait until it has stopped."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


PublisherT = TypeVar("PublisherT", bound="RouterPublisher[Any, Any]")


@dataclass
class PublisherSlot(Generic[PublisherT]):
    """One publisher, its task, and what each watched object looked like (in kopf's memo).

    The views make only the changes its document reads wake the publisher.
    """

    publisher: PublisherT | None = None
    task: asyncio.Task[None] | None = None
    views: dict[tuple[str, ...], object] = field(default_factory=dict)

    def changed(self, key: tuple[str, ...], view: object) -> None:
        """Record ``view`` of an object (``None``: it is gone); wake the publisher if it differs."""
        if self.publisher is None:
            return
        if view is None:
            differs = self.views.pop(key, None) is not None
        else:
            differs = self.views.get(key) != view
            self.views[key] = view
        if differs:
            self.publisher.notify()

    async def stop(self) -> None:
        """Stop the publisher's loop, then let it store what it has not stored yet."""
        if self.publisher is None:
            return
        await stop_task(self.task)
        await self.publisher.close()


# -- kopf glue shared by the publishers ----------------------------------------------------


def object_key(kind: str, body: Mapping[str, Any]) -> tuple[str, ...]:
    """(kind, namespace, name): how the glue remembers what it saw of an object."""
    meta = body.get("metadata") or {}
    return (kind, str(meta.get("namespace")), str(meta.get("name")))


def spec_view(type: str | None, body: Mapping[str, Any]) -> object:
    """What of a custom object matters to a compile: its generation and whether it is going."""
    # The generation moves with every spec change (and only then); deletion starts when the
    # timestamp appears.
    if type == "DELETED":
        return None
    meta = body.get("metadata") or {}
    return (meta.get("generation"), bool(meta.get("deletionTimestamp")))


def router_pod_view(type: str | None, body: Mapping[str, Any]) -> object:
    """What of a router pod matters to a push: its target (address, readiness, restarts)."""
    # The target carries readiness and restarts: a router that just turned Ready, or whose
    # process restarted, is sent the document at once.
    return None if type == "DELETED" else (router_target(body) or "not a push target")


@dataclass(frozen=True)
class PublisherWiring(Generic[SourcesT, PublisherT]):
    """How one document's publisher lives in kopf's memo: made at startup, started lazily.

    The handlers of a document's module are one line each on top of this: the startup handler
    puts an empty slot in the memo, the first event that has every source index starts the
    publisher (kopf runs handlers only once every index is filled, so the first document is
    never built from a half-listed cluster), each event records its view of an object, and the
    cleanup handler stops the publisher and stores what it has not stored yet. The wiring holds
    no state: the slot in the memo does.
    """

    memo_key: str
    """Where the slot lives in kopf's operator-level memo."""
    slot_type: type[PublisherSlot[PublisherT]]
    source_indices: tuple[str, ...]
    """The kopf indices the document is compiled from (passed to handlers by these names)."""
    read: Callable[[Mapping[str, Any]], SourcesT]
    """The sources from those indices, read at one moment."""
    make: Callable[[Runtime, Callable[[], SourcesT]], PublisherT]
    """The publisher from the operator's runtime and the sources' reader."""
    enabled: Callable[[OperatorSettings], bool]
    """Whether the operator's settings turn this document on."""
    task_name: str

    def install(self, memo: Any) -> None:
        """Put an empty slot in the memo (the startup handler), unless one is there."""
        if not isinstance(memo.get(self.memo_key), self.slot_type):
            memo[self.memo_key] = self.slot_type()

    def slot(self, memo: Any, indices: Mapping[str, Any]) -> PublisherSlot[PublisherT] | None:
        """The slot, its publisher started on the first call that has the indices.

        None while the document is off, the operator has no runtime, or an index is missing.
        """
        slot = memo.get(self.memo_key)
        runtime = memo.get("runtime")
        if not isinstance(slot, self.slot_type) or not isinstance(runtime, Runtime):
            return None
        if not self.enabled(runtime.settings):
            return None
        if slot.publisher is None:
            if not all(name in indices for name in self.source_indices):
                return None
            sources = {name: indices[name] for name in self.source_indices}
            slot.publisher = self.make(runtime, lambda: self.read(sources))
            slot.task = asyncio.get_running_loop().create_task(
                slot.publisher.run(), name=self.task_name
            )
        return slot

    def changed(
        self, memo: Any, indices: Mapping[str, Any], key: tuple[str, ...], view: object
    ) -> None:
        """Record ``view`` of an object (``None``: it is gone); wake the publisher if it differs."""
        slot = self.slot(memo, indices)
        if slot is not None:
            slot.changed(key, view)

    def spec_changed(
        self, memo: Any, indices: Mapping[str, Any], kind: str, type: str | None, body: Any
    ) -> None:
        """A custom object appeared, changed its spec, started deleting or is gone."""
        self.changed(memo, indices, object_key(kind, body), spec_view(type, body))

    def router_pod_changed(
        self, memo: Any, indices: Mapping[str, Any], type: str | None, body: Any
    ) -> None:
        """A router pod started, turned Ready, restarted, started deleting or is gone."""
        self.changed(memo, indices, object_key("router", body), router_pod_view(type, body))

    async def stop(self, memo: Any) -> None:
        """Stop the publisher (the cleanup handler); it stores what it has not stored yet."""
        slot = memo.get(self.memo_key)
        if isinstance(slot, self.slot_type):
            await slot.stop()
