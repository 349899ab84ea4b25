"""A provider's API keys in the router: which key the next request uses, and which are out.

One :class:`KeyPool` per provider holds its keys (:class:`PooledKey`) as the credentials
document lists them. :meth:`KeyPool.take` spreads requests over the keys in turn, each within
its own requests and tokens per minute (token buckets, :func:`inferscale.router.limits.
bucket_admit`, the clients' limits' rules: tokens are an estimate taken at once and settled
with the answer's usage). A key the provider refuses is taken out on its own:

- 401/403 (:meth:`KeyPool.revoke`): until its Secret changes (new credentials with another
  value for that id); no waiting mends a wrong or rotated key.
- 429 (:meth:`KeyPool.back_off`): for the provider's ``Retry-After``, or else a backoff that
  doubles with each 429 in a row (:data:`BACKOFF_START_SECONDS` to
  :data:`BACKOFF_MAX_SECONDS`), until a request with it succeeds.

The provider as a whole is unusable only when no key is (:meth:`KeyPool.unusable_reason`).
:func:`rebuild` carries a key's state into new credentials while its value is unchanged, so a
credentials push never resets a backoff or brings back a refused key, and a rotated key starts
afresh.

Pure: no I/O; the clock (monotonic seconds) is passed in. Keys never appear in a ``repr``, a
report or a reason: :attr:`PooledKey.id` (``<Secret name>/<key>``) names them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from inferscale.protocol.credentials import ProviderKeyEntry
from inferscale.router.limits import bucket_admit

BACKOFF_START_SECONDS: Final = 1.0
"""A key's first 429 without ``Retry-After`` takes it out this long; each next one doubles it."""

BACKOFF_MAX_SECONDS: Final = 60.0
"""The longest a 429 takes a key out (``Retry-After`` included: a provider's hour-long
``Retry-After`` must not park a key past the next minute's quota)."""


@dataclass(slots=True)
class _Bucket:
    level: float
    stamp: float


@dataclass(slots=True, eq=False)
class PooledKey:
    """One key of a provider and what the router knows of it."""

    id: str
    key: str = field(repr=False)
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    revoked: bool = False
    """Refused by the provider (401/403): out until its Secret changes."""
    backoff_until: float = 0.0
    """Monotonic time before which the key is not used (after a 429)."""
    backoffs: int = 0
    """429s in a row (the backoff doubles with each)."""
    requests: _Bucket | None = None
    tokens: _Bucket | None = None

    def state(self, now: float) -> str:
        """``ok``, ``revoked`` or ``backing_off`` (what reports and gauges show)."""
        if self.revoked:
            return "revoked"
        return "backing_off" if now < self.backoff_until else "ok"

    def _admit(self, now: float, estimate: int) -> tuple[float, float, float]:
        """(requests left, tokens left, wait): wait 0 means both buckets hold the request."""
        requests_left = tokens_left = 0.0
        rpm, tpm = self.requests_per_minute, self.tokens_per_minute
        if rpm is not None:
            bucket = self.requests or _Bucket(float(rpm), now)
            requests_left, _, wait = bucket_admit(bucket.level, bucket.stamp, now, rpm, 1)
            if wait > 0:
                return 0.0, 0.0, wait
        if tpm is not None:
            cost = min(estimate, tpm)  # a request larger than a minute's quota still runs
            bucket = self.tokens or _Bucket(float(tpm), now)
            tokens_left, _, wait = bucket_admit(bucket.level, bucket.stamp, now, tpm, cost)
            if wait > 0:
                return 0.0, 0.0, wait
        return requests_left, tokens_left, 0.0

    def _take(self, now: float, requests_left: float, tokens_left: float) -> None:
        if self.requests_per_minute is not None:
            self.requests = _Bucket(requests_left, now)
        if self.tokens_per_minute is not None:
            self.tokens = _Bucket(tokens_left, now)


@dataclass(frozen=True, slots=True)
class Lease:
    """A key taken for one request, with the token estimate charged to it."""

    key: PooledKey
    estimate: int

    def settle(self, usage: Mapping[str, Any] | None) -> None:
        """Correct the token estimate with the answer's ``total_tokens`` (absent: kept)."""
        key = self.key
        used = usage.get("total_tokens") if isinstance(usage, Mapping) else None
        tpm = key.tokens_per_minute
        if not isinstance(used, int) or tpm is None or key.tokens is None:
            return
        level = key.tokens.level - (used - min(self.estimate, tpm))
        key.tokens.level = min(level, float(tpm))


