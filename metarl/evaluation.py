"""Summaries of adaptation curves: mean, standard error and 95% interval over tasks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from metarl.checkpoint import CHECKPOINT_NAME, atomic_write_text

Z_95 = 1.959963984540054
"""Two-sided 95% quantile of the normal distribution (interval = mean ± Z_95 · SEM)."""

EVALUATION_NAME = "evaluation.json"
COMMAND_LINE_KEYS = ("steps", "tasks", "seed")
"""Evaluation keys that ``metarl evaluate`` sets with options of their own (``--steps`` ...)."""


def summarize(values: np.ndarray) -> dict[str, list[float]]:
    """Per-column mean, standard error of the mean, and 95% half-width.

    Args:
        values: shape ``(T, S)``, one row per task, one column per number of adaptation steps.

    Returns:
        ``{"mean": [S], "sem": [S], "ci95": [S]}`` with SEM = std(ddof=1) / sqrt(T)
        (0 when T = 1) and ci95 = 1.96 · SEM.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"expected values of shape (tasks, steps), got {values.shape}")
    num_tasks = values.shape[0]
    mean = values.mean(axis=0)
    sem = (values.std(axis=0, ddof=1) / np.sqrt(num_tasks) if num_tasks > 1
           else np.zeros_like(mean))
    return {"mean": mean.tolist(), "sem": sem.tolist(), "ci95": (Z_95 * sem).tolist()}


def first_step_worse_than_start(means: list[float]) -> int | None:
    """The first adaptation step whose mean loss is above the one before adaptation
    (``means[0]``), or None: where adapting starts to diverge."""
    return next((step for step, value in enumerate(means[1:], start=1)
                 if value > means[0]), None)


def checkpoint_fingerprint(run_dir: str | Path) -> str | None:
    """SHA-256 (hex) of the run directory's checkpoint file, None if it has none."""
    path = Path(run_dir) / CHECKPOINT_NAME
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def evaluation_settings(evaluation_config: dict[str, Any]) -> dict[str, Any]:
    """An evaluation section without :data:`COMMAND_LINE_KEYS` (a result's own keys)."""
    return {k: v for k, v in evaluation_config.items() if k not in COMMAND_LINE_KEYS}


def write_evaluation(run_dir: str | Path, result: dict[str, Any],
                     evaluation_config: dict[str, Any],
                     baseline_config: dict[str, Any] | None = None, *,
                     output_dir: str | Path | None = None) -> Path:
    """Write ``result`` to ``evaluation.json`` in ``output_dir`` (default: ``run_dir``) with
    the fingerprint of the evaluated checkpoint, ``run_dir``'s (``checkpoint_sha256``), which
    tells later readers whether it is still that one, the config's evaluation section it was
    evaluated with (``evaluation_config``, without steps, tasks and seed: the result's own keys
    hold the values used) and, where baselines were evaluated, the baseline section they were
    made with (``baseline_config``). Written outside the run, it also names the run
    (``run_dir``, absolute)."""
    output = Path(run_dir if output_dir is None else output_dir)
    path = output / EVALUATION_NAME
    elsewhere = output.resolve() != Path(run_dir).resolve()
    result = {**result, "evaluation_config": evaluation_settings(evaluation_config),
              **({"baseline_config": baseline_config} if baseline_config is not None else {}),
              **({"run_dir": str(Path(run_dir).resolve())} if elsewhere else {}),
              "checkpoint_sha256": checkpoint_fingerprint(run_dir)}
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path


def shown_steps(steps: list[int]) -> list[int]:
    """The step counts a console table shows: all of up to 6, else 0-3, 5 and the last."""
    if len(steps) <= 6:
        return list(steps)
    return sorted({s for s in steps if s in (0, 1, 2, 3, 5)} | {steps[-1]})


def _significant(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits, but whole numbers rather than exponents
    below a million (a CI of 240, not 2.4e+02)."""
    text = f"{value:.{digits}g}"
    return f"{value:.0f}" if "e+" in text and abs(value) < 1e6 else text


def format_table(curves: dict[str, dict[str, list[float]]], steps: list[int],
                 metric: str) -> str:
    """A plain-text table: one row per curve, ``mean ± ci95`` after chosen step counts (blank
    after step counts a curve lacks: a policy that does not adapt has step 0 only), and a
    last line saying what ± is (papers often print one standard error instead)."""
    columns = [steps.index(s) for s in shown_steps(steps)]
    name_width = max(len(name) for name in [*curves, metric])
    header = f"{metric:<{name_width}}" + "".join(f"{'step ' + str(steps[i]):>19}"
                                                  for i in columns)
    rows = [header]
    for name, curve in curves.items():
        cells = "".join(f"{_significant(curve['mean'][i], 4):>9} ± "
                        f"{_significant(curve['ci95'][i], 2):<7}"
                        if i < len(curve["mean"]) else " " * 19 for i in columns)
        rows.append(f"{name:<{name_width}}{cells}")
    rows.append("± : 95% confidence interval over the test tasks (1.96 standard errors)")
    return "\n".join(rows)
