"""Task-parameterized environments (installed as ``metarl.envs``).

``import metarl`` registers the Gymnasium forms:

- ``metarl/Navigation2D-v0``: 2D navigation to a goal ~ U[-0.5, 0.5]^2 (100-step limit);
- ``metarl/HalfCheetahVel-v0``: half-cheetah running at a target velocity ~ U[0, 2] m/s;
- ``metarl/HalfCheetahDir-v0``: half-cheetah running forward or backward
  (both 200 steps; ``gymnasium.make(..., max_episode_steps=100)`` for the peers' length;
  ``frame_skip=1`` for the paper's control rate of 0.01 s instead of v5's 0.05 s;
  ``exclude_current_positions_from_observation=False`` to observe the torso's x position;
  ``observe_centre_of_mass=True`` to append the cheetah's centre of mass (x, y, z)).

Each family also has a batched form that the sampler steps for all (task, episode) pairs at
once; :data:`ENV_FAMILIES` maps a family's config name to both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.navigation import BatchedNavigation2D, Navigation2DEnv, sample_goals

Task = dict[str, Any]


@dataclass(frozen=True)
class EnvFamily:
    """A task-parameterized environment in both forms.

    ``sample_tasks(n, rng)`` draws n tasks; ``make_batched(tasks, episodes_per_task, rng)``
    builds the batched form with ``len(tasks) · episodes_per_task`` environments, task-major,
    drawing any reset noise from ``rng``. ``action_bound`` is the largest action magnitude
    per dimension; ``mujoco`` says whether the family renders with MuJoCo. MuJoCo families
    also have a ``frame_skip`` (MuJoCo steps per control step; :func:`env_family` picks
    another), ``control_dt`` (seconds per control step) and ``gym_kwargs``, the keyword
    arguments that give the Gymnasium form the same dynamics.
    """

    gym_id: str
    max_episode_steps: int
    observation_dim: int
    action_dim: int
    action_bound: float
    sample_tasks: Callable[[int, np.random.Generator], list[Task]]
    make_batched: Callable[[list[Task], int, np.random.Generator], Any]
    mujoco: bool = False
    frame_skip: int | None = None
    control_dt: float | None = None
    gym_kwargs: Mapping[str, Any] = field(default_factory=dict)


def _navigation_tasks(num_tasks: int, rng: np.random.Generator) -> list[Task]:
    return [{"goal": goal} for goal in sample_goals(num_tasks, rng)]


def _navigation_batched(tasks: list[Task], episodes_per_task: int,
                        rng: np.random.Generator) -> BatchedNavigation2D:
    del rng  # navigation starts every episode at the origin
    goals = torch.as_tensor(np.stack([t["goal"] for t in tasks]), dtype=torch.float64)
    return BatchedNavigation2D(goals.repeat_interleave(episodes_per_task, dim=0))


CHEETAH_FRAME_SKIP = 5  # HalfCheetah-v5's (metarl.envs.half_cheetah.FRAME_SKIP)
CHEETAH_TIMESTEP = 0.01  # seconds per MuJoCo step of the half-cheetah model
_CHEETAHS: dict[str, tuple[Literal["velocity", "direction"], str]] = {
    "half_cheetah_vel": ("velocity", "metarl/HalfCheetahVel-v0"),
    "half_cheetah_dir": ("direction", "metarl/HalfCheetahDir-v0"),
}


def _cheetah_family(kind: Literal["velocity", "direction"], gym_id: str,
                    frame_skip: int = CHEETAH_FRAME_SKIP,
                    observe_x_position: bool = False,
                    reward_velocity: str = "torso", reset_noise: str = "v5",
                    observe_centre_of_mass: bool = False) -> EnvFamily:
    def sample_tasks(num_tasks: int, rng: np.random.Generator) -> list[Task]:
        from metarl.envs.half_cheetah import sample_targets

        return [{kind: float(v)} for v in sample_targets(kind, num_tasks, rng)]

    def make_batched(tasks: list[Task], episodes_per_task: int,
                     rng: np.random.Generator) -> Any:
        from metarl.envs.half_cheetah import BatchedHalfCheetah

        targets = np.repeat(np.array([float(t[kind]) for t in tasks]), episodes_per_task)
        return BatchedHalfCheetah(kind, targets, rng, frame_skip=frame_skip,
                                  observe_x_position=observe_x_position,
                                  reward_velocity=reward_velocity, reset_noise=reset_noise,
                                  observe_centre_of_mass=observe_centre_of_mass)

    gym_kwargs: dict[str, Any] = {"frame_skip": frame_skip}
    if observe_x_position:
        gym_kwargs["exclude_current_positions_from_observation"] = False
    if reward_velocity != "torso":
        gym_kwargs["reward_velocity"] = reward_velocity
    if reset_noise != "v5":
        gym_kwargs["reset_noise"] = reset_noise
    if observe_centre_of_mass:
        gym_kwargs["observe_centre_of_mass"] = True
    observation_dim = 17 + observe_x_position + 3 * observe_centre_of_mass
    return EnvFamily(gym_id, 200, observation_dim, 6, 1.0, sample_tasks, make_batched,
                     mujoco=True, frame_skip=frame_skip,
                     control_dt=CHEETAH_TIMESTEP * frame_skip, gym_kwargs=gym_kwargs)


ENV_FAMILIES: dict[str, EnvFamily] = {
    "navigation2d": EnvFamily("metarl/Navigation2D-v0", 100, 2, 2, 0.1, _navigation_tasks,
                              _navigation_batched),
    **{name: _cheetah_family(kind, gym_id) for name, (kind, gym_id) in _CHEETAHS.items()},
}


def env_family(name: str, *, frame_skip: int | None = None,
               observe_x_position: bool = False, reward_velocity: str = "torso",
               reset_noise: str = "v5", observe_centre_of_mass: bool = False) -> EnvFamily:
    """``ENV_FAMILIES[name]``, with ``frame_skip`` MuJoCo steps per control step where given
    (None keeps the family's), the torso's x position and the cheetah's centre of mass
    observed where asked, the reward's velocity taken from the whole cheetah's centre of mass
    with ``reward_velocity="centre_of_mass"``, and episodes started with rllab's reset noise
    with ``reset_noise="rllab"`` (MuJoCo families only)."""
    if name not in ENV_FAMILIES:
        raise ValueError(f"unknown environment family {name!r}; known: "
                         + ", ".join(ENV_FAMILIES))
    if (frame_skip is None or frame_skip == ENV_FAMILIES[name].frame_skip) and (
            not observe_x_position) and reward_velocity == "torso" and reset_noise == "v5" and (
            not observe_centre_of_mass):
        return ENV_FAMILIES[name]
    if name not in _CHEETAHS:
        raise ValueError(f"{name} has no frame skip, x position, centre of mass, reward velocity "
                         "or reset noise (only the MuJoCo families: " + ", ".join(_CHEETAHS)
                         + ")")
    from metarl.envs.half_cheetah import (
        check_frame_skip,
        check_reset_noise,
        check_reward_velocity,
    )

    if frame_skip is not None:
        check_frame_skip(frame_skip)
    check_reward_velocity(reward_velocity)
    check_reset_noise(reset_noise)
    return _cheetah_family(*_CHEETAHS[name],
                           frame_skip=CHEETAH_FRAME_SKIP if frame_skip is None else frame_skip,
                           observe_x_position=observe_x_position,
                           reward_velocity=reward_velocity, reset_noise=reset_noise,
                           observe_centre_of_mass=observe_centre_of_mass)

_ENTRY_POINTS = {
    "metarl/Navigation2D-v0": ("metarl.envs.navigation:Navigation2DEnv", 100),
    "metarl/HalfCheetahVel-v0": ("metarl.envs.half_cheetah:HalfCheetahVelEnv", 200),
    "metarl/HalfCheetahDir-v0": ("metarl.envs.half_cheetah:HalfCheetahDirEnv", 200),
}


def register_envs() -> None:
    """Register the Gymnasium forms (idempotent; MuJoCo is imported only on make)."""
    for env_id, (entry_point, steps) in _ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=steps)


register_envs()

__all__ = ["ENV_FAMILIES", "BatchedNavigation2D", "EnvFamily", "Navigation2DEnv", "env_family",
           "register_envs"]
