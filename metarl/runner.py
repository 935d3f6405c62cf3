"""A meta-training run on disk: resolved config, checkpoints, logs, resume, clean stops.

Layout of a run directory::

    config.yaml        the resolved config (what ran, with every default written out)
    checkpoint.pt      latest state, written atomically every ``run.checkpoint_every`` its
    metrics.jsonl      one JSON object per meta-iteration
    snapshots/iteration-N/  with ``run.snapshot_every``: config.yaml, checkpoint.pt and
                       metrics.jsonl as they stood after iteration N (a run directory)
    tensorboard/       TensorBoard event files
    learning_curve.png the training metrics over iterations (at the end of training)
    evaluation.json    after ``metarl evaluate``, with its adaptation-curve PNG
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shlex
import shutil
import signal
import sys
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from metarl import __version__
from metarl.checkpoint import (
    CHECKPOINT_NAME,
    UnreadableCheckpointError,
    atomic_write_bytes,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from metarl.config import (
    ConfigError,
    apply_overrides,
    dump_config,
    parse_override,
    read_yaml,
    to_dict,
    validate_config,
    yaml_scalar,
)
from metarl.experiment import (
    Experiment,
    NonFiniteLossError,
    config_from_data,
    config_from_file,
)
from metarl.logging import METRICS_NAME, RunLogger, read_metrics

CONFIG_NAME = "config.yaml"
SNAPSHOTS_NAME = "snapshots"
SNAPSHOT_PREFIX = "iteration-"


class TrainingStopped(RuntimeError):
    """Training stopped early (interrupt or divergence); the run directory says where."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def load_run(run_dir: str | Path) -> tuple[Experiment, Any, dict[str, Any]]:
    """The experiment, resolved config and latest checkpoint of a run directory.

    The config file is checked against the config the checkpoint was trained with: only the
    keys that may change after training started (:data:`CHANGEABLE_AFTER_START`), the
    experiment's ``location_keys`` and its baseline section may differ.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ConfigError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run directory")
    if not (run_dir / CONFIG_NAME).is_file():
        raise ConfigError(f"{run_dir} is not a run directory: {CONFIG_NAME} is missing")
    config_path = run_dir / CONFIG_NAME
    experiment, config = config_from_file(config_path, read_yaml(config_path))
    if not (run_dir / CHECKPOINT_NAME).is_file():
        _check_no_checkpoint_was_written(run_dir, config)
        raise ConfigError(
            f"{run_dir} has no {CHECKPOINT_NAME} yet: it is written every "
            f"run.checkpoint_every = {config.run.checkpoint_every} meta-iterations. If the "
            "run is not still training, it stopped before the first; start it afresh with: "
            f"metarl train {shlex.quote(str(config_path))} --run-dir "
            f"{shlex.quote(str(run_dir))}")
    try:
        state = load_checkpoint(run_dir / CHECKPOINT_NAME)
        _check_run_checkpoint(run_dir / CHECKPOINT_NAME, state)
    except UnreadableCheckpointError as error:
        raise UnreadableCheckpointError(f"{error}. {_earlier_states(run_dir)}") from None
    _check_config_matches_checkpoint(run_dir, experiment, config, state)
    return experiment, config, state


def _check_run_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Refuse a readable file that lacks what :func:`train_run` writes into a checkpoint."""
    for key, kind in (("iteration", int), ("experiment", str), ("config", dict),
                      ("trainer", dict)):
        if not isinstance(state.get(key), kind):
            raise UnreadableCheckpointError(
                f"{path} is not a metarl run checkpoint: {key!r} is "
                + ("missing" if key not in state else
                   f"of type {type(state[key]).__name__}, not {kind.__name__}")
                + "; the file is damaged or another file")
    params = state["trainer"].get("params")
    if not isinstance(params, Mapping) or not all(isinstance(v, torch.Tensor)
                                                  for v in params.values()):
        raise UnreadableCheckpointError(f"{path} is not a metarl run checkpoint: its trainer "
                                        "holds no parameter tensors")
    for name, tensor in params.items():
        if not bool(torch.isfinite(tensor).all()):
            # training never writes these: a non-finite loss stops a run before its checkpoint
            raise UnreadableCheckpointError(f"{path} holds non-finite weights in {name}: the "
                                            "file is damaged")


