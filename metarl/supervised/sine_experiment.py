"""Sine-wave regression (MAML paper, section 5.1): config, training, evaluation, pictures."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.func import functional_call

from metarl.adaptation import LearningRate, Params, params_of, test_time_learning_rates
from metarl.checkpoint import baseline_cache, load_or_compute
from metarl.config import (
    AdaptationConfig,
    ConfigError,
    RunConfig,
    param,
    section,
    to_dict,
    yaml_scalar,
)
from metarl.evaluation import (
    first_step_worse_than_start,
    format_table,
    summarize,
    write_evaluation,
)
from metarl.experiment import (
    EvaluateOptions,
    Experiment,
    NonFiniteLossError,
    Panel,
    RenderOptions,
    baseline_section,
)
from metarl.plots import plot_adaptation_curves
from metarl.seeding import torch_generator
from metarl.supervised.meta import adaptation_curve, mse_loss, query_predictions
from metarl.supervised.models import make_mlp
from metarl.supervised.sine import SineTaskConfig, sample_sine_batch, sample_sine_test_batch
from metarl.supervised.trainer import SupervisedMetaTrainer

PUBLISHED_MSE = {
    # MAML paper, Table 2 (trained with K = 10, tested with K = 5) and Figure 3 (K = 10).
    "MAML paper, K=5": {1: 0.67, 5: 0.38, 10: 0.35},
    "MAML paper, K=10": {1: 0.42, 10: 0.13},
}


@dataclasses.dataclass
class MLPConfig:
    """The regression network."""

    hidden_sizes: list[int] = param([40, 40], "hidden layer widths", ge=1)
    activation: Literal["relu", "tanh"] = param("relu", "hidden activation")


@dataclasses.dataclass
class SineTrainingConfig:
    """The outer loop."""

    iterations: int = param(70_000, "meta-iterations (one meta-batch of tasks each)", ge=1)
    meta_batch_size: int = param(25, "tasks per meta-iteration", ge=1)
    outer_optimizer: Literal["adam", "sgd"] = param(
        "adam", "optimizer of the meta-parameters (sgd with reptile is classic Reptile)")
    outer_lr: float = param(1e-3, "outer (meta) learning rate", gt=0, le=1e38)


@dataclasses.dataclass
class SineEvaluationConfig:
    """`metarl evaluate`: new tasks, adapted from K support points, scored on query points."""

    tasks: int = param(600, "number of test tasks", ge=2)
    shots: list[int] = param([5, 10, 20], "support sizes K to evaluate", ge=1, min_items=1)
    steps: int = param(10, "evaluate after 0..steps gradient steps", ge=0)
    query_points: int = param(100, "query points per task for the test MSE", ge=1)
    inner_lr: float | None = param(
        None, "adaptation learning rate at test time (null: adaptation.inner_lr; a Meta-SGD "
        "run adapts with its learned rates instead)", gt=0)
    later_lr_scale: float = param(
        0.5, "learning rate of the steps after the first, as a fraction of inner_lr (0.5 "
        "halves it, as the MAML authors' RL evaluation does; their sine evaluation keeps one "
        "step size, 1.0, with which some K=5 tasks overshoot: docs/BENCHMARKS.md; a Meta-SGD "
        "run keeps its learned rates at every step)", gt=0, le=1)
    seed: int = param(2017, "seed of the test tasks (independent of the training seed)", ge=0)

    def __post_init__(self) -> None:
        if len(set(self.shots)) != len(self.shots):
            raise ConfigError(f"shots = {yaml_scalar(self.shots)}: give each K once")


@dataclasses.dataclass
class PretrainedBaselineConfig:
    """The paper's "pretrained" baseline: one network fit to all tasks jointly, then fine-tuned."""

    iterations: int = param(10_000, "joint-training iterations", ge=1)
    batch_tasks: int = param(25, "tasks per joint-training batch", ge=1)
    points_per_task: int = param(10, "points per task in a joint-training batch", ge=1)
    lr: float = param(1e-3, "Adam learning rate of joint training", gt=0)


