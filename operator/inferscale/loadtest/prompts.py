"""Prompt text of a given token count, with shared prefixes where the trace has them.

Pure and deterministic: the same seed and arrival give the same text in every process. A prompt
is short common English words, each one token under the sim's counting rule and, with its leading
space, under the BPE vocabularies of the usual open models; so ``N`` words cost about ``N`` prompt
tokens (the chat template adds a few).

Requests with prefix blocks (Mooncake ``hash_ids``) are built block by block, each block's text a
function of its id alone, so equal ids give equal prefixes and a prefix-aware router and a
prefix cache see the reuse the trace recorded. Other requests get words drawn for them alone, so
no two share a prefix by accident.
"""

from __future__ import annotations

import random
from collections import OrderedDict

from inferscale.loadtest.arrivals import Arrival
from inferscale.loadtest.trace import MOONCAKE_BLOCK_TOKENS
from inferscale.sim.tokens import VOCAB

BLOCK_CACHE_SIZE = 1024
"""Block texts kept for reuse (each about 3 KB at 512 tokens)."""


class PromptBuilder:
    """Builds each arrival's prompt; keeps a bounded cache of block texts."""

    def __init__(self, seed: int, block_tokens: int = MOONCAKE_BLOCK_TOKENS) -> None:
        """Texts depend on ``seed``; a block holds ``block_tokens`` words."""
        self.seed = seed
        self.block_tokens = block_tokens
        self._blocks: OrderedDict[int, list[str]] = OrderedDict()

    def _words(self, key: str, count: int) -> list[str]:
        # Seeding with a string hashes it with SHA-512: stable across processes and platforms.
        return random.Random(f"{self.seed}/{key}").choices(VOCAB, k=count)

    def _block(self, block_id: int) -> list[str]:
        words = self._blocks.get(block_id)
        if words is None:
            words = self._words(f"block/{block_id}", self.block_tokens)
            self._blocks[block_id] = words
            if len(self._blocks) > BLOCK_CACHE_SIZE:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(block_id)
        return words

    def build(self, arrival: Arrival) -> str:
        """``arrival.prompt_tokens`` words: its blocks first, then words of its own."""
        want = arrival.prompt_tokens
        words: list[str] = []
        for block_id in arrival.blocks:
            if len(words) >= want:
                break
            words.extend(self._block(block_id))
        del words[want:]
        if len(words) < want:
            words.extend(self._words(f"request/{arrival.index}", want - len(words)))
        return " ".join(words)
