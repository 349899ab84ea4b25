"""The response cache's pure core: which requests it may answer, their keys, and a bounded store.

A request is looked up in two layers. The exact layer is a hash of the normalised request (its
question with whitespace collapsed and case folded, plus everything else it sends). The
semantic layer is the nearest cached question, by cosine similarity of embeddings, among those
cached under the same *partition*: the route, the model, the client key (unless the route
shares its cache), and the whole request except its last question (system prompt, earlier
turns, sampling parameters, tools). So the same question asked in another conversation, with
another system prompt, or by another tenant, never matches.

:class:`CacheStore` holds one route's answers within its bounds (entries and bytes): a new
answer evicts the oldest ones until it fits, and an answer larger than the whole bound is not
kept. Entries expire after the route's TTL; the oldest are also the first to expire, so
expired ones are dropped from the front on every write. Vectors are kept per partition in one
float32 matrix that grows by doubling (up to the entry bound) and shrinks by moving its last
row into a freed slot, so a lookup is one matrix-vector product.

Pure: numpy and the standard library only; time comes in as ``now``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]

CACHEABLE_PATHS: Final = frozenset(("/v1/chat/completions", "/v1/completions"))
"""Generation requests only: an embeddings request has no question to paraphrase."""

_PER_REQUEST_FIELDS: Final = frozenset(("stream", "stream_options", "user", "model"))
"""Body fields that do not change the answer's content (the model is keyed on its own)."""

ENTRY_OVERHEAD_BYTES: Final = 256
"""What an entry costs beyond its answer, question and vector (objects, dict slots)."""

_SPACES: Final = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The question as the exact layer compares it: whitespace collapsed, case folded."""
    return _SPACES.sub(" ", text).strip().casefold()


@dataclass(frozen=True, slots=True)
class CacheQuery:
    """Where a request's answer is looked up and stored."""

    partition: str
    """Digest of what must match exactly for a semantic hit (everything but the question)."""

    question: str
    """The last user message (or the prompt) as sent: what is embedded."""

    exact: str
    """Digest of the partition and the normalised question: the exact layer's key."""


def eligible(obj: Mapping[str, Any], any_temperature: bool) -> bool:
    """Whether a request may be answered from the cache (and its answer kept).

    Only a request for one answer (``n`` absent or 1); unless the route caches ``always``, only
    one asking for ``temperature: 0`` (absent means the API's default, 1: not deterministic).
    """
    n = obj.get("n", 1)
    if n != 1 or isinstance(n, bool):
        return False
    if any_temperature:
        return True
    temperature = obj.get("temperature")
    return (
        isinstance(temperature, int | float)
        and not isinstance(temperature, bool)
        and temperature == 0
    )


def _question(path: str, obj: Mapping[str, Any]) -> tuple[str, Any] | None:
    """(question, the rest of the conversation) of a request, or ``None`` when it has none."""
    if path == "/v1/completions":
        prompt = obj.get("prompt")
        return (prompt, None) if isinstance(prompt, str) else None
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, list):  # text parts only: an image or audio part is not a question
        texts = [
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        ]
        if len(texts) != len(content):
            return None
        content = "\n".join(texts)
    if not isinstance(content, str):
        return None
    extra = {k: v for k, v in last.items() if k not in ("role", "content")}
    return content, (messages[:-1], extra)


