"""Omniglot N-way K-shot classification (MAML paper, section 5.2): config, training,
evaluation on 600 test tasks, pictures of adapted predictions."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from metarl.adaptation import AdamMoments, LearningRate, Params, test_time_learning_rates
from metarl.checkpoint import atomic_write_text
from metarl.config import (
    AdaptationConfig,
    ConfigError,
    RunConfig,
    param,
    parse_override,
    section,
    to_dict,
)
from metarl.devices import DEVICE_CHOICES, check_device_setting, resolve_device
from metarl.evaluation import format_table, summarize, write_evaluation
from metarl.experiment import EvaluateOptions, Experiment, Panel, RenderOptions
from metarl.logging import work_bar
from metarl.plots import plot_adaptation_curves, wrapped_title
from metarl.seeding import torch_generator
from metarl.supervised.meta import adaptation_curve, minibatch_indices, query_predictions
from metarl.supervised.omniglot import (
    CharacterSplit,
    Conv4,
    OmniglotTaskDraw,
    class_pool,
    cross_entropy,
    draw_omniglot_tasks,
    reset_conv4,
    sample_omniglot_batch,
    split_characters,
)
from metarl.supervised.omniglot_data import (
    DRAWERS,
    TOTAL_CHARACTERS,
    OmniglotDataError,
    OmniglotImages,
    load_omniglot,
)
from metarl.supervised.tasks import TaskBatch
from metarl.supervised.trainer import SupervisedMetaTrainer, stored_moments

PUBLISHED_ACCURACY = {
    # ways, shots -> method -> accuracy % (MAML paper Table 1; Reptile paper Table 1 for the
    # first-order MAML and Reptile numbers). All transductive (batch statistics of the batch).
    (5, 1): {"MAML": 98.7, "first-order MAML": 98.3, "Reptile": 97.68},
    (5, 5): {"MAML": 99.9, "first-order MAML": 99.2, "Reptile": 99.48},
    (20, 1): {"MAML": 95.8, "first-order MAML": 89.4, "Reptile": 89.43},
    (20, 5): {"MAML": 98.9, "first-order MAML": 97.9, "Reptile": 97.12},
}
SPLIT_NAME = "omniglot_split.json"
DATA_ENV = "METARL_OMNIGLOT"
DEFAULT_ROOTS = ("data/omniglot", "../shared/data/omniglot")
"""Relative to the working directory, then (for a source checkout) to the repository root."""
CHECKOUT = Path(__file__).resolve().parents[2]
DRAWINGS_REASON = "a character has 20 drawings, and a task keeps one for a query at least"
VMAP_MAX_IMAGES_PER_TASK = 20
"""``vectorize: auto`` uses vmap up to this many images per task and the loop above. Measured
on 2 CPU cores (``metarl benchmark omniglot``, docs/BENCHMARKS.md): vmap is 1.7-2x faster at
10 images per task (5-way 1-shot, 1 query); at 30 (5-way 1-shot, 5 queries) the loop was
1.2-2x faster; at 40 (20-way 1-shot) the loop is as fast for MAML and 1.2x faster for the
first-order methods."""


@dataclasses.dataclass
class OmniglotDataConfig:
    """Where the images come from and how characters are split and augmented."""

    root: str | None = param(
        None, "folder with images_background.zip and images_evaluation.zip (or their unpacked "
        f"folders); null: ${DATA_ENV}, else the first of {', '.join(DEFAULT_ROOTS)} that exists "
        "under the working directory or the source checkout")
    download: bool = param(
        False, "download the canonical archives into root when missing (needs internet)")
    cache_dir: str | None = param(
        None, "where the decoded image array is cached (null: $XDG_CACHE_HOME/metarl/omniglot, "
        "else ~/.cache/metarl/omniglot)")
    image_size: int = param(
        28, "images are resized to image_size x image_size pixels (at most 105, the drawings' "
        "own size)", ge=8, le=105, bound_reason="the drawings are 105 x 105 pixels")
    train_characters: int = param(
        1200, "characters for meta-training; the other 1623 - n are test characters",
        ge=20, le=1603)
    split_seed: int = param(0, "seed of the character split (fixed: same split in every run)",
                            ge=0)
    rotations: bool = param(
        True, "rotations by 90/180/270 degrees make new classes (MAML protocol)")


@dataclasses.dataclass
class OmniglotTaskConfig:
    """One N-way K-shot task."""

    ways: int = param(5, "classes per task (N)", ge=2)
    shots: int = param(1, "support images per class (K)", ge=1, le=19, bound_reason=DRAWINGS_REASON)
    queries: int = param(
        1, "query images per class in meta-training (MAML's code: as many as shots)",
        ge=1, le=19, bound_reason=DRAWINGS_REASON)
    train_shots: int | None = param(
        None, "support images per class in meta-training (null: shots; the Reptile paper "
        "trains on 10)", ge=1, le=19, bound_reason=DRAWINGS_REASON)


@dataclasses.dataclass
class Conv4Config:
    """The classifier: 4 x [3x3 conv, batch norm, ReLU], then linear."""

    filters: int = param(64, "channels of every convolution", ge=1)
    downsample: Literal["stride", "maxpool"] = param(
        "stride", "stride-2 convolutions (MAML's Omniglot net) or 2x2 max-pooling")


@dataclasses.dataclass
class OmniglotAdaptationConfig(AdaptationConfig):
    """How a task's fast weights are computed (MAML paper: 5-way lr 0.4, 20-way lr 0.1)."""

    inner_lr: float = param(0.4, "inner-loop (adaptation) learning rate", gt=0)
    inner_optimizer: Literal["sgd", "adam"] = param(
        "sgd", "reptile only: sgd (gradient steps of inner_lr) or adam (Adam with beta1 = 0 "
        "and step size inner_lr, as the Reptile paper adapts; its state carries over from "
        "task to task, is kept in checkpoints and is where evaluation's adaptation starts)")
    inner_batch_size: int | None = param(
        None, "reptile only: support images each inner step trains on, in shuffled batches "
        "as the Reptile paper draws them (null: all of them)", ge=1)


