"""One task's Gaussian MLP policy and its policy-gradient losses, written out by hand.

The reference for the task-batched code in ``metarl.rl`` (``policy_distribution``,
``reinforce_loss``, ``adapt_policy``, ``surrogate_loss``, ``mean_kl``): plain per-task
formulas, no batching over tasks, no ``torch.distributions``.
"""

from __future__ import annotations

import math

import torch


def gaussian_mlp(theta, observations, activation="tanh"):
    """Mean and std ``(N, action_dim)`` of one task's policy at ``observations (N, obs_dim)``;
    ``theta`` holds unbatched ``w{i} (fan_in, fan_out)``, ``b{i}`` and ``log_std``."""
    layers = sum(1 for k in theta if k.startswith("w"))
    x = observations
    for i in range(layers):
        x = x @ theta[f"w{i}"] + theta[f"b{i}"]
        if i < layers - 1:
            # ReLU as x·[x > 0]: slope 0 at x = 0, where a start at the origin with zero
            # biases puts every unit at the first step.
            x = torch.tanh(x) if activation == "tanh" else x * (x > 0)
    return x, theta["log_std"].exp().expand_as(x)


def log_prob(theta, observations, actions, activation="tanh"):
    """log π(a | o) summed over action dimensions, ``(N,)``."""
    mean, std = gaussian_mlp(theta, observations, activation)
    z = (actions - mean) / std
    return (-0.5 * z**2 - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def masked_mean(values, mask):
    return (values * mask).sum() / mask.sum()


def adapt_one_task(theta, task, support, learning_rates, *, create_graph, activation="tanh"):
    """φ of task ``task``: per support batch, θ ← θ − lr ∇θ (−mean_valid[log π(a|o) · A])."""
    fast = dict(theta)
    for batch, lr in zip(support, learning_rates, strict=True):
        mask = batch.mask[task]
        loss = -masked_mean(log_prob(fast, batch.observations[task], batch.actions[task],
                                     activation) * batch.advantages[task], mask)
        grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph)
        fast = {k: v - lr * g for (k, v), g in zip(fast.items(), grads, strict=True)}
    return fast


def surrogate_one_task(phi, task, valid, old_log_probs, activation="tanh"):
    """−mean_valid[π_φ(a|o) / π_old(a|o) · A] of one task."""
    ratio = torch.exp(log_prob(phi, valid.observations[task], valid.actions[task], activation)
                      - old_log_probs[task])
    return -masked_mean(ratio * valid.advantages[task], valid.mask[task])


def kl_one_task(old_mean, old_std, phi, task, valid, activation="tanh"):
    """mean_valid KL(N(old) ‖ π_φ) of one task, in closed form, summed over action dims."""
    mean, std = gaussian_mlp(phi, valid.observations[task], activation)
    kl = (torch.log(std / old_std) + (old_std**2 + (old_mean - mean) ** 2) / (2 * std**2)
          - 0.5).sum(-1)
    return masked_mean(kl, valid.mask[task])
