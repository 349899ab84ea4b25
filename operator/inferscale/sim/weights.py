"""The sim's weight cache on disk: read its manifest, fill it as a preload would (file I/O).

What the manifest means and how long a start takes are ``sim/startup.py``'s (pure); this module
only touches the directory.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from inferscale.sim.startup import MANIFEST, Manifest, parse_manifest, profile_for

SHARD: Final = "inferscale-sim/model-00001-of-00001.safetensors"
"""A stand-in weights file the preload writes (real bytes, a bounded size)."""
SHARD_BYTES: Final = 1024 * 1024
"""Bytes the stand-in holds: enough that an unwritable or full cache fails the preload, few
enough that a test cluster does not fill its disk with 16 GB per model."""


def read_manifest(cache_dir: str | os.PathLike[str]) -> Manifest | None:
    """The cache's manifest, or ``None`` when it is missing or not a manifest."""
    try:
        text = (Path(cache_dir) / MANIFEST).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    return parse_manifest(text)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def preload(
    cache_dir: str | os.PathLike[str],
    model: str,
    preset: str,
    seconds: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Manifest:
    """Fill the cache: "download" for ``seconds``, write the stand-in shard, then the manifest.

    The manifest is written last and atomically, so a preload that dies half-way leaves a cache
    that replicas read as empty. Raises ``OSError`` when the directory cannot be written (checked
    before the download, so a bad volume fails at once).
    """
    root = Path(cache_dir)
    profile = profile_for(preset)
    shard = root / SHARD
    _write_atomic(shard, b"")  # fail fast on an unwritable cache
    await sleep(seconds)
    _write_atomic(shard, os.urandom(SHARD_BYTES) if profile.weights_bytes else b"")
    manifest = Manifest(model=model, preset=preset, bytes=profile.weights_bytes)
    _write_atomic(root / MANIFEST, manifest.to_json().encode())
    return manifest
