"""Client access in the router: the credentials it holds, and who may send what.

:class:`Access` holds the current :class:`~inferscale.protocol.credentials.RouterCredentials`, the
index of client-key digests and one :class:`~inferscale.router.limits.Policy` per client, all
built from them; :meth:`Access.replace` swaps them in with one assignment each, and nothing
awaits between reading them, so a request sees the old credentials or the new ones, never a mix.
Provider backends take their API keys from :meth:`Access.provider_pool` at the moment they call
the provider, so a rotated key is used from the next request on; a pool keeps each key's state
(rates, refusals, backoffs) across pushes while the key is unchanged
(:mod:`inferscale.router.provider_keys`).

A request passes three checks, each an OpenAI error object when it fails:

1. :meth:`Access.identify`: the bearer token is hashed and looked up. No or an unknown key is
   401 while keys are required (the credentials say so, or the router's own setting); when they
   are not, such a request is anonymous and unlimited (an OpenAI SDK always sends some key).
2. :meth:`Access.authorize`: a model outside the client's ``allowedModels`` is 403 (checked
   before the model's existence, so a client cannot probe for other models).
3. :meth:`Access.admit`: rates and budgets (:mod:`inferscale.router.limits`), 429 with
   ``Retry-After`` in whole seconds; :meth:`Access.settle` then charges the real usage.

Failure behaviour: credentials older than the ones held raise
:class:`~inferscale.protocol.credentials.StaleCredentialsError` (the admin API answers 409, the
file watcher ignores them); an invalid document is refused whole, and the error never quotes it.
A shared limits store that fails is the limiter's business (:mod:`inferscale.router.limits_redis`:
local limits, reported).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from inferscale.protocol.credentials import ClientKey, RouterCredentials, StaleCredentialsError
from inferscale.router.credentials import KeyIndex
from inferscale.router.limits import (
    MICRO_USD,
    Charge,
    LimitName,
    LocalLimiter,
    Policy,
    Verdict,
    extra_budgets,
    retry_after_header,
)
from inferscale.router.picking import estimate_prompt_tokens
from inferscale.router.provider_keys import KeyPool, rebuild

ANONYMOUS: Final = Policy(client="")
"""The policy of a request without a known key while keys are not required: no limit."""

_LIMIT_TEXT: Final[dict[LimitName, str]] = {
    "requests": "requests per minute",
    "tokens": "tokens per minute",
    "tokens_per_day": "tokens per day",
    "tokens_per_month": "tokens per month",
    "usd_per_day": "USD per day",
    "usd_per_month": "USD per month",
    "team_tokens_per_day": "tokens per day",
    "team_tokens_per_month": "tokens per month",
    "team_usd_per_day": "USD per day",
    "team_usd_per_month": "USD per month",
    "unavailable": "budget",
}


class SharedLimits(Protocol):
    """A limiter whose state other routers share (:class:`~.limits_redis.SharedLimiter`)."""

    async def admit(self, policy: Policy, estimate: int) -> tuple[Verdict, Charge | None]:
        """Check and take, as :meth:`LocalLimiter.admit`."""
        ...

    def settle(
        self, policy: Policy, charge: Charge, used: int | None, failed: bool, usd: float = 0.0
    ) -> None:
        """Correct a charge and count its cost (may finish in the background)."""
        ...

    def degraded(self) -> str | None:
        """Why the limits are not shared right now (``None``: they are)."""
        ...

    async def read_counters(self, counters: list[tuple[str, str]]) -> list[int]:
        """The shared budget counters ``(holder, counter id)``; raises the store's errors."""
        ...

    def metric_lines(self) -> Iterable[str]:
        """Its own metrics, in the exposition format."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """An access check that failed: the HTTP answer to give."""

    status: int
    message: str
    code: str
    kind: str
    headers: Mapping[str, str] | None = None


@dataclass(slots=True)
class Grant:
    """An admitted request of a known client: what to settle when it ends."""

    policy: Policy
    charge: Charge | None


def policy_of(key: ClientKey) -> Policy:
    """The policy a client key carries."""
    own, team = key.budgets, key.team_budgets
    extra = extra_budgets(
        key.client,
        key.team or "",
        (own.usd_per_day, own.usd_per_month),
        (team.tokens_per_day, team.tokens_per_month),
        (team.usd_per_day, team.usd_per_month),
    )
    return Policy(
        client=key.client,
        allowed_models=frozenset(key.allowed_models) if key.allowed_models else None,
        requests_per_minute=key.limits.requests_per_minute,
        tokens_per_minute=key.limits.tokens_per_minute,
        tokens_per_day=key.budgets.tokens_per_day,
        tokens_per_month=key.budgets.tokens_per_month,
        team=key.team or "",
        extra=extra,
    )


def estimate_tokens(body_bytes: int, obj: Mapping[str, Any]) -> int:
    """What a request may cost before it runs, in tokens.

    Its prompt as the pickers estimate it (the body's bytes / 4,
    :func:`~inferscale.router.picking.estimate_prompt_tokens`) plus the completion it asks
    for at most (``max_completion_tokens``, else ``max_tokens``).
    """
    # ``type(...) is int``: a JSON document's integers are ints, and a bool is not one.
    out = obj.get("max_completion_tokens")
    if type(out) is not int or out < 0:
        out = obj.get("max_tokens")
        if type(out) is not int or out < 0:
            out = 0
    return estimate_prompt_tokens(body_bytes) + (out if out < 10_000_000 else 10_000_000)


def used_tokens(usage: object) -> int | None:
    """Prompt plus completion tokens of a response's ``usage`` (``None``: no usage)."""
    # A dict first: the ABC check costs more than the rest, and JSON's objects are dicts.
    if not isinstance(usage, dict) and not isinstance(usage, Mapping):
        return None
    total = usage.get("total_tokens")
    if type(total) is int and total >= 0:
        return total
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    parts = [p for p in (prompt, completion) if isinstance(p, int) and not isinstance(p, bool)]
    return sum(parts) if parts else None


