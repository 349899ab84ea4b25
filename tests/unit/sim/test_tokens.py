"""The local token approximation, block hashes and seeded output text."""

from __future__ import annotations

from inferscale.sim.tokens import (
    VOCAB,
    block_hashes,
    count_tokens,
    embedding,
    output_words,
    render_chat,
    request_seed,
    token_ids,
)


def test_counts_words_punctuation_and_long_words():
    assert count_tokens("") == 0
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("internationalization") == 4  # 20 characters, 5 per token


def test_ids_are_stable_across_processes():
    # CRC-32, not Python's salted str hash.
    assert token_ids("the") == [0x3C456DE6]


def test_block_hashes_chain_the_prefix():
    a = block_hashes(list(range(40)), 16)
    b = block_hashes(list(range(32)) + [0] * 8, 16)
    c = block_hashes([9] + list(range(1, 40)), 16)
    assert len(a) == 2 and a == b
    assert c[0] != a[0] and c[1] != a[1]


def test_output_is_a_pure_function_of_the_seed():
    assert output_words(5, 20) == output_words(5, 20)
    assert output_words(5, 20) != output_words(6, 20)
    words = output_words(5, 20)
    assert len(words) == 20 and not words[0].startswith(" ")
    # Every output word is exactly one token under the approximation.
    assert count_tokens("".join(words)) == 20
    assert all(count_tokens(w) == 1 for w in VOCAB)


def test_request_seed_prefers_the_request_then_the_prompt():
    assert request_seed(0, "a", 42) == 42
    assert request_seed(0, "a", None) == request_seed(0, "a", None)
    assert request_seed(0, "a", None) != request_seed(0, "b", None)
    assert request_seed(0, "a", None) != request_seed(1, "a", None)


def test_chat_template_costs_tokens_per_role():
    text = render_chat([("system", "be brief"), ("user", "hi")])
    assert "<|system|>" in text and text.endswith("<|assistant|>\n")
    assert count_tokens(text) > count_tokens("be brief hi")


def test_embedding_is_unit_length_and_deterministic():
    vec = embedding(3, 64)
    assert len(vec) == 64 and abs(sum(v * v for v in vec) - 1.0) < 1e-9
    assert vec == embedding(3, 64) and vec != embedding(4, 64)
