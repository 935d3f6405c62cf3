"""How adaptation improved over meta-training: the adaptation curve of every snapshot of a
run (``run.snapshot_every``) and of its latest checkpoint, side by side.

``metarl evaluate RUN_DIR --snapshots`` evaluates each ``RUN_DIR/snapshots/iteration-N/`` like
``metarl evaluate`` (writing its ``evaluation.json`` there, reused on later calls with the
same steps, tasks and seed), then the run itself, and writes
``RUN_DIR/evaluation-over-training.json`` and ``.png``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from metarl.checkpoint import atomic_write_text
from metarl.config import ConfigError
from metarl.evaluation import EVALUATION_NAME, format_table, shown_steps
from metarl.experiment import EvaluateOptions
from metarl.runner import SNAPSHOTS_NAME, load_run

SUMMARY_NAME = "evaluation-over-training.json"
PLOT_NAME = "evaluation-over-training.png"
_PREFIX = "iteration-"


def run_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(iteration, directory)`` of each complete snapshot of ``run_dir``, by iteration."""
    root = Path(run_dir) / SNAPSHOTS_NAME
    found = []
    if root.is_dir():
        for path in root.iterdir():
            number = path.name[len(_PREFIX):]
            # the checkpoint is a snapshot's last file: without it the snapshot is incomplete
            if (path.name.startswith(_PREFIX) and number.isdigit()
                    and (path / "checkpoint.pt").is_file()):
                found.append((int(number), path))
    return sorted(found)


def _previous_evaluation(run_dir: Path, iteration: int, steps: int, tasks: int,
                         seed: int) -> dict[str, Any] | None:
    """The evaluation.json of ``run_dir`` if it evaluated this checkpoint the same way."""
    path = run_dir / EVALUATION_NAME
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = (result.get("checkpoint_iteration") == iteration
            and result.get("steps") == list(range(steps + 1))
            and result.get("tasks") == tasks and result.get("seed") == seed)
    return result if same else None


def evaluate_over_training(run_dir: str | Path, options: EvaluateOptions) -> dict[str, Any]:
    """Evaluate every snapshot of ``run_dir`` and the run's latest checkpoint with
    ``options`` (the baselines, if asked, only for the latest), and summarize.

    Returns (and writes to ``SUMMARY_NAME``) ``{"metric", "steps": [S], "iterations": [P],
    "mean" / "sem" / "ci95": [P][S], "tasks", "seed", "published", "directories": [P],
    "table"}``: one row per evaluated checkpoint, in order of iteration.
    """
    run_dir = Path(run_dir)
    experiment, config, state = load_run(run_dir)
    points = run_snapshots(run_dir)
    if not points:
        raise ConfigError(f"{run_dir} has no snapshots ({SNAPSHOTS_NAME}/{_PREFIX}N/): train "
                          "with run.snapshot_every = N to keep them, or evaluate the run "
                          "without --snapshots")
    latest = int(state["iteration"])
    points = sorted([(n, path) for n, path in points if n != latest] + [(latest, run_dir)])
    ev = config.evaluation
    steps = ev.steps if options.steps is None else options.steps
    tasks = ev.tasks if options.tasks is None else options.tasks
    seed = ev.seed if options.seed is None else options.seed
    results = []
    for index, (iteration, path) in enumerate(points):
        is_latest = path == run_dir
        result = None
        if not (is_latest and options.baselines):
            result = _previous_evaluation(path, iteration, steps, tasks, seed)
        label = f"[{index + 1}/{len(points)}] iteration {iteration} ({path})"
        if result is None:
            print(f"metarl: evaluating {label}", file=sys.stderr)
            snapshot_experiment, snapshot_config, snapshot_state = load_run(path)
            result = snapshot_experiment.evaluate(
                snapshot_config, snapshot_state, path,
                replace(options, baselines=options.baselines and is_latest))
        else:
            print(f"metarl: reusing the evaluation of {label}", file=sys.stderr)
        results.append(result)
    latest_index = [path for _, path in points].index(run_dir)
    summary: dict[str, Any] = {
        "experiment": experiment.name, "metric": results[latest_index]["metric"],
        "steps": results[latest_index]["steps"],
        "iterations": [int(r["checkpoint_iteration"]) for r in results],
        **{key: [r[key] for r in results] for key in ("mean", "sem", "ci95")},
        "tasks": tasks, "seed": seed, "published": results[latest_index].get("published", {}),
        "directories": [str(path) for _, path in points],
    }
    rows: dict[str, dict[str, list[float]]] = {}
    for n, (_, path), result in zip(summary["iterations"], points, results, strict=True):
        name = f"iteration {n}" if f"iteration {n}" not in rows else f"iteration {n} ({path})"
        rows[name] = {"mean": result["mean"], "ci95": result["ci95"]}
    summary["table"] = format_table(rows, summary["steps"], summary["metric"])
    atomic_write_text(run_dir / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    from metarl.plots import plot_over_training

    plot_over_training(summary, run_dir / PLOT_NAME,
                       title=f"{run_dir.resolve().name}: {tasks} test tasks",
                       shown=shown_steps(summary["steps"]))
    return summary