@dataclasses.dataclass
class OmniglotTrainingConfig:
    """The outer loop."""

    iterations: int = param(60_000, "meta-iterations (one meta-batch of tasks each)", ge=1)
    meta_batch_size: int = param(32, "tasks per meta-iteration", ge=1)
    outer_optimizer: Literal["adam", "sgd"] = param(
        "adam", "optimizer of the meta-parameters (sgd with reptile is classic Reptile)")
    outer_lr: float = param(1e-3, "outer (meta) learning rate", gt=0, le=1e38)
    outer_lr_final: float | None = param(
        None, "the outer learning rate falls linearly from outer_lr at the first iteration "
        "to this after training.iterations (the Reptile paper: 1 to 0; a run resumed with "
        "more iterations follows the longer schedule from there); null: constant",
        ge=0, le=1e38)


@dataclasses.dataclass
class OmniglotEvaluationConfig:
    """`metarl evaluate`: tasks of the test characters, accuracy after 0..steps steps."""

    tasks: int = param(600, "number of test tasks", ge=2)
    steps: int = param(3, "evaluate after 0..steps gradient steps", ge=0)
    shots: int | None = param(
        None, "support images per class of a test task (null: task.shots); a run trained with "
        "task.train_shots trains the same for any K, so it can be tested at another",
        ge=1, le=19, bound_reason=DRAWINGS_REASON)
    queries: int | None = param(
        None, "query images per class of a test task (null: task.queries; the MAML paper "
        "scored as many queries as shots)", ge=1, le=19, bound_reason=DRAWINGS_REASON)
    inner_lr: float | None = param(
        None, "adaptation learning rate at test time (null: adaptation.inner_lr; a Meta-SGD "
        "run adapts with its learned rates instead)", gt=0)
    later_lr_scale: float = param(
        1.0, "learning rate of the steps after the first, as a fraction of inner_lr (1.0: one "
        "step size, as in the MAML paper's Omniglot evaluation; a Meta-SGD run keeps its "
        "learned rates at every step)", gt=0, le=1)
    transductive: bool = param(
        True, "score a task's queries as one batch, which Conv4's batch norm normalizes "
        "together (the protocol of MAML's and the Reptile paper's transductive figures); "
        "false: each query alone beside the support set (the Reptile paper's non-transductive "
        "evaluation; no published figure here, and (S + 1) x slower scoring)")
    inner_batch_size: int | None = param(
        None, "support images each test-time step adapts on, in shuffled batches drawn as in "
        "training (the Reptile paper: 5 for 5-way 5-shot, 10 for 20-way); null: all of them",
        ge=1)
    chunk_tasks: int = param(100, "test tasks loaded and adapted together: bounds "
                             "evaluation's memory (images, activations, fast weights) at "
                             "some cost in speed", ge=1)
    seed: int = param(2017, "seed of the test tasks (independent of the training seed)", ge=0)


