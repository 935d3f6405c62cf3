"""The parts of a meta-RL run built from its config: environments, policy, MAML-TRPO trainer,
test tasks and evaluation rollouts."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from metarl.adaptation import Params, test_time_learning_rates
from metarl.config import to_dict, validate_config
from metarl.envs import ENV_FAMILIES, EnvFamily, env_family
from metarl.rl.authors_tasks import maml_authors_test_tasks
from metarl.rl.config import MetaRLConfig
from metarl.rl.episodes import PolicyFn
from metarl.rl.maml_trpo import (
    MAMLTRPO,
    AdvantageSettings,
    Rollouts,
    TRPOSettings,
    rollouts_with_adaptation,
)
from metarl.rl.policy import init_policy_params, policy_distribution
from metarl.seeding import numpy_generator, torch_generator


def family_of(config: MetaRLConfig, reset_noise: str | None = None) -> EnvFamily:
    """The environments of meta-training (episodes started with ``reset_noise`` where given).

    For the MuJoCo families MuJoCo is loaded here, so that a missing install or a bad
    ``MUJOCO_GL`` stops a command before it starts work or writes files."""
    if ENV_FAMILIES[config.env.name].mujoco:
        import metarl.envs.half_cheetah  # noqa: F401
    return env_family(config.env.name, frame_skip=config.env.frame_skip,
                      observe_x_position=config.env.observe_x_position,
                      observe_centre_of_mass=config.env.observe_centre_of_mass,
                      reward_velocity=config.env.reward_velocity,
                      reset_noise=reset_noise or config.env.reset_noise)


def evaluation_reset_noise(config: MetaRLConfig) -> str:
    """The reset noise of the test episodes: ``evaluation.reset_noise``, else the training's."""
    return config.evaluation.reset_noise or config.env.reset_noise


def evaluation_family(config: MetaRLConfig) -> EnvFamily:
    """The environments of evaluation and rendering: meta-training's, started with
    ``evaluation.reset_noise`` where it is set."""
    return family_of(config, evaluation_reset_noise(config))


def env_title(config: MetaRLConfig) -> str:
    """The family's name, with its episode length and control step when the config changes
    them, and with the observed x position and centre of mass, the centre-of-mass reward
    velocity and rllab's reset noise (in training or only in evaluation) when asked."""
    family = family_of(config)
    notes = []
    if episode_length(config) != family.max_episode_steps:  # returns on another scale
        notes.append(f"{episode_length(config)}-step episodes")
    if config.env.frame_skip is not None and family.control_dt is not None:
        notes.append(f"dt {family.control_dt:g} s")
    if config.env.observe_x_position:
        notes.append("x observed")
    if config.env.observe_centre_of_mass:
        notes.append("centre of mass observed")
    if config.env.reward_velocity != "torso":
        notes.append("centre-of-mass velocity")
    if config.env.reset_noise != "v5":
        notes.append(f"{config.env.reset_noise} reset noise")
    if evaluation_reset_noise(config) != config.env.reset_noise:
        notes.append(f"evaluated with {evaluation_reset_noise(config)} reset noise")
    return config.env.name + (f" ({', '.join(notes)})" if notes else "")


def episode_length(config: MetaRLConfig) -> int:
    """H: ``env.max_episode_steps``, else the family's (100 navigation, 200 half-cheetahs)."""
    return config.env.max_episode_steps or family_of(config).max_episode_steps


def action_scale(config: MetaRLConfig) -> float:
    """Environment units per policy unit: the action bound with ``policy.normalized_actions``."""
    return family_of(config).action_bound if config.policy.normalized_actions else 1.0


def make_policy(config: MetaRLConfig) -> PolicyFn:
    """π(· | o) for task-batched parameters, with the config's hidden activation."""
    return functools.partial(policy_distribution, activation=config.policy.activation)


def new_policy_params(config: MetaRLConfig, purpose: str, family: EnvFamily | None = None
                      ) -> Params:
    """Initial θ for ``family``'s observations (default: the config's family)."""
    family = family or family_of(config)
    return init_policy_params(family.observation_dim, family.action_dim,
                              config.policy.hidden_sizes,
                              init_std=config.policy.init_std, scheme=config.policy.init,
                              generator=torch_generator(config.seed, purpose))


