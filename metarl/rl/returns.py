"""Discounted returns and generalized advantage estimation, as pure functions.

All tensors are padded episodes with time as the last dimension: ``(..., H)``. ``mask`` is 1
on the steps an episode actually took and 0 on the padding after it ended. A row may hold
several episodes back to back; ``ends`` (bool, ``(..., H)``) then marks the last step of
each. Without ``ends``, each row is one episode that ends at its last valid step.
"""

from __future__ import annotations

import torch
from torch import Tensor


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float,
                       ends: Tensor | None = None) -> Tensor:
    """R_t = Σ_{k≥t} γ^{k−t} r_k over the valid steps of each episode; 0 on padding.

    Args:
        rewards, mask: ``(..., H)``; ends: ``(..., H)`` bool or None (see the module).
    """
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        if ends is not None:
            running = running * ~ends[..., t]
        running = rewards[..., t] + gamma * running
        returns[..., t] = running
    return returns * mask


def generalized_advantages(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float,
                           lam: float, ends: Tensor | None = None) -> Tensor:
    """GAE(γ, λ): A_t = Σ_k (γλ)^k δ_{t+k}, δ_t = r_t + γ V(s_{t+1}) − V(s_t).

    The value after an episode's last valid step is 0: episodes end either at the goal
    (terminal) or at the time limit, where the time feature of the baseline carries the
    difference. With λ = 1 this is ``discounted_returns − values``.

    Args:
        rewards, values, mask: ``(..., H)``; ends: ``(..., H)`` bool or None (see the module).

    Returns:
        advantages ``(..., H)``, 0 on padding.
    """
    values = values * mask
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    if ends is not None:
        next_values = next_values * ~ends
    deltas = (rewards + gamma * next_values - values) * mask
    advantages = torch.zeros_like(deltas)
    running = torch.zeros_like(deltas[..., 0])
    for t in range(deltas.shape[-1] - 1, -1, -1):
        if ends is not None:
            running = running * ~ends[..., t]
        running = deltas[..., t] + gamma * lam * running
        advantages[..., t] = running
    return advantages * mask


def normalize_per_task(values: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """(x − mean) / std over the valid steps of each task.

    Args:
        values, mask: ``(T, S, L)``; statistics are taken over ``(S, L)`` per task.
    """
    count = mask.sum(dim=(1, 2), keepdim=True).clamp_min(1.0)
    mean = (values * mask).sum(dim=(1, 2), keepdim=True) / count
    var = (((values - mean) * mask) ** 2).sum(dim=(1, 2), keepdim=True) / count
    return (values - mean) / (var.sqrt() + eps) * mask
