"""The pickers: which endpoint gets a request, as pure functions over an endpoint snapshot.

Every picker takes the candidates (ready endpoints whose circuit breaker is closed, with their
in-flight counts and, when the router scrapes engines, their queue and KV-cache use) plus the
request's inputs, and returns one candidate. Randomness and rotation come in as arguments, so
the same inputs always give the same answer; the what-if simulator runs this same code.

- ``leastInFlight``: fewest requests in flight (plus the engine's own waiting queue
  when scraped); ties go to the lower KV-cache use, then rotate from ``start``.
- ``leastPrefill``: fewest prompt tokens waiting for their first token (the prefill queued ahead
  of a new request's first token, estimated at the router); ties by ``leastInFlight``'s order.
  Better than counting requests when prompt lengths vary: one 8,000-token prompt holds up the
  next first token longer than ten 200-token ones.
- ``prefixHash``: consistent hashing with bounded loads (CHWBL, Mirrokni et al. 2016, as
  KubeAI's): the request's prompt prefix picks a point on a ring; walking clockwise, the first
  endpoint whose load after taking the request stays within
  ``ceil(load_bound * (total + 1) / n)`` gets it. One always qualifies (the least loaded one),
  and the same prefix keeps the same endpoint while it is not overloaded, which is what makes
  engines' prefix caches hit.
- ``weighted``: by weight, from a uniform number in [0, 1).
- ``roundRobin``: the ``counter``-th candidate.
- ``predictedTTFT``: the lowest predicted time to first token from each replica's cached
  blocks (:mod:`inferscale.router.ttft`); here, without a cache index, it is ``leastPrefill``.

A request for a LoRA adapter first narrows the candidates to the endpoints that hold it
(:func:`holding_adapter`). Among them, under the default strategies, :func:`adapter_affinity`
picks among the replicas within their share of the base model's adapter requests (decayed
counts, :class:`AdapterShares`, bounded by the route's load bound) and under a loose cap on
requests in flight: one this router sent the adapter to among its last ``adapterSlots`` adapters
(so it is likely still in a GPU slot there) with the smallest share, else the replica with the
smallest share among those whose next eviction would not drop another adapter's only warm copy
(ties by the ring keyed by the adapter's name). Each replica's slots then juggle fewer distinct
adapters (fewer swaps), and no replica takes more than its share (``bench/routing/adapters.py``).

No I/O, no clock, no HTTP library (import-linter enforces it).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol, TypeVar

from inferscale.api.v1alpha1.inference_route import Strategy


class Candidate(Protocol):
    """What a picker reads of an endpoint."""

    @property
    def key(self) -> str:
        """Stable identity (the address); hashed onto the ring."""

    @property
    def in_flight(self) -> int:
        """Requests this router has in flight there."""

    @property
    def weight(self) -> int:
        """Share under the weighted strategy."""

    @property
    def queued(self) -> int:
        """Requests waiting in the engine (scraped; 0 when unknown)."""

    @property
    def kv_usage(self) -> float:
        """KV-cache use 0..1 (scraped; 0 when unknown)."""

    @property
    def pending_prompt_tokens(self) -> int:
        """Prompt tokens of this router's requests there that have no first token yet."""


C = TypeVar("C", bound=Candidate)


class AdapterHolder(Protocol):
    """What the adapter rule reads of an endpoint."""

    @property
    def adapters(self) -> frozenset[str]:
        """LoRA adapters loaded there."""


H = TypeVar("H", bound=AdapterHolder)


class AdapterCandidate(Candidate, Protocol):
    """A candidate that remembers the adapters recently sent to it."""

    @property
    def recent_adapters(self) -> list[str]:
        """The last distinct adapters this router sent there, most recent last."""


A = TypeVar("A", bound=AdapterCandidate)


def remember_adapter(recent: list[str], adapter: str, slots: int) -> None:
    """Note that ``adapter`` was sent to an endpoint whose GPU holds ``slots`` adapters.

    An LRU list of the endpoint's last ``slots`` distinct adapters: what its engine's slots
    most likely hold (the engine evicts its least recently used idle adapter, as the sim does).
    """
    if adapter in recent:
        recent.remove(adapter)
    recent.append(adapter)
    del recent[: max(len(recent) - slots, 0)]


def holding_adapter(candidates: Sequence[H], adapter: str) -> Sequence[H]:
    """The candidates that hold ``adapter``; all of them when none does.

    The engine answers a request for an adapter it has not loaded with 404, so a replica that
    holds it is always preferred; when none does yet (the operator is loading it, or the table
    predates the load), every replica is tried rather than refusing a name the model serves.
    Among the holders the route's strategy decides, so load still balances between them.
    """
    holders = [c for c in candidates if adapter in c.adapters]
    return holders or candidates


