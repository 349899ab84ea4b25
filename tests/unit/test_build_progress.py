"""tools/build-progress.sh: the long builds' progress lines and their failure report."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "build-progress.sh"


def run_build(tmp_path: Path, build: str, pattern: str) -> subprocess.CompletedProcess[str]:
    """Source the script in bash and wait for ``build`` (a shell command) run in the background."""
    log = tmp_path / "build.log"
    script = f"""
set -euo pipefail
say() {{ echo "[test] $*" >&2; }}
source {SCRIPT}
( {build} ) >{log} 2>&1 &
wait_for_build $! {log} "steps done" '{pattern}' || exit 7
echo finished
"""
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "BUILD_PROGRESS_SECONDS": "0.2"},
        check=False,
    )


def test_progress_counts_matching_lines_and_success_goes_on(tmp_path: Path) -> None:
    done = run_build(tmp_path, "echo '[1/3] a'; echo noise; echo '[2/3] b'; sleep 0.5", r"^\[")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "finished"
    assert "[test] 2 steps done so far" in done.stderr


def test_empty_pattern_counts_every_line(tmp_path: Path) -> None:
    done = run_build(tmp_path, "printf 'a\\nb\\nc\\n'; sleep 0.5", "")
    assert done.returncode == 0, done.stderr
    assert "[test] 3 steps done so far" in done.stderr


def test_a_failed_build_says_so_and_shows_the_log_tail(tmp_path: Path) -> None:
    done = run_build(tmp_path, "echo 'error: no such package'; sleep 0.3; exit 2", "")
    assert done.returncode == 7
    assert "finished" not in done.stdout
    assert "the build failed; last lines of" in done.stderr
    assert "error: no such package" in done.stderr
