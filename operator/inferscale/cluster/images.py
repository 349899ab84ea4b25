"""The image map: container image -> the local command the launcher runs for it.

The built-in map is ``images.yaml`` beside this module; a cluster may add or override entries
with its own file (``ClusterConfig.image_map``). An entry may also name ``paths``: files inside
the image that a pod's ``command`` can name (``/app/llama-server``), each standing for a local
command, so a Deployment written for the real image runs here unchanged.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class UnmappedImage(LookupError):
    """The image has no entry in the map (reported on the pod as ErrImagePull)."""


@dataclass(frozen=True)
class ImageMap:
    """Image name (with or without tag) to entrypoint argv, and in-image paths to commands."""

    entries: dict[str, list[str]]
    paths: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per image key: an absolute path inside the image -> the local command it stands for."""

    @classmethod
    def load(cls, extra: str | Path | None = None) -> ImageMap:
        """The built-in map, overlaid with ``extra`` when given."""
        text = resources.files("inferscale.cluster").joinpath("images.yaml").read_text()
        entries, paths = _parse(yaml.safe_load(text))
        if extra:
            more, more_paths = _parse(yaml.safe_load(Path(extra).read_text()))
            entries.update(more)
            paths.update(more_paths)
        return cls(entries, paths)

    def _key(self, image: str) -> str:
        if image in self.entries:
            return image
        name = strip_tag(image)
        if name in self.entries:
            return name
        raise UnmappedImage(image)

    def entrypoint(self, image: str) -> list[str]:
        """The entrypoint argv of ``image``.

        Raises:
            UnmappedImage: neither the image with its tag nor its bare name is mapped.
        """
        return list(self.entries[self._key(image)])

    def local_argv(self, image: str, argv: list[str]) -> list[str]:
        """``argv`` with a first word that names a mapped file of ``image`` made local."""
        if not argv:
            return argv
        try:
            paths = self.paths.get(self._key(image), {})
        except UnmappedImage:
            return argv
        return [paths.get(argv[0], argv[0]), *argv[1:]]


def _parse(doc: Any) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    images = (doc or {}).get("images") or {}
    entries = {str(k): [str(a) for a in v["command"]] for k, v in images.items()}
    paths = {
        str(k): {str(p): str(c) for p, c in (v.get("paths") or {}).items()}
        for k, v in images.items()
        if v.get("paths")
    }
    return entries, paths


def strip_tag(image: str) -> str:
    """``registry:5000/a/b:1.2@sha256:..`` -> ``registry:5000/a/b``."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def resolve_argv(argv: list[str]) -> list[str]:
    """Make ``inferscale``/``python`` mean this environment's, and find other words on PATH."""
    if not argv:
        return argv
    first, rest = argv[0], argv[1:]
    bin_dir = Path(sys.executable).parent
    if first in ("python", "python3"):
        return [sys.executable, *rest]
    if first == "inferscale":
        script = bin_dir / "inferscale"
        return (
            [str(script), *rest] if script.exists() else [sys.executable, "-m", "inferscale", *rest]
        )
    if "/" not in first:
        found = shutil.which(first, path=f"{bin_dir}:/usr/local/bin:/usr/bin:/bin")
        if found:
            return [found, *rest]
    return [first, *rest]