def make_trainer(config: MetaRLConfig, *, inner_steps: int | None = None,
                 purpose: str = "", family: EnvFamily | None = None) -> MAMLTRPO:
    """MAML-TRPO for ``config`` (``inner_steps=0``: multi-task TRPO, the pretrained baseline;
    ``family``: other environments than the config's, as the oracle's)."""
    config = validate_config(config)
    family = family or family_of(config)
    return MAMLTRPO(
        policy=make_policy(config), params=new_policy_params(config, purpose + "init", family),
        sample_tasks=family.sample_tasks, make_env=family.make_batched,
        num_tasks=config.training.meta_batch_size,
        episodes_per_task=config.training.episodes_per_task, max_steps=episode_length(config),
        inner_steps=config.adaptation.inner_steps if inner_steps is None else inner_steps,
        inner_lr=config.adaptation.inner_lr, method=config.adaptation.method,
        advantages=advantage_settings(config),
        trpo=TRPOSettings(**to_dict(config.trpo)),
        task_rng=numpy_generator(config.seed, purpose + "tasks"),
        action_generator=torch_generator(config.seed, purpose + "actions"),
        action_scale=action_scale(config), step_budget=step_budget(config))


def step_budget(config: MetaRLConfig) -> bool:
    """Whether batches are budgets of steps (``training.sampling: steps``), not episodes."""
    return config.training.sampling == "steps"


def advantage_settings(config: MetaRLConfig) -> AdvantageSettings:
    """Discount, GAE λ and per-task standardization of the advantages."""
    return AdvantageSettings(config.training.discount, config.training.gae_lambda,
                             config.training.normalize_advantages)


def evaluation_learning_rates(config: MetaRLConfig, steps: int) -> list[float]:
    """The learning rate of each of ``steps`` test-time steps: the first, then the first times
    ``evaluation.later_lr_scale``."""
    ev = config.evaluation
    first = ev.inner_lr if ev.inner_lr is not None else config.adaptation.inner_lr
    return test_time_learning_rates(first, ev.later_lr_scale, steps)[:steps]


def sample_test_tasks(config: MetaRLConfig, num_tasks: int, seed: int) -> list[dict[str, Any]]:
    """The first ``num_tasks`` test tasks of ``seed``: from the family's task distribution, or
    target velocities ~ U[low, high] where ``evaluation.test_velocities`` gives the range; with
    ``evaluation.task_draw: maml_authors`` the MAML authors' first ``num_tasks`` (any seed)."""
    if config.evaluation.task_draw == "maml_authors":
        return maml_authors_test_tasks(config.env.name, num_tasks)
    rng = numpy_generator(seed, "evaluate-tasks")
    velocities = config.evaluation.test_velocities
    if velocities is None:
        return family_of(config).sample_tasks(num_tasks, rng)
    low, high = velocities
    return [{"velocity": float(v)} for v in rng.uniform(low, high, size=num_tasks)]


def target_range_note(config: MetaRLConfig) -> str:
    """``", targets U[0.1, 0.8] m/s"`` where ``evaluation.test_velocities`` is set,
    ``", the MAML authors' tasks"`` with their draw, else ``""``."""
    if config.evaluation.task_draw == "maml_authors":
        return ", the MAML authors' tasks"
    velocities = config.evaluation.test_velocities
    return "" if velocities is None else (
        f", targets U[{velocities[0]:g}, {velocities[1]:g}] m/s")


def evaluation_rollouts(config: MetaRLConfig, params: Params, *, tasks: int, steps: int,
                        seed: int, episodes_per_task: int | None = None,
                        family: EnvFamily | None = None,
                        on_sampled: Callable[[], object] | None = None,
                        ) -> tuple[list[dict[str, Any]], Rollouts]:
    """Test tasks from ``seed``, sampled before adaptation and after each of ``steps`` steps
    (in ``family``'s environments, by default the config's evaluation environments);
    ``on_sampled`` is called after each of the ``steps + 1`` batches."""
    config = validate_config(config)
    family = family or evaluation_family(config)
    test_tasks = sample_test_tasks(config, tasks, seed)
    num_episodes = episodes_per_task or config.evaluation.episodes_per_task
    rollouts = rollouts_with_adaptation(
        family.make_batched(test_tasks, num_episodes, numpy_generator(seed, "evaluate-resets")),
        make_policy(config), params,
        num_tasks=tasks, episodes_per_task=num_episodes, max_steps=episode_length(config),
        learning_rates=evaluation_learning_rates(config, steps),
        advantages=advantage_settings(config),
        generator=torch_generator(seed, "evaluate-actions"), action_scale=action_scale(config),
        step_budget=step_budget(config), on_sampled=on_sampled)
    return test_tasks, rollouts