DEFAULT_LOAD_BOUND: Final = 1.25


def hash64(text: str) -> int:
    """A stable 64-bit hash (the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def least_in_flight(candidates: Sequence[C], start: int = 0) -> C:
    """The candidate with the least load; ties by KV-cache use, then rotating from ``start``.

    Args:
        candidates: at least one.
        start: where the rotation begins among equals, so idle endpoints share traffic.
    """
    n = len(candidates)
    best = candidates[start % n]
    best_load = best.in_flight + best.queued
    best_kv = best.kv_usage
    for i in range(1, n):
        c = candidates[(start + i) % n]
        load = c.in_flight + c.queued
        if load < best_load or (load == best_load and c.kv_usage < best_kv):
            best, best_load, best_kv = c, load, c.kv_usage
    return best


BYTES_PER_TOKEN: Final = 4
"""About a token per 4 bytes of English text or JSON (OpenAI's rule of thumb)."""


def estimate_prompt_tokens(body_bytes: int) -> int:
    """A request's prompt tokens, estimated from its body's size before any tokenizer runs."""
    return max(body_bytes, 0) // BYTES_PER_TOKEN


def least_prefill(candidates: Sequence[C], start: int = 0) -> C:
    """The candidate with the fewest prompt tokens waiting for their first token.

    Ties (idle endpoints have none) go by ``least_in_flight``'s order: load, KV-cache use,
    then rotating from ``start``.
    """
    n = len(candidates)
    best = candidates[start % n]
    best_key = (best.pending_prompt_tokens, best.in_flight + best.queued, best.kv_usage)
    for i in range(1, n):
        c = candidates[(start + i) % n]
        key = (c.pending_prompt_tokens, c.in_flight + c.queued, c.kv_usage)
        if key < best_key:
            best, best_key = c, key
    return best


def round_robin(candidates: Sequence[C], counter: int) -> C:
    """The ``counter``-th candidate, wrapping around."""
    return candidates[counter % len(candidates)]


def weighted(candidates: Sequence[C], r: float) -> C:
    """A candidate chosen with probability proportional to its weight.

    Args:
        candidates: at least one.
        r: uniform in [0, 1).
    """
    total = 0
    for c in candidates:
        total += max(c.weight, 0)
    if total <= 0:
        return candidates[int(r * len(candidates)) % len(candidates)]
    target = r * total
    acc = 0
    for c in candidates:
        acc += max(c.weight, 0)
        if target < acc:
            return c
    return candidates[-1]


class HashRing:
    """Points on a ring for a fixed set of endpoint keys (built once per table, not per request)."""

    __slots__ = ("keys", "points", "owners")

    def __init__(self, keys: Sequence[str], replicas: int = 64) -> None:
        """Place ``replicas`` points per key."""
        self.keys = tuple(keys)
        pairs = sorted((hash64(f"{key}#{i}"), key) for key in set(keys) for i in range(replicas))
        self.points = [p for p, _ in pairs]
        self.owners = [k for _, k in pairs]

    def walk(self, h: int) -> list[str]:
        """Distinct keys in ring order, starting at the first point at or after ``h``."""
        n = len(self.points)
        if n == 0:
            return []
        i = bisect.bisect_left(self.points, h)
        seen: dict[str, None] = {}
        want = len(set(self.owners))
        for step in range(n):
            key = self.owners[(i + step) % n]
            if key not in seen:
                seen[key] = None
                if len(seen) == want:
                    break
        return list(seen)


def load_cap(total_in_flight: int, n: int, load_bound: float) -> int:
    """Most requests an endpoint may hold after taking one more (CHWBL's capacity)."""
    return math.ceil(load_bound * (total_in_flight + 1) / n)


def prefix_hash(
    candidates: Sequence[C], ring: HashRing, h: int, load_bound: float = DEFAULT_LOAD_BOUND
) -> C:
    """Bounded-load consistent hashing: the first endpoint clockwise from ``h`` under the cap.

    Args:
        candidates: at least one; endpoints on the ring that are not candidates are skipped.
        ring: built over (a superset of) the candidates' keys.
        h: the hash of the request's prefix.
        load_bound: the cap as a multiple of the mean load (>= 1).
    """
    by_key = {c.key: c for c in candidates}
    total = 0
    for c in candidates:
        total += c.in_flight
    cap = load_cap(total, len(candidates), load_bound)
    for key in ring.walk(h):
        found = by_key.get(key)
        if found is not None and found.in_flight + 1 <= cap:
            return found
    # Only when the ring misses candidates (it always holds one under the cap otherwise).
    return least_in_flight(candidates)


ADAPTER_FLIGHT_BOUND: Final = 3.0
""":func:`adapter_affinity`'s safety cap on requests in flight, as a multiple of the mean."""

ADAPTER_SHARE_WINDOW: Final = 512
""":class:`AdapterShares` halves its counts after this many adapter requests."""

ADAPTER_AFFINE: Final = frozenset({"leastInFlight", "leastPrefill", "prefixHash", "predictedTTFT"})
"""Strategies under which an adapter's requests follow :func:`adapter_affinity`; the others
(``roundRobin``, ``weighted``) are explicit choices and stay as configured."""


class AdapterShares:
    """How many of one base model's adapter requests this router sent to each endpoint, decayed.

    Every ``window`` requests all counts halve, so they follow the last few windows of traffic
    and an endpoint that stops getting requests drops out (its count falls below
    :attr:`FORGET`): memory stays bounded by the endpoints that recently got requests.
    """

    __slots__ = ("counts", "sent", "window")

    FORGET: Final = 1 / 64
    """A count below this after halving is dropped."""

    def __init__(self, window: int = ADAPTER_SHARE_WINDOW) -> None:
        """Empty counts; ``window`` (>= 1) requests between halvings."""
        self.counts: dict[str, float] = {}
        self.sent = 0
        self.window = max(window, 1)

    def count(self, key: str) -> float:
        """The endpoint's decayed count (0 when it got none lately)."""
        return self.counts.get(key, 0.0)

    def note(self, key: str) -> None:
        """Count a request sent to ``key``; halve every count at the end of a window."""
        self.counts[key] = self.counts.get(key, 0.0) + 1
        self.sent += 1
        if self.sent % self.window == 0:
            for name in list(self.counts):
                halved = self.counts[name] / 2
                if halved < self.FORGET:
                    del self.counts[name]
                else:
                    self.counts[name] = halved


def adapter_affinity(
    candidates: Sequence[A],
    ring: HashRing,
    adapter: str,
    shares: AdapterShares,
    load_bound: float = DEFAULT_LOAD_BOUND,
    start: int = 0,
    flight_bound: float = ADAPTER_FLIGHT_BOUND,
) -> A:
    """Warm first, then a cold replica that loses least, both among replicas within their share.

    A replica is eligible while its decayed count of the base model's adapter requests
    (``shares``), after taking this one, stays within ``load_bound`` times the candidates'
    mean (rounded up, as :func:`load_cap`), and its requests in flight within :func:`load_cap`
    at ``flight_bound`` (never tighter than ``load_bound``: a stalled replica is not fed its
    share). Among eligible ones:

    1. those that recently got ``adapter`` (its slot is likely still loaded): the one with the
       smallest share (ties rotate from ``start``);
    2. else :func:`cold_adapter_home`.

    When none is eligible, 2. among all candidates. The caller notes the pick in ``shares``
    (:meth:`AdapterShares.note`) and :func:`remember_adapter`.

    Why shares of requests rather than requests in flight: in-flight counts of a few requests
    per replica swing by several from one arrival to the next, so a bound tight enough to
    balance them spills warm adapters to cold replicas on every swing (a swap each), and one
    loose enough not to (2.0) let the replicas that swap least take up to 1.42x the mean of the
    requests in ``bench/routing/adapters.py``. Bounding the decayed share, and choosing by it,
    keeps every replica eligible for its warm adapters as long as the others are too.
    """
    n = len(candidates)
    total_flight = 0
    total_share = 0.0
    for c in candidates:
        total_flight += c.in_flight
        total_share += shares.count(c.key)
    flight_cap = load_cap(total_flight, n, max(flight_bound, load_bound))
    # Rounded up as :func:`load_cap` does, so a replica with no share yet is always eligible.
    share_cap = math.ceil(load_bound * (total_share + 1) / n)
    eligible = [
        c
        for c in candidates
        if c.in_flight + 1 <= flight_cap and shares.count(c.key) + 1 <= share_cap
    ]
    warm = [c for c in eligible if adapter in c.recent_adapters]
    if warm:
        return least_share(warm, shares, start)
    return cold_adapter_home(candidates, ring, adapter, eligible or candidates, shares)


def least_share(candidates: Sequence[A], shares: AdapterShares, start: int = 0) -> A:
    """The candidate with the smallest decayed share; ties rotate from ``start``."""
    n = len(candidates)
    best = candidates[start % n]
    best_count = shares.count(best.key)
    for i in range(1, n):
        c = candidates[(start + i) % n]
        count = shares.count(c.key)
        if count < best_count:
            best, best_count = c, count
    return best


def cold_adapter_home(
    candidates: Sequence[A],
    ring: HashRing,
    adapter: str,
    eligible: Sequence[A],
    shares: AdapterShares,
) -> A:
    """Where an adapter no eligible replica recently got goes: one of ``eligible``.

    The one whose next eviction leaves a copy elsewhere, then with the smallest share, then
    first clockwise from the adapter's point on the ring. A replica's next eviction is its
    least recently sent adapter (what its engine evicts to make room); evicting an adapter's
    only warm copy (recent on no other of ``candidates``) makes its next request swap it back
    in somewhere, so an eviction that leaves a copy elsewhere is the cheaper one, and a
    replica with nothing recent evicts nothing. Among equals the smallest share keeps the
    replicas eligible for the adapters already warm on them (in ``bench/routing/adapters.py``
    it takes the worst run from 4.6x to 5.1x fewer swaps than ``leastInFlight``, against the
    ring's order alone), and the ring keeps the choice stable while shares are equal (no
    traffic yet).
    """
    copies: dict[str, int] = {}
    for c in candidates:
        for name in c.recent_adapters:
            copies[name] = copies.get(name, 0) + 1
    position = {key: i for i, key in enumerate(ring.walk(hash64(f"lora:{adapter}")))}
    unplaced = len(position)  # endpoints missing from the ring go after those on it
    best = eligible[0]
    best_rank: tuple[bool, float, int] | None = None
    for c in eligible:
        evicts_only_copy = bool(c.recent_adapters) and copies.get(c.recent_adapters[0], 0) <= 1
        rank = (evicts_only_copy, shares.count(c.key), position.get(c.key, unplaced))
        if best_rank is None or rank < best_rank:
            best, best_rank = c, rank
    return best


def message_text(content: Any) -> str:
    """The text of a chat message's ``content``: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return ""


def prefix_text(body: Mapping[str, Any], characters: int) -> str:
    """The first ``characters`` of the request's prompt, whatever the endpoint's shape.

    Chat requests hash their first user message only, as KubeAI does: every turn of a
    conversation repeats it unchanged, so all turns land on the same replica, whereas text
    that runs on into later messages changes from turn to turn whenever the first message is
    shorter than ``characters``, and a system prompt (shared by every conversation of an
    application) would give them all one hash. Without a user message the first message's text
    is used. Completions use ``prompt``, embeddings ``input``; token-id prompts are rendered as
    numbers. Anything else gives the empty string (all such requests hash alike, and the load
    bound spreads them).
    """
    messages = body.get("messages")
    if isinstance(messages, list):
        first: Mapping[str, Any] | None = None
        for m in messages:
            if isinstance(m, Mapping):
                if m.get("role") == "user":
                    first = m
                    break
                if first is None:
                    first = m
        return "" if first is None else message_text(first.get("content"))[:characters]
    prompt = body.get("prompt", body.get("input"))
    if isinstance(prompt, list) and prompt:
        prompt = prompt[0] if not isinstance(prompt[0], int) else prompt
    if isinstance(prompt, str):
        return prompt[:characters]
    if isinstance(prompt, list):
        return ",".join(str(t) for t in prompt[: max(characters // 4, 1)])[:characters]
    return ""


def pick(
    strategy: Strategy,
    candidates: Sequence[C],
    *,
    counter: int = 0,
    r: float = 0.0,
    ring: HashRing | None = None,
    prefix: int = 0,
    load_bound: float = DEFAULT_LOAD_BOUND,
) -> C:
    """Dispatch to the strategy's picker.

    Args:
        strategy: the route's strategy.
        candidates: at least one.
        counter: a per-model request counter (round robin; rotation among equals).
        r: uniform in [0, 1) (weighted).
        ring: the model's ring (prefixHash); built from the candidates when absent.
        prefix: ``hash64`` of the prompt prefix (prefixHash).
        load_bound: prefixHash's bound.
    """
    if strategy == "leastInFlight":
        return least_in_flight(candidates, counter)
    if strategy in ("leastPrefill", "predictedTTFT"):
        # predictedTTFT needs the cache index and the prompt's block hashes (router.ttft);
        # without them it is leastPrefill, the picker it falls back to in the router.
        return least_prefill(candidates, counter)
    if strategy == "roundRobin":
        return round_robin(candidates, counter)
    if strategy == "weighted":
        return weighted(candidates, r)
    if ring is None:
        ring = HashRing([c.key for c in candidates])
    return prefix_hash(candidates, ring, prefix, load_bound)
