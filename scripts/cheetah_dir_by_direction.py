"""Half-cheetah direction: the evaluation's returns split into forward and backward tasks.

    python scripts/cheetah_dir_by_direction.py RUN_DIR

Samples exactly what ``metarl evaluate RUN_DIR`` samples (the run's evaluation settings:
test tasks, episodes, learning rates, seed) and prints the mean return over all test tasks
and over the tasks of each direction, before adaptation and after each step.
"""

from __future__ import annotations

import argparse

import torch

from metarl.rl.experiment import evaluation_rollouts
from metarl.runner import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a half-cheetah direction run directory")
    args = parser.parse_args()
    _, config, state = load_run(args.run_dir)
    if config.env.name != "half_cheetah_dir":
        parser.error(f"{args.run_dir} is a {config.env.name} run, not half_cheetah_dir")
    ev = config.evaluation
    tasks, rollouts = evaluation_rollouts(config, state["trainer"]["params"], tasks=ev.tasks,
                                          steps=ev.steps, seed=ev.seed)
    # (tasks, steps + 1): each task's mean episode return before and after each step
    returns = torch.stack([e.task_returns() for e in rollouts.episodes], dim=1)
    directions = torch.tensor([task["direction"] for task in tasks])
    print(f"iteration {state['iteration']}; mean return after 0..{ev.steps} steps")
    groups = {"all": torch.ones_like(directions, dtype=torch.bool),
              "forward (+1)": directions > 0, "backward (-1)": directions < 0}
    for name, chosen in groups.items():
        means = " ".join(f"{float(x):9.2f}" for x in returns[chosen].mean(dim=0))
        print(f"{name:14s} {int(chosen.sum()):3d} tasks {means}")


if __name__ == "__main__":
    main()
