"""The full sentence encoder: tokenizer plus the numpy transformer, loaded from the package.

Exact all-MiniLM-L6-v2 vectors, at a cost that rules it out of the per-request path (measured on
one core of the 2-vCPU development VM: about 7 ms for a 10-token sentence, 0.4 s for 256 tokens).
It serves offline work: distilling the static table, training the selection classifier, and the
comparison rows of bench/cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inferscale.embedding.package import ModelFiles, read_model
from inferscale.embedding.transformer import (
    MODEL_NAME,
    Array,
    EmbeddingUnavailable,
    EncoderConfig,
    EncoderWeights,
    encode_batch,
    encoder_weights,
)
from inferscale.embedding.wordpiece import WordPiece, wordpiece_from_json

MAX_TOKENS = 256  # the model's own max_seq_length (sentence_bert_config.json)
_BATCH = 32


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence vectors (384 dimensions, L2-normalised)."""

    def __init__(self, weights: EncoderWeights, tokenizer: WordPiece, max_tokens: int) -> None:
        self._weights = weights
        self._tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.dim = weights.config.hidden_size
        self.name = MODEL_NAME

    @property
    def weights(self) -> EncoderWeights:
        """The transformer's weights (the static table is distilled from them)."""
        return self._weights

    @property
    def tokenizer(self) -> WordPiece:
        """The model's WordPiece tokenizer."""
        return self._tokenizer

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids, with [CLS] and [SEP], truncated to :attr:`max_tokens`."""
        cls_id, sep_id = self._tokenizer.vocab["[CLS]"], self._tokenizer.vocab["[SEP]"]
        room = self.max_tokens - 2
        return [[cls_id, *self._tokenizer.ids(text)[:room], sep_id] for text in texts]

    def encode(self, texts: Sequence[str]) -> Array:
        """One row per text, L2-normalised; similar lengths are batched together."""
        ids = self.token_ids(texts)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        # Sorting by length keeps the padding (wasted work) of each batch small.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), _BATCH):
            chunk = order[start : start + _BATCH]
            out[chunk] = encode_batch(self._weights, [ids[i] for i in chunk])
        return out

    def encode_one(self, text: str) -> Array:
        """The vector of one text."""
        row: Array = self.encode([text])[0]
        return row


def sentence_encoder_from(files: ModelFiles, max_tokens: int | None = None) -> SentenceEncoder:
    """Build the encoder from files already read (see :func:`read_model`).

    ``max_tokens`` defaults to the model's 256, or its position count if that is smaller.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    config = EncoderConfig.from_json(files.config)
    if max_tokens is None:
        max_tokens = min(MAX_TOKENS, config.max_positions)
    if not 2 < max_tokens <= config.max_positions:
        raise ValueError(f"max_tokens must be within 3..{config.max_positions}")
    try:
        tensors = load(files.safetensors)
    except (SafetensorError, ValueError) as err:
        raise EmbeddingUnavailable(f"the model's weights are not usable: {err}") from err
    weights = encoder_weights(tensors, config)
    tokenizer = wordpiece_from_json(files.tokenizer_json)
    if not {"[CLS]", "[SEP]"} <= tokenizer.vocab.keys():
        raise EmbeddingUnavailable("tokenizer.json: the vocabulary lacks [CLS] or [SEP]")
    return SentenceEncoder(weights, tokenizer, max_tokens)


def load_sentence_encoder(
    path: Path | None = None, max_tokens: int = MAX_TOKENS
) -> SentenceEncoder:
    """The full encoder from the installed package (or a model zip at ``path``).

    Raises:
        EmbeddingUnavailable: the model is missing or corrupt; the message says what to do.
    """
    return sentence_encoder_from(read_model(path), max_tokens)
