"""How adaptation improved over meta-training: the adaptation curve of every snapshot of a
run (``run.snapshot_every``) and of its latest checkpoint, side by side.

``metarl evaluate RUN_DIR --snapshots`` evaluates each ``RUN_DIR/snapshots/iteration-N/`` like
``metarl evaluate`` (writing its ``evaluation.json`` there, reused on later calls while its
checkpoint file, steps, tasks, seed and evaluation settings are the same), then the run
itself, and writes
``RUN_DIR/evaluation-over-training.json`` and ``.png``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from metarl.checkpoint import atomic_write_text
from metarl.config import ConfigError, from_dict, parse_override, to_dict
from metarl.evaluation import (
    EVALUATION_NAME,
    checkpoint_fingerprint,
    evaluation_settings,
    format_table,
    shown_steps,
)
from metarl.experiment import (
    DISPLAY_KEYS,
    EvaluateOptions,
    Experiment,
    baseline_section,
    with_evaluation_overrides,
)
from metarl.runner import SNAPSHOT_PREFIX, SNAPSHOTS_NAME, load_run, run_snapshots

SUMMARY_NAME = "evaluation-over-training.json"
PLOT_NAME = "evaluation-over-training.png"
# Omniglot publishes one accuracy per method (after the config's test steps).
_PUBLISHED_METHOD_NAMES = {"maml": "MAML", "fomaml": "first-order MAML", "reptile": "Reptile"}


def _evaluated_baselines(result: dict[str, Any]) -> set[str]:
    """The baseline names a saved evaluation holds (files from before ``baseline_names``
    name them by their curves: "random init" was the random baseline)."""
    if "baseline_names" in result:
        return set(result["baseline_names"])
    return {"random" if name == "random init" else name for name in result.get("baselines", {})}


def previous_evaluation(run_dir: Path, iteration: int, steps: int, tasks: int, seed: int, *,
                        evaluation_config: Any, saved_evaluation_config: Any,
                        baselines: tuple[str, ...] = (),
                        baseline_config: Any = None, saved_baseline_config: Any = None,
                        scoring_version: int = 1,
                        evaluation_dir: Path | None = None) -> dict[str, Any] | None:
    """``run_dir``'s evaluation.json if it evaluated the checkpoint file now there (same
    SHA-256), at ``iteration``, after 0..``steps`` steps on ``tasks`` tasks from ``seed``,
    with the evaluation section ``evaluation_config`` (a config dataclass; and with at least
    the named ``baselines``, made with the baseline section ``baseline_config``, a dataclass);
    otherwise None. Steps, tasks and seed are compared as given, not as in the sections. The
    recorded section is read with the defaults of keys it lacks; a file written before
    evaluation.json recorded the sections was made with the run's saved ones,
    ``saved_evaluation_config`` and ``saved_baseline_config``. A file scored another way than
    the experiment's ``scoring_version`` (1 where it records none) is not reused. The file is
    read from ``evaluation_dir`` where given (an evaluation written elsewhere)."""
    path = (evaluation_dir or run_dir) / EVALUATION_NAME
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or not all(
            key in result for key in ("metric", "mean", "ci95", "sem", "checkpoint_sha256")):
        return None
    same = (result["checkpoint_sha256"] == checkpoint_fingerprint(run_dir)
            and result.get("checkpoint_iteration") == iteration
            and result.get("scoring_version", 1) == scoring_version
            and result.get("steps") == list(range(steps + 1))
            and result.get("tasks") == tasks and result.get("seed") == seed
            and set(baselines) <= _evaluated_baselines(result)
            and (not baselines or _recorded_section(result, "baseline_config",
                                                    saved_baseline_config)
                 == _as_dict(baseline_config))
            and _recorded_settings(result, type(evaluation_config), saved_evaluation_config)
            == _settings(evaluation_config))
    return result if same else None


def _settings(evaluation_config: Any) -> dict[str, Any]:
    """An evaluation section (a config dataclass) as a dict, without the keys that the
    command line overrides."""
    return evaluation_settings(to_dict(evaluation_config))


def _as_dict(section: Any) -> dict[str, Any] | None:
    return None if section is None else to_dict(section)


def _recorded_section(result: dict[str, Any], key: str, saved: Any) -> Any:
    """The config section (a dict) that ``result`` records under ``key``, read with the
    defaults of keys it lacks; ``saved`` (a dataclass) where it records none; None if it
    cannot be read."""
    if saved is None or key not in result:
        return _as_dict(saved)
    try:
        return to_dict(from_dict(type(saved), result[key]))
    except (ConfigError, TypeError):  # a key since removed, or not a mapping
        return None


def _recorded_settings(result: dict[str, Any], section: type, saved: Any) -> Any:
    """The settings ``result`` was evaluated with, None if they cannot be read."""
    recorded = result.get("evaluation_config")
    if recorded is None:
        return _settings(saved)
    try:
        return _settings(from_dict(section, recorded))
    except (ConfigError, TypeError):  # a key since removed, or not a mapping
        return None


def describe_result(result: dict[str, Any]) -> str:
    """What an evaluation scored, in a few words: the environment or task and the method
    (``navigation2d, maml``; ``Omniglot 5-way 1-shot, reptile``; ``sine, maml``)."""
    if "ways" in result:
        what = f"Omniglot {result['ways']}-way {result['shots']}-shot"
    else:
        what = str(result.get("env") or result.get("experiment", "run"))
    return f"{what}, {result['method']}" if result.get("method") else what


def _reference(result: dict[str, Any], config: Any, steps: int) -> dict[str, Any] | None:
    """The published curve comparable with this run: ``{"name", "values": {step: value}}``."""
    published = result.get("published") or {}
    curves = {k: v for k, v in published.items() if isinstance(v, dict)}
    if curves:
        shots = result.get("shots")
        name = next((k for k in curves if shots is not None and k.endswith(f"K={shots}")),
                    next(iter(curves)))
        return {"name": name, "values": {str(s): v for s, v in curves[name].items()}}
    # a published accuracy (after the paper's own number of test steps) is drawn beside the
    # run's curve after its configured evaluation.steps
    name = _PUBLISHED_METHOD_NAMES.get(str(result.get("method")))
    run_steps = config.evaluation.steps
    if name in published and run_steps <= steps:
        return {"name": f"{name} (paper)", "values": {str(run_steps): published[name]}}
    return None


def _evaluated_as(experiment: Experiment, point_config: Any, run_config: Any) -> Any:
    """A snapshot's config with the run's evaluation section, device and data location
    (``experiment.location_keys``) and ``run.progress``: what it trained stays the
    snapshot's own."""
    data, run_data = to_dict(point_config), to_dict(run_config)
    data["evaluation"] = run_data["evaluation"]
    for key in (*experiment.location_keys, *DISPLAY_KEYS):
        *sections, name = key.split(".")
        into, source = data, run_data
        for section in sections:
            into, source = into[section], source[section]
        into[name] = source[name]
    return from_dict(experiment.config_class, data)


