"""The experiments metarl knows, and how a config file names one.

Each experiment is a class with its typed config and the four things a user does with a run:
train (via a :class:`Trainer`), evaluate, render and benchmark. The YAML's top-level
``experiment:`` key picks the class.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from metarl.config import (
    ConfigError,
    apply_overrides,
    from_dict,
    parse_override,
    read_yaml,
    to_dict,
)
from metarl.evaluation import COMMAND_LINE_KEYS

EXPERIMENTS: dict[str, str] = {
    "sine": "metarl.supervised.sine_experiment:SineExperiment",
    "meta_rl": "metarl.rl.experiment:MetaRLExperiment",
    "omniglot": "metarl.supervised.omniglot_experiment:OmniglotExperiment",
}


class Trainer(Protocol):
    """The state of one meta-training run, advanced one meta-iteration at a time."""

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """Run meta-iteration ``iteration`` (0-based) and return its metrics.

        Raises :class:`NonFiniteLossError` if the loss is NaN/inf. The runner then stops
        without writing a checkpoint, so the last good one stays (the trainer's in-memory
        state, random generators included, may have moved on).
        """
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: parameters, optimizer, random generators."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class NonFiniteLossError(RuntimeError):
    """The meta-loss became NaN or infinite; the update was not applied."""


@dataclass
class EvaluateOptions:
    """Command-line choices for ``metarl evaluate`` (None: the config's value)."""

    steps: int | None = None
    tasks: int | None = None
    seed: int | None = None
    baselines: tuple[str, ...] = ()  # names from the experiment's baseline_names
    # where evaluation.json and adaptation.png go (None: the run directory)
    output_dir: Path | None = None


@dataclass
class RenderOptions:
    """Command-line choices for ``metarl render``."""

    tasks: int = 4
    steps: int | None = None
    seed: int | None = None
    output: Path | None = None
    video: Path | None = None
    task: str | None = None


@dataclass(frozen=True)
class Panel:
    """How ``learning_curve.png`` draws one metric of ``metrics.jsonl``: its panel's title,
    optional fixed y limits, and an optional dashed horizontal line ``(value, label)``."""

    title: str
    limits: tuple[float | None, float | None] | None = None  # None: that end free
    line: tuple[float, str] | None = None


class Experiment(ABC):
    """One benchmark family: its config class and what train/evaluate/render mean for it."""

    name: ClassVar[str]
    config_class: ClassVar[type[Any]]
    metric: ClassVar[str]
    shown_metrics: ClassVar[tuple[str, ...]] = ()
    baseline_names: ClassVar[tuple[str, ...]] = ()  # what `evaluate --baselines` can add
    baseline_section: ClassVar[str | None] = None  # the config section of those baselines
    # Keys that say where a run computes and where its data lives, not what is trained: they
    # may change after a run starts (another machine, a moved data folder), in config.yaml,
    # with `train --resume --set`, `evaluate --set` and `render --set`.
    location_keys: ClassVar[tuple[str, ...]] = ()
    # evaluation.* keys that only `metarl evaluate` uses (`render --set` refuses them)
    render_ignored_keys: ClassVar[tuple[str, ...]] = ()
    # the pictures `metarl render` writes in the run directory when not told where
    picture_names: ClassVar[tuple[str, ...]] = ()
    # How the test tasks are drawn and scored; an evaluation.json written another way
    # (recorded as "scoring_version", 1 when missing) is not reused.
    scoring_version: ClassVar[int] = 1

    def check_machine(self, config: Any, where: Path | None = None,
                      overrides: Sequence[str] = ()) -> str | None:
        """Raise :class:`ConfigError` if this machine cannot run ``config`` (a device it
        lacks), with the fix where the setting came from: the ``--set`` ``overrides``, else
        the config file ``where``; called before a command writes anything. Returns what
        the run computes on, to say so (None: the CPU, the only choice of experiments that
        have nothing to check)."""
        return None

    def learning_curve(self, config: Any) -> tuple[str, dict[str, Panel | None]]:
        """The title of a run's ``learning_curve.png`` and how to draw its metrics, in order
        (None: a metric logged but not drawn; metrics not named get a panel under their own
        name)."""
        return f"{self.name}: meta-training", {}

    @abstractmethod
    def make_trainer(self, config: Any) -> Trainer: ...

    @abstractmethod
    def evaluate(self, config: Any, state: dict[str, Any], run_dir: Path,
                 options: EvaluateOptions) -> dict[str, Any]:
        """Adaptation curve(s) of the trained meta-parameters; returns ``evaluation.json``."""

    @abstractmethod
    def render(self, config: Any, state: dict[str, Any], run_dir: Path,
               options: RenderOptions) -> list[Path]:
        """Pictures of what the trained model does; returns the written files."""


def resolve_baselines(experiment: Experiment, text: str | None) -> tuple[str, ...]:
    """``--baselines [NAMES]``: None (not given) -> none; ``"all"`` -> every baseline of the
    experiment; otherwise comma-separated names from ``experiment.baseline_names``."""
    if text is None:
        return ()
    if text == "all":
        return experiment.baseline_names
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in experiment.baseline_names]
    if not experiment.baseline_names:
        raise ConfigError(f"--baselines {text!r}: experiment {experiment.name} defines no "
                          "baselines")
    if unknown or not names:
        raise ConfigError(f"--baselines {text!r}: {experiment.name} baselines are "
                          f"{', '.join(experiment.baseline_names)}; give some of them, "
                          "comma-separated, or none for all")
    return names


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ConfigError(f"experiment = {name!r}: known experiments are "
                          + ", ".join(sorted(EXPERIMENTS)))
    module_name, class_name = EXPERIMENTS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()


