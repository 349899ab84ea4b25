"""vLLM's KV cache events on the wire: what an engine publishes and a router's index reads.

vLLM (``--kv-events-config``, ``vllm/distributed/kv_events.py``) publishes each batch of cache
changes as one ZMQ multipart message on a PUB socket: ``[topic, seq, payload]``, ``seq`` an
8-byte big-endian counter from 0, ``payload`` msgpack. In the pinned vLLM (0.11) the structs
are ``array_like``: a batch is ``[ts, [event, ...]]`` (plus ``data_parallel_rank`` when set),
each event an array whose first item is its type's name:

- ``["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium]``
- ``["BlockRemoved", block_hashes, medium]``
- ``["AllBlocksCleared"]``

Later vLLM versions encode the same structs as maps (``{"type": "BlockStored", ...}``) and
hashes as bytes; :func:`decode_batch` reads both, and every malformed payload raises
:class:`KvEventFormatError` (never anything else), so a subscriber can count it and move on.
The sim (``inferscale sim --kv-events-config``) publishes with :func:`encode_batch`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import msgpack

SEQ_BYTES: Final = 8
DEFAULT_TOPIC: Final = "kv-events"
DEFAULT_PORT: Final = 5557
"""vLLM's documented example endpoint is ``tcp://*:5557``."""

Kind = Literal["stored", "removed", "cleared"]
_KINDS: Final[Mapping[str, Kind]] = {
    "BlockStored": "stored",
    "BlockRemoved": "removed",
    "AllBlocksCleared": "cleared",
}
_NAMES: Final[Mapping[Kind, str]] = {v: k for k, v in _KINDS.items()}


class KvEventFormatError(ValueError):
    """A payload or frame that is not a KV event batch."""


class EventLike(Protocol):
    """Anything with an event's three fields (the sim's ``KvEvent`` is one)."""

    @property
    def kind(self) -> Kind:
        """stored, removed or cleared."""

    @property
    def hashes(self) -> tuple[int, ...]:
        """The blocks (empty for cleared)."""

    @property
    def medium(self) -> str | None:
        """Where: ``GPU``, ``CPU``; None means the GPU (vLLM before media)."""


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """One decoded event."""

    kind: Kind
    hashes: tuple[int, ...]
    medium: str | None


@dataclass(frozen=True, slots=True)
class EventBatch:
    """One decoded message: its publish time and events, in order."""

    ts: float
    events: tuple[CacheEvent, ...]


def encode_batch(ts: float, events: Iterable[EventLike], block_size: int) -> bytes:
    """The msgpack payload of one batch, as vLLM 0.11 encodes it (module docstring)."""
    out: list[list[Any]] = []
    for e in events:
        if e.kind == "stored":
            # The sim does not send token ids (a router's index needs hashes only).
            out.append(["BlockStored", list(e.hashes), None, [], block_size, None, e.medium])
        elif e.kind == "removed":
            out.append(["BlockRemoved", list(e.hashes), e.medium])
        else:
            out.append(["AllBlocksCleared"])
    return msgpack.packb([ts, out])  # type: ignore[no-any-return]


def encode_seq(seq: int) -> bytes:
    """The sequence frame."""
    return seq.to_bytes(SEQ_BYTES, "big")


def decode_seq(frame: bytes) -> int:
    """The sequence number of a frame; :class:`KvEventFormatError` unless it is 8 bytes."""
    if len(frame) != SEQ_BYTES:
        raise KvEventFormatError(f"sequence frame of {len(frame)} bytes, expected {SEQ_BYTES}")
    return int.from_bytes(frame, "big", signed=True)


def _hash(value: object) -> int:
    if isinstance(value, bool):
        raise KvEventFormatError("a block hash is a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, bytes):
        return int.from_bytes(value, "big")
    raise KvEventFormatError(f"a block hash of type {type(value).__name__}")


def _hashes(value: object) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise KvEventFormatError("block_hashes is not a list")
    return tuple(_hash(v) for v in value)


def _medium(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise KvEventFormatError("medium is not a string")


def _event(raw: object) -> CacheEvent | None:
    """One event, or None for an event type this router does not know (skipped)."""
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        kind = _KINDS.get(raw[0])
        fields = {"hashes": raw[1] if len(raw) > 1 else None}
        where = 6 if kind == "stored" else 2
        fields["medium"] = raw[where] if len(raw) > where else None
    elif isinstance(raw, dict) and isinstance(raw.get("type"), str):
        kind = _KINDS.get(raw["type"])
        fields = {"hashes": raw.get("block_hashes"), "medium": raw.get("medium")}
    else:
        raise KvEventFormatError("an event is neither a tagged array nor a tagged map")
    if kind is None:
        return None
    if kind == "cleared":
        return CacheEvent("cleared", (), None)
    return CacheEvent(kind, _hashes(fields["hashes"]), _medium(fields["medium"]))


def decode_batch(payload: bytes) -> EventBatch:
    """Decode one payload (array or map form); :class:`KvEventFormatError` if malformed."""
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise KvEventFormatError(f"not msgpack: {e}") from None
    if isinstance(raw, list) and len(raw) >= 2:
        ts, events = raw[0], raw[1]
    elif isinstance(raw, dict):
        ts, events = raw.get("ts"), raw.get("events")
    else:
        raise KvEventFormatError("a batch is neither [ts, events] nor a map")
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not isinstance(events, list):
        raise KvEventFormatError("a batch needs a numeric ts and a list of events")
    decoded = (_event(e) for e in events)
    return EventBatch(float(ts), tuple(e for e in decoded if e is not None))


@dataclass(frozen=True, slots=True)
class KvEventsConfig:
    """The part of vLLM's ``--kv-events-config`` JSON that the sim and the router use."""

    enable: bool = False
    endpoint: str = f"tcp://*:{DEFAULT_PORT}"
    topic: str = DEFAULT_TOPIC

    def to_json(self) -> str:
        """The option's value, in vLLM's field names."""
        return json.dumps(
            {
                "enable_kv_cache_events": self.enable,
                "publisher": "zmq",
                "endpoint": self.endpoint,
                "topic": self.topic,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> KvEventsConfig:
        """Parse the option; ``ValueError`` says what is wrong."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"kv-events-config is not JSON: {e}") from None
        if not isinstance(raw, dict):
            raise ValueError("kv-events-config must be a JSON object")
        enable = raw.get("enable_kv_cache_events", False)
        publisher = raw.get("publisher", "zmq" if enable else "null")
        endpoint = raw.get("endpoint", f"tcp://*:{DEFAULT_PORT}")
        topic = raw.get("topic", "")
        if not isinstance(enable, bool) or publisher not in ("zmq", "null"):
            raise ValueError("enable_kv_cache_events must be a boolean, publisher zmq or null")
        if not isinstance(endpoint, str) or not endpoint.startswith("tcp://"):
            raise ValueError("endpoint must be a tcp:// address")
        if not isinstance(topic, str):
            raise ValueError("topic must be a string")
        return cls(enable and publisher == "zmq", endpoint, topic)


def subscribe_address(endpoint: str, host: str) -> str:
    """Where a subscriber connects for a publisher bound at ``endpoint`` on ``host``."""
    port = endpoint.rsplit(":", 1)[-1]
    if not port.isdigit():
        raise ValueError(f"endpoint {endpoint!r} has no port")
    return f"tcp://{host}:{port}"