def evaluate_over_training(run_dir: str | Path, options: EvaluateOptions,
                           overrides: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """Evaluate every snapshot of ``run_dir`` and the run's latest checkpoint with
    ``options`` and the run's evaluation settings (its config.yaml's, as edited, with the
    ``--set`` ``overrides``; the baselines, if asked, only for the latest), and summarize.
    With ``options.output_dir`` every evaluation and the summary go there instead (each
    snapshot's into ``OUTPUT_DIR/snapshots/iteration-N/``) and the run stays as it is.

    Returns (and writes to ``SUMMARY_NAME``) ``{"metric", "steps": [S], "iterations": [P],
    "mean" / "sem" / "ci95": [P][S], "tasks", "seed", "reference", "directories": [P]
    (relative to ``run_dir``), "table"}``: one row per evaluated checkpoint, by iteration.
    A snapshot whose checkpoint is no longer that of its iteration (trained further in
    place) is left out with a warning.
    """
    run_dir = Path(run_dir)
    experiment, config, state = load_run(run_dir)
    latest = int(state["iteration"])
    points: list[tuple[int, Path]] = []
    loaded = {run_dir: (experiment, config, state)}
    for number, path in run_snapshots(run_dir):
        loaded[path] = load_run(path)
        held = int(loaded[path][2]["iteration"])
        if held != number:
            print(f"metarl: skipping {path}: its checkpoint holds iteration {held} (it was "
                  "trained further in place)", file=sys.stderr)
        elif number != latest:
            points.append((number, path))
    if not points:
        raise ConfigError(f"{run_dir} has no snapshots ({SNAPSHOTS_NAME}/{SNAPSHOT_PREFIX}N/ other "
                          "than its latest checkpoint): train with run.snapshot_every = N to "
                          "keep them, or evaluate the run without --snapshots")
    points = sorted([*points, (latest, run_dir)])
    ev = config.evaluation
    steps = ev.steps if options.steps is None else options.steps
    tasks = ev.tasks if options.tasks is None else options.tasks
    seed = ev.seed if options.seed is None else options.seed
    results = []
    # every override checked before the first evaluation; every point evaluated as the run
    # says now (its evaluation section and data location, edited or not), so one curve
    evaluated_run = with_evaluation_overrides(experiment, config, overrides)
    evaluated = {path: evaluated_run if path == run_dir else
                 _evaluated_as(loaded[path][0], loaded[path][1], evaluated_run)
                 for _, path in points}
    output_root = options.output_dir
    for index, (iteration, path) in enumerate(points):
        baselines = options.baselines if path == run_dir else ()
        point_experiment, point_config, point_state = loaded[path]
        point_output = (None if output_root is None
                        else output_root / os.path.relpath(path, run_dir))
        if point_output is not None:
            point_output.mkdir(parents=True, exist_ok=True)
        result = previous_evaluation(
            path, iteration, steps, tasks, seed, evaluation_config=evaluated[path].evaluation,
            saved_evaluation_config=point_config.evaluation, baselines=baselines,
            baseline_config=baseline_section(point_experiment, evaluated[path]),
            saved_baseline_config=baseline_section(point_experiment, point_config),
            scoring_version=point_experiment.scoring_version, evaluation_dir=point_output)
        label = f"[{index + 1}/{len(points)}] iteration {iteration} ({path})"
        if result is None:
            print(f"metarl: evaluating {label}", file=sys.stderr)
            result = point_experiment.evaluate(
                evaluated[path], point_state, path,
                replace(options, baselines=baselines, output_dir=point_output))
        else:
            print(f"metarl: reusing the evaluation of {label}", file=sys.stderr)
        results.append(result)
    latest_result = results[[path for _, path in points].index(run_dir)]
    summary: dict[str, Any] = {
        "experiment": experiment.name, "metric": latest_result["metric"],
        "steps": latest_result["steps"], "iterations": [n for n, _ in points],
        **{key: [r[key] for r in results] for key in ("mean", "sem", "ci95")},
        "tasks": tasks, "seed": seed, "reference": _reference(latest_result, config, steps),
        "directories": [os.path.relpath(path, run_dir) for _, path in points],
        "evaluation_config": _settings(evaluated[run_dir].evaluation),
        "overrides": list(overrides),
    }
    summary["table"] = format_table(
        {f"iteration {n}": {"mean": r["mean"], "ci95": r["ci95"]}
         for n, r in zip(summary["iterations"], results, strict=True)},
        summary["steps"], summary["metric"])
    written_to = output_root or run_dir
    atomic_write_text(written_to / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    from metarl.plots import plot_over_training

    plot_over_training(summary, written_to / PLOT_NAME,
                       title=f"{run_dir.resolve().name} ({describe_result(latest_result)}): "
                       f"{tasks} test tasks"
                       + "".join(f", {text}" for text in overrides
                                 if ".".join(parse_override(text)[0]) not in DISPLAY_KEYS),
                       shown=shown_steps(summary["steps"]),
                       log_y=summary["metric"] == "mse")
    return summary
