"""Policy-gradient losses on padded episodes, per task.

Every loss here averages over the valid (unmasked) steps of a task. The inner loss *sums*
over tasks, so that its gradient with respect to task-batched parameters ``(T, ...)`` is each
task's own gradient; the outer losses average over tasks.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Normal, kl_divergence

from metarl.adaptation import Params
from metarl.rl.episodes import Episodes, PolicyFn


def _task_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the valid steps of each task: ``(T, E, H) -> (T,)``."""
    return (values * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp_min(1.0)


def action_distribution(policy: PolicyFn, params: Params, episodes: Episodes) -> Normal:
    """π_params(· | o) at every step of the episodes: batch shape ``(T, E·H, act_dim)``."""
    t_, e_, h_, obs_dim = episodes.observations.shape
    return policy(params, episodes.observations.reshape(t_, e_ * h_, obs_dim))


def log_probs(policy: PolicyFn, params: Params, episodes: Episodes) -> Tensor:
    """log π_params(a_t | o_t), shape ``(T, E, H)``."""
    t_, e_, h_, act_dim = episodes.actions.shape
    dist = action_distribution(policy, params, episodes)
    return dist.log_prob(episodes.actions.reshape(t_, e_ * h_, act_dim)).sum(-1).view(t_, e_, h_)


def reinforce_loss(policy: PolicyFn, params: Params, episodes: Episodes,
                   advantages: Tensor) -> Tensor:
    """Inner (adaptation) loss: Σ_tasks −mean_steps[log π(a|o) · A], a scalar."""
    return -_task_mean(log_probs(policy, params, episodes) * advantages,
                       episodes.mask).sum()


def surrogate_loss(policy: PolicyFn, params: Params, episodes: Episodes, advantages: Tensor,
                   old_log_probs: Tensor) -> Tensor:
    """Outer TRPO surrogate: mean over tasks of −mean_steps[π/π_old · A], a scalar."""
    ratio = torch.exp(log_probs(policy, params, episodes) - old_log_probs)
    return -_task_mean(ratio * advantages, episodes.mask).mean()


def mean_kl(policy: PolicyFn, params: Params, episodes: Episodes, old: Normal) -> Tensor:
    """Mean over tasks and valid steps of KL(π_old ‖ π_params), a scalar."""
    t_, e_, h_, _ = episodes.actions.shape
    new = action_distribution(policy, params, episodes)
    kl = kl_divergence(old, new).sum(-1).view(t_, e_, h_)
    return _task_mean(kl, episodes.mask).mean()
