"""The oracle baseline's environments: observations with the task appended.

The MAML paper's oracle is a policy that is told the task (the goal position, the target
velocity or the direction) as part of its input, trained on the task distribution and run
without adaptation. It bounds what adaptation can reach with the same model and budget.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metarl.envs import EnvFamily

Task = dict[str, Any]


def task_features(tasks: list[Task]) -> np.ndarray:
    """What the oracle is told of each task: its values in key order, flattened.

    Navigation ``{"goal": (2,)}`` gives the goal (x, y); the half-cheetahs ``{"velocity": v}``
    or ``{"direction": ±1}`` give that one number. Returns ``(len(tasks), k)`` float32.
    """
    rows = [np.concatenate([np.ravel(np.asarray(task[key], dtype=np.float64))
                            for key in sorted(task)]) for task in tasks]
    return np.stack(rows).astype(np.float32)


class TaskObservations:
    """A batched environment whose observations end with their task's features.

    Args:
        env: N = T x E environments, task-major (as :attr:`EnvFamily.make_batched` builds).
        features: ``(T, k)``, one row per task, repeated over its E environments.

    Observations are ``(N, observation_dim + k)`` float32; actions, rewards and terminations
    are the wrapped environment's.
    """

    def __init__(self, env: Any, features: np.ndarray, episodes_per_task: int) -> None:
        self.env = env
        self.features = torch.as_tensor(features, dtype=torch.float32).repeat_interleave(
            episodes_per_task, dim=0)
        self.observation_dim = env.observation_dim + self.features.shape[1]
        self.action_dim = env.action_dim

    def _with_task(self, observations: Tensor) -> Tensor:
        return torch.cat([observations, self.features], dim=1)

    def reset(self) -> Tensor:
        return self._with_task(self.env.reset())

    def restart(self, where: Tensor) -> Tensor:
        return self._with_task(self.env.restart(where))

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        observations, rewards, terminated = self.env.step(actions)
        return self._with_task(observations), rewards, terminated


def oracle_family(family: EnvFamily) -> EnvFamily:
    """``family`` with the task appended to every observation (``observation_dim + k``)."""
    example = family.sample_tasks(1, np.random.default_rng(0))
    extra = task_features(example).shape[1]

    def make_batched(tasks: list[Task], episodes_per_task: int,
                     rng: np.random.Generator) -> TaskObservations:
        return TaskObservations(family.make_batched(tasks, episodes_per_task, rng),
                                task_features(tasks), episodes_per_task)

    return dataclasses.replace(family, observation_dim=family.observation_dim + extra,
                               make_batched=make_batched)
