"""Gaussian MLP policy with a learned, state-independent log standard deviation.

The policy is a pure function of a parameter dict, so that every task can carry its own
(adapted) parameters. Task-batched parameters have a leading task dimension T and act on
observations ``(T, N, obs_dim)`` with batched matrix products (one matmul per layer for all
tasks); shared parameters are broadcast by :func:`expand_params`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.distributions import Normal

from metarl.adaptation import Params

Activation = Literal["relu", "tanh"]
DEFAULT_ACTIVATION: Activation = "relu"
"""The MAML authors' policies' (and every shipped config's) hidden activation."""


InitScheme = Literal["xavier", "torch"]


def init_policy_params(obs_dim: int, action_dim: int, hidden_sizes: Sequence[int], *,
                       init_std: float = 1.0, generator: torch.Generator,
                       scheme: InitScheme = "torch") -> Params:
    """θ for an MLP ``obs -> hidden... -> action mean`` plus ``log_std (action_dim,)``.

    ``scheme``: ``"torch"``, PyTorch's Linear default (weights and biases U(±1/√fan_in));
    ``"xavier"``, Glorot-uniform weights (U(±√(6 / (fan_in + fan_out)))) and zero biases, as
    rllab and the MAML authors' policies. Drawn from ``generator``; the weight of layer i is
    stored as ``(fan_in, fan_out)`` so that ``x @ W`` applies it.
    """
    params: Params = OrderedDict()
    sizes = [obs_dim, *hidden_sizes, action_dim]
    for i in range(len(sizes) - 1):
        fan_in, fan_out = sizes[i], sizes[i + 1]
        uniform = torch.rand(fan_in, fan_out, generator=generator) * 2 - 1
        if scheme == "xavier":
            params[f"w{i}"] = uniform * math.sqrt(6.0 / (fan_in + fan_out))
            params[f"b{i}"] = torch.zeros(fan_out)
        else:
            bound = 1.0 / math.sqrt(fan_in)
            params[f"w{i}"] = uniform * bound
            params[f"b{i}"] = (torch.rand(fan_out, generator=generator) * 2 - 1) * bound
    params["log_std"] = torch.full((action_dim,), math.log(init_std))
    return OrderedDict((k, v.requires_grad_(True)) for k, v in params.items())


def expand_params(params: Params, num_tasks: int) -> Params:
    """θ broadcast to T tasks without copying: each tensor ``(T, *shape)``."""
    return OrderedDict((k, v.unsqueeze(0).expand(num_tasks, *v.shape)) for k, v in params.items())


def policy_distribution(params: Params, observations: Tensor,
                        activation: Activation = DEFAULT_ACTIVATION) -> Normal:
    """π(· | o) for task-batched parameters.

    Args:
        params: each tensor ``(T, *shape)`` (see :func:`init_policy_params` for shapes).
        observations: ``(T, N, obs_dim)``, cast to the weights' dtype.
        activation: of the hidden layers; a trained run's is its ``policy.activation``
            (``metarl.rl.build.make_policy(config)`` gives its policy with it).

    Returns:
        a Normal with mean ``(T, N, action_dim)`` and std broadcast from ``(T, 1, action_dim)``.
    """
    if observations.ndim != 3 or params["w0"].ndim != 3:
        raise ValueError(
            f"policy_distribution takes task-batched observations (T, N, obs_dim) and weights "
            f"(T, ...), got observations {tuple(observations.shape)} and w0 "
            f"{tuple(params['w0'].shape)}; expand_params(θ, T) gives θ a task dimension")
    num_layers = sum(1 for k in params if k.startswith("w"))
    act = torch.tanh if activation == "tanh" else torch.relu
    x = observations.to(params["w0"].dtype)  # Gymnasium's MuJoCo observations are float64
    for i in range(num_layers):
        x = torch.baddbmm(params[f"b{i}"].unsqueeze(1), x, params[f"w{i}"])
        if i < num_layers - 1:
            x = act(x)
    std = params["log_std"].exp().unsqueeze(1).expand_as(x)
    return Normal(x, std)
