"""``python -m e2e.faults``: run the fault scenarios and write the table of docs/reliability.md.

Each scenario runs ``--repeat`` times at ``--size``; the table sums its requests over the
runs, takes the p99 over all of them and the worst recovery, and says whether every run kept
the scenario's bound. The table goes between the markers of ``--write`` (the prose around it
stays as written), with the command, the date and the machine. Exit status 1 when any run
broke its bound, 2 for bad arguments. Logs of every process stay in ``--log-dir``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from e2e.faults.ledger import OUTCOMES, Row, format_seconds
from e2e.faults.scenarios import LONG, SCENARIOS, SHORT, Scenario, Size

BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"
SIZES = {"short": SHORT, "long": LONG}


def machine() -> str:
    """The CPU model, cores, memory and OS: the figures depend on them."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = ""
    return (
        f"{model}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def run_scenario(
    scenario: Scenario, size: Size, repeat: int, log_dir: Path
) -> tuple[Row, list[str]]:
    """Run ``scenario`` ``repeat`` times; one merged row and every run's broken bounds."""
    records, problems, recoveries, notes = [], [], [], []
    for attempt in range(repeat):
        where = log_dir / re.sub(r"[^a-z0-9]+", "-", scenario.name) / str(attempt)
        row = scenario.run(size, where)
        row.scenario = scenario.name
        print(f"  run {attempt + 1}/{repeat}: {row.describe()}", flush=True)
        problems += [f"run {attempt + 1}: {p}" for p in scenario.bound(row)]
        records += row.records
        recoveries.append(row.recovery_text)
        notes += [(attempt + 1, n) for n in row.notes]
    merged = Row(scenario.name, records, 0.0, collapse(notes, repeat))
    merged.recoveries = recoveries
    return merged, problems


def collapse(notes: list[tuple[int, str]], runs: int) -> list[str]:
    """Each distinct note once, with the runs that made it (``every run`` when all did)."""
    by_text: dict[str, list[int]] = {}
    for run, text in notes:
        by_text.setdefault(text, []).append(run)
    return [
        f"{'every run' if len(r) == runs else 'run ' + ', '.join(map(str, r))}: {text}"
        for text, r in by_text.items()
    ]


def worst_recovery(texts: list[str]) -> str:
    """The worst of the runs' recovery texts (``not recovered`` beats any time)."""
    if "not recovered" in texts:
        return "not recovered"
    timed = [t for t in texts if t != "-"]
    if not timed:
        return "-"

    def seconds(text: str) -> float:
        value, unit = text.split()
        return float(value) / 1000 if unit == "ms" else float(value)

    return max(timed, key=seconds)


def table(rows: list[tuple[Scenario, Row, list[str]]]) -> str:
    """The markdown table of the rows."""
    head = [
        "scenario",
        "fault",
        "requests",
        *OUTCOMES,
        "failed by kind",
        "p99 (ok)",
        "recovery",
        "bound",
        "notes",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scenario, row, problems in rows:
        counts: Counter[str] = row.counts
        kinds = ", ".join(f"{k} x{n}" for k, n in sorted(row.failures.items())) or "none"
        verdict = "kept" if not problems else "BROKEN: " + "; ".join(problems)
        cells = [scenario.name, scenario.fault, str(len(row.records))]
        cells += [str(counts[o]) for o in OUTCOMES]
        cells += [kinds, format_seconds(row.p99), worst_recovery(row.recoveries)]
        cells.append(f"{verdict} ({scenario.promise})")
        cells.append("; ".join(row.notes))
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def write_table(path: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Put ``text`` between the markers of ``path`` (ValueError when they are missing)."""
    doc = path.read_text()
    start, stop = doc.find(begin), doc.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"{path} has no {begin} ... {end} markers")
    path.write_text(doc[: start + len(begin)] + "\n" + text + "\n" + doc[stop:])


def update_rows(path: Path, head: str, rows: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the table rows of the scenarios in ``rows`` (a :func:`table`), add new ones at
    its end, and say below the table which run updated them (``head``): a run of only some
    scenarios keeps the others' rows, each with the run that measured it."""
    doc = path.read_text()
    start, stop = doc.find(begin), doc.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"{path} has no {begin} ... {end} markers")
    lines = doc[start + len(begin) : stop].strip("\n").split("\n")
    fresh = {_row_name(line): line for line in rows.split("\n")[2:]}
    out = [fresh.pop(_row_name(line), line) if _row_name(line) else line for line in lines]
    last = max(i for i, line in enumerate(out) if line.startswith("|"))
    out[last + 1 : last + 1] = list(fresh.values())
    names = ", ".join(f"`{_row_name(line)}`" for line in rows.split("\n")[2:])
    note = f"Rows {names} from "
    out = [line for line in out if not line.startswith(note)]  # the same rows' older run
    while out and not out[-1]:
        out.pop()
    out.append(f"\n{note}{head}")
    path.write_text(doc[: start + len(begin)] + "\n" + "\n".join(out) + "\n" + doc[stop:])


def _row_name(line: str) -> str:
    """A table row's scenario name; empty for any other line (the head, its rule, text)."""
    if not line.startswith("|"):
        return ""
    name = line.strip("|").split("|", 1)[0].strip()
    return "" if name == "scenario" or set(name) <= {"-"} else name


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m e2e.faults", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="long")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scenario (1-20)")
    parser.add_argument("--only", action="append", default=[], help="a scenario's name (repeat)")
    parser.add_argument("--write", type=Path, help="the markdown file whose table to replace")
    parser.add_argument("--log-dir", type=Path, default=Path(".cluster/faults"))
    args = parser.parse_args(argv)
    names = {s.name for s in SCENARIOS}
    unknown = [n for n in args.only if n not in names]
    if unknown:
        parser.error(f"unknown scenario {unknown}; known: {sorted(names)}")
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat must be 1 to 20")
    if args.write is not None and not args.write.is_file():
        parser.error(f"{args.write} is not a file")
    return args


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    # SIGTERM (and SIGINT, even where a background shell ignored it) unwinds the scenario, so
    # every process it started is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    args = parse(argv)
    size = SIZES[args.size]
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    started, rows = time.monotonic(), []
    # The figures move with whatever else the machine runs: say how busy it was.
    load_before = os.getloadavg()[0]
    for scenario in chosen:
        print(f"{scenario.name}: {scenario.fault}", flush=True)
        row, problems = run_scenario(scenario, size, args.repeat, args.log_dir)
        rows.append((scenario, row, problems))
    took = time.monotonic() - started
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = shlex.join(["python", "-m", "e2e.faults", *argv])
    text = (
        f"`{command}` on {now}, {took:.0f} s; {size.rate:g} requests/s for {size.duration:g} s per "
        f"run, fault at {size.fault_at:.1f} s, {args.repeat} runs per scenario; "
        f"machine: {machine()}; load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end.\n\n{table(rows)}"
    )
    print("\n" + text)
    if args.write is not None and args.only:
        update_rows(args.write, text.split("\n\n", 1)[0], table(rows))
    elif args.write is not None:
        write_table(args.write, text)
    return 1 if any(problems for _, _, problems in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
