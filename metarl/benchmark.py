"""``metarl benchmark``: speed figures printed side by side from one run (never in tests)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

from metarl.config import ConfigError

BENCHMARKS: dict[str, str] = {
    "sine": "metarl.supervised.benchmarks:benchmark_sine",
    "navigation": "metarl.rl.benchmarks:benchmark_navigation",
    "cheetah": "metarl.rl.benchmarks:benchmark_cheetah",
    "omniglot": "metarl.supervised.benchmarks:benchmark_omniglot",
}


def seconds_per_call(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def announce(what: str) -> None:
    """Say on stderr what is being timed now (a benchmark runs for minutes)."""
    print(f"  timing {what} ...", file=sys.stderr, flush=True)


def timed_rows(rows: Sequence[tuple[str, Callable[[], float]]]) -> list[tuple[str, float]]:
    """``(label, measure())`` for each row, announcing each before it is measured."""
    measured = []
    for label, measure in rows:
        announce(label)
        measured.append((label, measure()))
    return measured


def is_installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def machine_line() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}")


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in
                        enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_benchmarks(name: str, *, repeats: int) -> None:
    names = list(BENCHMARKS) if name == "all" else [name]
    for n in names:
        if n not in BENCHMARKS:
            raise ConfigError(f"benchmark {n!r}: known benchmarks are "
                              f"{', '.join(BENCHMARKS)} (or all)")
    print(f"machine: {machine_line()}")
    for n in names:
        module_name, function = BENCHMARKS[n].split(":")
        getattr(importlib.import_module(module_name), function)(repeats=repeats)
