"""Policy-gradient losses on packed steps, per task.

Losses work on :class:`StepBatch`: the steps episodes actually took, gathered per task and
padded to the task with the most steps (no compute is spent on the padding after an episode
ended). Every loss averages over the valid steps of a task. The inner loss *sums* over tasks,
so that its gradient with respect to task-batched parameters ``(T, ...)`` is each task's own
gradient; the outer losses average over tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Normal, kl_divergence

from metarl.adaptation import Params
from metarl.rl.episodes import Episodes, PolicyFn


@dataclass(frozen=True)
class StepBatch:
    """The valid steps of T tasks' episodes, N per task (padded with mask 0).

    Shapes: ``observations (T, N, obs_dim)``, ``actions (T, N, act_dim)``, and
    ``advantages``, ``mask``, ``log_probs`` (behaviour policy) ``(T, N)``.
    """

    observations: Tensor
    actions: Tensor
    advantages: Tensor
    mask: Tensor
    log_probs: Tensor


def pack_steps(episodes: Episodes, advantages: Tensor) -> StepBatch:
    """Gather the valid steps of each task (in episode-then-time order) into a StepBatch.

    ``advantages`` ``(T, S, L)`` as ``episodes.mask``; every field of the result is padded to
    ``N`` = the most valid steps of any task (``mask (T, N)`` marks the real ones).
    """
    t_, e_, h_ = episodes.mask.shape
    width = max(int(episodes.mask.sum(dim=(1, 2)).max()), 1)
    ids = episodes.episode_ids().reshape(t_, e_ * h_)
    key = ids * h_ + episodes.times.reshape(t_, e_ * h_)
    order = torch.argsort(torch.where(ids >= 0, key, key.max() + 1), dim=1,
                          stable=True)[:, :width]

    def gather(x: Tensor) -> Tensor:
        flat = x.reshape(t_, e_ * h_, *x.shape[3:])
        index = order.view(t_, width, *([1] * (flat.dim() - 2))).expand(t_, width,
                                                                         *flat.shape[2:])
        return torch.gather(flat, 1, index)

    mask = gather(episodes.mask)
    return StepBatch(gather(episodes.observations), gather(episodes.actions),
                     gather(advantages) * mask, mask, gather(episodes.log_probs) * mask)


def subsample_steps(steps: StepBatch, stride: int) -> StepBatch:
    """Every ``stride``-th packed step of each task, starting with the first: ``(T, N, ...) ->
    (T, ceil(N / stride), ...)``. Task means over the result estimate those over all steps."""
    if stride == 1:
        return steps
    return StepBatch(*(x[:, ::stride] for x in (steps.observations, steps.actions,
                                                steps.advantages, steps.mask,
                                                steps.log_probs)))


def _task_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the valid steps of each task: ``(T, N) -> (T,)``."""
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def log_probs(policy: PolicyFn, params: Params, steps: StepBatch) -> Tensor:
    """log π_params(a | o) at every step, ``(T, N)``."""
    return policy(params, steps.observations).log_prob(steps.actions).sum(-1)


def reinforce_loss(policy: PolicyFn, params: Params, steps: StepBatch) -> Tensor:
    """Inner (adaptation) loss: Σ_tasks −mean_steps[log π(a|o) · A], a scalar."""
    return -_task_mean(log_probs(policy, params, steps) * steps.advantages, steps.mask).sum()


def surrogate_loss(policy: PolicyFn, params: Params, steps: StepBatch,
                   old_log_probs: Tensor) -> Tensor:
    """Outer TRPO surrogate: mean over tasks of −mean_steps[π/π_old · A], a scalar.

    ``old_log_probs`` ``(T, N)``: log π_old(a|o) of the behaviour policy at ``steps``.
    """
    ratio = torch.exp(log_probs(policy, params, steps) - old_log_probs)
    return -_task_mean(ratio * steps.advantages, steps.mask).mean()


def mean_kl(policy: PolicyFn, params: Params, steps: StepBatch, old: Normal) -> Tensor:
    """Mean over tasks and valid steps of KL(π_old ‖ π_params), a scalar.

    ``old``: the behaviour policy's Normal, batch shape ``(T, N, act_dim)``.
    """
    kl = kl_divergence(old, policy(params, steps.observations)).sum(-1)
    return _task_mean(kl, steps.mask).mean()
