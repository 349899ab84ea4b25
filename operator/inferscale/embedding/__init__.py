"""Sentence embeddings without torch: all-MiniLM-L6-v2 in numpy, and a static table from it.

Shared by the router's semantic cache and its model selection. Two encoders, one interface
(``encode``, ``encode_one``, ``dim``, ``name``, ``max_tokens``; rows L2-normalised, so cosine
similarity is a dot product):

- :func:`inferscale.embedding.store.load_static_encoder`: the request path's, well under a
  millisecond for a question, about 1.5 ms for a 1,000-token prompt (:mod:`.static`);
- :func:`inferscale.embedding.sentence.load_sentence_encoder`: the full transformer, for offline
  work (distilling the table, training, comparison rows in benchmarks).

Either loader raises :class:`EmbeddingUnavailable` with a message that says what to do; callers
turn that into a disabled feature and a condition, never a failed request. This package's root
names only the pure parts; the loaders (files) live in :mod:`.store` and :mod:`.sentence`.
"""

from inferscale.embedding.static import StaticEncoder
from inferscale.embedding.transformer import MODEL_NAME, EmbeddingUnavailable

__all__ = ["MODEL_NAME", "EmbeddingUnavailable", "StaticEncoder"]
