"""Time and memory of step-budget sampling when every episode ends after one step.

    python scripts/step_budget_worst_case.py [--tasks 40] [--episodes 40] [--horizon 100]

The navigation evaluation's batch (40 tasks x 40 episodes' worth of steps, H = 100) with
every goal at (0.05, 0.05) and a policy whose mean action reaches it in one step: each task
then runs 4,000 one-step episodes. Prints the episodes per task, the layout of the
:class:`~metarl.rl.episodes.Episodes`, seconds for sampling and for sampling plus the
advantages (returns, baseline fit, GAE), and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from metarl.envs.navigation import BatchedNavigation2D
from metarl.rl.episodes import sample_episodes
from metarl.rl.maml_trpo import AdvantageSettings, compute_advantages
from metarl.rl.policy import expand_params, init_policy_params, policy_distribution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--horizon", type=int, default=100)
    args = parser.parse_args()
    tasks, episodes, horizon = args.tasks, args.episodes, args.horizon
    env = BatchedNavigation2D(torch.full((tasks * episodes, 2), 0.05, dtype=torch.float64))
    params = expand_params(init_policy_params(2, 2, [100, 100], init_std=1e-3,
                                              generator=torch.Generator().manual_seed(0)), tasks)
    with torch.no_grad():
        for name, value in params.items():
            if name != "log_std":
                value.zero_()
        params["b2"].fill_(0.05)  # every mean action is (0.05, 0.05): the goal in one step
    start = time.perf_counter()
    batch = sample_episodes(env, policy_distribution, params, num_tasks=tasks,
                            episodes_per_task=episodes, max_steps=horizon,
                            generator=torch.Generator().manual_seed(1), step_budget=True)
    sampled = time.perf_counter() - start
    compute_advantages(batch, AdvantageSettings())
    total = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"episodes per task {float(batch.num_episodes().float().mean()):.0f}, "
          f"layout {tuple(batch.mask.shape)}, sampling {sampled:.2f} s, "
          f"sampling + advantages {total:.2f} s, peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