@dataclasses.dataclass
class OmniglotConfig:
    """Omniglot few-shot classification with MAML, first-order MAML, Reptile or Meta-SGD."""

    experiment: Literal["omniglot"] = param("omniglot", "which experiment this file configures")
    seed: int = param(0, "seed of every random generator of the run", ge=0)
    device: str = param(
        "cpu", f"where training, evaluation and render compute: {DEVICE_CHOICES}; tasks "
        "are drawn on the CPU either way, and a run may change device when resumed or "
        "evaluated")
    data: OmniglotDataConfig = section(OmniglotDataConfig, "images and character split")
    task: OmniglotTaskConfig = section(OmniglotTaskConfig, "N-way K-shot tasks")
    model: Conv4Config = section(Conv4Config, "network")
    adaptation: OmniglotAdaptationConfig = section(OmniglotAdaptationConfig, "inner loop")
    training: OmniglotTrainingConfig = section(OmniglotTrainingConfig, "outer loop")
    evaluation: OmniglotEvaluationConfig = section(OmniglotEvaluationConfig, "metarl evaluate")
    run: RunConfig = section(RunConfig, "checkpoints and logs")

    def __post_init__(self) -> None:
        check_device_setting(self.device)
        task, ev = self.task, self.evaluation
        shots = test_shots(self)
        shots_key = "evaluation.shots" if ev.shots is not None else "task.shots"
        queries_key = "evaluation.queries" if ev.queries is not None else "task.queries"
        for name, per_class in (("task.shots + task.queries", task.shots + task.queries),
                                (f"{shots_key} + {queries_key}",
                                 shots + (ev.queries or task.queries))):
            if per_class > DRAWERS:
                raise ConfigError(f"{name} = {per_class}: a character has only {DRAWERS} "
                                  "drawings")
        if task.ways > self.data.train_characters:
            raise ConfigError(f"task.ways = {task.ways} exceeds data.train_characters = "
                              f"{self.data.train_characters}: each task needs that many "
                              "different training characters")
        if task.train_shots is not None and task.train_shots + task.queries > DRAWERS:
            raise ConfigError(f"task.train_shots + task.queries = "
                              f"{task.train_shots + task.queries}: a character has only "
                              f"{DRAWERS} drawings")
        adaptation = self.adaptation
        if adaptation.method != "reptile":
            for key, value, default in (("inner_optimizer", adaptation.inner_optimizer, "sgd"),
                                        ("inner_batch_size", adaptation.inner_batch_size,
                                         None)):
                if value != default:
                    raise ConfigError(
                        f"adaptation.{key} = {value} needs adaptation.method = reptile (MAML "
                        f"and first-order MAML differentiate full-batch gradient steps); "
                        f"allowed with {adaptation.method}: {default if default else 'null'}")
        support = task.train_shots or task.shots
        if (adaptation.inner_batch_size is not None
                and adaptation.inner_batch_size > task.ways * support):
            raise ConfigError(f"adaptation.inner_batch_size = {adaptation.inner_batch_size} "
                              f"exceeds the {task.ways * support} support images of a "
                              f"training task (task.ways x task.train_shots or task.shots)")
        test_batch = self.evaluation.inner_batch_size
        if test_batch is not None and test_batch > task.ways * shots:
            raise ConfigError(f"evaluation.inner_batch_size = {test_batch} exceeds the "
                              f"{task.ways * shots} support images of a test task "
                              f"(task.ways x evaluation.shots or task.shots)")
        test_characters = TOTAL_CHARACTERS - self.data.train_characters
        if task.ways > test_characters:
            raise ConfigError(f"task.ways = {task.ways} exceeds the {test_characters} test "
                              f"characters left by data.train_characters = "
                              f"{self.data.train_characters}")
        if self.model.downsample == "maxpool" and self.data.image_size < 16:
            raise ConfigError(f"data.image_size = {self.data.image_size} with model.downsample "
                              "= maxpool: four 2x2 poolings need images of at least 16 pixels")


