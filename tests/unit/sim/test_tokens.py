"""The local token approximation, block hashes and seeded output text."""

from __future__ import annotations

from inferscale.protocol.simtokens import count_tokens
from inferscale.sim.tokens import VOCAB, embedding, output_words, request_seed


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


def test_embedding_is_unit_length_and_deterministic():
    vec = embedding(3, 64)
    assert len(vec) == 64 and abs(sum(v * v for v in vec) - 1.0) < 1e-9
    assert vec == embedding(3, 64) and vec != embedding(4, 64)
