"""2D navigation of the MAML paper (section 5.3): move a point mass to an unknown goal.

A task is a goal ~ U[-0.5, 0.5]^2. The agent starts at the origin, observes its position,
and moves by its action clipped to [-0.1, 0.1]^2 each step. The reward is the negative L2
distance to the goal after the move. An episode ends when the agent is within 0.01 of the
goal in both coordinates, or after 100 steps (the registered time limit).

Two forms share these dynamics:

- :class:`Navigation2DEnv`, a Gymnasium environment (``metarl/Navigation2D-v0``);
- :class:`BatchedNavigation2D`, which steps many (task, episode) pairs at once as tensors,
  for the sampler.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

GOAL_LOW, GOAL_HIGH = -0.5, 0.5
ACTION_BOUND = 0.1
SUCCESS_RADIUS = 0.01
MAX_EPISODE_STEPS = 100


def sample_goals(num_tasks: int, rng: np.random.Generator) -> np.ndarray:
    """Goals ~ U[-0.5, 0.5]^2, shape ``(num_tasks, 2)``."""
    return rng.uniform(GOAL_LOW, GOAL_HIGH, size=(num_tasks, 2))


class Navigation2DEnv(gym.Env[np.ndarray, np.ndarray]):
    """Point-mass navigation to a goal; see the module docstring.

    Observation: position ``(2,)`` float32. Action: velocity ``(2,)`` (the displacement in one
    step), clipped to [-0.1, 0.1]^2. Task interface: :meth:`sample_tasks`,
    :meth:`reset_task`; a task can also be passed as ``reset(options={"task": task})``.
    """

    # gym.Env declares metadata as an instance attribute; it is the class's here
    metadata: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        "render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: dict[str, Any] | None = None, render_mode: str | None = None,
                 width: int = 200, height: int = 200):
        """``width`` x ``height``: the size of rendered frames in pixels (at least 2 x 2)."""
        # Unbounded: the time limit is the wrapper's (gym.make(..., max_episode_steps=N)), and
        # N steps of at most 0.1 per coordinate reach ±0.1·N.
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-ACTION_BOUND, ACTION_BOUND, shape=(2,),
                                           dtype=np.float32)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.render_mode = render_mode
        if render_mode is not None and not (isinstance(width, int) and isinstance(height, int)
                                            and width >= 2 and height >= 2):
            raise ValueError(f"render size must be whole numbers of at least 2 x 2 pixels, "
                             f"got {width!r} x {height!r}")
        self.width, self.height = width, height
        self._goal = np.zeros(2)
        self._position = np.zeros(2)
        self._trail: list[np.ndarray] = []
        if task is not None:
            self.reset_task(task)

    def sample_tasks(self, num_tasks: int,
                     rng: np.random.Generator | None = None) -> list[dict[str, np.ndarray]]:
        """``num_tasks`` tasks ``{"goal": array (2,)}`` drawn from ``rng`` (default: the
        environment's own generator, seeded by ``reset(seed=...)``)."""
        goals = sample_goals(num_tasks, rng if rng is not None else self.np_random)
        return [{"goal": goal} for goal in goals]

    def reset_task(self, task: dict[str, Any]) -> None:
        """Make ``task`` ``{"goal": (x, y)}`` the current task (a copy of its goal is kept)."""
        if "goal" not in task:
            raise ValueError(f"a navigation task is {{'goal': (x, y)}}, got {task!r}")
        goal = np.array(task["goal"], dtype=np.float64)  # a copy: the caller's array may change
        if goal.shape != (2,):
            raise ValueError(f"task goal must have shape (2,), got {goal.shape}")
        if not np.isfinite(goal).all():
            raise ValueError(f"task goal must be finite, got {goal.tolist()}")
        self._goal = goal

    @property
    def goal(self) -> np.ndarray:
        """The current task's goal ``(2,)`` (a copy)."""
        return self._goal.copy()

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options and "task" in options:
            self.reset_task(options["task"])
        self._position = np.zeros(2)
        self._trail = [self._position.copy()]
        return self._position.astype(np.float32), {"task": {"goal": self.goal}}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move by ``action`` ``(2,)`` clipped to [-0.1, 0.1]; the reward is minus the distance
        to the goal after the move, and the episode ends within 0.01 of it in both coordinates."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,):
            raise ValueError(f"a navigation action has shape (2,), got {action.shape}")
        action = np.clip(action, -ACTION_BOUND, ACTION_BOUND)
        self._position = self._position + action
        offset = self._position - self._goal
        reward = -float(np.sqrt(np.sum(offset**2)))
        terminated = bool(np.all(np.abs(offset) < SUCCESS_RADIUS))
        self._trail.append(self._position.copy())
        return (self._position.astype(np.float32), reward, terminated, False,
                {"task": {"goal": self.goal}})

    def render(self) -> np.ndarray | None:
        """The plane, y up, at one scale on both axes: y from -1 to 1 over the frame's height
        (further when the goal lies beyond 0.9, so that it stays in view), x over its width
        around 0. Drawn: the square the goals are drawn from (grey outline), the start (black
        ring), the path since the reset (light blue lines, a blue 3x3 dot at each position
        in view) and the goal (a red 7x7 square), as a ``(height, width, 3)`` uint8 array."""
        if self.render_mode != "rgb_array":
            return None
        from PIL import Image, ImageDraw

        height, width = self.height, self.width
        aspect = (width - 1) / (height - 1)
        extent = max(1.0, 1.1 * abs(float(self._goal[1])), 1.1 * abs(float(self._goal[0])) / aspect)
        pixels_per_unit = (height - 1) / (2.0 * extent)

        def pixel(point: np.ndarray) -> tuple[int, int]:
            """(row, column), possibly outside the frame."""
            x, y = np.asarray(point, dtype=np.float64)
            return (round((height - 1) / 2.0 - y * pixels_per_unit),
                    round((width - 1) / 2.0 + x * pixels_per_unit))

        canvas = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(canvas)
        (top, left), (bottom, right) = pixel(np.array([GOAL_LOW, GOAL_HIGH])), pixel(
            np.array([GOAL_HIGH, GOAL_LOW]))
        draw.rectangle([left, top, right, bottom], outline=(200, 200, 200))
        r, c = pixel(np.zeros(2))
        draw.ellipse([c - 4, r - 4, c + 4, r + 4], outline=(0, 0, 0))
        if len(self._trail) > 1:  # the parts out of view are clipped
            draw.line([pixel(p)[::-1] for p in self._trail], fill=(160, 190, 235))
        image = np.array(canvas)
        for point in self._trail:
            r, c = pixel(point)
            if 0 <= r < height and 0 <= c < width:
                image[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] = (40, 90, 200)
        r, c = pixel(self._goal)
        image[max(r - 3, 0):max(r + 4, 0), max(c - 3, 0):max(c + 4, 0)] = (220, 40, 40)
        return image


class BatchedNavigation2D:
    """N navigation environments stepped together as tensors (N = tasks x episodes).

    Args:
        goals: goal of each environment, shape ``(N, 2)``.

    ``step`` applies actions to the environments still running and reports, per environment,
    the reward and whether it has just reached the goal; environments that are done stay
    put and get no further rewards (the sampler masks them).
    """

    observation_dim = 2
    action_dim = 2

    def __init__(self, goals: Tensor) -> None:
        if goals.ndim != 2 or goals.shape[1] != 2:
            raise ValueError(f"goals must have shape (N, 2), got {tuple(goals.shape)}")
        self.goals = goals.to(torch.float64)
        self.positions = torch.zeros_like(self.goals)
        self.done = torch.zeros(goals.shape[0], dtype=torch.bool)

    def reset(self) -> Tensor:
        """Start every environment at the origin; returns observations ``(N, 2)`` float32."""
        self.positions.zero_()
        self.done.zero_()
        return self.positions.to(torch.float32)

    def restart(self, where: Tensor) -> Tensor:
        """Start new episodes (at the origin) where ``where`` ``(N,)`` is True; returns all
        observations ``(N, 2)`` float32."""
        self.positions[where] = 0.0
        self.done[where] = False
        return self.positions.to(torch.float32)

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Move the running environments.

        Args:
            actions: ``(N, 2)``; clipped to [-0.1, 0.1].

        Returns:
            observations ``(N, 2)`` float32, rewards ``(N,)`` float64 (0 where already done),
            terminated ``(N,)`` bool (reached the goal at this step).
        """
        running = ~self.done
        moves = actions.to(torch.float64).clamp(-ACTION_BOUND, ACTION_BOUND)
        self.positions = torch.where(running[:, None], self.positions + moves, self.positions)
        offset = self.positions - self.goals
        rewards = torch.where(running, -offset.pow(2).sum(dim=1).sqrt(), 0.0)
        terminated = running & (offset.abs() < SUCCESS_RADIUS).all(dim=1)
        self.done = self.done | terminated
        return self.positions.to(torch.float32), rewards, terminated