class KeyPool:
    """The keys of one provider, taken in turn (see the module docstring)."""

    def __init__(self, keys: Iterable[PooledKey]) -> None:
        """Keys in the order the credentials list them."""
        self.keys = list(keys)
        self._next = 0

    def take(self, now: float, estimate: int, tried: Iterable[str] = ()) -> Lease | None:
        """The next key that is in use and whose rates hold the request; ``None``: none is.

        ``tried`` are ids this request already used (a retry on the next key skips them).
        """
        skip = set(tried)
        count = len(self.keys)
        for step in range(count):
            key = self.keys[(self._next + step) % count]
            if key.id in skip or key.revoked or now < key.backoff_until:
                continue
            requests_left, tokens_left, wait = key._admit(now, estimate)
            if wait > 0:
                continue
            key._take(now, requests_left, tokens_left)
            self._next = (self._next + step + 1) % count
            return Lease(key, estimate)
        return None

    def succeeded(self, lease: Lease) -> None:
        """The provider accepted the key: a 429 backoff starts again from its first step."""
        lease.key.backoffs = 0

    def revoke(self, lease: Lease) -> None:
        """The provider refused the key (401/403): out until its Secret changes."""
        lease.key.revoked = True

    def back_off(self, lease: Lease, now: float, retry_after: float | None) -> float:
        """The provider rate-limited the key (429): out for a while; returns how long."""
        key = lease.key
        if retry_after is not None and retry_after > 0:
            wait = min(retry_after, BACKOFF_MAX_SECONDS)
        else:
            wait = min(BACKOFF_START_SECONDS * 2**key.backoffs, BACKOFF_MAX_SECONDS)
        key.backoffs += 1
        key.backoff_until = max(key.backoff_until, now + wait)
        return wait

    def unusable_reason(self, now: float) -> str | None:
        """Why no key can take a request now (``None``: one can), in words without a key."""
        if not self.keys:
            return "has no API key (its Secret or key is missing)"
        states = [k.state(now) for k in self.keys]
        if "ok" in states:
            return None
        if all(s == "revoked" for s in states):
            return "has every API key refused by the provider (401/403): fix its Secret"
        soonest = min(k.backoff_until for k in self.keys if not k.revoked) - now
        return f"has every API key rate-limited (429); the first is back in {soonest:.1f} s"

    def report(self, now: float) -> list[dict[str, Any]]:
        """Each key's id and state (never the key), for the admin API."""
        out = []
        for key in self.keys:
            entry: dict[str, Any] = {"id": key.id, "state": key.state(now)}
            if key.state(now) == "backing_off":
                entry["backOffSeconds"] = round(key.backoff_until - now, 3)
            out.append(entry)
        return out


def metric_lines(pools: Mapping[str, KeyPool], now: float) -> Iterable[str]:
    """The gauge ``inferscale_router_provider_key_usable{provider, key}``, in text format.

    1 while a key is in use, 0 while it is refused or backing off. Key ids and provider ids
    match patterns without a character that would need escaping.
    """
    yield "# HELP inferscale_router_provider_key_usable Whether a provider's API key is in use."
    yield "# TYPE inferscale_router_provider_key_usable gauge"
    for provider, pool in pools.items():
        for key in pool.keys:
            up = 1 if key.state(now) == "ok" else 0
            labels = f'provider="{provider}",key="{key.id}"'
            yield f"inferscale_router_provider_key_usable{{{labels}}} {up}"


def rebuild(
    entries: Mapping[str, list[ProviderKeyEntry]], held: Mapping[str, KeyPool]
) -> dict[str, KeyPool]:
    """Pools for new credentials; a key whose id and value are unchanged keeps its state."""
    out: dict[str, KeyPool] = {}
    for provider, listed in entries.items():
        before = {k.id: k for k in held[provider].keys} if provider in held else {}
        keys = []
        for entry in listed:
            value = entry.key.get_secret_value()
            rates = (entry.requests_per_minute, entry.tokens_per_minute)
            old = before.get(entry.id)
            if old is None or old.key != value:
                keys.append(PooledKey(entry.id, value, *rates))
                continue
            if (old.requests_per_minute, old.tokens_per_minute) != rates:
                old.requests_per_minute, old.tokens_per_minute = rates
                old.requests = old.tokens = None  # new rates start from full buckets
            keys.append(old)
        pool = KeyPool(keys)
        if provider in held:
            pool._next = held[provider]._next % max(len(keys), 1)
        out[provider] = pool
    return out
