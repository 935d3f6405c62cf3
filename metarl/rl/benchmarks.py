"""Meta-RL speed: env steps/s of our batched samplers vs Gymnasium's SyncVectorEnv (and raw
``mujoco.batch`` for the half-cheetah), and seconds per meta-iteration split into sampling,
adaptation and TRPO."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from metarl.benchmark import Spread, announce, print_table, spread_note, timed_rows
from metarl.config import from_dict, read_yaml
from metarl.envs.navigation import Navigation2DEnv
from metarl.rl.build import episode_length, family_of, make_policy, make_trainer, new_policy_params
from metarl.rl.config import MetaRLConfig
from metarl.rl.episodes import sample_episodes
from metarl.rl.policy import expand_params


def _steps_per_second(run: Callable[[], None], steps: int, repeats: int) -> Spread:
    """Env steps per second of ``run()`` (``steps`` steps a call), one rate for each of
    ``repeats`` timed calls after one untimed call."""
    run()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(steps / (time.perf_counter() - start))
    return Spread.of(rates)


def rollout_calls(repeats: int, per_call: int) -> int:
    """Timed calls of each env-stepping row: ``repeats // per_call`` (a call steps a whole
    batch of episodes), at least 3 so that the range means something, and never more than
    ``repeats``."""
    return min(repeats, max(3, repeats // per_call))


def _sampler_run(env, policy, params: dict[str, torch.Tensor], num_tasks: int, episodes: int,
                 horizon: int) -> Callable[[], None]:
    """One call samples ``episodes`` full episodes for each of ``num_tasks`` tasks with our
    sampler, the policy in the loop (shared initial parameters expanded per task)."""
    task_params = expand_params({k: v.detach() for k, v in params.items()}, num_tasks)
    generator = torch.Generator().manual_seed(0)

    def run() -> None:
        sample_episodes(env, policy, task_params, num_tasks=num_tasks,
                        episodes_per_task=episodes, max_steps=horizon, generator=generator)

    return run


def _shipped(name: str) -> dict:
    """The data of a shipped config (``configs/**/<name>.yaml``)."""
    from metarl.cli import builtin_configs

    return read_yaml(builtin_configs()[name])


def benchmark_navigation(*, repeats: int) -> None:
    """Paper protocol (configs/navigation/navigation2d.yaml): 20 tasks x 20 episodes x 100
    steps per batch."""
    shipped = _shipped("navigation2d")
    config = from_dict(MetaRLConfig, shipped)
    family = family_of(config)
    num_tasks, episodes = config.training.meta_batch_size, config.training.episodes_per_task
    horizon = episode_length(config)
    n = num_tasks * episodes
    rng = np.random.default_rng(0)
    tasks = family.sample_tasks(num_tasks, rng)
    policy = make_policy(config)
    params = new_policy_params(config, "benchmark")
    batch_repeats = rollout_calls(repeats, 4)

    def sync_vector_env(with_policy: bool):
        envs = gym.vector.SyncVectorEnv(
            [functools.partial(Navigation2DEnv, task) for task in tasks for _ in range(episodes)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        shared = expand_params({k: v.detach() for k, v in params.items()}, 1)

        def run() -> None:
            obs, _ = envs.reset(seed=0)
            for _ in range(horizon):
                if with_policy:
                    with torch.no_grad():
                        dist = policy(shared, torch.as_tensor(obs).view(1, n, 2))
                        actions = dist.sample().view(n, 2).numpy()
                else:
                    actions = rng.uniform(-0.1, 0.1, size=(n, 2)).astype(np.float32)
                obs, *_ = envs.step(actions)

        return run

    def batched_env():
        env = family.make_batched(tasks, episodes, np.random.default_rng(0))

        def run() -> None:
            env.reset()
            for _ in range(horizon):
                env.step(torch.empty(n, 2).uniform_(-0.1, 0.1))

        return run

    steps = n * horizon
    rows = timed_rows([
        ("Gymnasium SyncVectorEnv, random actions", lambda: _steps_per_second(
            sync_vector_env(False), steps, batch_repeats)),
        ("Gymnasium SyncVectorEnv + policy", lambda: _steps_per_second(
            sync_vector_env(True), steps, batch_repeats)),
        ("metarl BatchedNavigation2D, random actions", lambda: _steps_per_second(
            batched_env(), steps, batch_repeats)),
        ("metarl sampler (policy per task in the loop)", lambda: _steps_per_second(
            _sampler_run(family.make_batched(tasks, episodes, np.random.default_rng(0)), policy,
                         params, num_tasks, episodes, horizon), steps, batch_repeats)),
    ])
    print_table(f"navigation env steps per second ({num_tasks} tasks x {episodes} episodes x "
                f"{horizon} steps, full episodes; {spread_note(batch_repeats)})",
                ["stepping", "env steps/s"],
                [[name, value.format(",.0f")] for name, value in rows])

    print_iteration_split("navigation (navigation2d)", shipped,
                          iterations=max(2, min(repeats, 5)))


def print_iteration_split(name: str, data: dict, *, iterations: int) -> None:
    """Seconds per meta-iteration (sampling, adaptation, TRPO) for maml (with the exact KL
    curvature and with ``trpo.curvature_stride: 5``) and fomaml, for the config ``data``."""
    split_rows = []
    variants = [("maml", "maml", 1), ("maml, curvature from every 5th step", "maml", 5),
                ("fomaml", "fomaml", 1)]
    for label, method, stride in variants:
        announce(f"{name}, {label}: {iterations + 1} meta-iterations")
        config = from_dict(MetaRLConfig, {
            **data, "adaptation": {**data.get("adaptation", {}), "method": method},
            "trpo": {**data.get("trpo", {}), "curvature_stride": stride}})
        trainer = make_trainer(config)
        trainer.train_iteration(0)
        totals = {"sampling": 0.0, "adaptation": 0.0, "trpo": 0.0}
        walls = []
        for i in range(1, iterations + 1):
            start = time.perf_counter()
            trainer.train_iteration(i)
            walls.append(time.perf_counter() - start)
            for key in totals:
                totals[key] += trainer.last_timings.get(key, 0.0)
        split_rows.append([label, *(totals[k] / iterations for k in totals),
                           sum(walls) / iterations,
                           f"{min(walls):.4g}-{max(walls):.4g}" if iterations > 1 else "-"])
    config = from_dict(MetaRLConfig, data)
    print_table(f"{name} seconds per meta-iteration ({config.training.meta_batch_size} tasks x "
                f"{config.training.episodes_per_task} episodes, mean of iterations "
                f"2-{iterations + 1} from initialization)",
                ["method", "sampling s", "adaptation s", "TRPO s", "total s",
                 "total range s"], split_rows)


def benchmark_cheetah(*, repeats: int) -> None:
    """Paper protocol (configs/half_cheetah/half-cheetah-vel.yaml): 40 tasks x 20 episodes x
    200 steps of half-cheetah velocity."""
    from metarl.envs.half_cheetah import BatchedHalfCheetah, HalfCheetahVelEnv, available_cpus

    shipped = _shipped("half-cheetah-vel")
    config = from_dict(MetaRLConfig, shipped)
    family = family_of(config)
    frame_skip = family.frame_skip or 1
    num_tasks, episodes = config.training.meta_batch_size, config.training.episodes_per_task
    horizon = episode_length(config)
    n = num_tasks * episodes
    rng = np.random.default_rng(0)
    tasks = family.sample_tasks(num_tasks, rng)
    policy = make_policy(config)
    params = new_policy_params(config, "benchmark")
    batch_repeats = rollout_calls(repeats, 10)
    sync_envs = num_tasks  # Gymnasium steps one env at a time: its rate does not depend on N

    def sync_vector_env():
        envs = gym.vector.SyncVectorEnv(
            [lambda task=task: HalfCheetahVelEnv(task, frame_skip=frame_skip)
             for task in tasks[:sync_envs]],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        envs.reset(seed=0)

        def run() -> None:
            for _ in range(horizon):
                envs.step(rng.uniform(-1, 1, size=(sync_envs, 6)))

        return run

    def raw_batch():
        env = BatchedHalfCheetah("velocity", np.ones(n), rng, frame_skip=frame_skip)
        env.reset()
        ctrl = env.batch.bind("ctrl")
        controls = rng.uniform(-1, 1, size=(n, 6))

        def run() -> None:
            for _ in range(horizon):
                ctrl[:] = controls
                env.batch.step(nstep=frame_skip)

        return run

    def batched_env():
        env = family.make_batched(tasks, episodes, rng)
        actions = torch.empty(n, 6).uniform_(-1, 1)

        def run() -> None:
            env.reset()
            for _ in range(horizon):
                env.step(actions)

        return run

    rows = timed_rows([
        (f"Gymnasium SyncVectorEnv ({sync_envs} envs), random actions",
         lambda: _steps_per_second(sync_vector_env(), sync_envs * horizon, batch_repeats)),
        (f"raw mujoco.batch ({n} sims, {frame_skip} substeps)",
         lambda: _steps_per_second(raw_batch(), n * horizon, batch_repeats)),
        ("metarl BatchedHalfCheetah (rewards, observations)",
         lambda: _steps_per_second(batched_env(), n * horizon, batch_repeats)),
        ("metarl sampler (policy per task in the loop)",
         lambda: _steps_per_second(_sampler_run(family.make_batched(tasks, episodes, rng),
                                                policy, params, num_tasks, episodes, horizon),
                                   n * horizon, batch_repeats)),
    ])
    print_table(f"half-cheetah env steps per second ({num_tasks} tasks x {episodes} episodes x "
                f"{horizon} steps; MuJoCo threads: {available_cpus()}; "
                f"{spread_note(batch_repeats)})",
                ["stepping", "env steps/s"], [[name, value.format(",.0f")] for name, value in rows])
    print_iteration_split("half-cheetah velocity (half-cheetah-vel)", shipped,
                          iterations=max(1, repeats // 10))
