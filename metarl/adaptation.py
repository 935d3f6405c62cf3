"""The shared adaptation core: a few gradient steps from an initialization θ to fast weights φ.

Parameters are data: an ordered ``dict[str, Tensor]`` run through
``torch.func.functional_call``. :func:`adapt` never mutates its inputs, so the same function
serves every meta-gradient mode:

- ``"second_order"`` (MAML): inner gradients keep their graph (``create_graph``), so
  ∂φ/∂θ = Π (I − α H) is differentiated exactly;
- ``"first_order"`` (first-order MAML): inner gradients are constants, so ∂φ/∂θ = I and the
  outer gradient is ∇L_query(φ);
- ``"detached"`` (Reptile, evaluation): φ carries no graph to θ at all.

The RL meta-learner plugs a policy-gradient surrogate in as the support loss; the supervised
trainer plugs in MSE or cross-entropy.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

Params = dict[str, Tensor]
"""Model parameters by name, in the model's ``named_parameters`` order."""

AdaptMode = Literal["second_order", "first_order", "detached"]
MetaMethod = Literal["maml", "fomaml", "reptile"]

MODE_OF_METHOD: dict[str, AdaptMode] = {
    "maml": "second_order",
    "fomaml": "first_order",
    "reptile": "detached",
}

LearningRate = float | Sequence[float] | Mapping[str, Tensor]
"""Inner learning rate: one float for every step, one float per step, or (Meta-SGD) a
tensor per parameter with that parameter's shape, used at every step."""


def params_of(module: torch.nn.Module) -> Params:
    """The module's parameters as a fresh ordered dict of leaf tensors that require grad."""
    return OrderedDict(
        (name, p.detach().clone().requires_grad_(True)) for name, p in module.named_parameters()
    )


def mode_of_method(method: str) -> AdaptMode:
    """How φ depends on θ for a meta-method (``maml``, ``fomaml`` or ``reptile``)."""
    if method not in MODE_OF_METHOD:
        raise ValueError(f"method must be one of {', '.join(MODE_OF_METHOD)}, got {method!r}")
    return MODE_OF_METHOD[method]


def step_learning_rate(lr: LearningRate, step: int) -> float | Mapping[str, Tensor]:
    """The learning rate of inner step ``step`` (0-based)."""
    if isinstance(lr, Mapping):
        return lr
    if isinstance(lr, Tensor):
        if lr.requires_grad:
            raise ValueError("a learning-rate tensor that requires grad would be used as a "
                             "number; give learned (Meta-SGD) rates as a dict of tensors, one "
                             "per parameter")
        if lr.ndim > 1:
            raise ValueError(f"a learning-rate tensor is one rate or one per step, got shape "
                             f"{tuple(lr.shape)}; give Meta-SGD's rates as a dict of tensors")
        if lr.ndim == 0:
            return float(lr)
    elif isinstance(lr, int | float):
        return float(lr)
    if step >= len(lr):
        raise ValueError(f"{len(lr)} inner learning rates given for step {step}")
    return float(lr[step])


def test_time_learning_rates(first_lr: float, later_scale: float, steps: int) -> list[float]:
    """Per-step test-time rates: ``first_lr`` for the first step, ``first_lr · later_scale`` after
    (the MAML authors' evaluation uses later_scale 0.5 in RL)."""
    return [first_lr] + [first_lr * later_scale] * max(steps - 1, 0)


def sgd_update(params: Params, grads: Mapping[str, Tensor],
               lr: float | Mapping[str, Tensor]) -> Params:
    """φ = θ − lr · g, per parameter (``lr`` a float or a tensor per parameter)."""
    if isinstance(lr, Mapping):
        return OrderedDict((k, p - lr[k] * grads[k]) for k, p in params.items())
    return OrderedDict((k, p - lr * grads[k]) for k, p in params.items())


def gradients(loss_fn: Callable[[Params], Tensor], params: Params, *, create_graph: bool,
              functional: bool = False) -> Params:
    """∇_params loss_fn(params).

    ``functional=True`` uses ``torch.func.grad`` (required inside ``torch.func.vmap``); the
    default uses ``torch.autograd.grad``, which is faster outside a transform. Both are
    differentiable by the outer autograd when ``create_graph`` is true.
    """
    if functional:
        grads = torch.func.grad(loss_fn)(params)
        if not create_graph:
            grads = {k: g.detach() for k, g in grads.items()}
        return grads
    names = list(params)
    loss = loss_fn(params)
    values = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph,
                                 allow_unused=True)
    if all(g is None for g in values):
        raise ValueError("the loss does not depend on the parameters it was given: call the "
                         "model as torch.func.functional_call(model, params, (inputs,))")
    # a parameter the loss does not use has gradient 0, as torch.func.grad gives it
    return {k: torch.zeros_like(params[k]) if g is None else g
            for k, g in zip(names, values, strict=True)}


def adapt(
    params: Params,
    support_loss: Callable[[Params], Tensor],
    *,
    steps: int,
    lr: LearningRate,
    mode: AdaptMode = "second_order",
    functional: bool = False,
) -> Params:
    """Take ``steps`` gradient-descent steps on ``support_loss`` starting from ``params``.

    Args:
        params: the initialization θ (not modified).
        support_loss: maps parameters to a scalar loss on the task's support data.
        steps: number of inner steps (0 returns θ itself, or a detached copy in
            ``"detached"`` mode).
        lr: inner learning rate (see :data:`LearningRate`).
        mode: how φ depends on θ for the meta-gradient (module docstring).
        functional: compute inner gradients with ``torch.func.grad``; required when called
            inside ``torch.func.vmap``.

    Returns:
        the fast weights φ, a new dict with the same keys and shapes as ``params``.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if mode not in ("second_order", "first_order", "detached"):
        raise ValueError(f"mode must be second_order, first_order or detached, got {mode!r}")
    fast: Params = OrderedDict(params)
    if mode == "detached":
        fast = OrderedDict((k, v.detach()) for k, v in fast.items())
    for step in range(steps):
        if mode == "detached" and not functional:
            fast = OrderedDict((k, v.detach().requires_grad_(True)) for k, v in fast.items())
        elif not functional and not any(v.requires_grad for v in fast.values()):
            # θ carries no graph (plain evaluation): make the inner gradient computable.
            fast = OrderedDict((k, v.detach().requires_grad_(True)) for k, v in fast.items())
        grads = gradients(support_loss, fast, create_graph=(mode == "second_order"),
                          functional=functional)
        if mode != "second_order":
            grads = {k: g.detach() for k, g in grads.items()}
        fast = sgd_update(fast, grads, step_learning_rate(lr, step))
        if mode == "detached":
            fast = OrderedDict((k, v.detach()) for k, v in fast.items())
    return fast


def reptile_gradient(params: Params, fast_params: Params) -> Params:
    """Reptile's pseudo-gradient θ − mean_t φ_t.

    Args:
        params: θ, each tensor of shape ``S``.
        fast_params: adapted weights stacked over tasks, each of shape ``(T, *S)``.

    Feeding this to SGD with step size ε gives θ ← θ + ε (mean φ − θ), the Reptile update.
    """
    return OrderedDict(
        (k, (p.detach() - fast_params[k].detach().mean(dim=0))) for k, p in params.items()
    )
