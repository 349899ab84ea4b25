"""Print the installed versions of the dependencies whose releases have broken us before.

CI prints them first thing, so a failure can be matched to a release at a glance.
"""

from __future__ import annotations

from importlib import metadata

KEY = ("kopf", "kubernetes", "pydantic", "aiohttp", "redis", "prometheus-api-client", "uvloop")


def main() -> None:
    """One ``name version`` line per key dependency (``missing`` when absent)."""
    for name in KEY:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "missing"
        print(f"  {name:<22} {version}")


if __name__ == "__main__":
    main()
