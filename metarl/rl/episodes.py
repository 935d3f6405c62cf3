"""Padded episode tensors and the batched in-process sampler.

T tasks x E environments (slots) are stepped together: one policy forward (batched matrix
products, each task with its own parameters) and one environment step per time step, for
all T·E at once. No processes, no threads.
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
    """N environments stepped together (N = T tasks x E slots, task-major order)."""

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
    """The episodes of T tasks in S slots per task, padded to L steps.

    A slot is one environment of the batch. With a fixed number of episodes per task, each
    slot holds one episode (S = E, L = H, the time limit). With a step budget, a slot whose
    episode ends starts the next one right after it while its task is under budget, so a
    slot holds one or more episodes back to back (L < 2H): memory stays O(T·E·H) however
    short the episodes get.

    Shapes: ``observations (T, S, L, obs_dim)`` (the observation each action was taken in),
    ``actions (T, S, L, act_dim)``, ``rewards (T, S, L)`` (float32), ``mask (T, S, L)``
    (1.0 on steps taken, 0.0 on padding), ``log_probs (T, S, L)`` (behaviour policy) and
    ``times (T, S, L)`` (int64: each step's index within its episode, 0 where one starts).

    Episodes are numbered per task in order of their first step, then of their slot; with
    one episode per slot, episode k is slot k.
    """

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    log_probs: Tensor
    times: Tensor

    @property
    def num_tasks(self) -> int:
        return self.observations.shape[0]

    @property
    def starts(self) -> Tensor:
        """``(T, S, L)`` bool: True on the first step of each episode."""
        return (self.mask > 0) & (self.times == 0)

    @property
    def ends(self) -> Tensor:
        """``(T, S, L)`` bool: True on the last step of each episode."""
        valid = self.mask > 0
        continues = torch.zeros_like(valid)
        continues[..., :-1] = valid[..., 1:] & (self.times[..., 1:] > 0)
        return valid & ~continues

    def num_episodes(self) -> Tensor:
        """Episodes sampled for each task, ``(T,)``."""
        return self.starts.sum(dim=(1, 2))

    def episode_ids(self) -> Tensor:
        """``(T, S, L)`` int64: the number of the episode each step belongs to (-1 on
        padding)."""
        starts = self.starts
        order = starts.transpose(1, 2).reshape(self.num_tasks, -1)  # by start step, then slot
        numbers = (torch.cumsum(order.long(), dim=1) - 1).view(starts.shape[0], starts.shape[2],
                                                               starts.shape[1]).transpose(1, 2)
        first_steps = torch.where(starts, numbers, torch.full_like(numbers, -1))
        ids = torch.cummax(first_steps, dim=-1).values
        return torch.where(self.mask > 0, ids, torch.full_like(ids, -1))

    def episode_returns(self) -> Tensor:
        """Undiscounted return of each episode, ``(T, K)`` with K the most episodes of any
        task (0 where a task has fewer, see :meth:`num_episodes`)."""
        starts = self.starts
        if bool(starts[..., 0].all()) and not bool(starts[..., 1:].any()):
            # one episode in every slot: episode k is slot k
            return (self.rewards * self.mask).sum(dim=-1)
        ids = self.episode_ids().reshape(self.num_tasks, -1)
        width = max(int(self.num_episodes().max()), 1)
        valid = ids >= 0
        out = self.rewards.new_zeros(self.num_tasks, width + 1)
        out.scatter_add_(1, torch.where(valid, ids, width),
                         (self.rewards * self.mask).reshape(self.num_tasks, -1))
        return out[:, :width]

    def task_returns(self) -> Tensor:
        """Mean undiscounted return over each task's episodes, ``(T,)``."""
        return self.episode_returns().sum(dim=1) / self.num_episodes().clamp_min(1)

    def episode_spans(self, task: int) -> list[tuple[int, int, int]]:
        """``(slot, first step, length)`` of each episode of ``task``, in episode order."""
        first = self.starts[task].transpose(0, 1).nonzero()  # (K, 2): step, slot, sorted
        ids = self.episode_ids()[task]
        lengths = torch.bincount(ids[ids >= 0], minlength=len(first))
        return [(slot, step, length) for (step, slot), length
                in zip(first.tolist(), lengths.tolist(), strict=True)]


def sample_episodes(env: BatchedEnv, policy: PolicyFn, params: Params, *, num_tasks: int,
                    episodes_per_task: int, max_steps: int,
                    generator: torch.Generator, action_scale: float = 1.0,
                    step_budget: bool = False) -> Episodes:
    """Roll out ``episodes_per_task`` episodes of each task with that task's parameters.

    With ``step_budget``, each task instead gets a budget of ``episodes_per_task · max_steps``
    steps, as the samplers of rllab and the MAML authors' code: an environment whose episode
    ends (at the goal or at the time limit) starts a new one while its task has taken fewer
    steps than the budget, and every episode started runs to its end. Tasks whose episodes
    end early so get more episodes, back to back in their slots (see :class:`Episodes`).
    ``env`` must then be a :class:`RestartableEnv` if any episode ends before the time
    limit.

    Args:
        env: the T·E environments, task-major (slot e of task t is index t·E + e).
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

    mask = arrange(mask)
    times = torch.arange(max_steps).expand(t_, e_, max_steps) * mask.long()
    return Episodes(arrange(observations), arrange(actions), arrange(rewards) * mask, mask,
                    arrange(log_probs) * mask, times)


def _sample_with_restarts(env: BatchedEnv, policy: PolicyFn, params: Params, num_tasks: int,
                          slots_per_task: int, max_steps: int, generator: torch.Generator,
                          action_scale: float) -> Episodes:
    """``sample_episodes`` with a step budget: E slots per task run episodes back to back."""
    t_, e_ = num_tasks, slots_per_task
    n = t_ * e_
    budget = e_ * max_steps
    task_of = torch.arange(t_).repeat_interleave(e_)  # (N,) task of each slot
    time = torch.zeros(n, dtype=torch.long)  # (N,) steps into the current episode
    active = torch.ones(n, dtype=torch.bool)
    taken = torch.zeros(t_, dtype=torch.long)  # steps taken by each task so far
    columns: list[tuple[Tensor, ...]] = []  # one per step of the slots: all N slots
    obs = env.reset()
    with torch.no_grad():
        params = {k: v.detach() for k, v in params.items()}
        # While a task is under budget all its E slots run, so its last episode starts before
        # step H and every slot stops before step 2H; this bound is never hit.
        for _ in range(budget + max_steps):
            dist = policy(params, obs.view(t_, e_, env.observation_dim))
            noise = torch.randn(dist.mean.shape, generator=generator)
            action = (dist.mean + dist.stddev * noise).view(n, env.action_dim)
            log_prob = dist.log_prob(action.view(t_, e_, env.action_dim)).sum(-1).view(n)
            next_obs, reward, terminated = env.step(action * action_scale)
            columns.append((obs.clone(), action, log_prob, reward.to(torch.float32).clone(),
                            active.to(torch.float32), time.clone()))
            taken += torch.bincount(task_of[active], minlength=t_)
            time += active.long()
            ended = active & (terminated | (time >= max_steps))
            active &= ~ended
            restart = ended & (taken[task_of] < budget)
            if bool(restart.any()):
                if not hasattr(env, "restart"):
                    raise TypeError(f"{type(env).__name__} cannot restart environments: "
                                    "step-budget sampling needs a RestartableEnv")
                time[restart] = 0
                active |= restart
                next_obs = env.restart(restart)
            obs = next_obs
            if not bool(active.any()):
                break

    def arrange(x: Tensor) -> Tensor:  # (L, N, ...) -> (T, S, L, ...)
        x = x.transpose(0, 1)
        return x.reshape(t_, e_, *x.shape[1:]).contiguous()

    observations, actions, log_probs, rewards, mask, times = (
        arrange(torch.stack(column)) for column in zip(*columns, strict=True))
    return Episodes(observations * mask[..., None], actions * mask[..., None], rewards * mask,
                    mask, log_probs * mask, times * mask.long())
