"""Half-cheetah: the evaluation's returns split by task (direction, or target-velocity range).

    python scripts/cheetah_returns_by_task.py RUN_DIR [--bins 4] [--recorded]

Samples exactly what ``metarl evaluate RUN_DIR`` samples (the run's evaluation settings:
test tasks, episodes, learning rates, seed) and prints the mean return over all test tasks
and over each group of tasks, before adaptation and after each step: forward and backward
tasks for ``half_cheetah_dir``; ``--bins`` equal ranges of the target velocity (m/s, over
[0, 2]) for ``half_cheetah_vel``, with the mean |v_x - v_goal| (m/s) of each group's final
episodes. ``--recorded`` samples nothing: it splits every curve of RUN_DIR/evaluation.json
(the run's and any baselines', as the last ``metarl evaluate RUN_DIR [--baselines] [--set
evaluation.KEY=VALUE]`` wrote them) from the per-task returns recorded there.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metarl.envs.half_cheetah import ACTION_BOUND, VELOCITY_HIGH, VELOCITY_LOW, control_costs
from metarl.rl.build import action_scale, evaluation_rollouts
from metarl.rl.episodes import Episodes
from metarl.runner import load_run

CHEETAH_ENVS = ("half_cheetah_dir", "half_cheetah_vel")


def task_groups(env_name: str, tasks: Sequence[dict[str, Any]],
                bins: int = 4) -> dict[str, Tensor]:
    """Named boolean masks ``(len(tasks),)`` over the test tasks; the first, "all", selects
    every task. Velocity ranges are half-open except the last, which includes 2.0 m/s."""
    groups = {"all": torch.ones(len(tasks), dtype=torch.bool)}
    if env_name == "half_cheetah_dir":
        directions = torch.tensor([float(task["direction"]) for task in tasks])
        groups["forward (+1)"] = directions > 0
        groups["backward (-1)"] = directions < 0
        return groups
    if env_name != "half_cheetah_vel":
        raise ValueError(f"env {env_name!r} is not one of {CHEETAH_ENVS}")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    targets = torch.tensor([float(task["velocity"]) for task in tasks], dtype=torch.float64)
    edges = torch.linspace(VELOCITY_LOW, VELOCITY_HIGH, bins + 1, dtype=torch.float64)
    for i in range(bins):
        chosen = (targets >= edges[i]) & ((targets < edges[i + 1]) if i < bins - 1
                                          else (targets <= edges[i + 1]))
        groups[f"target {float(edges[i]):.2f}-{float(edges[i + 1]):.2f}"] = chosen
    return groups


def mean_speed_errors(episodes: Episodes, action_scale: float = 1.0) -> Tensor:
    """Each task's mean |v_x - v_goal| (m/s) over the valid steps of velocity episodes,
    ``(T,)``: the reward is -|v_x - v_goal| minus the control cost of the clipped action, so
    each step's speed error is -(reward + control cost)."""
    clipped = (episodes.actions * action_scale).clamp(-ACTION_BOUND, ACTION_BOUND)
    errors = -(episodes.rewards + control_costs(clipped)) * episodes.mask
    return errors.sum((1, 2)) / episodes.mask.sum((1, 2))


def format_table(returns: Tensor, groups: dict[str, Tensor],
                 extra: Tensor | None = None, extra_name: str = "") -> str:
    """Rows ``name, tasks, mean return after 0..S steps`` (returns ``(tasks, S + 1)``);
    ``extra`` adds a column: one value per task ``(tasks,)``, averaged over each group."""
    steps = returns.shape[1]
    header = f"{'tasks':22s} {'n':>3s} " + " ".join(f"{f'step {s}':>9s}" for s in range(steps))
    if extra is not None:
        header += f"  {extra_name}"
    lines = [header]
    for name, chosen in groups.items():
        count = int(chosen.sum())
        if count == 0:
            lines.append(f"{name:22s} {count:3d} (no test task)")
            continue
        line = f"{name:22s} {count:3d} " + " ".join(
            f"{float(x):9.2f}" for x in returns[chosen].mean(dim=0))
        if extra is not None:
            line += f"  {float(extra[chosen].mean()):.3f}"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a half-cheetah direction or velocity run directory")
    parser.add_argument("--bins", type=int, default=4,
                        help="target-velocity ranges for velocity runs (default 4)")
    parser.add_argument("--recorded", action="store_true",
                        help="split the curves recorded in RUN_DIR/evaluation.json instead of "
                        "sampling")
    args = parser.parse_args()
    if args.bins < 1:
        parser.error(f"--bins must be at least 1, got {args.bins}")
    _, config, state = load_run(args.run_dir)
    if config.env.name not in CHEETAH_ENVS:
        parser.error(f"{args.run_dir} is a {config.env.name} run, not one of {CHEETAH_ENVS}")
    if args.recorded:
        print_recorded(Path(args.run_dir), config.env.name, args.bins)
        return
    ev = config.evaluation
    tasks, rollouts = evaluation_rollouts(config, state["trainer"]["params"], tasks=ev.tasks,
                                          steps=ev.steps, seed=ev.seed)
    # (tasks, steps + 1): each task's mean episode return before and after each step
    returns = torch.stack([e.task_returns() for e in rollouts.episodes], dim=1)
    groups = task_groups(config.env.name, tasks, args.bins)
    print(f"{args.run_dir}: iteration {state['iteration']}, {config.env.name}; "
          f"mean return over each group's tasks after 0..{ev.steps} steps")
    extra = None
    if config.env.name == "half_cheetah_vel":
        extra = mean_speed_errors(rollouts.episodes[-1], action_scale(config))
    print(format_table(returns, groups, extra, "|v_x - v_goal| after the last step (m/s)"))


def print_recorded(run_dir: Path, env_name: str, bins: int) -> None:
    """Each curve of ``run_dir``'s evaluation.json split by task group."""
    path = run_dir / "evaluation.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist: run metarl evaluate {run_dir} first")
    result = json.loads(path.read_text())
    if "test_tasks" not in result or "task_returns" not in result:
        raise SystemExit(f"error: {path} was written before evaluations recorded their test "
                         f"tasks and per-task returns: run the script without --recorded, or "
                         f"metarl evaluate {run_dir} again first")
    groups = task_groups(env_name, result["test_tasks"], bins)
    curves = {result["method"]: result, **result.get("baselines", {})}
    print(f"{path}: iteration {result['checkpoint_iteration']}, first-step lr "
          f"{(result['inner_lr'] or ['-'])[0]}; mean return over each group's tasks")
    for name, curve in curves.items():
        print(f"{name}:")
        print(format_table(torch.tensor(curve["task_returns"], dtype=torch.float64), groups))


if __name__ == "__main__":
    main()
