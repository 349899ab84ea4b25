"""The router's index of client keys: a presented key to its :class:`ClientKey`, in O(1).

Client keys live here only as SHA-256 digests (the document is
:mod:`inferscale.protocol.credentials`). A presented bearer token is hashed and the digest
looked up (:meth:`KeyIndex.find`); the match is confirmed with ``hmac.compare_digest`` so no
comparison of secret-derived bytes depends on where they first differ. A usable key cannot be
recovered from a router's memory or its logs.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from inferscale.protocol.credentials import ClientKey


@dataclass(frozen=True)
class KeyIndex:
    """Client keys by digest, built once per credentials version (lookups are O(1))."""

    by_digest: dict[bytes, tuple[bytes, ClientKey]]

    @classmethod
    def build(cls, keys: Iterable[ClientKey]) -> KeyIndex:
        """Index ``keys``; a digest listed twice keeps its first entry."""
        by_digest: dict[bytes, tuple[bytes, ClientKey]] = {}
        for key in keys:
            raw = bytes.fromhex(key.digest)
            by_digest.setdefault(raw, (raw, key))
        return cls(by_digest)

    def find(self, presented: str) -> ClientKey | None:
        """The entry whose key hashes like ``presented``, or ``None``."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = self.by_digest.get(digest)
        if found is None:
            return None
        # The dict matched on the digest; confirm in constant time, so the final comparison of
        # secret-derived bytes never depends on where they first differ.
        stored, key = found
        return key if hmac.compare_digest(stored, digest) else None

    def __len__(self) -> int:
        """How many distinct digests are held."""
        return len(self.by_digest)
