"""The static encoder: one vector per vocabulary token, distilled from the transformer.

The per-request path cannot afford the transformer (milliseconds per sentence, far more for
long prompts), so the router embeds with a table instead, as model2vec does: every vocabulary
token is run through all-MiniLM-L6-v2 once, alone between [CLS] and [SEP], and its sentence
vector kept. A text's vector is then the weighted mean of its tokens' rows: microseconds, at any
length.

Choices, each measured on the STS-B dev pairs (Spearman correlation of cosine similarity with
the human scores; the full transformer reaches 0.867):
- weights by log rank (``log(1 + id - 1990)``): BERT's WordPiece vocabulary lists its words
  roughly by frequency from id 1996 on, so rarer tokens weigh more, as in SIF/Zipf weighting:
  0.776 against 0.637 unweighted;
- the table centred on its mean row (the direction every token shares says nothing): 0.797;
- PCA to 256 dimensions: 0.796, a third less memory (the table is 15.6 MB as float16).

Pure: numpy only. Reading and writing the table file is :mod:`inferscale.embedding.store`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from inferscale.embedding.transformer import MODEL_NAME, Array, EncoderWeights, encode_batch
from inferscale.embedding.wordpiece import WordPiece

TABLE_VERSION = 1  # bump when the distillation changes: old cached tables are then ignored
TABLE_DIM = 256
MAX_TOKENS = 8192  # long prompts are cheap here; the bound keeps the work per text bounded
MAX_CHARS = 4 * MAX_TOKENS  # texts are cut here before tokenising (about 4 per token in English)
_FIRST_WORD_ID = 1990  # ids below ~1996 are [PAD], [unused*], specials and single characters
_DISTIL_BATCH = 512


class StaticEncoder:
    """Sentence vectors from the distilled table (``dim`` dimensions, L2-normalised)."""

    def __init__(
        self, table: np.ndarray, token_weights: Array, tokenizer: WordPiece, special_ids: set[int]
    ) -> None:
        if table.ndim != 2 or token_weights.shape != (table.shape[0],):
            raise ValueError("the table and its token weights do not match")
        # float32 in memory (31 MB; stored as float16): numpy converts float16 slowly, and the
        # gather per request would pay that conversion every time.
        self._table = table.astype(np.float32)
        self._weights = token_weights.astype(np.float32)
        self._tokenizer = tokenizer
        self._special = np.array(sorted(special_ids), dtype=np.int64)
        self.dim = int(table.shape[1])
        self.name = f"{MODEL_NAME}-static"
        self.max_tokens = MAX_TOKENS

    def encode(self, texts: Sequence[str]) -> Array:
        """One row per text; a text with no words (empty, only spaces) gives a zero row."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self.encode_one(text)
        return out

    def encode_one(self, text: str) -> Array:
        """The vector of one text."""
        ids = np.asarray(self._tokenizer.ids(text[:MAX_CHARS])[:MAX_TOKENS], dtype=np.int64)
        # Each distinct token once, weighted by its count: long prompts repeat their words, and
        # the gather from the table is the costly step.
        ids, counts = np.unique(ids, return_counts=True)
        if self._special.size:
            keep = ~np.isin(ids, self._special)
            ids, counts = ids[keep], counts[keep]
        if not ids.size:
            return np.zeros(self.dim, dtype=np.float32)
        weights = self._weights[ids] * counts.astype(np.float32)
        summed: Array = weights @ self._table[ids]
        norm = float(np.linalg.norm(summed))
        vector: Array = summed / norm if norm > 0 else summed
        return vector


def token_weights(vocab_size: int) -> Array:
    """Log-rank weights: higher for rarer tokens (see the module docstring)."""
    ranks = np.maximum(np.arange(vocab_size) - _FIRST_WORD_ID, 1)
    weights: Array = np.log1p(ranks).astype(np.float32)
    return weights


def distil_table(
    weights: EncoderWeights,
    cls_id: int,
    sep_id: int,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The static table: each token's transformer vector, centred, reduced to TABLE_DIM, float16.

    Deterministic for given weights (no sampling), a few minutes on one core: 30,522 tokens of
    three positions each.
    """
    vocab = weights.config.vocab_size
    raw = np.zeros((vocab, weights.config.hidden_size), dtype=np.float32)
    for start in range(0, vocab, _DISTIL_BATCH):
        stop = min(vocab, start + _DISTIL_BATCH)
        raw[start:stop] = encode_batch(weights, [[cls_id, i, sep_id] for i in range(start, stop)])
        if progress:
            progress(stop, vocab)
    centred = raw - raw.mean(axis=0)
    # Principal axes of the word tokens (not the unused and special ones, which are noise).
    # (A vocabulary too small to have them, as in tests, uses every row.)
    words = centred[_FIRST_WORD_ID:] if vocab > _FIRST_WORD_ID + TABLE_DIM else centred
    _, _, axes = np.linalg.svd(words - words.mean(axis=0), full_matrices=False)
    dims = min(TABLE_DIM, axes.shape[0])
    table: np.ndarray = (centred @ axes[:dims].T).astype(np.float16)
    return table