def resolve_root(setting: str | None, *, download: bool = False) -> Path:
    """The Omniglot folder a config means (see ``OmniglotDataConfig.root``)."""
    if setting is not None:
        return Path(setting).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    for candidate in [Path(c) for c in DEFAULT_ROOTS] + [CHECKOUT / c for c in DEFAULT_ROOTS]:
        if candidate.is_dir():
            return candidate
    if download:
        return Path(DEFAULT_ROOTS[0])
    raise ConfigError(f"data.root = null and no Omniglot folder found (${DATA_ENV} unset; "
                      f"looked for {', '.join(DEFAULT_ROOTS)}): set data.root to the folder "
                      "with images_background.zip and images_evaluation.zip, or set "
                      "data.download: true when online")


def load_images(config: OmniglotConfig) -> OmniglotImages:
    data = config.data
    root = resolve_root(data.root, download=data.download)
    try:
        return load_omniglot(root, image_size=data.image_size, download=data.download,
                             cache_dir=data.cache_dir)
    except OmniglotDataError as error:
        if data.root is None and os.environ.get(DATA_ENV):
            raise OmniglotDataError(f"{error} (the folder {root} came from ${DATA_ENV}, as "
                                    "data.root is null)") from None
        raise


def character_split(config: OmniglotConfig, images: OmniglotImages) -> CharacterSplit:
    return split_characters(images.characters, config.data.train_characters,
                            config.data.split_seed)


def make_model(config: OmniglotConfig, generator: torch.Generator | None = None) -> Conv4:
    model = Conv4(config.task.ways, filters=config.model.filters,
                  image_size=config.data.image_size, downsample=config.model.downsample)
    if generator is not None:
        reset_conv4(model, generator)
    return model


def resolve_vectorize(setting: str, ways: int, images_per_class: int) -> bool:
    if setting != "auto":
        return setting == "vmap"
    return ways * images_per_class <= VMAP_MAX_IMAGES_PER_TASK


def percent_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Accuracy in %, as ``100 · correct / N`` (exact where N divides 100: 20.0, not the
    20.0000003 of 100 times the float32 fraction 0.2)."""
    correct = (logits.argmax(dim=-1) == labels).sum().to(torch.float32)
    return correct * 100.0 / labels.shape[-1]


def on_device(tensors: Params, device: torch.device) -> Params:
    """A checkpoint's tensors (θ or learned rates, on the CPU) moved to ``device``."""
    return OrderedDict((name, tensor.to(device)) for name, tensor in tensors.items())


def evaluation_lr(config: OmniglotConfig, learned: Params | None, steps: int,
                  device: torch.device) -> LearningRate:
    """Test-time inner learning rates (Meta-SGD runs use their learned rates, moved to
    ``device``)."""
    if learned is not None:
        return on_device(learned, device)
    ev = config.evaluation
    inner_lr = ev.inner_lr if ev.inner_lr is not None else config.adaptation.inner_lr
    return test_time_learning_rates(inner_lr, ev.later_lr_scale, steps)


def inner_moments(config: OmniglotConfig, state: dict[str, Any],
                  device: torch.device) -> AdamMoments | None:
    """The inner Adam's state a run adapts from (None for gradient steps)."""
    if config.adaptation.inner_optimizer != "adam":
        return None
    return stored_moments(state["trainer"], device)


def test_shots(config: OmniglotConfig) -> int:
    """Support images per class of a test task."""
    return config.evaluation.shots or config.task.shots


def test_minibatches(config: OmniglotConfig, tasks: int, steps: int,
                     generator: torch.Generator) -> torch.Tensor | None:
    """``(tasks, steps, evaluation.inner_batch_size)`` indices of the support images each
    test-time step adapts on, drawn for all test tasks at once (so that chunking does not
    change them); None when every step takes the whole support set."""
    size = config.evaluation.inner_batch_size
    if size is None:
        return None
    return minibatch_indices(tasks, config.task.ways * test_shots(config), steps, size,
                             generator)


