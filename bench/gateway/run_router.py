#!/usr/bin/env python3
"""Start `inferscale router` from this checkout inside the benchmark venv.

The benchmark runs every Python gateway under the same interpreter, with the same aiohttp,
uvloop and orjson, so the comparison is between the code and not the environments. The router
needs only pydantic, pydantic-settings, PyYAML and aiohttp, which the benchmark venv has, so it
runs from the source folder instead of an install. Arguments are `inferscale router`'s.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "operator"))

from inferscale.cli import router  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(prog="run_router")
    sub = parser.add_subparsers(dest="command", required=True)
    router.register(sub)
    args = parser.parse_args(["router", *sys.argv[1:]])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
