"""The sim's tokenizer and prompt block hashes: shared by the sim and the router that predicts it.

The sim caches KV by these hashes and publishes them in its KV events; the router's
``predictedTTFT`` picker hashes each request's prompt the same way to look its blocks up in
the cache index. Both import this one module (the router and the sim are sibling layers), so
the two can never drift apart.

No tokenizer is downloaded and nothing touches the network. A prompt is split into words and
punctuation marks; each punctuation mark is one token and each word is one token per started
run of five characters. For English this lands within roughly +-30 % of Llama-3's BPE counts,
which is enough to make long prompts cost more than short ones; it is not a real tokenizer.

Token ids are CRC-32s of the pieces, so equal text gives equal ids in every process (Python's
``hash`` of ``str`` is salted per process; ``hash`` of a tuple of ints is not, and is used for
the chained block hashes).

Engines other than the sim hash their own tokenizer's ids (vLLM: the model's Hugging Face
tokenizer and chat template, then its ``--prefix-caching-hash-algo`` over the parent hash and
the block's ids, seeded from ``PYTHONHASHSEED``); :func:`engine_block_hashes` returns ``None``
for them, and the router falls back to ``leastPrefill`` rather than guess (docs/router.md).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

_PIECES = re.compile(r"\w+|[^\w\s]")
_ASCII_PIECES = re.compile(rb"[A-Za-z0-9_]+|[^A-Za-z0-9_ \t\n\r\x0b\x0c\x1c-\x1f]")
"""``_PIECES`` on ASCII bytes: in ASCII, ``str``'s ``\\w`` is ``[A-Za-z0-9_]`` and its ``\\s``
is ``[ \\t\\n\\r\\x0b\\x0c\\x1c-\\x1f]``. Matching bytes skips encoding every piece:
a 14k-token prompt tokenizes in ~2.4 ms instead of ~3.8 (the router does this on its event
loop for every ``predictedTTFT`` request; bench/routing/README.md)."""
_CHARS_PER_TOKEN = 5

HASHABLE_ENGINES: Final = frozenset({"sim"})
"""Engine kinds whose prompt block hashes the router computes exactly."""


def token_ids(text: str) -> list[int]:
    """Approximate token ids of ``text`` (see the module docstring for the rule)."""
    ids: list[int] = []
    crc = zlib.crc32
    if text.isascii():
        pieces: Iterable[bytes] = _ASCII_PIECES.findall(text.encode())
    else:
        pieces = (piece.encode() for piece in _PIECES.findall(text))
    for raw in pieces:
        if len(raw) <= _CHARS_PER_TOKEN:
            ids.append(crc(raw))
        else:
            ids.extend(crc(raw[i : i + _CHARS_PER_TOKEN]) for i in range(0, len(raw), 5))
    return ids


def count_tokens(text: str) -> int:
    """Approximate token count of ``text``."""
    return len(token_ids(text))


def render_chat(messages: Iterable[tuple[str, str]]) -> str:
    """Flatten (role, content) pairs with a Llama-3-like template, so roles cost tokens too."""
    return "".join(f"<|{role}|>\n{content}\n" for role, content in messages) + "<|assistant|>\n"


def block_hashes(ids: Sequence[int], block_size: int) -> tuple[int, ...]:
    """Chained hashes of each full block of ``ids``: equal hash means equal prefix up to there."""
    out: list[int] = []
    prev = 0
    for start in range(0, len(ids) - block_size + 1, block_size):
        prev = hash((prev, *ids[start : start + block_size]))
        out.append(prev)
    return tuple(out)


def _message_text(content: Any) -> str | None:
    # As the sim's ChatMessage.text(): a string, or the text parts of a list joined.
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        return None
    parts: list[str] = []
    for part in content:
        if not isinstance(part, Mapping):
            return None
        text = part.get("text")
        if text is not None and not isinstance(text, str):
            return None
        parts.append(text or "")
    return "".join(parts)


def _chat_ids(messages: list[Any]) -> list[int] | None:
    pairs: list[tuple[str, str]] = []
    for m in messages:
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            return None
        text = _message_text(m.get("content"))
        if text is None:
            return None
        pairs.append((m["role"], text))
    return token_ids(render_chat(pairs))


def _completion_ids(prompt: Any) -> list[int] | None:
    # The sim's three prompt shapes: text, token ids, a one-element list of text.
    if isinstance(prompt, str):
        return token_ids(prompt)
    if not isinstance(prompt, list) or not prompt:
        return None
    if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        return [int(p) for p in prompt]
    if len(prompt) == 1 and isinstance(prompt[0], str):
        return token_ids(prompt[0])
    return None


def request_token_ids(body: Mapping[str, Any]) -> list[int] | None:
    """The sim's token ids of a chat or completion request's prompt; ``None`` if it has none.

    A body the sim would refuse (no ``messages`` or ``prompt``, content of the wrong shape)
    gives ``None``, never an exception: the router reads client input here.
    """
    messages = body.get("messages")
    if messages is not None:
        return _chat_ids(messages) if isinstance(messages, list) else None
    return _completion_ids(body.get("prompt"))


def engine_block_hashes(
    engine: str, body: Mapping[str, Any], block_size: int
) -> tuple[int, ...] | None:
    """The prompt's block hashes as ``engine`` computes them, or ``None`` if the router can't.

    Only the sim's hashing is known here (:data:`HASHABLE_ENGINES`); for any other engine,
    and for a body without a prompt the sim would take, the answer is ``None``.
    """
    if engine not in HASHABLE_ENGINES or block_size < 1:
        return None
    ids = request_token_ids(body)
    if ids is None:
        return None
    return block_hashes(ids, block_size)
