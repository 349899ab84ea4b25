"""Loaded by ``run_bench.py --profile-memory`` (through PYTHONPATH): where the operator's memory is.

Python imports ``sitecustomize`` at start-up when it is on the path, so this traces every
allocation of the operator process from its first import (``tracemalloc`` with
``INFERSCALE_MEMPROFILE_FRAMES`` frames, default 1: more frames slow the operator down so much
that it no longer keeps up; 0 traces nothing and only counts) and, every
``INFERSCALE_MEMPROFILE_SECONDS`` and at exit, writes the largest allocation sites, by line and
by the first frame inside ``inferscale``/``kopf``, to ``INFERSCALE_MEMPROFILE`` (the latest) and
``INFERSCALE_MEMPROFILE.history`` (every dump, so the one at the peak can be read). Tracing roughly
doubles the memory and slows the process: use it to attribute memory, not to measure the target.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
import sys
import threading
import time
import tracemalloc
import types

_OUT = os.environ.get("INFERSCALE_MEMPROFILE", "")
_EVERY = float(os.environ.get("INFERSCALE_MEMPROFILE_SECONDS", "10"))
_FRAMES = int(os.environ.get("INFERSCALE_MEMPROFILE_FRAMES", "1"))
_OURS = ("/inferscale/", "/kopf/", "/kubernetes/", "/aiohttp/")


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc_line() -> str:
    """glibc's view: bytes malloc hands out (C libraries, large Python objects) and holds free."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return "malloc: mallinfo2 not available"
    mib = 2**20
    return (
        f"malloc: in use {info.uordblks / mib:.1f} MiB, free but held {info.fordblks / mib:.1f} "
        f"MiB, mmapped {info.hblkhd / mib:.1f} MiB"
    )


def _census() -> list[str]:
    """Live objects by type: cheap next to a snapshot, and it names what holds the memory."""
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        counts[name] = counts.get(name, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:20]
    lines = [f"{count:10d}  {name}" for name, count in top]
    # Coroutines by function: a backlog of tasks (and the bodies they hold) shows up here.
    coroutines: dict[str, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, types.CoroutineType):
            code = obj.cr_code
            where = f"{code.co_qualname} ({code.co_filename.rsplit('/', 2)[-1]})"
            coroutines[where] = coroutines.get(where, 0) + 1
    lines += ["", "coroutines by function:"]
    lines += [
        f"{count:10d}  {name}" for name, count in sorted(coroutines.items(), key=lambda kv: -kv[1])
    ][:25]
    return lines


def _dump() -> None:
    if _FRAMES == 0:
        lines = [f"RSS {_rss_mib():.0f} MiB", _malloc_line(), f"pymalloc: {_pymalloc_line()}"]
        lines += ["", "objects tracked by gc, by type:", *_census()]
        _write(lines)
        return
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    current, peak = tracemalloc.get_traced_memory()
    lines = [
        f"RSS {_rss_mib():.0f} MiB; traced now {current / 2**20:.1f} MiB,"
        f" peak {peak / 2**20:.1f} MiB",
        f"allocated blocks {sys.getallocatedblocks()}",
        _malloc_line(),
        "",
        "by line:",
    ]
    for stat in snapshot.statistics("lineno")[:25]:
        lines.append(f"{stat.size / 2**20:8.1f} MiB {stat.count:9d}  {stat.traceback[0]}")
    lines += ["", "objects tracked by gc, by type:", *_census()]
    lines += ["", "by traceback (first project/library frames):"]
    for stat in snapshot.statistics("traceback")[:15]:
        frames = [str(f) for f in stat.traceback if any(p in f.filename for p in _OURS)]
        lines.append(f"{stat.size / 2**20:8.1f} MiB {stat.count:9d}")
        lines += [f"      {frame}" for frame in frames[:6]]
    _write(lines)


def _pymalloc_line() -> str:
    """Python's small-object allocator: blocks in use now (its arenas are 1 MiB mmaps)."""
    return f"{sys.getallocatedblocks()} blocks allocated"


def _write(lines: list[str]) -> None:
    tmp = _OUT + ".tmp"
    with open(tmp, "w") as out:
        out.write("\n".join(lines) + "\n")
    os.replace(tmp, _OUT)
    # Every dump is also kept, so the one at the peak can be read after the run.
    with open(_OUT + ".history", "a") as history:
        history.write(f"=== {time.strftime('%H:%M:%S')}\n" + "\n".join(lines) + "\n")


def _loop() -> None:
    while True:
        time.sleep(_EVERY)
        try:
            _dump()
        except Exception as error:
            print(f"memprofile: {error!r}", file=sys.stderr)


if _OUT:
    if _FRAMES > 0:
        tracemalloc.start(_FRAMES)
    threading.Thread(target=_loop, name="memprofile", daemon=True).start()
    atexit.register(_dump)