def spilled_tokens(usage: object, body_bytes: int) -> tuple[int, int | None]:
    """Prompt and completion tokens of a spilled request, for the spilled-token counters.

    The prompt is the answer's ``usage`` count, else the pickers' estimate from the body's
    size (a spilled prompt is load the replicas did not carry, known or not); the completion
    is the usage count, else ``None`` (unknown: a provider that reports no usage).
    """
    prompt: int | None = None
    completion: int | None = None
    if isinstance(usage, Mapping):
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        # ``type(...) is int``: a bool is not a count.
        prompt = p if type(p) is int and p >= 0 else None
        completion = c if type(c) is int and c >= 0 else None
    return (estimate_prompt_tokens(body_bytes) if prompt is None else prompt), completion


class Access:
    """The router's credentials and client-access checks."""

    def __init__(
        self,
        local: LocalLimiter | None = None,
        shared: SharedLimits | None = None,
        *,
        require_client_key: bool = False,
    ) -> None:
        """No credentials yet; ``require_client_key`` forces keys whatever they say."""
        self.local = local or LocalLimiter(time.monotonic, time.time)
        self.shared = shared
        self.force_required = require_client_key
        self.credentials: RouterCredentials | None = None
        self.keys = KeyIndex.build(())
        self.policies: dict[str, Policy] = {}
        self.by_digest: dict[bytes, tuple[bytes, Policy]] = {}
        """Key digest -> (the digest as held, the policy of its client): what
        :meth:`identify` looks up, built with the rest on :meth:`replace` so a request pays one
        hash and one lookup. Its size is the credentials' keys: presented keys never enter it."""
        self.provider_pools: dict[str, KeyPool] = {}
        """Provider id -> its keys and their state."""
        self.required = require_client_key
        self.active = require_client_key
        """Whether requests are checked at all (keys required, or some key known): a router
        without client keys pays nothing per request."""
        self.refused: dict[tuple[str, str], int] = {}
        """(reason, client) -> requests refused (``client`` empty for 401)."""

    @property
    def version(self) -> int:
        """Version of the credentials held (0 before any)."""
        return self.credentials.version if self.credentials is not None else 0

    def replace(self, credentials: RouterCredentials) -> bool:
        """Install ``credentials``; False when they are the ones already held.

        Raises:
            StaleCredentialsError: older than the ones held, or the same version with other
                content.
        """
        held = self.credentials
        if held is not None:
            if credentials.version < held.version:
                raise StaleCredentialsError(
                    f"credentials version {credentials.version} is older than {held.version}"
                )
            if credentials.version == held.version:
                if credentials.same_content(held):
                    return False
                raise StaleCredentialsError(
                    f"credentials version {credentials.version} are already held with other content"
                )
        keys = KeyIndex.build(credentials.client_keys)
        policies: dict[str, Policy] = {}
        for key in credentials.client_keys:
            policies.setdefault(key.client, policy_of(key))
        by_digest = {
            raw: (stored, policies[key.client]) for raw, (stored, key) in keys.by_digest.items()
        }
        pools = rebuild(
            {p: credentials.provider_entries(p) for p in credentials.provider_ids()},
            self.provider_pools,
        )
        # Each is one assignment; readers take what they need in one step (no await between).
        self.keys, self.policies, self.by_digest = keys, policies, by_digest
        self.provider_pools, self.credentials = pools, credentials
        self.required = self.force_required or credentials.require_client_key
        self.active = self.required or len(keys) > 0
        return True

    def provider_pool(self, provider_id: str) -> KeyPool | None:
        """The keys of provider ``<namespace>/<name>``, or ``None`` when none is held."""
        return self.provider_pools.get(provider_id)

    def provider_key(self, provider_id: str) -> str | None:
        """The first API key of provider ``<namespace>/<name>`` (``None``: none is held)."""
        pool = self.provider_pools.get(provider_id)
        return pool.keys[0].key if pool is not None and pool.keys else None

    # -- the checks -----------------------------------------------------------------------

    def identify(self, authorization: str | None) -> Policy | Refusal:
        """The caller's policy from its ``Authorization`` header, or 401."""
        token = ""
        if authorization and (
            authorization.startswith("Bearer ") or authorization[:7].lower() == "bearer "
        ):
            token = authorization[7:].strip()
        if token:
            # As KeyIndex.find: the dict matches on the digest, and the final comparison of
            # secret-derived bytes is constant-time.
            digest = hashlib.sha256(token.encode()).digest()
            found = self.by_digest.get(digest)
            if found is not None and hmac.compare_digest(found[0], digest):
                return found[1]
        if not self.required:
            return ANONYMOUS
        if not token:
            self._count("missing_key", "")
            return Refusal(
                401,
                "You didn't provide an API key: send it as 'Authorization: Bearer <key>'.",
                "missing_api_key",
                "invalid_request_error",
                {"WWW-Authenticate": "Bearer"},
            )
        self._count("invalid_key", "")
        return Refusal(
            401,
            "Incorrect API key provided.",
            "invalid_api_key",
            "invalid_request_error",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )

    def authorize(self, policy: Policy, model: str) -> Refusal | None:
        """403 when ``model`` is not among the client's allowed models."""
        allowed = policy.allowed_models
        if allowed is None or model in allowed:
            return None
        self._count("model_not_allowed", policy.client)
        return Refusal(
            403,
            f"The client `{policy.client}` may not use the model `{model}`.",
            "model_not_allowed",
            "permission_error",
        )

    def visible(self, policy: Policy, models: Iterable[str]) -> list[str]:
        """The models a client may see in ``GET /v1/models``."""
        allowed = policy.allowed_models
        return [m for m in models if allowed is None or m in allowed]

    async def admit(self, policy: Policy, estimate: int) -> Grant | Refusal:
        """Take the request from the client's limits, or 429 with ``Retry-After``."""
        if self.shared is None:
            return self.admit_in_process(policy, estimate)
        verdict, charge = await self.shared.admit(policy, estimate)
        if verdict.allowed:
            return Grant(policy, charge)
        return self._refusal(policy, verdict)

    def admit_in_process(self, policy: Policy, estimate: int) -> Grant | Refusal:
        """:meth:`admit` without a coroutine, when limits are in process (``shared`` is None).

        Raises:
            RuntimeError: the limits are shared (only :meth:`admit` may await the store).
        """
        if self.shared is not None:
            raise RuntimeError("limits are shared: admit() them")
        verdict, charge = self.local.admit(policy, estimate)
        if verdict.allowed:
            return Grant(policy, charge)
        return self._refusal(policy, verdict)

    def _refusal(self, policy: Policy, verdict: Verdict) -> Refusal:
        name = verdict.limit or "requests"
        self._count(name, policy.client)
        retry = retry_after_header(verdict.retry_after)
        if name == "unavailable":
            return Refusal(
                503,
                f"The budget of `{policy.client}` cannot be checked right now (the shared limits "
                f"store is unreachable); retry after {retry} s.",
                "budget_unavailable",
                "service_unavailable",
                {"Retry-After": retry},
            )
        what = _LIMIT_TEXT[name]
        budget = name not in ("requests", "tokens")
        value = verdict.limit_value
        shown = f"${value / MICRO_USD:.2f}" if "usd" in name else str(value)
        # Names the budget and whose it is, never the key.
        who = f"team `{policy.team}`" if name.startswith("team_") else f"client `{policy.client}`"
        message = (
            f"{'Budget spent' if budget else 'Rate limit reached'} for {what} "
            f"(limit {shown}) by {who}; retry after {retry} s."
        )
        return Refusal(
            429,
            message,
            "insufficient_quota" if budget else "rate_limit_exceeded",
            "insufficient_quota" if budget else name,
            {"Retry-After": retry},
        )

    def settle(self, grant: Grant, usage: object, status: int, usd: float = 0.0) -> None:
        """Charge the real usage and its cost; refund a request that failed.

        ``usd`` is what the answer cost at the routes' prices (the money budgets count it);
        a request whose usage is unknown keeps its estimate charged.
        """
        charge = grant.charge
        if charge is None:
            return
        ok = 200 <= status < 300
        used = used_tokens(usage) if ok else None
        if self.shared is not None:
            self.shared.settle(grant.policy, charge, used, not ok, usd)
        else:
            self.local.settle(grant.policy, charge, used, not ok, usd)

    def _count(self, reason: str, client: str) -> None:
        key = (reason, client)
        self.refused[key] = self.refused.get(key, 0) + 1

    # -- reporting ------------------------------------------------------------------------

    def degraded(self) -> str | None:
        """Why limits are not what they should be right now (``None``: they are)."""
        return self.shared.degraded() if self.shared is not None else None

    def metric_lines(self) -> Iterable[str]:
        """Refusals by reason and client, and the shared store's health."""
        yield "# HELP inferscale_router_access_refused_total Requests refused by client access."
        yield "# TYPE inferscale_router_access_refused_total counter"
        for (reason, client), n in self.refused.items():
            yield (
                f'inferscale_router_access_refused_total{{reason="{reason}",client="{client}"}} {n}'
            )
        if self.shared is not None:
            yield from self.shared.metric_lines()


def load_credentials_file(path: Path) -> RouterCredentials:
    """The credentials stored in ``path`` (JSON, as the operator writes them).

    Raises:
        OSError: unreadable.
        ValueError: not valid credentials (the message never quotes the file).
    """
    return RouterCredentials.model_validate_json(path.read_bytes())
