"""Models for the supervised tasks, run functionally from a parameter dict."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

Activation = Literal["relu", "tanh"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def make_mlp(in_features: int, hidden_sizes: Sequence[int], out_features: int,
             activation: Activation = "relu", *, generator: torch.Generator | None = None,
             dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """MLP ``in -> hidden... -> out`` with PyTorch's default (Kaiming-uniform) initialization.

    The weights are drawn from ``generator`` so that a seed fixes them without touching the
    global random state. Input ``(..., in_features)``, output ``(..., out_features)``.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    sizes = [in_features, *hidden_sizes, out_features]
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    model = nn.Sequential(*layers)
    if generator is not None:
        reset_linear_parameters(model, generator)
    return model


def reset_linear_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every Linear layer as ``nn.Linear.reset_parameters`` does, from ``generator``."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                bound = 1.0 / layer.in_features**0.5
                # kaiming_uniform_(a=sqrt(5)) on the weight reduces to U(-bound, bound).
                layer.weight.uniform_(-bound, bound, generator=generator)
                if layer.bias is not None:
                    layer.bias.uniform_(-bound, bound, generator=generator)
