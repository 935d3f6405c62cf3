"""Runs side by side in one picture: training curves and evaluations by iteration.

    python scripts/compare_runs.py LABEL=RUN_DIR [LABEL=RUN_DIR ...] --output runs.png
        [--metric return_after] [--window 10] [--step 1] [--until N]

Left: a metric of each run's ``metrics.jsonl`` (default ``return_after``, the training
return after adaptation of meta-RL runs; ``query_accuracy`` or ``query_loss`` for Omniglot,
``query_loss`` for sine) against the meta-iteration, as the mean over the last ``--window``
iterations. Right (when a run has been evaluated): the evaluated metric (return, accuracy,
MSE) after ``--step`` gradient steps,
mean ± 95% interval over the test tasks, at every evaluated checkpoint, read from
``evaluation-over-training.json`` (``metarl evaluate RUN_DIR --snapshots``) or else from the
``evaluation.json`` of the run and of its snapshots. The published value after ``--step``
steps, where the runs' evaluations record one, is a dotted line (Omniglot's published
accuracies are after the paper's own number of test steps: they count at the last step
the latest evaluation scored). Nothing is sampled; a table of the plotted values is
printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from metarl.logging import read_metrics
from metarl.plots import moving_average, plot_runs_compared


def parse_run(text: str) -> tuple[str, Path]:
    """``"LABEL=RUN_DIR"`` (or a bare ``RUN_DIR``, labelled with its name)."""
    label, _, location = text.rpartition("=")
    path = Path(location)
    if not (path / "metrics.jsonl").is_file():
        raise argparse.ArgumentTypeError(f"{path} has no metrics.jsonl: not a run directory")
    return label or path.name, path


def evaluated_returns(run_dir: Path, step: int) -> tuple[list[tuple[int, float, float]],
                                                          dict[str, Any]]:
    """``[(iteration, mean, ci95)]`` after ``step`` steps at each evaluated checkpoint of
    ``run_dir``, and the published values of its latest evaluation ({} if none), each a
    ``{"step": value}`` curve (a single published number counts at the evaluation's last
    step)."""
    over_training = run_dir / "evaluation-over-training.json"
    latest = run_dir / "evaluation.json"
    latest_result = json.loads(latest.read_text()) if latest.is_file() else None
    published = {}
    if latest_result is not None:
        last_step = str(max(latest_result["steps"]))
        published = {name: values if isinstance(values, dict) else {last_step: values}
                     for name, values in latest_result.get("published", {}).items()}
    if over_training.is_file():
        summary = json.loads(over_training.read_text())
        if step not in summary["steps"]:
            return [], published
        column = summary["steps"].index(step)
        return [(int(i), mean[column], ci[column]) for i, mean, ci in
                zip(summary["iterations"], summary["mean"], summary["ci95"], strict=True)
                ], published
    results = [json.loads(path.read_text())
               for path in sorted(run_dir.glob("snapshots/*/evaluation.json"))]
    rows = {}
    for result in [*results, *([latest_result] if latest_result else [])]:
        if step in result["steps"]:
            column = result["steps"].index(step)
            rows[int(result["checkpoint_iteration"])] = (result["mean"][column],
                                                         result["ci95"][column])
    return [(i, *rows[i]) for i in sorted(rows)], published


def evaluated_metric(run_dir: Path) -> str | None:
    """What the run's evaluation scores ("return", "accuracy (%)", "mse"), None before one."""
    latest = run_dir / "evaluation.json"
    return json.loads(latest.read_text()).get("metric") if latest.is_file() else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=parse_run, metavar="LABEL=RUN_DIR")
    parser.add_argument("--output", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--metric", default="return_after",
                        help="training metric of metrics.jsonl (default return_after)")
    parser.add_argument("--window", type=int, default=10,
                        help="iterations per moving average (default 10)")
    parser.add_argument("--step", type=int, default=1,
                        help="evaluated return after this many gradient steps (default 1)")
    parser.add_argument("--until", type=int, default=None,
                        help="leave out iterations after this one")
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error(f"--window must be at least 1, got {args.window}")
    labels = [label for label, _ in args.runs]
    if len(set(labels)) != len(labels):
        parser.error(f"labels must differ, got {labels}")
    steps_text = f"{args.step} step" + ("s" if args.step != 1 else "")
    training, evaluations, reference, measure = {}, {}, None, "return"
    for label, run_dir in args.runs:
        records = [r for r in read_metrics(run_dir / "metrics.jsonl")
                   if args.until is None or r["iteration"] <= args.until]
        if not records or args.metric not in records[-1]:
            known = ", ".join(records[-1]) if records else "none: the file is empty"
            parser.error(f"{run_dir}/metrics.jsonl has no {args.metric!r} (metrics: {known})")
        training[label] = [(r["iteration"], r[args.metric]) for r in records]
        rows, published = evaluated_returns(run_dir, args.step)
        measure = evaluated_metric(run_dir) or measure
        evaluations[label] = [row for row in rows if args.until is None or row[0] <= args.until]
        for name, values in published.items():
            if reference is None and str(args.step) in values:
                reference = (f"{name}, {steps_text}", float(values[str(args.step)]))
    plot_runs_compared(training, evaluations, args.output, metric=args.metric,
                       evaluated=f"{measure} after {steps_text}", window=args.window,
                       reference=reference)
    for label, points in training.items():
        values = moving_average([v for _, v in points], args.window)
        print(f"{label}: {args.metric}, mean over {args.window} iterations: " + ", ".join(
            f"{points[i][0]}: {values[i]:.1f}"
            for i in range(args.window - 1, len(points), args.window)))
        if evaluations[label]:
            print(f"  evaluated after {args.step} step(s): " + ", ".join(
                f"{i}: {m:.1f} ± {c:.2g}" for i, m, c in evaluations[label]))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
