"""Trust-region step: conjugate gradient, Hessian-vector products, backtracking line search."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, iterations: int = 10,
                       residual_tol: float = 1e-10) -> Tensor:
    """Approximately solve A x = b for symmetric positive-definite A given x ↦ A x.

    Stops after ``iterations`` steps or when the squared residual falls below
    ``residual_tol``. Starts at x = 0.
    """
    x = torch.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    residual_sq = residual @ residual
    for _ in range(iterations):
        if residual_sq < residual_tol:
            break
        a_direction = matvec(direction)
        alpha = residual_sq / (direction @ a_direction)
        x = x + alpha * direction
        residual = residual - alpha * a_direction
        new_residual_sq = residual @ residual
        direction = residual + (new_residual_sq / residual_sq) * direction
        residual_sq = new_residual_sq
    return x.detach()


def hessian_vector_product(scalar: Tensor, params: Sequence[Tensor],
                           damping: float = 0.0) -> Callable[[Tensor], Tensor]:
    """v ↦ (∇² scalar) v + damping · v, for flat vectors v over ``params``.

    The gradient graph is built once and reused for every product.
    """
    grads = torch.autograd.grad(scalar, list(params), create_graph=True)
    flat_grad = torch.cat([g.reshape(-1) for g in grads])

    def product(vector: Tensor) -> Tensor:
        hv = torch.autograd.grad(flat_grad @ vector, list(params), retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).detach() + damping * vector

    return product


def flat_parameters(params: Sequence[Tensor]) -> Tensor:
    """The parameters as one detached flat vector (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


def assign_flat_parameters(params: Sequence[Tensor], vector: Tensor) -> None:
    """Copy ``vector`` into ``params`` in place (the inverse of :func:`flat_parameters`)."""
    offset = 0
    with torch.no_grad():
        for p in params:
            p.copy_(vector[offset:offset + p.numel()].view_as(p))
            offset += p.numel()


@dataclass(frozen=True)
class TRPOStep:
    """What one trust-region update did.

    ``kl``: mean KL of the accepted step; ``step_norm``: L2 norm of its parameter change. A
    rejected step (parameters restored) reports ``kl = step_norm = 0`` and ``loss_after =
    loss_before``.
    """

    accepted: bool
    backtracks: int
    loss_before: float
    loss_after: float
    kl: float
    step_norm: float


LossAndKL = Callable[[bool], tuple[Tensor, Tensor]]
"""``differentiable -> (loss, kl)`` at the current parameters. With ``differentiable`` both
scalars carry the graph to the parameters (for the gradient and the HVP); without, they may
be computed without one (line search)."""


def trpo_update(params: Sequence[Tensor], loss_and_kl: LossAndKL, *, max_kl: float,
                cg_iterations: int = 10, cg_damping: float = 1e-5,
                backtrack_ratio: float = 0.8, max_backtracks: int = 15,
                fisher_product: Callable[[Tensor], Tensor] | None = None) -> TRPOStep:
    """One TRPO step on ``params`` (modified in place).

    Direction: s = F⁻¹ g by conjugate gradient, with F the Hessian of the KL (by default
    differentiated twice from ``loss_and_kl``; ``fisher_product`` may supply v ↦ F v + damping
    v computed another way, with the damping included). Step size: the
    largest β along s with ½ β² sᵀF s = max_kl, backtracked by ``backtrack_ratio`` until the
    loss improves and the mean KL is within ``max_kl``. If no step qualifies, the parameters
    are restored exactly and ``accepted`` is False.
    A candidate whose loss or KL is not finite, or whose policy distributions refuse their
    parameters (``torch.distributions`` raises ValueError for a NaN mean or a zero standard
    deviation), is rejected like one that does not improve: the search goes on shrinking.
    If every candidate raises, the parameters are restored and the last error is raised (a
    fault of the computation, which the smallest steps would not otherwise show).
    """
    params = list(params)
    loss, kl = loss_and_kl(True)
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    flat_grad = torch.cat([g.reshape(-1) for g in grads]).detach()
    fisher = fisher_product or hessian_vector_product(kl, params, cg_damping)
    direction = conjugate_gradient(fisher, flat_grad, cg_iterations)
    shs = 0.5 * (direction @ fisher(direction))
    loss_before = float(loss.detach())
    old = flat_parameters(params)
    if not torch.isfinite(shs) or shs <= 0:
        return TRPOStep(False, 0, loss_before, loss_before, 0.0, 0.0)
    full_step = direction / torch.sqrt(shs / max_kl)
    refused: list[ValueError] = []
    for backtrack in range(max_backtracks):
        size = backtrack_ratio**backtrack
        assign_flat_parameters(params, old - size * full_step)
        try:
            new_loss, new_kl = loss_and_kl(False)
        except ValueError as error:  # this candidate's values (e.g. a NaN mean)
            refused.append(error)
            continue
        if float(new_loss) < loss_before and float(new_kl) <= max_kl:
            return TRPOStep(True, backtrack, loss_before, float(new_loss), float(new_kl),
                            float(size * full_step.norm()))
    assign_flat_parameters(params, old)
    if refused and len(refused) == max_backtracks:
        # Every candidate, down to the smallest, refused: not values but the computation
        raise refused[-1]
    return TRPOStep(False, max_backtracks, loss_before, loss_before, 0.0, 0.0)
