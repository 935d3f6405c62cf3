"""The shared adaptation core: a few gradient steps from an initialization θ to fast weights φ.

Parameters are data: an ordered ``dict[str, Tensor]`` run through
``torch.func.functional_call``. :func:`adapt` never mutates its inputs, so the same function
serves every meta-gradient mode:

- ``"second_order"`` (MAML): inner gradients keep their graph (``create_graph``), so
  ∂φ/∂θ = Π (I − α H) is differentiated exactly;
- ``"first_order"`` (first-order MAML): inner gradients are constants, so ∂φ/∂θ = I and the
  outer gradient is ∇L_query(φ);
- ``"detached"`` (Reptile, evaluation): φ carries no graph to θ at all.

Reptile as its paper trains Omniglot adapts with Adam instead of plain gradient steps:
:func:`inner_adam_step` is that optimizer, whose state (:class:`AdamMoments`) carries over from
task to task.

The RL meta-learner plugs a policy-gradient surrogate in as the support loss; the supervised
trainer plugs in MSE or cross-entropy.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, NamedTuple

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


ADAM_BETA2 = 0.999
"""Decay of the inner Adam's second moments (TensorFlow's and PyTorch's default)."""
ADAM_EPS = 1e-8
"""Added to the root of the second moment in the inner Adam's denominator."""


class AdamMoments(NamedTuple):
    """State of the inner Adam with β1 = 0 (Reptile paper): per parameter the decayed mean of
    squared gradients v (θ's shapes, or ``(T, *S)`` when stacked over tasks), and ``steps``,
    the number of Adam steps taken since the moments were zero (for the bias correction)."""

    second_moment: Params
    steps: int


def zero_moments(params: Params) -> AdamMoments:
    """The inner Adam's state before its first step."""
    return AdamMoments(OrderedDict((k, torch.zeros_like(v.detach())) for k, v in params.items()),
                       0)


def inner_adam_step(params: Params, grads: Mapping[str, Tensor], moments: AdamMoments,
                    lr: float) -> tuple[Params, AdamMoments]:
    """One step of Adam with β1 = 0, in the form of TensorFlow's ``AdamOptimizer`` (the
    Reptile authors' inner optimizer):

        t ← t + 1,  v ← β2 v + (1 − β2) g²,  p ← p − lr √(1 − β2ᵗ) g / (√v + ε).

    With β1 = 0 the first moment is the gradient itself. Returns the new parameters and state.
    """
    steps = moments.steps + 1
    # fused forms of v' = β2 v + (1 − β2) g² and p − scale g / (√v' + ε): fewer passes
    second = OrderedDict(
        (k, torch.addcmul(ADAM_BETA2 * v, grads[k], grads[k], value=1.0 - ADAM_BETA2))
        for k, v in moments.second_moment.items())
    scale = lr * math.sqrt(1.0 - ADAM_BETA2 ** steps)
    updated = OrderedDict((k, torch.addcdiv(p, grads[k], second[k].sqrt() + ADAM_EPS,
                                            value=-scale))
                          for k, p in params.items())
    return updated, AdamMoments(second, steps)


def merge_task_moments(start: AdamMoments, final: AdamMoments,
                       steps_per_task: int) -> AdamMoments:
    """The inner Adam's state after T tasks adapted one after another, each ``steps_per_task``
    steps, from the per-task states ``final`` (each entry ``(T, *S)``) that each task reached
    starting from ``start``.

    The Reptile authors' code adapts the tasks of a meta-batch in turn with one Adam, so each
    task's squared gradients decay through the later tasks' steps. Here every task starts from
    ``start`` (so that tasks can run together), and its contribution
    ``final_t − β2^S start`` is decayed as if the tasks had run in order:

        v = β2^(T·S) v_start + Σ_t β2^(S·(T − 1 − t)) (v_t − β2^S v_start),  t ← t + T·S.

    (In the authors' order task t's bias correction would also count the earlier tasks'
    steps; 1 − β2ᵗ differs by less than 1% once t passes a few thousand steps.)
    """
    decay = ADAM_BETA2 ** steps_per_task
    tasks = next(iter(final.second_moment.values())).shape[0] if final.second_moment else 0
    merged = OrderedDict()
    for name, start_v in start.second_moment.items():
        per_task = final.second_moment[name]
        weights = decay ** torch.arange(tasks - 1, -1, -1, dtype=per_task.dtype,
                                        device=per_task.device)
        contributions = per_task - decay * start_v
        merged[name] = (decay ** tasks * start_v
                        + torch.tensordot(weights, contributions, dims=1))
    return AdamMoments(merged, start.steps + tasks * steps_per_task)


def detached_step(params: Params, support_loss: Callable[[Params], Tensor], *,
                  lr: float | Mapping[str, Tensor], moments: AdamMoments | None,
                  functional: bool = False) -> tuple[Params, AdamMoments | None]:
    """One inner step with no graph to ``params`` (Reptile, evaluation): a gradient step, or
    with ``moments`` an :func:`inner_adam_step` (``lr`` then a float). Returns the new
    parameters and the Adam state (None without one)."""
    if moments is None:
        return adapt(params, support_loss, steps=1, lr=lr, mode="detached",
                     functional=functional), None
    if isinstance(lr, Mapping):
        raise ValueError("the inner Adam takes one learning rate, not a tensor per parameter")
    start = OrderedDict((k, v.detach() if functional else v.detach().requires_grad_(True))
                        for k, v in params.items())
    grads = gradients(support_loss, start, create_graph=False, functional=functional)
    updated, moments = inner_adam_step(
        OrderedDict((k, v.detach()) for k, v in start.items()),
        {k: g.detach() for k, g in grads.items()}, moments, lr)
    return updated, moments
