"""The sim's output text, seeds and embeddings; its tokenizer lives in ``protocol.simtokens``.

Everything here is deterministic and local. The tokenizer and the prompt block hashes moved to
:mod:`inferscale.protocol.simtokens` so the router can hash prompts exactly as the sim does;
the sim imports them from there.
"""

from __future__ import annotations

import random
import zlib

# Output vocabulary: short words, so each is exactly one token under protocol.simtokens' rule.
VOCAB: tuple[str, ...] = tuple(
    "the a of to and in is it that for on with as was at by be this are from or an had not "
    "but what all were when we there can more if out so said up its about into than them "
    "only some time could these two may then do first any my now such like our over man me "
    "even most made after also did many off must well back years where much your way "
    "down shall each just those how too state good very make world still "
    "own see men work long get here both life being under never day same know while "
    "last might us great old year come since go came right used take three".split()
)


def request_seed(base_seed: int, prompt: str, request_seed: int | None) -> int:
    """The output seed: the request's own ``seed``, else the server seed mixed with the prompt."""
    if request_seed is not None:
        return request_seed
    return (base_seed * 1_000_003) ^ zlib.crc32(prompt.encode())


def output_words(seed: int, n: int) -> list[str]:
    """``n`` output tokens as text pieces, a pure function of ``seed`` (first without a space)."""
    if n <= 0:
        return []
    words = random.Random(seed).choices(VOCAB, k=n)
    return [words[0], *(" " + w for w in words[1:])]


def embedding(text_seed: int, dimensions: int) -> list[float]:
    """A unit-length pseudo-embedding, a pure function of ``text_seed``."""
    rng = random.Random(text_seed)
    vec = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [v / norm for v in vec]
