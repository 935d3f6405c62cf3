"""Sine-wave regression tasks of the MAML paper: y = A sin(x + φ)."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from metarl.config import ConfigError, param
from metarl.supervised.tasks import TaskBatch


@dataclasses.dataclass
class SineTaskConfig:
    """The task distribution: amplitude, phase and input ranges, and shots per task."""

    amplitude_min: float = param(0.1, "smallest amplitude A", gt=0)
    amplitude_max: float = param(5.0, "largest amplitude A", gt=0)
    phase_min: float = param(0.0, "smallest phase φ (radians)")
    phase_max: float = param(math.pi, "largest phase φ (radians)")
    x_min: float = param(-5.0, "smallest input x")
    x_max: float = param(5.0, "largest input x")
    support_shots: int = param(10, "K: support points per task (used to adapt)", ge=1)
    query_shots: int = param(10, "query points per task (meta-training loss)", ge=1)

    def __post_init__(self) -> None:
        for low, high in (("amplitude_min", "amplitude_max"), ("phase_min", "phase_max"),
                          ("x_min", "x_max")):
            if getattr(self, low) > getattr(self, high):
                raise ConfigError(f"{low} = {getattr(self, low)} must be <= "
                                  f"{high} = {getattr(self, high)}")


@dataclasses.dataclass(frozen=True)
class SineTasks:
    """Parameters of T sine tasks: ``amplitude (T,)``, ``phase (T,)``."""

    amplitude: Tensor
    phase: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        """Targets for inputs ``x (T, N, 1)``: ``A sin(x + φ)`` of shape ``(T, N, 1)``."""
        return self.amplitude[:, None, None] * torch.sin(x + self.phase[:, None, None])


def sample_sine_tasks(config: SineTaskConfig, num_tasks: int,
                      generator: torch.Generator) -> SineTasks:
    """Draw A ~ U[amplitude_min, amplitude_max] and φ ~ U[phase_min, phase_max] per task."""
    amplitude = _uniform(config.amplitude_min, config.amplitude_max, (num_tasks,), generator)
    phase = _uniform(config.phase_min, config.phase_max, (num_tasks,), generator)
    return SineTasks(amplitude, phase)


def sample_inputs(config: SineTaskConfig, num_tasks: int, num_points: int,
                  generator: torch.Generator) -> Tensor:
    """Inputs x ~ U[x_min, x_max] of shape ``(T, num_points, 1)``."""
    return _uniform(config.x_min, config.x_max, (num_tasks, num_points, 1), generator)


def sample_sine_batch(config: SineTaskConfig, num_tasks: int, generator: torch.Generator, *,
                      support_shots: int | None = None, query_shots: int | None = None,
                      ) -> tuple[SineTasks, TaskBatch]:
    """T new tasks with K support and Q query points each (defaults from ``config``)."""
    k = config.support_shots if support_shots is None else support_shots
    q = config.query_shots if query_shots is None else query_shots
    tasks = sample_sine_tasks(config, num_tasks, generator)
    support_x = sample_inputs(config, num_tasks, k, generator)
    query_x = sample_inputs(config, num_tasks, q, generator)
    return tasks, TaskBatch(support_x, tasks(support_x), query_x, tasks(query_x))


def sample_sine_test_batch(config: SineTaskConfig, num_tasks: int, *, support_shots: int,
                           query_shots: int, task_generator: torch.Generator,
                           support_generator: torch.Generator) -> tuple[SineTasks, TaskBatch]:
    """Test tasks for one K of several evaluated on the same tasks.

    The tasks and their ``query_shots`` query points come from ``task_generator`` alone, so
    every K is scored on the same tasks and points. The support points come from
    ``support_generator``, drawn point by point for all tasks at once (the n-th point of
    every task before the (n+1)-th of any), so each task's first K points are the same
    whatever other Ks are drawn: each K's support set holds every smaller K's.
    """
    tasks = sample_sine_tasks(config, num_tasks, task_generator)
    query_x = sample_inputs(config, num_tasks, query_shots, task_generator)
    # (K, T, 1) drawn in that order, then (T, K, 1)
    support_x = _uniform(config.x_min, config.x_max, (support_shots, num_tasks, 1),
                         support_generator).transpose(0, 1).contiguous()
    return tasks, TaskBatch(support_x, tasks(support_x), query_x, tasks(query_x))


def _uniform(low: float, high: float, shape: tuple[int, ...],
             generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)
