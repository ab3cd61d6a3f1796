"""Run benchmarks: ``python -m benchmarks [name ...]`` (default: every module in ``MODULES``).

Each benchmark is a module of this package with a ``main() -> None`` that prints its own report;
add a new one by appending its module name to :data:`MODULES`.
"""

from __future__ import annotations

import importlib
import sys

#: Benchmark modules, run in this order when no names are given.
MODULES: list[str] = [
    "redis_layer",
    "queue",
    "scheduling",
    "flow",
    "roundtrip",
    "latency",
    "logcost",
    "concurrent_enqueue",
]


def main(argv: list[str]) -> int:
    """Run the named benchmarks.

    :param argv: module names (from :data:`MODULES`); empty means all.
    :return: the process exit status.
    """
    names = argv or MODULES
    unknown = [name for name in names if name not in MODULES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(MODULES)}")
        return 2
    for name in names:
        print(f"== {name} ==")
        importlib.import_module(f"benchmarks.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