def cache_query(
    path: str, obj: Mapping[str, Any], *, route: str, model: str, client: str, shared: bool
) -> CacheQuery | None:
    """The request's keys, or ``None`` when it has no plain-text question to look up.

    ``client`` partitions answers per client key unless ``shared``.
    """
    if path not in CACHEABLE_PATHS:
        return None
    found = _question(path, obj)
    if found is None or not found[0].strip():
        return None
    question, earlier = found
    rest = {k: v for k, v in obj.items() if k not in _PER_REQUEST_FIELDS}
    rest.pop("messages" if path == "/v1/chat/completions" else "prompt", None)
    try:
        context = json.dumps(
            [path, route, model, "" if shared else client, earlier, rest],
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
    except (TypeError, ValueError, RecursionError):
        return None  # a body the parser accepted but that has no canonical form: not cached
    partition = hashlib.sha256(context.encode("utf-8", "surrogatepass")).hexdigest()
    exact_input = partition + "\x00" + normalise(question)
    exact = hashlib.sha256(exact_input.encode("utf-8", "surrogatepass")).hexdigest()
    return CacheQuery(partition, question, exact)


@dataclass(slots=True)
class CachedAnswer:
    """One cached answer and what it saved the first time."""

    key: str
    """The exact layer's key (:attr:`CacheQuery.exact`)."""
    partition: str
    question: str
    vector: Vector | None
    """The question's embedding (``None``: the exact layer alone)."""
    body: bytes
    """The answer's JSON as the engine or provider sent it (a non-streaming completion)."""
    prompt_tokens: int
    completion_tokens: int
    expires: float
    """When it stops being served (the clock of ``now``)."""
    cost: float = 0.0
    """What the answer cost at a hosted provider's prices (0: the cluster's own replicas)."""

    @property
    def size(self) -> int:
        """Bytes it holds against the store's bound."""
        vector = 0 if self.vector is None else self.vector.nbytes
        return len(self.body) + len(self.question) + vector + ENTRY_OVERHEAD_BYTES


class _Partition:
    """The vectors of one partition: a matrix whose first ``count`` rows are live."""

    __slots__ = ("count", "keys", "matrix", "rows")

    def __init__(self, dim: int) -> None:
        self.matrix: Vector = np.empty((4, dim), dtype=np.float32)
        self.keys: list[str] = []
        self.rows: dict[str, int] = {}
        self.count = 0

    def add(self, key: str, vector: Vector, limit: int) -> None:
        if self.count == len(self.matrix):
            grown = np.empty((min(2 * self.count, max(limit, 4)), self.matrix.shape[1]), np.float32)
            grown[: self.count] = self.matrix[: self.count]
            self.matrix = grown
        self.matrix[self.count] = vector
        self.rows[key] = self.count
        self.keys.append(key)
        self.count += 1

    def remove(self, key: str) -> None:
        row = self.rows.pop(key)
        last = self.count - 1
        if row != last:  # move the last row into the freed one
            moved = self.keys[last]
            self.matrix[row] = self.matrix[last]
            self.keys[row] = moved
            self.rows[moved] = row
        self.keys.pop()
        self.count = last

    def nearest(self, vector: Vector) -> tuple[str, float] | None:
        if not self.count:
            return None
        # einsum's own loop, not BLAS: a multi-threaded BLAS (numpy's OpenBLAS starts one
        # thread per core) made this product 10-20x slower on a busy machine (bench/cache),
        # and the router is one thread on one core anyway.
        scores = np.einsum("ij,j->i", self.matrix[: self.count], vector)
        best = int(np.argmax(scores))
        return self.keys[best], float(scores[best])


class CacheStore:
    """One route's cached answers within ``max_entries`` and ``max_bytes``."""

    def __init__(self, max_entries: int, max_bytes: int, dim: int) -> None:
        """An empty store for vectors of ``dim`` floats."""
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.dim = dim
        self.entries: OrderedDict[str, CachedAnswer] = OrderedDict()
        """Oldest first: the order of eviction and of expiry."""
        self.partitions: dict[str, _Partition] = {}
        self.bytes = 0

    def __len__(self) -> int:
        """Answers held."""
        return len(self.entries)

    def exact(self, key: str, now: float) -> CachedAnswer | None:
        """The answer stored under ``key``, unless it expired."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            self.remove(key)
            return None
        return entry

    def nearest(
        self, partition: str, vector: Vector, threshold: float, now: float
    ) -> tuple[CachedAnswer, float] | None:
        """The partition's most similar answer at or above ``threshold``, with its similarity."""
        index = self.partitions.get(partition)
        found = index.nearest(vector) if index is not None else None
        if found is None or found[1] < threshold:
            return None
        entry = self.exact(found[0], now)
        return (entry, found[1]) if entry is not None else None

    def put(self, entry: CachedAnswer, now: float) -> bool:
        """Keep ``entry`` (replacing one under its key), evicting the oldest to make room.

        Returns whether it was kept: not when it is already expired, larger than the whole
        bound, or its vector has the wrong shape.
        """
        if entry.vector is not None and entry.vector.shape != (self.dim,):
            return False
        size = entry.size
        if size > self.max_bytes or entry.expires <= now:
            return False
        if entry.key in self.entries:
            self.remove(entry.key)
        self._drop_expired(now)
        while self.entries and (
            len(self.entries) >= self.max_entries or self.bytes + size > self.max_bytes
        ):
            self.remove(next(iter(self.entries)))
        self.entries[entry.key] = entry
        self.bytes += size
        if entry.vector is not None:
            index = self.partitions.get(entry.partition)
            if index is None:
                index = self.partitions[entry.partition] = _Partition(self.dim)
            index.add(entry.key, entry.vector, self.max_entries)
        return True

    def remove(self, key: str) -> None:
        """Forget the answer under ``key`` (nothing when there is none)."""
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        self.bytes -= entry.size
        if entry.vector is not None:
            index = self.partitions[entry.partition]
            index.remove(key)
            if not index.count:
                del self.partitions[entry.partition]

    def _drop_expired(self, now: float) -> None:
        while self.entries:
            key, oldest = next(iter(self.entries.items()))
            if oldest.expires > now:
                return
            self.remove(key)


def usage_tokens(usage: object) -> tuple[int, int]:
    """(prompt, completion) tokens of an OpenAI ``usage`` object; 0 for what it lacks."""
    if not isinstance(usage, dict):
        return 0, 0
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) and prompt >= 0 else 0,
        completion if isinstance(completion, int) and completion >= 0 else 0,
    )


