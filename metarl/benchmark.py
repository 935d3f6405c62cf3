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
from dataclasses import dataclass

import torch

from metarl.config import ConfigError

BENCHMARKS: dict[str, str] = {
    "sine": "metarl.supervised.benchmarks:benchmark_sine",
    "navigation": "metarl.rl.benchmarks:benchmark_navigation",
    "cheetah": "metarl.rl.benchmarks:benchmark_cheetah",
    "omniglot": "metarl.supervised.benchmarks:benchmark_omniglot",
}
ON_DEVICES = ("omniglot",)
"""The benchmarks that ``--device`` moves off the CPU (the others time CPU work: environment
stepping, small MLPs)."""


@dataclass(frozen=True)
class Spread:
    """Repeated measurements of one figure (seconds, or env steps per second): their median
    and their range, in the measurements' units."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("a spread needs at least one measurement")
        return cls(statistics.median(values), min(values), max(values))

    def scaled(self, factor: float) -> Spread:
        """The same measurements in other units (``factor`` > 0, e.g. 1e3 for ms)."""
        return Spread(self.median * factor, self.low * factor, self.high * factor)

    def format(self, spec: str = ".4g") -> str:
        """``"median (low-high)"``, each number formatted with ``spec``; the median alone
        when the lowest and highest read the same so formatted. For figures >= 0 (a
        negative one would read as a second minus)."""
        low, high = format(self.low, spec), format(self.high, spec)
        if low == high:
            return format(self.median, spec)
        return f"{self.median:{spec}} ({low}-{high})"


def seconds_per_call(fn: Callable[[], object], repeats: int, warmup: int = 3) -> Spread:
    """Wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return Spread.of(times)


def spread_note(repeats: int) -> str:
    """How a table's timed figures read: e.g. "median (min-max) of 5 timed calls"."""
    if repeats == 1:
        return "one timed call"
    return f"median (min-max) of {repeats} timed calls"


def announce(what: str) -> None:
    """Say on stderr what is being timed now (a benchmark runs for minutes)."""
    print(f"  timing {what} ...", file=sys.stderr, flush=True)


def timed_rows(rows: Sequence[tuple[str, Callable[[], Spread]]]) -> list[tuple[str, Spread]]:
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
    if isinstance(value, Spread):
        return value.format()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_benchmarks(name: str, *, repeats: int, device: str = "cpu") -> None:
    from metarl.devices import check_device_setting, resolve_device

    names = list(BENCHMARKS) if name == "all" else [name]
    for n in names:
        if n not in BENCHMARKS:
            raise ConfigError(f"benchmark {n!r}: known benchmarks are "
                              f"{', '.join(BENCHMARKS)} (or all)")
    check_device_setting(device, "--device")
    # auto: a GPU for the benchmarks that take one, the CPU for the others
    if device not in ("cpu", "auto") and any(n not in ON_DEVICES for n in names):
        raise ConfigError(f"--device {device}: only the {', '.join(ON_DEVICES)} benchmark "
                          "runs off the CPU; name it (metarl benchmark omniglot --device "
                          f"{device})")
    resolved = resolve_device(device, "--device", fix="leave --device out to time the CPU")
    print(f"machine: {machine_line()}")
    if resolved.type == "cuda":
        print(f"device: {resolved}, {torch.cuda.get_device_name(resolved)}")
    for n in names:
        module_name, function = BENCHMARKS[n].split(":")
        run = getattr(importlib.import_module(module_name), function)
        if n in ON_DEVICES:  # the others time the CPU whatever --device says
            run(repeats=repeats, device=resolved)
        else:
            run(repeats=repeats)


def synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """``fn`` followed by a wait for the work it queued on ``device``: a GPU runs kernels
    after the Python call returns, so a timer must wait for them."""
    if device.type != "cuda":
        return fn

    def call() -> None:
        fn()
        torch.cuda.synchronize(device)

    return call