def config_from_data(data: dict[str, Any]) -> tuple[Experiment, Any]:
    """Pick the experiment named by ``data["experiment"]`` and build its validated config."""
    name = data.get("experiment")
    if name is None:
        raise ConfigError("missing required key experiment; known experiments are "
                          + ", ".join(sorted(EXPERIMENTS)))
    experiment = get_experiment(name)
    try:
        return experiment, from_dict(experiment.config_class, data)
    except ConfigError as error:
        if str(error).startswith("unknown key device;"):
            raise ConfigError(f"{error} (experiment {name} computes on the CPU only; device "
                              "is a setting of Omniglot runs)") from None
        if str(error).startswith("unknown key"):  # say whose keys: the file's experiment's
            raise ConfigError(f"{error} (of experiment {name})") from None
        raise


def baseline_section(experiment: Experiment, config: Any) -> Any:
    """The experiment's baseline section of ``config`` (a dataclass; None if it has none)."""
    name = experiment.baseline_section
    return getattr(config, name) if name else None


DISPLAY_KEYS = ("run.progress",)
"""Keys that change only what a command shows, never a number: evaluate and render take
them, and titles that name a run's overrides leave them out."""


def with_evaluation_overrides(experiment: Experiment, config: Any, overrides: Sequence[str],
                              *, baselines: bool = True) -> Any:
    """``config`` with ``evaluation.KEY=VALUE`` overrides (and, with ``baselines``, those of
    the experiment's baseline section, such as ``baselines.oracle_iterations=500``) applied
    and validated (``metarl evaluate --set``; ``metarl render --set`` without baselines).
    The experiment's ``location_keys`` (where it computes and its data lives) and
    ``run.progress`` (whether a progress bar shows) are accepted too. Other keys are refused:
    they would change what the run trained, not how it is evaluated."""
    sections: tuple[str, ...] = ("evaluation",)
    if baselines and experiment.baseline_section:
        sections += (experiment.baseline_section,)
    for text in overrides:
        path, _ = parse_override(text)
        if ".".join(path) in (*experiment.location_keys, *DISPLAY_KEYS):
            continue
        if len(path) < 2 or path[0] not in sections:
            allowed = " and ".join(f"{name}.*" for name in sections)
            also = (f", and where it computes and its data lives: "
                    f"{', '.join(experiment.location_keys)}"
                    if experiment.location_keys else "")
            raise ConfigError(f"--set {text!r}: --set changes only {allowed} keys, how the "
                              f"run is evaluated{also}, and run.progress (e.g. "
                              "evaluation.later_lr_scale=0.25)")
        if path[0] == "evaluation" and len(path) == 2 and path[1] in COMMAND_LINE_KEYS:
            raise ConfigError(f"--set {text!r}: give --{path[1]} {path[1].upper()} instead")
    if not overrides:
        return config
    return from_dict(experiment.config_class, apply_overrides(to_dict(config), overrides))


def load_config(path: str | Path, overrides: Sequence[str] = (),
                seed: int | None = None) -> tuple[Experiment, Any]:
    """Read a YAML config, apply ``key=value`` overrides and ``seed``, and validate it all.

    An error is blamed on the file (its message starts with the file's path) when the file
    alone is invalid too; otherwise on the overrides.
    """
    data = read_yaml(path)
    overridden = apply_overrides(data, overrides)
    if seed is not None:
        overridden["seed"] = seed
    try:
        return config_from_data(overridden)
    except ConfigError:
        config_from_file(path, data)  # raises, naming the file, when the file is invalid
        raise  # the file is valid: an override is not


def config_from_file(path: str | Path, data: dict[str, Any]) -> tuple[Experiment, Any]:
    """:func:`config_from_data` for the contents of the file ``path``; errors name the file."""
    try:
        return config_from_data(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
