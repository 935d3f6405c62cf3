"""Seconds per meta-iteration when metarl shares the CPU cores, under three thread settings.

    python scripts/time_shared_cores.py [CONFIG] [--copies 2] [--iterations 15] [--warmup 2]
        [--set KEY=VALUE ...]

Runs CONFIG's meta-iterations (a shipped config's name or a YAML file; default
``omniglot-5w1s-reptile``) alone and as ``--copies`` copies at once, each copy in its own
process, under:

- ``default``: torch's threads, one per core, whose OpenMP runtime spins while it waits;
- ``OMP_WAIT_POLICY=PASSIVE``: the same threads, which sleep while they wait;
- ``OMP_NUM_THREADS=1``: one thread per process.

Several processes with spinning threads on too few cores wait on threads that are not
running, and iterations that take a quarter of a second alone can take half a minute. Prints
one row per setting and number of copies: the median and the slowest seconds per
iteration over the copies (after ``--warmup`` iterations of each), from one run of the
script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

SETTINGS: dict[str, dict[str, str]] = {
    "default": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
}
THREAD_VARIABLES = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")


def time_iterations(config_name: str, overrides: Sequence[str], iterations: int) -> list[float]:
    """Seconds of each of ``iterations`` meta-iterations of a fresh trainer of the config."""
    from metarl.cli import resolve_config_path
    from metarl.experiment import load_config

    experiment, config = load_config(resolve_config_path(config_name), list(overrides))
    trainer = experiment.make_trainer(config)
    seconds = []
    for iteration in range(iterations):
        start = time.perf_counter()
        trainer.train_iteration(iteration)
        seconds.append(time.perf_counter() - start)
    return seconds


def run_copies(config_name: str, overrides: Sequence[str], iterations: int, copies: int,
               setting: dict[str, str]) -> list[list[float]]:
    """Each copy's seconds per iteration, the copies started together as processes."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES} | setting
    command = [sys.executable, __file__, "--child", config_name, "--iterations",
               str(iterations), *(arg for text in overrides for arg in ("--set", text))]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(copies)]
    results = []
    for process in processes:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a timed copy failed (exit code {process.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def summary_row(name: str, copies: int, results: list[list[float]], warmup: int) -> str:
    timed = [s for seconds in results for s in seconds[warmup:]]
    return (f"{name:<26} {copies:>6} {statistics.median(timed):>12.3f} "
            f"{max(timed):>12.3f}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="omniglot-5w1s-reptile",
                        help="a shipped config's name or a YAML file")
    parser.add_argument("--copies", type=int, default=2,
                        help="processes at once in the shared rows (default 2)")
    parser.add_argument("--iterations", type=int, default=15,
                        help="meta-iterations each process times (default 15)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="first iterations of each process left out (default 2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a config override (repeatable)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.copies < 2:
        parser.error(f"--copies = {args.copies}: give at least 2 (one copy runs alone anyway)")
    if args.warmup < 0 or args.iterations <= args.warmup:
        parser.error(f"--iterations = {args.iterations} must exceed --warmup = {args.warmup} "
                     "(>= 0)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(time_iterations(args.config, args.overrides, args.iterations)))
        return 0
    from metarl.cli import resolve_config_path
    from metarl.config import ConfigError
    from metarl.experiment import load_config

    try:  # a bad config or override is reported before any process starts
        load_config(resolve_config_path(args.config), list(args.overrides))
    except ConfigError as error:
        print(f"time_shared_cores: {error}", file=sys.stderr)
        return 2
    print(f"{args.config}: seconds per meta-iteration on {os.cpu_count()} cores, "
          f"{args.iterations - args.warmup} timed iterations per process")
    print(f"{'setting':<26} {'copies':>6} {'median':>12} {'slowest':>12}")
    for name, setting in SETTINGS.items():
        for copies in (1, args.copies):
            results = run_copies(args.config, args.overrides, args.iterations, copies, setting)
            print(summary_row(name, copies, results, args.warmup), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
