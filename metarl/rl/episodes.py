"""Padded episode tensors and the batched in-process sampler.

T tasks x E episodes are stepped together: one policy forward (batched matrix products, each
task with its own parameters) and one environment step per time step, for all T·E episodes
at once. No processes, no threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from torch.distributions import Normal

from metarl.adaptation import Params


class BatchedEnv(Protocol):
    """N environments stepped together (N = T tasks x E episodes, task-major order)."""

    observation_dim: int
    action_dim: int

    def reset(self) -> Tensor:
        """Observations ``(N, observation_dim)`` float32."""
        ...

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(observations ``(N, obs_dim)``, rewards ``(N,)``, terminated ``(N,)`` bool)."""
        ...


class RestartableEnv(BatchedEnv, Protocol):
    """A batched env whose episodes can end early and that can restart some environments
    (needed by :func:`sample_episodes` with a step budget)."""

    def restart(self, where: Tensor) -> Tensor:
        """Start a new episode in the environments where ``where`` ``(N,)`` is True, leaving
        the others as they are; returns all observations ``(N, obs_dim)`` float32."""
        ...


PolicyFn = Callable[[Params, Tensor], Normal]
"""(task-batched params, observations ``(T, N, obs_dim)``) -> action distribution."""


@dataclass(frozen=True)
class Episodes:
    """E episodes of each of T tasks, padded to H steps.

    Shapes: ``observations (T, E, H, obs_dim)`` (the observation each action was taken in),
    ``actions (T, E, H, act_dim)``, ``rewards (T, E, H)`` (float32), ``mask (T, E, H)``
    (1.0 on steps taken, 0.0 on padding), ``log_probs (T, E, H)`` (behaviour policy).
    """

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    log_probs: Tensor

    @property
    def num_tasks(self) -> int:
        return self.observations.shape[0]

    @property
    def lengths(self) -> Tensor:
        """Steps taken by each episode, ``(T, E)``."""
        return self.mask.sum(dim=-1).long()

    @property
    def exists(self) -> Tensor:
        """``(T, E)`` bool: False for the empty rows that pad a task with fewer episodes than
        another (step-budget sampling)."""
        return self.lengths > 0

    def episode_returns(self) -> Tensor:
        """Undiscounted return of each episode, ``(T, E)`` (0 for rows that hold none)."""
        return (self.rewards * self.mask).sum(dim=-1)

    def task_returns(self) -> Tensor:
        """Mean undiscounted return over each task's episodes, ``(T,)``."""
        exists = self.exists.to(self.rewards.dtype)
        return (self.episode_returns() * exists).sum(dim=1) / exists.sum(dim=1).clamp_min(1)

    def num_episodes(self) -> Tensor:
        """Episodes sampled for each task, ``(T,)``."""
        return self.exists.sum(dim=1)


def sample_episodes(env: BatchedEnv, policy: PolicyFn, params: Params, *, num_tasks: int,
                    episodes_per_task: int, max_steps: int,
                    generator: torch.Generator, action_scale: float = 1.0,
                    step_budget: bool = False) -> Episodes:
    """Roll out ``episodes_per_task`` episodes of each task with that task's parameters.

    With ``step_budget``, each task instead gets a budget of ``episodes_per_task · max_steps``
    steps, as the samplers of rllab and the MAML authors' code: an environment whose episode
    ends (at the goal or at the time limit) starts a new one while its task has taken fewer
    steps than the budget, and every episode started runs to its end. Tasks whose episodes
    end early so get more episodes; rows of tasks with fewer episodes than the most are
    empty (mask 0, see :attr:`Episodes.exists`). ``env`` must then be a
    :class:`RestartableEnv` if any episode ends before the time limit.

    Args:
        env: the T·E environments, task-major (episode e of task t is index t·E + e).
        policy: the policy function; ``params`` hold one parameter set per task,
            each tensor ``(T, *shape)``.
        max_steps: H, the time limit.
        generator: source of the action noise.
        action_scale: the environment receives ``action_scale ·`` the policy's action (the
            episodes keep the policy's own, unscaled actions).
    """
    if step_budget:
        return _sample_with_restarts(env, policy, params, num_tasks, episodes_per_task,
                                     max_steps, generator, action_scale)
    t_, e_ = num_tasks, episodes_per_task
    n = t_ * e_
    obs_dim, act_dim = env.observation_dim, env.action_dim
    observations = torch.zeros(max_steps, n, obs_dim)
    actions = torch.zeros(max_steps, n, act_dim)
    rewards = torch.zeros(max_steps, n)
    mask = torch.zeros(max_steps, n)
    log_probs = torch.zeros(max_steps, n)
    done = torch.zeros(n, dtype=torch.bool)
    obs = env.reset()
    steps_taken = 0
    with torch.no_grad():
        params = {k: v.detach() for k, v in params.items()}
        for t in range(max_steps):
            dist = policy(params, obs.view(t_, e_, obs_dim))
            noise = torch.randn(dist.mean.shape, generator=generator)
            action = dist.mean + dist.stddev * noise
            observations[t] = obs
            actions[t] = action.view(n, act_dim)
            log_probs[t] = dist.log_prob(action).sum(-1).view(n)
            mask[t] = (~done).to(torch.float32)
            obs, reward, terminated = env.step(actions[t] * action_scale)
            rewards[t] = reward.to(torch.float32)
            done = done | terminated
            steps_taken = t + 1
            if bool(done.all()):
                break

    def arrange(x: Tensor) -> Tensor:
        x = x[:steps_taken].transpose(0, 1)  # (N, H', ...)
        x = x.reshape(t_, e_, *x.shape[1:])
        pad = max_steps - steps_taken
        if pad:
            x = torch.cat([x, x.new_zeros(t_, e_, pad, *x.shape[3:])], dim=2)
        return x.contiguous()

    return Episodes(arrange(observations), arrange(actions), arrange(rewards) * arrange(mask),
                    arrange(mask), arrange(log_probs) * arrange(mask))