def _run_of_snapshot(run_dir: Path) -> Path | None:
    """The run directory that ``run_dir`` is a snapshot of (``RUN/snapshots/iteration-N``),
    however it is spelled (``.``, a symlink), or None when it is no snapshot."""
    for spelled in (run_dir, run_dir.resolve()):  # as given where it shows the run, else real
        if (spelled.parent.name == SNAPSHOTS_NAME and spelled.name.startswith(SNAPSHOT_PREFIX)
                and (spelled.parent.parent / CONFIG_NAME).is_file()):
            return spelled.parent.parent
    return None


_BRANCH_HINT = ("copy it to a new directory and continue the copy: cp -r {source} NEW_RUN && "
                "metarl train --resume NEW_RUN")


def _earlier_states(run_dir: Path) -> str:
    """What is left of a run whose checkpoint (``run_dir``'s) is damaged: the run's own
    checkpoint when ``run_dir`` is one of its snapshots, else the snapshots it keeps."""
    run_root = _run_of_snapshot(run_dir)
    if run_root is not None:
        return (f"{run_dir} is a snapshot of the run in {run_root}; the run's checkpoint and "
                "its other snapshots are separate files. Move this snapshot aside to "
                f"evaluate the others (metarl evaluate {shlex.quote(str(run_root))} "
                "--snapshots)")
    snapshots = [path for _, path in run_snapshots(run_dir)]
    if not snapshots:
        return (f"{run_dir} keeps no snapshots to go back to (run.snapshot_every); train "
                "the run afresh")
    latest = snapshots[-1]
    return (f"The run's snapshots keep {len(snapshots)} earlier state(s), the latest in "
            f"{latest}; to continue from one, "
            + _BRANCH_HINT.format(source=shlex.quote(str(latest))))


# What --set may change when resuming: how long the run goes on and its bookkeeping. Any
# other key would make the continued run a different experiment from its first part.
RESUME_OVERRIDABLE = ("training.iterations", "run.")
# Keys of config.yaml that may differ from the config a run's checkpoint was trained with:
# those and how it is evaluated. Everything else defines what was trained.
CHANGEABLE_AFTER_START = (*RESUME_OVERRIDABLE, "evaluation.")


def _check_config_matches_checkpoint(run_dir: Path, experiment: Experiment, config: Any,
                                     state: dict[str, Any]) -> None:
    trained = state.get("experiment")
    if trained is not None and trained != experiment.name:
        raise ConfigError(f"{run_dir / CONFIG_NAME} configures experiment {experiment.name} "
                          f"but {run_dir / CHECKPOINT_NAME} holds a run of experiment "
                          f"{trained}; the two files belong to different runs")
    saved = state.get("config")
    if not isinstance(saved, dict):
        return
    changeable = CHANGEABLE_AFTER_START + experiment.location_keys
    if experiment.baseline_section:
        changeable += (experiment.baseline_section + ".",)
    current = _leaves(to_dict(config))
    # Only the keys the checkpoint recorded: a key added to metarl after the run was
    # trained takes its default in config.yaml, which may not be what the run used.
    for key, value in _leaves(saved).items():
        if key in current and current[key] != value and not _matches(key, changeable):
            raise ConfigError(
                f"{run_dir / CONFIG_NAME} says {key} = {yaml_scalar(current[key])}, but "
                f"{run_dir / CHECKPOINT_NAME} was trained with {key} = {yaml_scalar(value)}. "
                "What a run trains can't change after it starts (training.iterations and "
                "run.* change with `metarl train --resume RUN --set`, evaluation settings "
                "with `metarl evaluate RUN --set`"
                + (f", where it computes and its data lives ({', '.join(experiment.location_keys)})"
                   " with either" if experiment.location_keys else "")
                + "); restore the value, or start a new run")


