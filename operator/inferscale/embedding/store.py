"""The static table on disk: where it lives, how it is built once and read at every start.

A table file (``.npz``, no pickles) holds the table, the tokenizer it was made with and a
small JSON header (format version, model digest). It is named after the model zip's digest, so
a new model package never reads an old table. Where it lives, first match wins:

1. ``INFERSCALE_EMBEDDING_TABLE``: one file, read-only (the router image builds it at image
   build time and points here; the package itself is then not needed at run time);
2. ``INFERSCALE_EMBEDDING_DIR``, else ``~/.cache/inferscale/embedding``: built there on first
   use from the installed package (a few minutes on one core), or by
   ``inferscale embedding build``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from inferscale.embedding.package import model_digest, read_model
from inferscale.embedding.sentence import sentence_encoder_from
from inferscale.embedding.static import (
    TABLE_VERSION,
    StaticEncoder,
    distil_table,
    token_weights,
)
from inferscale.embedding.transformer import MODEL_NAME, EmbeddingUnavailable
from inferscale.embedding.wordpiece import wordpiece_from_json

TABLE_ENV = "INFERSCALE_EMBEDDING_TABLE"
DIR_ENV = "INFERSCALE_EMBEDDING_DIR"
_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_MAX_TABLE_BYTES = 200 * 1024 * 1024


def table_dir() -> Path:
    """Where built tables are kept."""
    configured = os.environ.get(DIR_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "inferscale" / "embedding"


def table_name(model_digest: str) -> str:
    """The file name of the table for one model zip and one table version."""
    return f"static-{model_digest[:16]}-v{TABLE_VERSION}.npz"


def load_static_encoder(
    path: Path | None = None, *, build_if_missing: bool = True, model_zip: Path | None = None
) -> StaticEncoder:
    """The fast encoder for the request path.

    Args:
        path: a table file to read; default: ``INFERSCALE_EMBEDDING_TABLE``, else the cache.
        build_if_missing: build the table from the installed model when the cache has none
            (minutes); otherwise a missing table raises.
        model_zip: the model to find (or build) the cached table for; default: the installed
            package's.

    Raises:
        EmbeddingUnavailable: no table and no way to build one, or a corrupt table.
    """
    explicit = path or (Path(os.environ[TABLE_ENV]) if os.environ.get(TABLE_ENV) else None)
    if explicit is not None:
        return read_table(explicit)
    # The digest alone names the cached table: the weights are read only to build one.
    cached = table_dir() / table_name(model_digest(model_zip))
    if cached.is_file():
        return read_table(cached)
    if not build_if_missing:
        raise EmbeddingUnavailable(
            f"no static embedding table at {cached}: run `inferscale embedding build`"
        )
    return read_table(build_table(cached, model_zip))


def build_table(
    out: Path | None = None,
    model_zip: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Distil the table from the installed model (or ``model_zip``) and write it atomically.

    Returns:
        The table file's path (``out``, or its place in the cache).
    """
    files = read_model(model_zip)
    encoder = sentence_encoder_from(files)
    vocab = encoder.tokenizer.vocab
    table = distil_table(encoder.weights, vocab["[CLS]"], vocab["[SEP]"], progress)
    header = {
        "format": TABLE_VERSION,
        "model": MODEL_NAME,
        "model_sha256": files.digest,
        "dim": int(table.shape[1]),
    }
    target = out or table_dir() / table_name(files.digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        table=table,
        tokenizer=np.frombuffer(files.tokenizer_json.encode(), dtype=np.uint8),
        header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
    )
    # Written beside the target and renamed: a reader never sees half a table, and two
    # builders racing each write a whole one.
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(buffer.getvalue())
    # Temporary files are private (0600); the table is read by other users (the router image
    # runs as a non-root user), so it gets a plain file's mode.
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, target)
    return target


def read_table(path: Path) -> StaticEncoder:
    """Read a table file written by :func:`build_table`.

    Raises:
        EmbeddingUnavailable: missing, too large, not a table, or from another format version.
    """
    try:
        if path.stat().st_size > _MAX_TABLE_BYTES:
            raise EmbeddingUnavailable(f"{path} is too large to be a static embedding table")
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            table = data["table"]
            tokenizer_json = bytes(data["tokenizer"]).decode()
    except (OSError, KeyError, ValueError, UnicodeDecodeError) as err:
        raise EmbeddingUnavailable(f"cannot read the static embedding table {path}: {err}") from err
    if not isinstance(header, dict) or header.get("format") != TABLE_VERSION:
        raise EmbeddingUnavailable(
            f"{path} is a table of another format ({header!r}); rebuild it with "
            "`inferscale embedding build`"
        )
    if table.ndim != 2 or table.dtype != np.float16:
        raise EmbeddingUnavailable(f"{path}: the table is not a float16 matrix")
    tokenizer = wordpiece_from_json(tokenizer_json)
    vocab = tokenizer.vocab
    if len(vocab) != table.shape[0] or max(vocab.values()) >= table.shape[0]:
        raise EmbeddingUnavailable(
            f"{path}: the table and its tokenizer disagree on the vocabulary"
        )
    special = {vocab[token] for token in _SPECIAL_TOKENS if token in vocab}
    return StaticEncoder(table, token_weights(table.shape[0]), tokenizer, special)