class OmniglotTrainer(SupervisedMetaTrainer):
    """The supervised meta-trainer plus the character split it trains on (kept in checkpoints)."""

    def __init__(self, *args: Any, split: dict[str, list[str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.split = split

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "split": self.split}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("split") is not None and state["split"] != self.split:
            raise ConfigError("the character split computed from the data folder differs from "
                              "the one this run trained on: resume with the same Omniglot data")
        super().load_state_dict(state)


class OmniglotExperiment(Experiment):
    name = "omniglot"
    config_class = OmniglotConfig
    metric = "accuracy"
    shown_metrics = ("query_loss", "query_accuracy")
    location_keys = ("device", "data.root", "data.download", "data.cache_dir")
    render_ignored_keys = ("evaluation.chunk_tasks",)
    picture_names = ("omniglot_predictions.png",)

    def check_machine(self, config: OmniglotConfig, where: Path | None = None,
                      overrides: Sequence[str] = ()) -> str:
        if any(parse_override(text)[0] == ["device"] for text in overrides):
            fix = f"give --set device=cpu instead of --set device={config.device}"
        elif where is not None:
            fix = f"set device: cpu in {where}, or --set device=cpu"
        else:
            fix = None
        device = resolve_device(config.device, fix=fix)
        if device.type == "cuda":
            return f"{device} ({torch.cuda.get_device_name(device)})"
        return str(device)

    def learning_curve(self, config: OmniglotConfig) -> tuple[str, dict[str, Panel | None]]:
        task, adaptation = config.task, config.adaptation
        steps = adaptation.inner_steps
        after = f"after {steps} step{'s' * (steps > 1)}"
        trained_on = (f" (training tasks {task.train_shots}-shot)"
                      if task.train_shots not in (None, task.shots) else "")
        return (f"Omniglot {task.ways}-way {task.shots}-shot{trained_on}, {adaptation.label}: "
                "meta-training", {
                    "query_loss": Panel(f"query loss {after} (training tasks)"),
                    "query_accuracy": Panel(f"query accuracy % {after} (training tasks)"),
                    "outer_lr": Panel("outer learning rate", limits=(0.0, None)),
                })

    def make_trainer(self, config: OmniglotConfig) -> OmniglotTrainer:
        device = resolve_device(config.device)
        images = load_images(config)
        split = character_split(config, images)
        pool = class_pool(images, split.train, config.data.rotations)
        task = config.task
        model = make_model(config, torch_generator(config.seed, "init"))

        shots = task.train_shots or task.shots

        def sample(generator: torch.Generator) -> TaskBatch:
            return sample_omniglot_batch(pool, config.training.meta_batch_size, task.ways,
                                         shots, task.queries, generator)

        return OmniglotTrainer(
            model, sample, cross_entropy, adaptation=config.adaptation,
            vectorize=resolve_vectorize(config.adaptation.vectorize, task.ways,
                                        shots + task.queries),
            outer_optimizer=config.training.outer_optimizer,
            outer_lr=config.training.outer_lr,
            task_generator=torch_generator(config.seed, "tasks"),
            metric=("accuracy", percent_accuracy),
            split=split.to_json(images.characters), device=device,
            inner_optimizer=config.adaptation.inner_optimizer,
            inner_batch_size=config.adaptation.inner_batch_size,
            outer_lr_final=config.training.outer_lr_final,
            total_iterations=config.training.iterations)

    def test_pool(self, config: OmniglotConfig, state: dict[str, Any], run_dir: Path,
                  output_dir: Path | None = None) -> tuple[torch.Tensor, OmniglotImages]:
        """The test classes of the run, after checking the split is the one it trained with.
        The split is written beside what is made of it: once into ``run_dir`` (a run's
        split never changes), or into ``output_dir`` where given, every time (the folder may
        hold another run's)."""
        images = load_images(config)
        split = character_split(config, images)
        as_json = split.to_json(images.characters)
        if "split" in state["trainer"] and state["trainer"]["split"] != as_json:
            raise ConfigError(f"the character split of {run_dir} differs from the one computed "
                              "now from data.split_seed: the data folder changed")
        path = (output_dir or run_dir) / SPLIT_NAME
        if output_dir is not None or not path.exists():
            atomic_write_text(path, json.dumps(as_json, indent=1) + "\n")
        return class_pool(images, split.test, config.data.rotations), images

    def test_tasks(self, config: OmniglotConfig, pool: torch.Tensor, tasks: int,
                   seed: int) -> OmniglotTaskDraw:
        """Which images make up the test tasks; their images are gathered a chunk at a time."""
        queries = config.evaluation.queries or config.task.queries
        return draw_omniglot_tasks(pool, tasks, config.task.ways, test_shots(config), queries,
                                   torch_generator(seed, "evaluate"))

    def evaluate(self, config: OmniglotConfig, state: dict[str, Any], run_dir: Path,
                 options: EvaluateOptions) -> dict[str, Any]:
        ev, task = config.evaluation, config.task
        device = resolve_device(config.device)
        steps = ev.steps if options.steps is None else options.steps
        tasks = ev.tasks if options.tasks is None else options.tasks
        seed = ev.seed if options.seed is None else options.seed
        pool, _ = self.test_pool(config, state, run_dir, options.output_dir)
        draw = self.test_tasks(config, pool, tasks, seed)
        shots = test_shots(config)
        queries = draw.drawers.shape[-1] - shots
        vectorize = resolve_vectorize(config.adaptation.vectorize, task.ways, shots + queries)
        lr = evaluation_lr(config, state["trainer"].get("inner_lr"), steps, device)
        moments = inner_moments(config, state, device)
        model = make_model(config).to(device)
        params = on_device(state["trainer"]["params"], device)
        minibatches = test_minibatches(config, tasks, steps,
                                       torch_generator(seed, "evaluate-batches"))
        chunks = []
        what = f"evaluating {tasks} test tasks, {steps} step{'s' * (steps != 1)} each"
        with work_bar(tasks * steps, what, "step",
                      enabled=config.run.progress and steps > 0) as bar:
            for start in range(0, tasks, ev.chunk_tasks):
                end = start + ev.chunk_tasks
                chunks.append(adaptation_curve(
                    model, params, draw.gather(pool, start, end).to(device), cross_entropy,
                    percent_accuracy, steps=steps, lr=lr, vectorize=vectorize,
                    moments=moments, on_steps=bar.update, transductive=ev.transductive,
                    minibatches=None if minibatches is None
                    else minibatches[start:end].to(device),
                ).cpu())
        curve = summarize(torch.cat(chunks).numpy())
        label = f"{config.adaptation.label}, {task.ways}-way {shots}-shot"
        if not ev.transductive:
            label += ", non-transductive"
        trained = task.train_shots or task.shots
        if shots != task.shots:  # evaluation.shots: tested at another K than configured
            label += f" (trained {trained}-shot)"
            if task.train_shots is None:
                print(f"metarl: note: this run trained on {trained}-shot tasks and is tested "
                      f"at {shots} shots (evaluation.shots); the papers' {shots}-shot figures "
                      f"drawn beside it are of runs trained at {shots} shots", file=sys.stderr)
        # the published figures are transductive (MAML's batch norm, the Reptile paper's row
        # this project tracks); none stands beside a non-transductive evaluation
        published = PUBLISHED_ACCURACY.get((task.ways, shots), {}) if ev.transductive else {}
        result: dict[str, Any] = {
            "experiment": self.name, "metric": "accuracy (%)", "steps": list(range(steps + 1)),
            **curve, "tasks": tasks, "ways": task.ways, "shots": shots,
            "queries_per_class": queries, "seed": seed,
            "inner_lr": lr if not isinstance(lr, dict) else "learned (Meta-SGD)",
            "inner_optimizer": config.adaptation.inner_optimizer, "transductive": ev.transductive,
            "checkpoint_iteration": state["iteration"], "method": config.adaptation.method,
            "test_characters": len(pool), "baselines": {}, "published": published,
            "device": str(device),
        }
        plot_adaptation_curves(
            {label: curve}, result["steps"], (options.output_dir or run_dir) / "adaptation.png",
            ylabel="test accuracy % (mean ± 95% CI)", value_range=(0.0, 100.0),
            title=f"Omniglot {task.ways}-way {shots}-shot, {tasks} test tasks",
            # the papers' final accuracies, each after its own number of test steps
            reference={f"{name} (paper): {value:g}%": {steps: value}
                       for name, value in published.items()}
            if published and steps > 0 else None)
        result["table"] = format_table({label: curve}, result["steps"], "accuracy (%)")
        write_evaluation(run_dir, result, to_dict(config.evaluation),
                         output_dir=options.output_dir)
        return result

    def render(self, config: OmniglotConfig, state: dict[str, Any], run_dir: Path,
               options: RenderOptions) -> list[Path]:
        import matplotlib.pyplot as plt

        device = resolve_device(config.device)
        steps = options.steps if options.steps is not None else config.evaluation.steps
        seed = options.seed if options.seed is not None else config.evaluation.seed
        pool, _ = self.test_pool(config, state, run_dir)
        task = config.task
        # as many queries per class as evaluate scores: Conv4 normalizes with the statistics
        # of the images it is given, so other query sets would give other predictions
        shots = test_shots(config)
        batch = sample_omniglot_batch(pool, options.tasks, task.ways, shots,
                                      config.evaluation.queries or task.queries,
                                      torch_generator(seed, "render"))
        lr = evaluation_lr(config, state["trainer"].get("inner_lr"), steps, device)
        minibatches = test_minibatches(config, options.tasks, steps,
                                       torch_generator(seed, "render-batches"))
        outputs = query_predictions(make_model(config).to(device),
                                    on_device(state["trainer"]["params"], device),
                                    batch.to(device), cross_entropy, steps=steps, lr=lr,
                                    moments=inner_moments(config, state, device),
                                    minibatches=None if minibatches is None
                                    else minibatches.to(device),
                                    transductive=config.evaluation.transductive).cpu()
        before, after = outputs[:, 0].argmax(-1), outputs[:, -1].argmax(-1)
        shown_classes = min(task.ways, 10)
        rows_per_task = 3
        rows = rows_per_task * options.tasks
        fig, axes = plt.subplots(rows, shown_classes, figsize=(1.2 * shown_classes, 1.45 * rows),
                                 squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        picks = torch_generator(seed, "render-queries")
        for t in range(options.tasks):
            top = rows_per_task * t
            for c in range(shown_classes):
                ax = axes[top, c]
                ax.imshow(batch.support_x[t, c * shots, 0].numpy(), cmap="gray_r")
                ax.set_title(f"class {c}" + (f" (1 of {shots})" if shots > 1 else ""),
                             fontsize=8)
            axes[top, 0].text(-0.3, 0.5, f"task {t}\nsupport", transform=axes[top, 0].transAxes,
                              ha="right", va="center", fontsize=8)
            # under each class's support image, one of its queries (drawn at random)
            chosen = []
            for c in range(shown_classes):
                of_class = (batch.query_y[t] == c).nonzero().flatten()
                chosen.append(int(of_class[torch.randint(len(of_class), (1,), generator=picks)]))
            for row, (name, predicted) in enumerate((("before\nadapting", before),
                                                      (f"after\n{steps} step(s)", after)),
                                                     start=1):
                for c, q in enumerate(chosen):
                    ax = axes[top + row, c]
                    guess = int(predicted[t, q])
                    ax.imshow(batch.query_x[t, q, 0].numpy(), cmap="gray_r")
                    ax.set_title(f"predicted {guess}", fontsize=7,
                                 color="green" if guess == c else "red")
                axes[top + row, 0].text(-0.3, 0.5, name,
                                        transform=axes[top + row, 0].transAxes, ha="right",
                                        va="center", fontsize=8)
        fig.suptitle(wrapped_title(
            f"Omniglot {task.ways}-way {shots}-shot test tasks, "
            f"{config.adaptation.label}, iteration {state['iteration']}: each class's support "
            "image and, below it, one of its query images with the class predicted (green "
            "right, red wrong)"
            + (f"; classes 0-{shown_classes - 1} of {task.ways} shown"
               if shown_classes < task.ways else ""), fig.get_figwidth() * 12 / 9), fontsize=9)
        fig.tight_layout()
        output = options.output or run_dir / self.picture_names[0]
        fig.savefig(output, dpi=110)
        plt.close(fig)
        return [output]