def answer_document(body: bytes, loads: Any) -> dict[str, Any] | None:
    """A non-streaming answer worth keeping, parsed with ``loads``; ``None`` otherwise.

    Kept: a chat or text completion object with at least one choice (an error object, a
    partial answer or anything else is not).
    """
    try:
        doc = loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("object") not in ("chat.completion", "text_completion"):
        return None
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices:
        return None
    if not all(isinstance(c, dict) for c in choices):
        return None
    return doc


def replay_chunks(doc: Mapping[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """A cached non-streaming answer as the chunks of a stream, in the API's shapes.

    Each choice's whole message (or text) comes as one chunk and its finish reason as a second;
    the usage chunk follows only when the client asked for it (``stream_options``).
    """
    chat = doc.get("object") == "chat.completion"
    head = {
        "id": doc.get("id", "cached"),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": doc.get("created", 0),
        "model": doc.get("model", ""),
    }
    chunks: list[dict[str, Any]] = []
    for position, choice in enumerate(doc.get("choices", ())):
        index = choice.get("index", position)
        if chat:
            message = choice.get("message")
            delta = dict(message) if isinstance(message, dict) else {"role": "assistant"}
            body = {"index": index, "delta": delta, "finish_reason": None}
            end = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
        else:
            body = {"index": index, "text": choice.get("text", ""), "finish_reason": None}
            end = {"index": index, "text": "", "finish_reason": choice.get("finish_reason")}
        chunks.append({**head, "choices": [body]})
        chunks.append({**head, "choices": [end]})
    if include_usage and isinstance(doc.get("usage"), dict):
        chunks.append({**head, "choices": [], "usage": doc["usage"]})
    return chunks


def encode_record(route: str, entry: CachedAnswer, encoder: str, origin: str) -> bytes:
    """``entry`` as it travels between routers (Redis value and pub/sub message).

    ``encoder`` names the embedding model (a router with another one ignores the vector);
    ``origin`` the router that wrote it (it ignores its own messages).
    """
    vector = None if entry.vector is None else base64.b64encode(entry.vector.tobytes()).decode()
    return json.dumps(
        {
            "route": route,
            "key": entry.key,
            "partition": entry.partition,
            "question": entry.question,
            "encoder": encoder,
            "vector": vector,
            "body": entry.body.decode("utf-8", "surrogateescape"),
            "tokens": [entry.prompt_tokens, entry.completion_tokens],
            "cost": entry.cost,
            "origin": origin,
        },
        separators=(",", ":"),
    ).encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class SharedRecord:
    """A decoded record: the route it belongs to, who wrote it, and the answer."""

    route: str
    origin: str
    entry: CachedAnswer


def decode_record(raw: bytes, encoder: str, dim: int, expires: float) -> SharedRecord | None:
    """A record written by :func:`encode_record`, expiring at ``expires``; ``None`` if invalid.

    A vector of another encoder or length is dropped (the answer stays for the exact layer).
    """
    try:
        doc = json.loads(raw.decode("utf-8", "surrogateescape"))
        route, key, partition = doc["route"], doc["key"], doc["partition"]
        question, body, origin = doc["question"], doc["body"], doc["origin"]
        prompt, completion = doc["tokens"]
        texts = (route, key, partition, question, body, origin)
        if not all(isinstance(t, str) for t in texts):
            return None
        if not all(isinstance(t, int) and t >= 0 for t in (prompt, completion)):
            return None
        cost = doc.get("cost", 0.0)
        if not isinstance(cost, int | float) or isinstance(cost, bool) or not 0 <= cost < 1e9:
            return None
        vector = None
        packed = doc.get("vector")
        if isinstance(packed, str) and doc.get("encoder") == encoder:
            vector = np.frombuffer(base64.b64decode(packed, validate=True), dtype=np.float32)
            if vector.shape != (dim,) or not np.all(np.isfinite(vector)):
                vector = None
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        return None
    answer = CachedAnswer(
        key,
        partition,
        question,
        vector,
        body.encode("utf-8", "surrogateescape"),
        prompt,
        completion,
        expires,
        float(cost),
    )
    return SharedRecord(route, origin, answer)


class StreamTap:
    """A copy of a relayed stream, for the cache, up to ``limit`` bytes (then nothing more)."""

    __slots__ = ("chunks", "limit", "size")

    def __init__(self, limit: int) -> None:
        """Keep at most ``limit`` bytes; a longer stream is not kept at all."""
        self.chunks: list[bytes] | None = []
        self.limit = limit
        self.size = 0

    def add(self, chunk: bytes) -> None:
        """Copy ``chunk`` (or give up on the stream past the limit)."""
        chunks = self.chunks
        if chunks is None:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.chunks = None
            return
        chunks.append(chunk)


def _merge_chunk(doc: dict[str, Any], choices: dict[int, dict[str, Any]], chunk: Any) -> bool:
    """Fold one stream chunk into ``choices``; False for a chunk the cache cannot replay."""
    if not isinstance(chunk, dict):
        return False
    for field in ("id", "created", "model"):
        if field in chunk:
            doc.setdefault(field, chunk[field])
    if isinstance(chunk.get("usage"), dict):
        doc["usage"] = chunk["usage"]
    for part in chunk.get("choices") or ():
        if not isinstance(part, dict) or not isinstance(part.get("index", 0), int):
            return False
        choice = choices.setdefault(part.get("index", 0), {"text": [], "role": None, "end": None})
        delta = part.get("delta")
        if isinstance(delta, dict):
            if set(delta) - {"role", "content", "refusal"} or delta.get("refusal"):
                return False  # tool calls, audio, a refusal: keep only plain text answers
            choice["role"] = delta.get("role") or choice["role"]
            text = delta.get("content")
        else:
            text = part.get("text")
        if text is not None and not isinstance(text, str):
            return False
        if text:
            choice["text"].append(text)
        if part.get("finish_reason"):
            choice["end"] = part["finish_reason"]
    return True


def stream_answer(events: list[str], chat: bool) -> dict[str, Any] | None:
    """A streamed answer's ``data`` events (through ``[DONE]``) as the non-streaming answer.

    ``None`` when it cannot be replayed exactly: no ``[DONE]``, a choice without its finish
    reason, an error event, or anything but plain text.
    """
    if not events or events[-1] != "[DONE]":
        return None
    doc: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    for event in events[:-1]:
        try:
            chunk = json.loads(event)
        except (ValueError, RecursionError):
            return None
        if not _merge_chunk(doc, choices, chunk):
            return None
    if not choices or any(c["end"] is None for c in choices.values()):
        return None
    doc["object"] = "chat.completion" if chat else "text_completion"
    doc["choices"] = [
        {
            "index": index,
            **(
                {"message": {"role": c["role"] or "assistant", "content": "".join(c["text"])}}
                if chat
                else {"text": "".join(c["text"])}
            ),
            "finish_reason": c["end"],
        }
        for index, c in sorted(choices.items())
    ]
    return doc
