"""The sim's tokenizer and block hashes, and the router's hashing of request bodies with them."""

from __future__ import annotations

import random
import re
import zlib
from typing import Any

import pytest

from inferscale.protocol.simtokens import (
    block_hashes,
    count_tokens,
    engine_block_hashes,
    render_chat,
    request_token_ids,
    token_ids,
)
from inferscale.sim.openai import ChatCompletionRequest, CompletionRequest


def test_counts_words_punctuation_and_long_words() -> None:
    assert count_tokens("") == 0
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("internationalization") == 4  # 20 characters, 5 per token


def test_ids_are_stable_across_processes() -> None:
    # CRC-32, not Python's salted str hash.
    assert token_ids("the") == [0x3C456DE6]


def _reference_ids(text: str) -> list[int]:
    # The rule as first written: str regex, every piece encoded (non-ASCII text still runs it).
    ids: list[int] = []
    for piece in re.findall(r"\w+|[^\w\s]", text):
        raw = piece.encode()
        ids.extend(zlib.crc32(raw[i : i + 5]) for i in range(0, len(raw), 5))
    return ids


def test_ascii_fast_path_matches_the_str_rule() -> None:
    # Every ASCII character alone, between words, and in random runs (control characters,
    # the whitespace that only str's \s knows: \x1c-\x1f), then mixed with non-ASCII text.
    chars = [chr(c) for c in range(128)]
    for c in chars:
        for text in (c, f"ab{c}cd", f"{c}{c}longword{c}"):
            assert token_ids(text) == _reference_ids(text), repr(text)
    rng = random.Random(7)
    for _ in range(300):
        text = "".join(rng.choice(chars) for _ in range(rng.randrange(1, 60)))
        assert token_ids(text) == _reference_ids(text), repr(text)
        assert token_ids(text + "é ü") == _reference_ids(text + "é ü")


def test_block_hashes_chain_the_prefix() -> None:
    a = block_hashes(list(range(40)), 16)
    b = block_hashes(list(range(32)) + [0] * 8, 16)
    c = block_hashes([9] + list(range(1, 40)), 16)
    assert len(a) == 2 and a == b
    assert c[0] != a[0] and c[1] != a[1]


def test_chat_template_costs_tokens_per_role() -> None:
    text = render_chat([("system", "be brief"), ("user", "hi")])
    assert "<|system|>" in text and text.endswith("<|assistant|>\n")
    assert count_tokens(text) > count_tokens("be brief hi")


LONG = "The quick brown fox jumps over the lazy dog again and again. " * 20

CHATS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": LONG}]},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": LONG}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": LONG}, {"type": "x"}]}]},
    {"messages": [{"role": "assistant", "content": None}, {"role": "user", "content": LONG}]},
]


@pytest.mark.parametrize("body", CHATS)
def test_chat_bodies_hash_as_the_sim_does(body: dict[str, Any]) -> None:
    # The sim's own path: parse the request, render its messages, tokenize, hash.
    req = ChatCompletionRequest.model_validate({"model": "m", **body})
    ids = token_ids(render_chat((m.role, m.text()) for m in req.messages))
    assert request_token_ids(body) == ids
    assert engine_block_hashes("sim", body, 16) == block_hashes(ids, 16)
    assert len(block_hashes(ids, 16)) > 10


@pytest.mark.parametrize(
    ("prompt", "ids"),
    [(LONG, token_ids(LONG)), ([LONG], token_ids(LONG)), ([5, 6, 7], [5, 6, 7])],
)
def test_completion_prompts_hash_as_the_sim_does(prompt: Any, ids: list[int]) -> None:
    CompletionRequest.model_validate({"model": "m", "prompt": prompt})  # the sim takes it
    assert request_token_ids({"prompt": prompt}) == ids


def test_a_shared_prefix_shares_leading_blocks() -> None:
    a = engine_block_hashes("sim", {"prompt": LONG + " first"}, 16)
    b = engine_block_hashes("sim", {"prompt": LONG + " second question here"}, 16)
    assert a is not None and b is not None
    assert a[:10] == b[:10]


@pytest.mark.parametrize("engine", ["vllm", "sglang", "tgi", "trtllm", ""])
def test_other_engines_are_not_guessed(engine: str) -> None:
    assert engine_block_hashes(engine, CHATS[0], 16) is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": "hi"},
        {"messages": [1]},
        {"messages": [{"content": "no role"}]},
        {"messages": [{"role": "user", "content": 5}]},
        {"messages": [{"role": "user", "content": ["bare"]}]},
        {"messages": [{"role": "user", "content": [{"text": 3}]}]},
        {"prompt": []},
        {"prompt": ["a", "b"]},
        {"prompt": [True, 1]},
        {"prompt": {"x": 1}},
        {"input": "an embedding"},
    ],
)
def test_bad_or_promptless_bodies_give_none(body: dict[str, Any]) -> None:
    assert request_token_ids(body) is None
    assert engine_block_hashes("sim", body, 16) is None


def test_bad_block_size_gives_none() -> None:
    assert engine_block_hashes("sim", CHATS[0], 0) is None