@dataclasses.dataclass
class SineConfig:
    """Sine-wave regression with MAML, first-order MAML, Reptile or Meta-SGD."""

    experiment: Literal["sine"] = param("sine", "which experiment this file configures")
    seed: int = param(0, "seed of every random generator of the run", ge=0)
    task: SineTaskConfig = section(SineTaskConfig, "task distribution (MAML paper 5.1)")
    model: MLPConfig = section(MLPConfig, "network")
    adaptation: AdaptationConfig = section(AdaptationConfig, "inner loop")
    training: SineTrainingConfig = section(SineTrainingConfig, "outer loop")
    evaluation: SineEvaluationConfig = section(SineEvaluationConfig, "metarl evaluate")
    baseline: PretrainedBaselineConfig = section(PretrainedBaselineConfig,
                                                 "metarl evaluate --baselines")
    run: RunConfig = section(RunConfig, "checkpoints and logs")


def make_model(config: SineConfig, generator: torch.Generator | None = None) -> torch.nn.Module:
    return make_mlp(1, config.model.hidden_sizes, 1, config.model.activation,
                    generator=generator)


def resolve_vectorize(setting: str) -> bool:
    """vmap for the sine MLP unless the config asks for the loop (vmap measured ~9x faster)."""
    return setting != "loop"


