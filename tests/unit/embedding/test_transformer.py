"""The numpy BERT encoder: shapes, masking, validation of weights and inputs, the GELU."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inferscale.embedding.transformer import (
    EmbeddingUnavailable,
    EncoderConfig,
    EncoderWeights,
    _gelu,
    encode_batch,
    encoder_weights,
)
from tests.unit.embedding.tiny import CONFIG, CONFIG_JSON, tensors


@pytest.fixture(scope="module")
def weights() -> EncoderWeights:
    return encoder_weights(tensors(), CONFIG)


def test_rows_are_unit_vectors(weights: EncoderWeights) -> None:
    out = encode_batch(weights, [[2, 5, 6, 3], [2, 7, 3]])
    assert out.shape == (2, CONFIG.hidden_size)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_a_padded_batch_gives_the_vectors_of_each_text_alone(weights: EncoderWeights) -> None:
    texts = [[2, 5, 6, 7, 8, 9, 3], [2, 10, 3], [2, 11, 12, 13, 3]]
    together = encode_batch(weights, texts)
    alone = np.vstack([encode_batch(weights, [t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_word_order_matters(weights: EncoderWeights) -> None:
    """Positions reach the output: the same tokens in another order give another vector."""
    a, b = encode_batch(weights, [[2, 5, 6, 7, 3], [2, 7, 6, 5, 3]])
    assert float(a @ b) < 0.9999


def test_an_empty_batch_is_an_empty_matrix(weights: EncoderWeights) -> None:
    assert encode_batch(weights, []).shape == (0, CONFIG.hidden_size)


@pytest.mark.parametrize(
    "ids",
    [[[]], [[2] * (CONFIG.max_positions + 1)], [[2, CONFIG.vocab_size, 3]], [[2, -1, 3]]],
    ids=["empty text", "too long", "id past the vocabulary", "negative id"],
)
def test_bad_token_ids_are_refused(weights: EncoderWeights, ids: list[list[int]]) -> None:
    with pytest.raises(ValueError):
        encode_batch(weights, ids)


def test_a_missing_tensor_is_named() -> None:
    broken = tensors()
    del broken["encoder.layer.1.output.dense.bias"]
    with pytest.raises(EmbeddingUnavailable, match=r"encoder\.layer\.1\.output\.dense\.bias"):
        encoder_weights(broken, CONFIG)


def test_a_misshapen_tensor_is_named() -> None:
    broken = tensors()
    broken["embeddings.word_embeddings.weight"] = np.zeros((3, 8), np.float32)
    with pytest.raises(EmbeddingUnavailable, match="word_embeddings.*shape"):
        encoder_weights(broken, CONFIG)


def test_config_is_read_from_config_json() -> None:
    assert EncoderConfig.from_json(CONFIG_JSON) == CONFIG


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden_size": None}, "hidden_size"),
        ({"num_hidden_layers": True}, "num_hidden_layers"),
        ({"num_attention_heads": 3}, "multiple of the heads"),
        ({"hidden_act": "relu"}, "hidden_act"),
        ({"vocab_size": -5}, "vocab_size"),
    ],
)
def test_an_unusable_config_is_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(EmbeddingUnavailable, match=message):
        EncoderConfig.from_json({**CONFIG_JSON, **change})


def test_gelu_is_the_exact_erf_gelu() -> None:
    x = np.linspace(-12, 12, 4001, dtype=np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(float)])
    np.testing.assert_allclose(_gelu(x), exact, atol=2e-6)
