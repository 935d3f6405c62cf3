"""Meta-RL with MAML-TRPO on task-parameterized environments: evaluation and pictures
(``metarl evaluate`` and ``metarl render`` for ``experiment: meta_rl`` runs)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.adaptation import Params
from metarl.config import ConfigError, to_dict
from metarl.evaluation import format_table, summarize, write_evaluation
from metarl.experiment import (
    EvaluateOptions,
    Experiment,
    Panel,
    RenderOptions,
    baseline_section,
)
from metarl.logging import work_bar
from metarl.plots import plot_adaptation_curves
from metarl.rl.baseline_policies import oracle_params, pretrained_params
from metarl.rl.build import (
    action_scale,
    advantage_settings,
    env_title,
    episode_length,
    evaluation_family,
    evaluation_learning_rates,
    evaluation_reset_noise,
    evaluation_rollouts,
    family_of,
    make_policy,
    make_trainer,
    new_policy_params,
    sample_test_tasks,
    step_budget,
    target_range_note,
)
from metarl.rl.config import MetaRLConfig
from metarl.rl.maml_trpo import MAMLTRPO, rollouts_with_adaptation
from metarl.rl.oracle import oracle_family
from metarl.seeding import numpy_generator, torch_generator

PUBLISHED_RETURNS = {
    # MAML paper, Figure 5 / Table 4 (returns after 0, 1, 2, 3 gradient steps).
    # The oracle is told the task and does not adapt: one number.
    "navigation2d": {"MAML paper": {0: -40.41, 1: -11.68, 2: -3.33, 3: -3.23},
                     "paper: pretrained": {0: -40.81, 1: -19.73, 2: -11.72, 3: -8.47},
                     "paper: random init": {0: -82.66, 1: -57.96, 2: -53.84, 3: -46.81},
                     "paper: oracle": {0: -2.29}},
    # Figure 5 / Table 5, 200-step episodes.
    "half_cheetah_vel": {"MAML paper": {0: -129.53, 1: -78.57, 2: -66.62, 3: -60.78},
                         "paper: pretrained": {0: -158.00, 1: -135.39, 2: -128.47,
                                               3: -133.61},
                         "paper: oracle": {0: -54.47}},
    "half_cheetah_dir": {"MAML paper": {0: -50.69, 1: 293.19, 2: 313.48, 3: 315.65},
                         "paper: pretrained": {0: -43.03, 1: -24.75, 2: -12.85, 3: 19.57},
                         "paper: oracle": {0: 442.69}},
}

# How the paper (and our tables and plots) name the baselines whose --baselines name differs
BASELINE_LABELS = {"random": "random init"}


class MetaRLExperiment(Experiment):
    name = "meta_rl"
    config_class = MetaRLConfig
    metric = "return"
    shown_metrics = ("return_before", "return_after")
    baseline_names = ("random", "pretrained", "oracle")
    baseline_section = "baselines"
    picture_names = ("trajectories.png", "velocities.png")  # navigation, half-cheetahs

    def make_trainer(self, config: MetaRLConfig) -> MAMLTRPO:
        return make_trainer(config)

    def learning_curve(self, config: MetaRLConfig) -> tuple[str, dict[str, Panel | None]]:
        steps = config.adaptation.inner_steps
        after = f"after {steps} step{'s' * (steps > 1)}"
        method = {"maml": "MAML-TRPO", "fomaml": "first-order MAML-TRPO"}.get(
            config.adaptation.method, config.adaptation.method)
        return (f"{env_title(config)}, {method}: meta-training", {
            "return_before": Panel("return before adaptation (training tasks)"),
            "return_after": Panel(f"return {after} (training tasks)"),
            # a step budget ends episodes early where goals are reached; else a fixed count
            "episodes_after": (Panel(f"episodes per task {after}")
                               if config.training.sampling == "steps" else None),
            # with advantages standardized per task the surrogate before the step is 0
            "surrogate_before": (None if config.training.normalize_advantages
                                 else Panel("surrogate loss before the TRPO step")),
            "surrogate_after": Panel("surrogate loss after the TRPO step"),
            "kl": Panel("mean KL of the TRPO step",
                        line=(config.trpo.max_kl, f"bound {config.trpo.max_kl:g}")),
            "backtracks": Panel("line-search backtracks"),
            "step_accepted": Panel("TRPO steps accepted (fraction)", limits=(-0.05, 1.05)),
        })

    def evaluate(self, config: MetaRLConfig, state: dict[str, Any], run_dir: Path,
                 options: EvaluateOptions) -> dict[str, Any]:
        ev = config.evaluation
        steps = ev.steps if options.steps is None else options.steps
        tasks = ev.tasks if options.tasks is None else options.tasks
        seed = ev.seed if options.seed is None else options.seed
        family = evaluation_family(config)
        # name -> (θ, the environments it acts in, adaptation steps to evaluate)
        policies: dict[str, tuple[Params, Any, int]] = {
            config.adaptation.method: (state["trainer"]["params"], family, steps)}
        if "random" in options.baselines:
            policies["random"] = (new_policy_params(config, "random-baseline-init"),
                                       family, steps)
        if "pretrained" in options.baselines:
            policies["pretrained"] = (pretrained_params(config, run_dir, options.output_dir),
                                      family, steps)
        oracle_training: list[float] = []
        if "oracle" in options.baselines:  # told the task, it has nothing to adapt to
            oracle, oracle_training = oracle_params(config, run_dir, options.output_dir)
            policies["oracle"] = (oracle, oracle_family(family), 0)
        curves: dict[str, dict[str, Any]] = {}
        episodes_sampled: list[float] = []
        test_tasks: list[dict[str, Any]] = []
        def what(name: str) -> str:
            return f"evaluating {BASELINE_LABELS.get(name, name)} on {tasks} test tasks"

        # one update per sampled batch: before adaptation and after each step, per policy
        batches = sum(policy_steps + 1 for _, _, policy_steps in policies.values())
        with work_bar(batches, what(config.adaptation.method), "sampling",
                      enabled=config.run.progress) as bar:
            for name, (params, policy_family, policy_steps) in policies.items():
                bar.set_description(what(name))
                test_tasks, rollouts = evaluation_rollouts(config, params, tasks=tasks,
                                                           steps=policy_steps, seed=seed,
                                                           family=policy_family,
                                                           on_sampled=bar.update)
                # (tasks, steps + 1): each task's mean episode return before and after
                # each step
                per_task = torch.stack([e.task_returns() for e in rollouts.episodes], dim=1)
                curves[name] = {**summarize(per_task.numpy()),
                                "task_returns": per_task.double().tolist()}
                if name == config.adaptation.method:
                    episodes_sampled = [float(e.num_episodes().float().mean())
                                        for e in rollouts.episodes]
        main = curves[config.adaptation.method]
        # The paper's returns are sums over its episode length; other lengths are not comparable.
        # Nor are returns on other test targets (evaluation.test_velocities).
        published = (PUBLISHED_RETURNS.get(config.env.name, {})
                     if episode_length(config) == family.max_episode_steps
                     and config.evaluation.test_velocities is None else {})
        result: dict[str, Any] = {
            "experiment": self.name, "env": config.env.name, "metric": self.metric,
            **({"frame_skip": family.frame_skip, "control_dt": family.control_dt,
                "reward_velocity": config.env.reward_velocity,
                "reset_noise": evaluation_reset_noise(config)} if family.mujoco else {}),
            "steps": list(range(steps + 1)), **main, "tasks": tasks, "seed": seed,
            "test_tasks": [jsonable_task(task) for task in test_tasks],
            "episodes_per_task": ev.episodes_per_task, "sampling": config.training.sampling,
            "episodes_sampled": episodes_sampled,
            "inner_lr": evaluation_learning_rates(config, steps),
            "checkpoint_iteration": state["iteration"], "method": config.adaptation.method,
            "baselines": {k: v for k, v in curves.items() if k != config.adaptation.method},
            "baseline_names": list(options.baselines),
            **({"oracle_training_returns": oracle_training} if oracle_training else {}),
            "published": {name: {str(s): v for s, v in values.items()}
                          for name, values in published.items()},
        }
        # evaluation.json keys the baselines by their --baselines names; the pictures and
        # the table by the paper's
        labelled = {BASELINE_LABELS.get(name, name): curve for name, curve in curves.items()}
        output_dir = options.output_dir or run_dir
        plot_adaptation_curves(labelled, result["steps"], output_dir / "adaptation.png",
                               ylabel="average return (mean ± 95% CI)",
                               title=f"{env_title(config)}: {tasks} test tasks"
                               + target_range_note(config),
                               reference=published)
        result["table"] = format_table(labelled, result["steps"], "return")
        write_evaluation(run_dir, result, to_dict(config.evaluation),
                         to_dict(baseline_section(self, config)) if options.baselines
                         else None,
                         output_dir=options.output_dir)
        return result

    def render(self, config: MetaRLConfig, state: dict[str, Any], run_dir: Path,
               options: RenderOptions) -> list[Path]:
        steps = config.evaluation.steps if options.steps is None else options.steps
        seed = config.evaluation.seed if options.seed is None else options.seed
        params = state["trainer"]["params"]
        title = f"{config.adaptation.method}, iteration {state['iteration']}"
        if options.video is not None:
            if options.output is not None:
                raise ConfigError("--video names the video file; give no --output with it")
            return [render_video(config, params, options.video, task=options.task, steps=steps,
                                 seed=seed, title=title)]
        if options.task is not None:
            raise ConfigError("--task picks the task of a --video; the pictures show "
                              "--tasks N test tasks")
        from metarl.rl.render import (
            plot_cheetah_velocities,
            plot_navigation_trajectories,
            steps_shown,
        )

        tasks, rollouts = evaluation_rollouts(config, params, tasks=options.tasks, steps=steps,
                                              seed=seed)
        shown = steps_shown(steps)
        episodes = [rollouts.episodes[step] for step in shown]
        if family_of(config).mujoco:
            from metarl.envs.half_cheetah import forward_velocity_index

            output = options.output or run_dir / self.picture_names[1]
            index = forward_velocity_index(config.env.observe_x_position)
            return [plot_cheetah_velocities(tasks, episodes, output, velocity_index=index,
                                            control_dt=family_of(config).control_dt,
                                            title=f"{env_title(config)}: {title}",
                                            step_numbers=shown)]
        output = options.output or run_dir / self.picture_names[0]
        plot_navigation_trajectories(tasks, episodes, output, action_scale=action_scale(config),
                                     title=title, step_numbers=shown)
        return [output]


def jsonable_task(task: dict[str, Any]) -> dict[str, Any]:
    """A task with its arrays as lists and NumPy scalars as Python numbers, for JSON."""
    return {key: np.asarray(value).tolist() for key, value in task.items()}


def parse_task(config: MetaRLConfig, text: str | None, seed: int) -> dict[str, Any]:
    """``--task``: an index into the test tasks of ``seed`` (default 0), or ``key=value``
    (``velocity=1.5``, ``direction=-1``, ``goal=0.3,-0.2``)."""
    family = family_of(config)
    if text is None or "=" not in text:
        try:
            index = int(text) if text is not None else 0
        except ValueError:
            example = {"half_cheetah_vel": "velocity=1.5", "half_cheetah_dir": "direction=-1"}
            raise ConfigError(f"--task {text!r}: give a test-task index or key=value, e.g. "
                              f"{example.get(config.env.name, 'goal=0.3,-0.2')}") from None
        if not 0 <= index < config.evaluation.tasks:
            raise ConfigError(f"--task {index}: a test-task index must be >= 0 and < "
                              f"{config.evaluation.tasks} (evaluation.tasks)")
        return sample_test_tasks(config, index + 1, seed)[index]
    key, _, value = text.partition("=")
    example = family.sample_tasks(1, numpy_generator(0, "example"))[0]
    if key not in example:
        raise ConfigError(f"--task {text!r}: {config.env.name} tasks have the key "
                          f"{', '.join(example)}")
    numbers = []
    for part in value.split(","):
        try:
            numbers.append(float(part))
        except ValueError:
            raise ConfigError(f"--task {text!r}: {part!r} is not a number") from None
    if not all(math.isfinite(v) for v in numbers):
        raise ConfigError(f"--task {text!r}: give finite numbers")
    task = {key: numbers[0] if len(numbers) == 1 else np.array(numbers)}
    shape = np.shape(example[key])
    if np.shape(task[key]) != shape:
        raise ConfigError(f"--task {text!r}: {key} takes {max(1, int(np.prod(shape)))} "
                          "number(s)")
    if key == "direction" and task[key] not in (-1.0, 1.0):
        raise ConfigError(f"--task {text!r}: direction is +1 or -1")
    _note_unseen_task(key, task[key])
    return task


def _note_unseen_task(key: str, value: Any) -> None:
    """Say so when a --task lies outside the task distribution the policy was trained on."""
    from metarl.envs.half_cheetah import VELOCITY_HIGH, VELOCITY_LOW
    from metarl.envs.navigation import GOAL_HIGH, GOAL_LOW

    coordinates = np.asarray(value, dtype=np.float64)
    if key == "goal" and ((coordinates < GOAL_LOW) | (coordinates > GOAL_HIGH)).any():
        print(f"metarl: note: goal {coordinates.tolist()} lies outside the training goals, "
              f"U[{GOAL_LOW:g}, {GOAL_HIGH:g}]^2", file=sys.stderr)
    if key == "velocity" and not VELOCITY_LOW <= float(value) <= VELOCITY_HIGH:
        print(f"metarl: note: velocity {float(value):g} lies outside the training targets, "
              f"U[{VELOCITY_LOW:g}, {VELOCITY_HIGH:g}] m/s", file=sys.stderr)


def render_video(config: MetaRLConfig, params: Params, output: Path, *, task: str | None,
                 steps: int, seed: int, title: str) -> Path:
    """A video of one task's episode before adaptation and after each step, side by side."""
    from metarl.rl.video import (
        VIDEO_SUFFIXES,
        check_rendering,
        check_video_steps,
        record_adaptation_video,
    )

    family = evaluation_family(config)
    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(f"--video {output}: the file name must end in "
                          + " or ".join(VIDEO_SUFFIXES))
    check_video_steps(steps)
    chosen = parse_task(config, task, seed)
    check_rendering(family.gym_id, chosen, family.gym_kwargs, mujoco=family.mujoco)
    # Adapt on the chosen task as `metarl evaluate` does, keeping the weights of every step.
    rollouts = rollouts_with_adaptation(
        family.make_batched([chosen], config.evaluation.episodes_per_task,
                            numpy_generator(seed, "video-resets")),
        make_policy(config), params, num_tasks=1,
        episodes_per_task=config.evaluation.episodes_per_task,
        max_steps=episode_length(config), learning_rates=evaluation_learning_rates(config, steps),
        advantages=advantage_settings(config), generator=torch_generator(seed, "video-actions"),
        action_scale=action_scale(config), step_budget=step_budget(config))
    return record_adaptation_video(
        family.gym_id, chosen, make_policy(config), rollouts.weights, output,
        episode_steps=episode_length(config), seed=seed, title=f"{env_title(config)}, {title}",
        action_scale=action_scale(config), gym_kwargs=family.gym_kwargs, mujoco=family.mujoco,
        progress=config.run.progress)