def pretrain(config: SineConfig) -> Params:
    """Fit one network to points from many tasks at once (no adaptation during training)."""
    model = make_model(config, torch_generator(config.seed, "pretrained-init"))
    params = params_of(model)
    optimizer = torch.optim.Adam(list(params.values()), lr=config.baseline.lr)
    generator = torch_generator(config.seed, "pretrained-tasks")
    for _ in range(config.baseline.iterations):
        _, batch = sample_sine_batch(config.task, config.baseline.batch_tasks, generator,
                                     support_shots=config.baseline.points_per_task,
                                     query_shots=1)
        prediction = functional_call(model, params, (batch.support_x,))
        loss = mse_loss(prediction, batch.support_y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return OrderedDict((k, v.detach()) for k, v in params.items())


def pretrained_params(config: SineConfig, run_dir: Path,
                      output_dir: Path | None = None) -> Params:
    """The pretrained baseline of this run, trained once and cached in ``baselines/`` (of
    ``output_dir`` where given, see :func:`metarl.checkpoint.baseline_cache`)."""
    key = {"baseline": to_dict(config.baseline), "task": to_dict(config.task),
           "model": to_dict(config.model), "seed": config.seed}
    path, also_read = baseline_cache(run_dir, output_dir, "pretrained")
    return load_or_compute(path, key, lambda: pretrain(config), also_read=also_read)


@contextlib.contextmanager
def _naming(what: str) -> Iterator[None]:
    """Say which curve (support size, baseline) an evaluation that diverged was."""
    try:
        yield
    except NonFiniteLossError as error:
        raise NonFiniteLossError(f"{what}: {error}") from None


def evaluation_lr(config: SineConfig, learned: Params | None, steps: int) -> LearningRate:
    """Test-time inner learning rates: lr for the first step, lr · later_lr_scale after.

    A Meta-SGD run (``learned`` per-parameter rates) adapts with those at every step.
    """
    if learned is not None:
        return learned
    ev = config.evaluation
    inner_lr = ev.inner_lr if ev.inner_lr is not None else config.adaptation.inner_lr
    return test_time_learning_rates(inner_lr, ev.later_lr_scale, steps)


def _note_divergence(by_shots: dict[str, dict[str, list[float]]], *,
                     learned_rates: bool) -> None:
    """Say so on stderr where adapting raises the mean test MSE above its start (rates
    too large for the later steps) without making it non-finite."""
    for k, curve in by_shots.items():
        step = first_step_worse_than_start(curve["mean"])
        if step is None:
            continue
        fewer = f"ask for fewer steps (--steps {step - 1})"
        if learned_rates:
            remedy = "this Meta-SGD run adapts with the rates it learned" + (
                f"; {fewer}" if step > 1 else "")
        elif step > 1:
            remedy = (f"{fewer} or adapt with a smaller evaluation.inner_lr or "
                      "evaluation.later_lr_scale (--set)")
        else:
            remedy = "adapt with a smaller evaluation.inner_lr (--set)"
        print(f"metarl: note: K={k}: the mean test MSE after {step} step{'s' * (step > 1)} "
              f"({curve['mean'][step]:.4g}) is above the one before adaptation "
              f"({curve['mean'][0]:.4g}): adapting diverges; {remedy}", file=sys.stderr)


class SineExperiment(Experiment):
    name = "sine"
    config_class = SineConfig
    metric = "mse"
    shown_metrics = ("query_loss",)
    baseline_names = ("pretrained",)
    scoring_version = 2  # 1: each K on test tasks of its own
    baseline_section = "baseline"
    render_ignored_keys = ("evaluation.shots", "evaluation.query_points")  # draws training K
    picture_names = ("sine_fits.png",)

    def learning_curve(self, config: SineConfig) -> tuple[str, dict[str, Panel | None]]:
        steps = config.adaptation.inner_steps
        return (f"Sine regression, K = {config.task.support_shots}, {config.adaptation.label}: "
                "meta-training", {
                    "query_loss": Panel(f"query MSE after {steps} step{'s' * (steps > 1)} "
                                        "(training tasks)")})

    def make_trainer(self, config: SineConfig) -> SupervisedMetaTrainer:
        model = make_model(config, torch_generator(config.seed, "init"))

        def sample(generator: torch.Generator):
            return sample_sine_batch(config.task, config.training.meta_batch_size, generator)[1]

        return SupervisedMetaTrainer(
            model, sample, mse_loss, adaptation=config.adaptation,
            vectorize=resolve_vectorize(config.adaptation.vectorize),
            outer_optimizer=config.training.outer_optimizer,
            outer_lr=config.training.outer_lr,
            task_generator=torch_generator(config.seed, "tasks"))

    def curves(self, config: SineConfig, params: Params, lr: LearningRate, *, shots: int,
               tasks: int, steps: int, seed: int) -> np.ndarray:
        """Test MSE ``(tasks, steps + 1)`` of ``tasks`` new tasks after 0..steps steps from
        K = ``shots`` points. Every K of ``evaluation.shots`` gets the same tasks and query
        points (so step 0 is the same for all), and each K's support set holds the smaller
        K's."""
        _, batch = sample_sine_test_batch(
            config.task, tasks, support_shots=shots, query_shots=config.evaluation.query_points,
            task_generator=torch_generator(seed, "evaluate-tasks"),
            support_generator=torch_generator(seed, "evaluate-support"))
        curve = adaptation_curve(make_model(config), params, batch, mse_loss, mse_loss,
                                 steps=steps, lr=lr,
                                 vectorize=resolve_vectorize(config.adaptation.vectorize))
        return curve.numpy()

    def evaluate(self, config: SineConfig, state: dict[str, Any], run_dir: Path,
                 options: EvaluateOptions) -> dict[str, Any]:
        ev = config.evaluation
        steps = ev.steps if options.steps is None else options.steps
        tasks = ev.tasks if options.tasks is None else options.tasks
        seed = ev.seed if options.seed is None else options.seed
        params = state["trainer"]["params"]
        lr = evaluation_lr(config, state["trainer"].get("inner_lr"), steps)
        by_shots = {}
        for k in ev.shots:
            with _naming(f"K={k}"):
                by_shots[str(k)] = summarize(self.curves(config, params, lr, shots=k,
                                                         tasks=tasks, steps=steps, seed=seed))
        main_k = str(config.task.support_shots if config.task.support_shots in ev.shots
                     else ev.shots[0])
        result: dict[str, Any] = {
            "experiment": self.name, "metric": self.metric, "steps": list(range(steps + 1)),
            **by_shots[main_k], "tasks": tasks, "shots": int(main_k), "seed": seed,
            "inner_lr": lr if not isinstance(lr, dict) else "learned (Meta-SGD)",
            "checkpoint_iteration": state["iteration"], "method": config.adaptation.method,
            "scoring_version": self.scoring_version,
            "by_shots": by_shots, "baselines": {}, "baseline_names": list(options.baselines),
            "published": {
                name: {str(s): v for s, v in values.items()}
                for name, values in PUBLISHED_MSE.items()},
        }
        curves = {f"{config.adaptation.label}, K={k}": v for k, v in by_shots.items()}
        _note_divergence(by_shots, learned_rates=isinstance(lr, dict))
        if "pretrained" in options.baselines:
            baseline = pretrained_params(config, run_dir, options.output_dir)
            fixed_lr = evaluation_lr(config, None, steps)
            pretrained = {}
            for k in ev.shots:
                with _naming(f"the pretrained baseline, K={k}"):
                    pretrained[str(k)] = summarize(self.curves(
                        config, baseline, fixed_lr, shots=k, tasks=tasks, steps=steps,
                        seed=seed))
            result["baselines"]["pretrained"] = {"by_shots": pretrained}
            curves.update({f"pretrained, K={k}": v for k, v in pretrained.items()})
        output_dir = options.output_dir or run_dir
        plot_adaptation_curves(curves, result["steps"], output_dir / "adaptation.png",
                               ylabel="test MSE (mean ± 95% CI)", log_y=True,
                               title=f"sine regression, {tasks} test tasks",
                               reference=PUBLISHED_MSE)
        result["table"] = format_table(curves, result["steps"], "mse")
        write_evaluation(run_dir, result, to_dict(config.evaluation),
                         to_dict(baseline_section(self, config)) if options.baselines
                         else None,
                         output_dir=options.output_dir)
        return result

    def render(self, config: SineConfig, state: dict[str, Any], run_dir: Path,
               options: RenderOptions) -> list[Path]:
        import matplotlib.pyplot as plt

        steps = options.steps if options.steps is not None else config.evaluation.steps
        seed = options.seed if options.seed is not None else config.evaluation.seed
        k = config.task.support_shots
        lr = evaluation_lr(config, state["trainer"].get("inner_lr"), steps)
        generator = torch_generator(seed, "render")
        tasks, batch = sample_sine_batch(config.task, options.tasks, generator,
                                         support_shots=k, query_shots=200)
        grid = torch.linspace(config.task.x_min, config.task.x_max, 200).view(1, 200, 1)
        batch = dataclasses.replace(batch, query_x=grid.expand(options.tasks, 200, 1),
                                    query_y=tasks(grid.expand(options.tasks, 200, 1)))
        model = make_model(config)
        shown_steps = sorted({0, 1, steps} if steps >= 1 else {0})
        predictions = query_predictions(model, state["trainer"]["params"], batch, mse_loss,
                                        steps=max(shown_steps), lr=lr).transpose(0, 1)
        columns = min(options.tasks, 4)
        rows = math.ceil(options.tasks / columns)
        fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows),
                                 squeeze=False)
        x = grid.view(-1).numpy()
        for t, ax in enumerate(axes.flat):
            if t >= options.tasks:
                ax.axis("off")
                continue
            ax.plot(x, batch.query_y[t].view(-1).numpy(), color="black", linewidth=2,
                    label="ground truth")
            for i, s in enumerate(shown_steps):
                ax.plot(x, predictions[s][t].view(-1).numpy(), color=f"C{i}",
                        linestyle="--" if s == 0 else "-", label=f"after {s} step(s)")
            ax.scatter(batch.support_x[t].view(-1).numpy(), batch.support_y[t].view(-1).numpy(),
                       color="red", marker="^", zorder=5, label=f"K={k} support")
            ax.set_title(f"A={float(tasks.amplitude[t]):.2f}, φ={float(tasks.phase[t]):.2f}")
            ax.set_xlabel("x")
            ax.set_ylabel("y = A sin(x + φ)")
            ax.grid(alpha=0.3)
        axes.flat[0].legend(fontsize=7)
        fig.suptitle(f"sine regression: {config.adaptation.label}, "
                     f"iteration {state['iteration']}")
        fig.tight_layout()
        output = options.output or run_dir / self.picture_names[0]
        fig.savefig(output, dpi=110)
        plt.close(fig)
        return [output]

