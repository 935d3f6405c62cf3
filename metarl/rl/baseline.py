"""The linear feature baseline of Duan et al. (2016), fitted per task by ridge regression.

Features of an observation o clipped to [-10, 10] at time t (of an episode of at most H
steps), with s = t / 100: ``[o, o², s, s², s³, 1]`` — the usual choice of rllab and the MAML
authors' code.
"""

from __future__ import annotations

import torch
from torch import Tensor


def baseline_features(observations: Tensor, mask: Tensor, times: Tensor | None = None) -> Tensor:
    """Features ``(..., H, 2·obs_dim + 4)`` float64 of observations ``(..., H, obs_dim)``
    clipped to [-10, 10]; zero where ``mask`` ``(..., H)`` is 0.

    ``times`` ``(..., H)``: each step's index within its episode (default: its position along
    H, one episode per row).
    """
    obs = observations.to(torch.float64).clamp(-10.0, 10.0)
    if times is None:
        horizon = observations.shape[-2]
        times = torch.arange(horizon).expand(*obs.shape[:-1])
    time = (times.to(torch.float64) / 100.0).unsqueeze(-1)
    ones = torch.ones_like(time)
    features = torch.cat([obs, obs**2, time, time**2, time**3, ones], dim=-1)
    return features * mask.unsqueeze(-1).to(torch.float64)


def fit_linear_baseline(features: Tensor, returns: Tensor, mask: Tensor,
                        reg: float = 1e-5) -> Tensor:
    """Per-task ridge regression of returns on features.

    Args:
        features: ``(T, S, L, F)``; returns, mask: ``(T, S, L)``.
        reg: initial ridge coefficient, multiplied by 10 (up to 5 times) while the normal
            equations are singular.

    Returns:
        coefficients ``(T, F)`` (float64).
    """
    num_features = features.shape[-1]
    x = (features * mask.unsqueeze(-1)).reshape(features.shape[0], -1, num_features)
    y = (returns.to(torch.float64) * mask).reshape(features.shape[0], -1, 1)
    gram = x.transpose(1, 2) @ x
    target = x.transpose(1, 2) @ y
    identity = torch.eye(num_features, dtype=torch.float64)
    for _ in range(5):
        solution, info = torch.linalg.solve_ex(gram + reg * identity, target)
        if not bool(info.any()) and bool(torch.isfinite(solution).all()):
            return solution.squeeze(-1)
        reg *= 10
    return torch.linalg.lstsq(gram + reg * identity, target).solution.squeeze(-1)


def predict_baseline(features: Tensor, coefficients: Tensor) -> Tensor:
    """Values ``(T, S, L)`` from features ``(T, S, L, F)`` and coefficients ``(T, F)``."""
    return torch.einsum("tehf,tf->teh", features, coefficients)
