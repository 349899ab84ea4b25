"""The lock files requirements*.txt agree with pyproject.toml; the refresh tool reads them right."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("lock_refresh", ROOT / "tools/deps/refresh.py")
assert _spec is not None and _spec.loader is not None
refresh = importlib.util.module_from_spec(_spec)
sys.modules["lock_refresh"] = refresh
_spec.loader.exec_module(refresh)

LOCK = """\
aiohttp==3.14.5 \\
    --hash=sha256:0133
    # via inferscale
async-timeout==5.0.1 ; python_full_version < '3.11.3' \\
    --hash=sha256:39e3
numpy==2.4.6 ; python_full_version < '3.12' \\
    --hash=sha256:aa
numpy==2.5.5 ; python_full_version >= '3.12' \\
    --hash=sha256:bb
Typing_Extensions==4.15.0 \\
    --hash=sha256:cc
"""


def test_pins_reads_names_versions_and_markers():
    assert refresh.pins(LOCK) == {
        "aiohttp": "3.14.5",
        "async-timeout": "5.0.1",
        "numpy": "2.4.6|2.5.5",
        "typing-extensions": "4.15.0",
    }


def test_changes_lists_added_removed_and_moved_packages_only():
    old = {"a": "1", "b": "2", "c": "3"}
    new = {"a": "1", "b": "2.1", "d": "4"}
    assert [str(c) for c in refresh.changes(old, new)] == [
        "b 2 -> 2.1",
        "c 3 -> (removed)",
        "d (new) -> 4",
    ]


def _declared(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return [Requirement(line) for line in names]


def _locked(path: Path) -> dict[str, list[str]]:
    """``name -> versions`` whose markers hold on this interpreter (and every version pinned)."""
    env = default_environment()
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.startswith((" ", "#")) or "==" not in line:
            continue
        requirement = Requirement(line.rstrip(" \\"))
        if requirement.marker is None or requirement.marker.evaluate(env):
            name = refresh.canonical(requirement.name)
            found.setdefault(name, []).extend(s.version for s in requirement.specifier)
    return found


@pytest.mark.parametrize(
    ("lock", "extra"), [("requirements-dev.txt", "dev"), ("requirements.txt", None)]
)
def test_every_declared_dependency_is_locked_within_its_range(lock, extra):
    locked = _locked(ROOT / lock)
    for requirement in _declared(extra):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        versions = locked.get(refresh.canonical(requirement.name))
        assert versions, f"{requirement.name} is declared in pyproject.toml but not in {lock}"
        assert len(versions) == 1, (requirement.name, versions)
        assert requirement.specifier.contains(versions[0], prereleases=True), (
            f"{lock} pins {requirement.name}=={versions[0]}, outside {requirement.specifier}"
        )


def test_the_runtime_lock_ships_the_versions_the_dev_lock_tests():
    dev, runtime = (
        _locked(ROOT / "requirements-dev.txt"),
        _locked(ROOT / "requirements.txt"),
    )
    assert set(runtime) <= set(dev)
    assert {n: v for n, v in dev.items() if n in runtime} == runtime
    # Nothing from the dev extra leaks into what the images install.
    assert not {"pytest", "mypy", "ruff", "uv"} & set(runtime)
