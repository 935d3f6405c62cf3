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

    def episode_returns(self) -> Tensor:
        """Undiscounted return of each episode, ``(T, E)``."""
        return (self.rewards * self.mask).sum(dim=-1)


def sample_episodes(env: BatchedEnv, policy: PolicyFn, params: Params, *, num_tasks: int,
                    episodes_per_task: int, max_steps: int,
                    generator: torch.Generator, action_scale: float = 1.0) -> Episodes:
    """Roll out ``episodes_per_task`` episodes of each task with that task's parameters.

    Args:
        env: the T·E environments, task-major (episode e of task t is index t·E + e).
        policy: the policy function; ``params`` hold one parameter set per task,
            each tensor ``(T, *shape)``.
        max_steps: H, the time limit.
        generator: source of the action noise.
        action_scale: the environment receives ``action_scale ·`` the policy's action (the
            episodes keep the policy's own, unscaled actions).
    """
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