def _sample_with_restarts(env: BatchedEnv, policy: PolicyFn, params: Params, num_tasks: int,
                          slots_per_task: int, max_steps: int, generator: torch.Generator,
                          action_scale: float) -> Episodes:
    """``sample_episodes`` with a step budget: E slots per task run episodes back to back."""
    t_, e_ = num_tasks, slots_per_task
    n = t_ * e_
    obs_dim, act_dim = env.observation_dim, env.action_dim
    budget = e_ * max_steps
    task_of = torch.arange(t_).repeat_interleave(e_)  # (N,) task of each slot
    row = torch.arange(e_).repeat(t_)  # (N,) episode row of each slot's current episode
    time = torch.zeros(n, dtype=torch.long)  # (N,) steps into the current episode
    active = torch.ones(n, dtype=torch.bool)
    next_row = torch.full((t_,), e_, dtype=torch.long)
    taken = torch.zeros(t_, dtype=torch.long)  # steps taken by each task so far
    records: list[tuple[Tensor, ...]] = []
    obs = env.reset()
    with torch.no_grad():
        params = {k: v.detach() for k, v in params.items()}
        # Episodes start only while their task is under budget, so this bound is never hit.
        for _ in range(budget + max_steps):
            dist = policy(params, obs.view(t_, e_, obs_dim))
            noise = torch.randn(dist.mean.shape, generator=generator)
            action = (dist.mean + dist.stddev * noise).view(n, act_dim)
            log_prob = dist.log_prob(action.view(t_, e_, act_dim)).sum(-1).view(n)
            next_obs, reward, terminated = env.step(action * action_scale)
            slots = active.nonzero().squeeze(1)
            records.append((task_of[slots], row[slots], time[slots], obs[slots],
                            action[slots], log_prob[slots], reward[slots].to(torch.float32)))
            taken += torch.bincount(task_of[slots], minlength=t_)
            time[slots] += 1
            ended = active & (terminated | (time >= max_steps))
            active &= ~ended
            restart = ended & (taken[task_of] < budget)
            if bool(restart.any()):
                restarted = restart.nonzero().squeeze(1)
                tasks = task_of[restarted]
                counts = torch.bincount(tasks, minlength=t_)
                first = torch.cumsum(counts, 0) - counts  # restarted is sorted by task
                row[restarted] = next_row[tasks] + torch.arange(len(restarted)) - first[tasks]
                next_row += counts
                time[restarted] = 0
                active |= restart
                if not hasattr(env, "restart"):
                    raise TypeError(f"{type(env).__name__} cannot restart environments: "
                                    "step-budget sampling needs a RestartableEnv")
                next_obs = env.restart(restart)
            obs = next_obs
            if not bool(active.any()):
                break
    tasks, rows, times, *values = (torch.cat(column) for column in zip(*records, strict=True))
    rows_needed = int(next_row.max())

    def scatter(x: Tensor) -> Tensor:
        out = x.new_zeros(t_, rows_needed, max_steps, *x.shape[1:])
        out[tasks, rows, times] = x
        return out

    observations, actions, log_probs, rewards = (scatter(v) for v in values)
    mask = scatter(torch.ones(len(tasks)))
    return Episodes(observations, actions, rewards, mask, log_probs)
