"""Task-parameterized environments (installed as ``metarl.envs``).

``import metarl`` registers the Gymnasium forms:

- ``metarl/Navigation2D-v0``: 2D navigation to a goal ~ U[-0.5, 0.5]^2 (100-step limit).

Each family also has a batched form that the sampler steps for all (task, episode) pairs at
once; :data:`ENV_FAMILIES` maps a family's config name to both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.navigation import BatchedNavigation2D, Navigation2DEnv, sample_goals

Task = dict[str, Any]


@dataclass(frozen=True)
class EnvFamily:
    """A task-parameterized environment in both forms.

    ``sample_tasks(n, rng)`` draws n tasks; ``make_batched(tasks, episodes_per_task)``
    builds the batched form with ``len(tasks) · episodes_per_task`` environments, task-major.
    ``action_bound`` is the largest action magnitude per dimension.
    """

    gym_id: str
    max_episode_steps: int
    observation_dim: int
    action_dim: int
    action_bound: float
    sample_tasks: Callable[[int, np.random.Generator], list[Task]]
    make_batched: Callable[[list[Task], int], Any]


def _navigation_tasks(num_tasks: int, rng: np.random.Generator) -> list[Task]:
    return [{"goal": goal} for goal in sample_goals(num_tasks, rng)]


def _navigation_batched(tasks: list[Task], episodes_per_task: int) -> BatchedNavigation2D:
    goals = torch.as_tensor(np.stack([t["goal"] for t in tasks]), dtype=torch.float64)
    return BatchedNavigation2D(goals.repeat_interleave(episodes_per_task, dim=0))


ENV_FAMILIES: dict[str, EnvFamily] = {
    "navigation2d": EnvFamily("metarl/Navigation2D-v0", 100, 2, 2, 0.1, _navigation_tasks,
                              _navigation_batched),
}


def register_envs() -> None:
    """Register the Gymnasium forms (idempotent)."""
    if "metarl/Navigation2D-v0" not in gym.registry:
        gym.register(id="metarl/Navigation2D-v0",
                     entry_point="metarl.envs.navigation:Navigation2DEnv",
                     max_episode_steps=100)


register_envs()

__all__ = ["ENV_FAMILIES", "BatchedNavigation2D", "EnvFamily", "Navigation2DEnv",
           "register_envs"]