def _matches(key: str, patterns: Sequence[str]) -> bool:
    """Whether dotted ``key`` is one of ``patterns``: whole keys, or sections ending in a dot."""
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are leaves)."""
    leaves = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            leaves.update(_leaves(value, key + "."))
        else:
            leaves[key] = value
    return leaves


@contextmanager
def _deferred_interrupts() -> Iterator[list[int]]:
    """Turn the first SIGINT/SIGTERM into a flag checked between meta-iterations.

    The first signal says so on stderr; a second interrupts at once (the last checkpoint stays
    valid either way).
    """
    received: list[int] = []

    def handler(signum: int, frame: types.FrameType | None) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        # os.write, not print: the handler may run in the middle of a write to stderr.
        os.write(2, b"\nmetarl: stopping after this meta-iteration, with a checkpoint; a second "
                    b"Ctrl-C (or SIGTERM) stops at once, losing the work since the last one\n")

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in previous:
            signal.signal(s, handler)
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def check_resumable(run_dir: str | Path) -> None:
    """Refuse to continue a snapshot (``RUN/snapshots/iteration-N``) in place: training there
    would overwrite what the snapshot keeps. A copy of it branches a new run."""
    run_dir = Path(run_dir)
    run_root = _run_of_snapshot(run_dir)
    if run_root is not None:
        raise ConfigError(
            f"{run_dir} is a snapshot of the run in {run_root}; training it in place would "
            "overwrite it. To branch a new run from it, "
            + _BRANCH_HINT.format(source=shlex.quote(str(run_dir))))


RUN_CONFIG_HEADER = "Resolved config of this run"
RESUME_HINT = "Continue it with:"
# What a run writes before its first checkpoint: with these alone it starts again in place.
_FIRST_FILES_OF_A_RUN = frozenset({CONFIG_NAME, METRICS_NAME, "tensorboard", "learning_curve.png"})


def _written_by_a_run(path: Path) -> bool:
    """Whether ``path`` is a config.yaml that metarl wrote for a run (not a user's config)."""
    try:
        with path.open(encoding="utf-8") as file:
            return file.readline().startswith(f"# {RUN_CONFIG_HEADER}")
    except (OSError, UnicodeDecodeError):
        return False


def check_new_run_dir(run_dir: str | Path) -> list[str]:
    """Refuse ``run_dir`` for a new run when it is a file, already holds a run, or holds
    files that are not a run's. Returns the files of a run stopped before its first
    checkpoint that the new run replaces (none for a new or empty folder)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir {run_dir} is a file; give a directory (it is created "
                          "when missing)")
    if (run_dir / CHECKPOINT_NAME).exists():
        raise ConfigError(f"{run_dir} already holds a run; continue it with "
                          f"`metarl train --resume {run_dir}` or choose another --run-dir")
    # A run stopped before its first checkpoint (its config.yaml written by metarl) starts
    # again in place; other files would be mixed with this run's (hidden ones, as .DS_Store,
    # aside).
    held = sorted(child.name for child in run_dir.iterdir()
                  if not child.name.startswith(".")) if run_dir.is_dir() else []
    restart = _written_by_a_run(run_dir / CONFIG_NAME)
    others = [name for name in held if not (restart and name in _FIRST_FILES_OF_A_RUN)]
    if others == [CONFIG_NAME]:
        raise ConfigError(f"--run-dir {run_dir} holds a config.yaml that metarl did not write "
                          "for a run; keep your config outside the run's folder (a run writes "
                          "its resolved config there)")
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5
                                         else "")
        raise ConfigError(f"--run-dir {run_dir} holds files that are not a new run's "
                          f"({shown}); give a new or empty folder")
    if restart:
        _check_no_checkpoint_was_written(run_dir)
    return held if restart else []


def _check_no_checkpoint_was_written(run_dir: Path, config: Any = None) -> None:
    """Refuse to start again in place of a run whose logs go past its first checkpoint: that
    checkpoint was lost or moved, and the logs are all that is left of the run. ``config``:
    the run's, if already read from its config.yaml."""
    logged = len(read_metrics(run_dir / METRICS_NAME))
    if config is None:
        path = run_dir / CONFIG_NAME
        try:
            _, config = config_from_file(path, read_yaml(path))
        except ConfigError:  # unreadable: nothing to tell
            return
    every, total = config.run.checkpoint_every, config.training.iterations
    if logged >= min(every, total):
        last = total if logged >= total else logged // every * every
        raise ConfigError(
            f"{run_dir} holds the logs of {logged} meta-iterations ({METRICS_NAME}) but no "
            f"{CHECKPOINT_NAME}, which that run last wrote after iteration {last}: it was lost or "
            f"moved. Put it back and continue with metarl train --resume {run_dir}, or train a "
            "new run in another --run-dir")


def create_run_dir(run_dir: str | Path) -> None:
    """Make ``run_dir`` (and its parents) for a new run, or say why it can't be made."""
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--run-dir {run_dir}: can't create it ({error})") from None


def train_run(experiment: Experiment, config: Any, run_dir: str | Path, *,
              resume: bool = False) -> Path:
    """Meta-train ``config`` in ``run_dir``, or continue the run there when ``resume``.

    Returns the path of the final checkpoint. Raises :class:`ConfigError` before any work
    when ``config`` (built or changed in code, too) has a bad value, and
    :class:`TrainingStopped` when a signal or a non-finite loss stops training; the last good
    checkpoint is kept in both cases.
    """
    if not isinstance(config, experiment.config_class):
        raise TypeError(f"the {experiment.name} experiment takes a "
                        f"{experiment.config_class.__name__}, got {type(config).__name__}")
    config = validate_config(config)  # one built or changed in code, checked as a file's is
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    replaced = [] if resume else check_new_run_dir(run_dir)
    trainer = experiment.make_trainer(config)
    start = 0
    if resume:
        state = load_checkpoint(checkpoint_path)
        trainer.load_state_dict(state["trainer"])
        start = int(state["iteration"])
    else:
        create_run_dir(run_dir)
        # a run stopped before its first checkpoint: its logs would be mixed with this one's
        for name in replaced:
            path = run_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif name != CONFIG_NAME:  # rewritten below
                path.unlink(missing_ok=True)
        atomic_write_text(run_dir / CONFIG_NAME, dump_config(
            config, header=f"{RUN_CONFIG_HEADER} (metarl {__version__}).\n"
                           f"{RESUME_HINT} metarl train --resume {run_dir}"))
    total = config.training.iterations

    def checkpoint(iteration: int, path: Path = checkpoint_path) -> None:
        save_checkpoint(path, {
            "iteration": iteration, "experiment": experiment.name,
            "config": to_dict(config), "trainer": trainer.state_dict(),
            "metarl_version": __version__,
        })

    def kept(iteration: int, failing: int | None = None) -> str:
        """What is kept; ``failing``: the 0-based iteration whose loss was not finite."""
        if checkpoint_path.is_file() and failing == iteration:
            return (f"The last checkpoint (iteration {iteration}) is kept in "
                    f"{checkpoint_path}; it holds the weights that the failing iteration "
                    f"started from")
        if checkpoint_path.is_file():
            return f"The last good checkpoint (iteration {iteration}) is kept in {checkpoint_path}"
        return (f"No checkpoint had been written yet (one is written every "
                f"{config.run.checkpoint_every} meta-iterations, run.checkpoint_every)")

    if start >= total:
        return checkpoint_path
    logger = RunLogger(run_dir, total, start=start, progress=config.run.progress,
                       tensorboard=config.run.tensorboard, shown=experiment.shown_metrics,
                       description=f"{experiment.name} meta-train")
    last_saved = start
    try:
        with _deferred_interrupts() as signals:
            for iteration in range(start, total):
                try:
                    metrics = trainer.train_iteration(iteration)
                except NonFiniteLossError as error:
                    raise TrainingStopped(
                        f"stopped at meta-iteration {iteration + 1}: {error}. "
                        + kept(last_saved, iteration), exit_code=1) from None
                bad = [k for k, v in metrics.items() if not math.isfinite(float(v))]
                if bad:
                    raise TrainingStopped(
                        f"stopped at meta-iteration {iteration + 1}: {bad[0]} is "
                        f"{metrics[bad[0]]}. " + kept(last_saved, iteration), exit_code=1)
                done = iteration + 1
                try:
                    logger.log(done, metrics)
                    snapshot = (config.run.snapshot_every > 0
                                and done % config.run.snapshot_every == 0)
                    if snapshot:
                        # Before the run's own checkpoint: a crash between the two leaves
                        # that at an earlier iteration, and the resumed run writes this
                        # snapshot again.
                        write_snapshot(run_dir, done, functools.partial(checkpoint, done))
                    if (done % config.run.checkpoint_every == 0 or done == total or signals
                            or snapshot):
                        checkpoint(done)
                        last_saved = done
                except BrokenPipeError:  # the terminal (tqdm's stderr), not the run's files
                    raise
                except OSError as error:  # a full disk, a folder made read-only, ...
                    again = (f". Once it can be written, continue with: metarl train --resume "
                             f"{run_dir}" if checkpoint_path.is_file() else "")
                    raise TrainingStopped(
                        f"stopped at meta-iteration {done}: can't write the run in {run_dir} "
                        f"({error}). " + kept(last_saved) + again, exit_code=1) from None
                if signals:
                    raise TrainingStopped(
                        f"interrupted after meta-iteration {done}; checkpoint saved. Continue "
                        f"with: metarl train --resume {run_dir}", exit_code=128 + signals[0])
    except BaseException:
        with contextlib.suppress(OSError):  # closing may fail as a write did: say why we stop
            logger.close()
        _plot_learning_curve(experiment, config, run_dir)
        raise
    try:
        logger.close()
    except OSError as error:  # the final checkpoint is whole; TensorBoard's last events may not be
        print(f"metarl: note: trained; {checkpoint_path} is complete, but closing the logs "
              f"failed ({error})", file=sys.stderr)
    _plot_learning_curve(experiment, config, run_dir)
    return checkpoint_path


def extend_run_config(run_dir: str | Path, experiment: Experiment, overrides: Sequence[str],
                      *, done: int) -> Any:
    """Apply ``overrides`` (``training.iterations``, ``run.*`` and the experiment's location
    keys only) to the saved config of ``run_dir``, an ``experiment`` run whose checkpoint
    holds ``done`` iterations, validated; rewrite its ``config.yaml`` atomically and return
    the new config."""
    path = Path(run_dir) / CONFIG_NAME
    for text in overrides:
        key = ".".join(parse_override(text)[0])
        if not _matches(key, RESUME_OVERRIDABLE + experiment.location_keys):
            also = (f", and where it computes and its data lives "
                    f"({', '.join(experiment.location_keys)})"
                    if experiment.location_keys else "")
            raise ConfigError(f"--set {text}: a resumed run keeps its config; only "
                              "training.iterations and run.* may change (to train it longer "
                              f"or change its bookkeeping){also}")
    saved = read_yaml(path)
    _, config = config_from_data(apply_overrides(saved, overrides))
    experiment.check_machine(config, where=path, overrides=overrides)  # before the rewrite
    if config.training.iterations < done:
        raise ConfigError(f"training.iterations = {config.training.iterations}: the "
                          f"checkpoint of {run_dir} already holds {done} iterations; give at "
                          f"least {done}")
    header = []  # the file's leading comment lines, then what this resume changes
    renamed = False
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line[2:] if line.startswith("# ") else line[1:]
        if text.startswith(RESUME_HINT):  # a copied run (a branched snapshot) names its source
            own = f"{RESUME_HINT} metarl train --resume {run_dir}"
            renamed, text = renamed or text != own, own
        header.append(text)
    before = config_from_data(saved)[1]
    _note_annealing_change(before, config, done)
    changed = to_dict(config) != to_dict(before)
    if not changed and not renamed:
        return config  # nothing changes: the file, and its comments, stay as they were
    if changed:
        header.append(f"Changed on resume: {', '.join(overrides)}")
    atomic_write_text(path, dump_config(config, header="\n".join(header)))
    return config


def _note_annealing_change(before: Any, after: Any, done: int) -> None:
    """Say so when a new training.iterations stretches an annealed outer step: the run goes
    on along the longer schedule from where it is, so it does not give the numbers of a run
    started with that many iterations."""
    training = after.training
    final = getattr(training, "outer_lr_final", None)
    old, new = before.training.iterations, training.iterations
    if final is None or old == new or done >= new:
        return

    def rate(total: int) -> float:
        return training.outer_lr + (final - training.outer_lr) * min(done / total, 1.0)

    print(f"metarl: note: the outer step anneals over training.iterations "
          f"(training.outer_lr_final): from iteration {done + 1} it follows the {new}-iteration "
          f"schedule ({rate(new):.4g}, where the {old}-iteration one is at {rate(old):.4g}), so "
          f"this run will not give the numbers of a run started with {new} iterations",
          file=sys.stderr)


def snapshot_dir(run_dir: str | Path, iteration: int) -> Path:
    """Where ``run.snapshot_every`` keeps the run as it stood after ``iteration``."""
    return Path(run_dir) / SNAPSHOTS_NAME / f"{SNAPSHOT_PREFIX}{iteration}"


def run_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(N, directory)`` of each complete ``snapshots/iteration-N/`` of ``run_dir``, by N."""
    root = Path(run_dir) / SNAPSHOTS_NAME
    found = []
    if root.is_dir():
        for path in root.iterdir():
            number = path.name[len(SNAPSHOT_PREFIX):]
            # the checkpoint is a snapshot's last file: without it the snapshot is incomplete
            if (path.name.startswith(SNAPSHOT_PREFIX) and number.isdigit()
                    and (path / CHECKPOINT_NAME).is_file()):
                found.append((int(number), path))
    return sorted(found)


def write_snapshot(run_dir: str | Path, iteration: int,
                   write_checkpoint: Callable[[Path], None]) -> Path:
    """Keep the run as it stands after ``iteration`` in :func:`snapshot_dir`: its config and
    metrics copied, then ``write_checkpoint(path)`` (last, so that a snapshot holding a
    checkpoint is complete); each file is written atomically. ``metarl evaluate`` / ``render``
    take a snapshot like any run directory; a copy of it resumed with ``metarl train
    --resume`` branches a new run from there."""
    run_dir = Path(run_dir)
    target = snapshot_dir(run_dir, iteration)
    for name in (CONFIG_NAME, METRICS_NAME):
        source = run_dir / name
        if source.is_file():
            atomic_write_bytes(target / name, source.read_bytes())
    write_checkpoint(target / CHECKPOINT_NAME)
    return target


def _plot_learning_curve(experiment: Experiment, config: Any, run_dir: Path) -> None:
    from metarl.plots import plot_learning_curve

    if not (run_dir / METRICS_NAME).is_file():
        return
    try:
        title, panels = experiment.learning_curve(config)
        plot_learning_curve(run_dir / METRICS_NAME, run_dir / "learning_curve.png",
                            title=title, panels=panels)
    except Exception as error:  # a picture must not hide why training stopped
        print(f"metarl: could not draw learning_curve.png: {error}", file=sys.stderr)
