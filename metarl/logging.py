"""What a run shows and keeps: a progress bar, TensorBoard scalars, and ``metrics.jsonl``."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from metarl.checkpoint import atomic_write_text

METRICS_NAME = "metrics.jsonl"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in order (a torn last line is skipped)."""
    records: list[dict[str, Any]] = []
    path = Path(path)
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def truncate_metrics(path: Path, last_iteration: int) -> None:
    """Drop records after ``last_iteration`` (they belong to work lost since the checkpoint).

    The file is replaced atomically: a run killed while resuming keeps its whole log.
    """
    kept = [r for r in read_metrics(path) if r.get("iteration", 0) <= last_iteration]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def work_bar(total: int, description: str, unit: str, *, enabled: bool) -> tqdm:
    """A progress bar with ETA over one piece of work (an evaluation, a video), cleared from
    the terminal when it ends; ``enabled`` is ``run.progress``. Use it as a context manager."""
    return tqdm(total=total, desc=description, unit=unit, disable=not enabled,
                dynamic_ncols=True, mininterval=0.5, leave=False)


class RunLogger:
    """Logs one record per meta-iteration to every sink a run has.

    Args:
        run_dir: the run directory (``metrics.jsonl`` and ``tensorboard/`` go there).
        total: the number of meta-iterations of the whole run.
        start: iterations already done (when resuming); later records are discarded.
        progress: show a tqdm progress bar with ETA and the ``shown`` metrics.
        tensorboard: write TensorBoard scalars.
        shown: metric names to show on the progress bar.
    """

    def __init__(self, run_dir: Path, total: int, *, start: int = 0, progress: bool = True,
                 tensorboard: bool = True, shown: Sequence[str] = (),
                 description: str = "meta-train") -> None:
        self.metrics_path = run_dir / METRICS_NAME
        if start > 0:
            truncate_metrics(self.metrics_path, start)
        elif self.metrics_path.exists():
            self.metrics_path.unlink()
        self._file = self.metrics_path.open("a")
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # Events from iteration start + 1 on belong to work lost since the checkpoint
            # (or, for a new run, to an earlier one that never wrote a checkpoint here).
            self._writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start + 1)
        self._bar = tqdm(total=total, initial=start, desc=description, disable=not progress,
                         dynamic_ncols=True, mininterval=0.5, unit="it")
        self._shown = tuple(shown)
        self._started = time.time()

    def log(self, iteration: int, metrics: Mapping[str, float]) -> None:
        """Record the metrics of meta-iteration ``iteration`` (1-based)."""
        record = {"iteration": iteration, **{k: float(v) for k, v in metrics.items()},
                  "wall_time": time.time()}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for name, value in metrics.items():
                if math.isfinite(float(value)):
                    self._writer.add_scalar(name, float(value), iteration)
        postfix = {k: f"{float(metrics[k]):.4g}" for k in self._shown if k in metrics}
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    def write(self, message: str) -> None:
        """Print a line without breaking the progress bar."""
        self._bar.write(message)

    def close(self) -> None:
        self._bar.close()
        self._file.close()
        if self._writer is not None:
            self._writer.close()
