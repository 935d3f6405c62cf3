"""Pictures of tasks before and after each adaptation step: navigation trajectories and
half-cheetah forward velocities."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.envs.navigation import ACTION_BOUND
from metarl.plots import panel_grid, save_figure
from metarl.rl.episodes import Episodes

MAX_STEPS_SHOWN = 6
"""Lines per panel of the pictures: more would be a tangle (a video shows at most 11)."""


def steps_shown(steps: int, limit: int = MAX_STEPS_SHOWN) -> list[int]:
    """Which of 0..``steps`` adaptation steps the pictures draw: all of them up to ``limit``,
    else 0, 1 and the last with evenly spaced ones between (``limit``, at least 4, in all)."""
    if limit < 4:
        raise ValueError(f"limit must be at least 4 (0, 1, the last and one between), got {limit}")
    if steps + 1 <= limit:
        return list(range(steps + 1))
    between = np.linspace(2, steps, limit - 2).round().astype(int).tolist()
    return [0, 1, *dict.fromkeys(between)]


def episode_positions(episodes: Episodes, task: int, episode: int,
                      action_scale: float = 1.0) -> np.ndarray:
    """The positions visited by one navigation episode, origin first: ``(length + 1, 2)``."""
    slot, first, length = episodes.episode_spans(task)[episode]
    observations = episodes.observations[task, slot, first:first + length].numpy()
    last_action = episodes.actions[task, slot, first + length - 1].numpy() * action_scale
    final = observations[-1] + np.clip(last_action, -ACTION_BOUND, ACTION_BOUND)
    return np.vstack([observations, final[None]])


def plot_navigation_trajectories(tasks: list[dict[str, Any]], episodes_per_step: list[Episodes],
                                 output: Path, *, episodes_shown: int = 3,
                                 action_scale: float = 1.0, title: str = "",
                                 step_numbers: Sequence[int] | None = None) -> Path:
    """One panel per task: the goal and a few trajectories after 0, 1, ... steps.

    ``step_numbers``: the adaptation step of each entry of ``episodes_per_step`` (default
    0, 1, ...)."""
    numbers = list(step_numbers) if step_numbers is not None else range(len(episodes_per_step))
    fig, axes = panel_grid(len(tasks), width=3.6, height=3.6)
    for t, ax in enumerate(axes):
        goal = np.asarray(tasks[t]["goal"], dtype=np.float64)
        extent = float(np.abs(goal).max())  # how far from the origin anything drawn lies
        for line, (step, episodes) in enumerate(zip(numbers, episodes_per_step, strict=True)):
            average = float(episodes.task_returns()[t])
            for e in range(min(episodes_shown, int(episodes.num_episodes()[t]))):
                path = episode_positions(episodes, t, e, action_scale)
                extent = max(extent, float(np.abs(path).max()))
                ax.plot(path[:, 0], path[:, 1], color=f"C{line}", alpha=0.8, linewidth=1.2,
                        label=f"{step} step(s): return {average:.1f}" if e == 0 else None)
        ax.scatter([0], [0], color="black", marker="o", zorder=5)
        ax.scatter([goal[0]], [goal[1]], color="red", marker="*", s=180, zorder=6,
                   label="goal")
        # the goals' square and some room at least; further where a path went further
        limit = max(0.6, 1.08 * extent)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_xlabel("x", fontsize=8)
        ax.set_ylabel("y", fontsize=8)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")  # where it hides the least of the paths and goal
    return save_figure(fig, output, title=f"2D navigation: {title}" if title else "")


def plot_cheetah_velocities(tasks: list[dict[str, Any]], episodes_per_step: list[Episodes],
                            output: Path, *, velocity_index: int, smoothing: int = 10,
                            control_dt: float = 0.05, title: str = "",
                            step_numbers: Sequence[int] | None = None) -> Path:
    """One panel per task: the torso's forward velocity (m/s) over an episode, averaged over
    the task's episodes and over ``smoothing`` time steps (fewer when the padded episode
    length L is under 5 times that), after 0, 1, ... adaptation steps,
    with the target velocity (velocity tasks) or the direction to run (direction tasks).
    ``velocity_index``: where that velocity sits in an observation (see
    ``metarl.envs.half_cheetah.forward_velocity_index``); ``control_dt``: seconds per time
    step, for the axis label; ``step_numbers``: the adaptation step of each entry of
    ``episodes_per_step`` (default 0, 1, ...)."""
    numbers = list(step_numbers) if step_numbers is not None else range(len(episodes_per_step))
    fig, axes = panel_grid(len(tasks), width=4.2, height=3.2)
    # short episodes keep at least 5 points to draw a line through
    smoothing = max(1, min(smoothing, episodes_per_step[0].mask.shape[-1] // 5))
    kernel = np.ones(smoothing) / smoothing
    for t, ax in enumerate(axes):
        for line, (step, episodes) in enumerate(zip(numbers, episodes_per_step, strict=True)):
            average = float(episodes.task_returns()[t])
            valid = episodes.mask[t] > 0  # (S, L)
            if not bool(valid.any()):
                continue
            times = episodes.times[t][valid]  # step index within the episode
            velocity = episodes.observations[t][valid][:, velocity_index].double()
            counts = torch.bincount(times).double()
            sums = torch.zeros_like(counts).index_add_(0, times, velocity)
            mean_velocity = (sums / counts.clamp_min(1)).numpy()
            smooth = np.convolve(mean_velocity, kernel, mode="valid")
            ax.plot(np.arange(len(smooth)) + smoothing - 1, smooth, color=f"C{line}",
                    linewidth=1.5, label=f"{step} step(s): return {average:.1f}")
        task = tasks[t]
        if "velocity" in task:
            ax.axhline(float(task["velocity"]), color="black", linestyle="--", label="target")
            ax.set_title(f"target {float(task['velocity']):.2f} m/s", fontsize=9)
        else:
            ax.axhline(0.0, color="gray", linewidth=0.8)
            ax.set_title("run " + ("forward" if float(task["direction"]) > 0 else "backward"),
                         fontsize=9)
        ax.set_xlabel(f"time step ({control_dt:g} s)"
                      + (f"; moving mean over {smoothing} steps" if smoothing > 1 else ""))
        ax.set_ylabel("forward velocity (m/s), mean over episodes", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    return save_figure(fig, output, title=title)
