"""Exact curvature products of the Gaussian MLP policy, written out by hand.

TRPO through a policy-gradient step needs, at every conjugate-gradient iteration, two
Hessian-vector products of the inner loss and one Fisher-vector product of the adapted
policy. Autograd computes them by differentiating its own backward graph (or by a forward
pass with tangents), which on a CPU spends most of its time on elementwise work around the
matrix products. Here they are Pearlmutter's R-operator applied to the explicit forward and
backward passes of :func:`metarl.rl.policy.policy_distribution`: the forward quantities are
computed once per point and every product is a handful of batched matrix products.

Notation (task-batched, T tasks, N steps each): layer l maps ``x_l (T, N, d_l)`` to
``z_l = x_l W_l + b_l``; ``x_{l+1} = act(z_l)``; the last ``z`` is the action mean μ; the
standard deviation is ``exp(s)``, ``s = log_std (T, A)``. For a direction v, ``R{·}`` is the
derivative along v.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metarl.adaptation import Params
from metarl.rl.losses import StepBatch
from metarl.rl.policy import Activation


@dataclass(frozen=True)
class _Forward:
    """The forward pass at a point: layer inputs ``x_l``, activation slopes act'(z_l) and
    curvatures act''(z_l) of the hidden layers, and the action mean ``(T, N, A)``."""

    inputs: list[Tensor]
    slopes: list[Tensor]
    curvatures: list[Tensor | None]
    mean: Tensor


def _forward(params: Params, observations: Tensor, activation: Activation) -> _Forward:
    num_layers = sum(1 for k in params if k.startswith("w"))
    inputs, slopes, curvatures = [observations], [], []
    x = observations
    for i in range(num_layers):
        z = torch.baddbmm(params[f"b{i}"].unsqueeze(1), x, params[f"w{i}"])
        if i == num_layers - 1:
            return _Forward(inputs, slopes, curvatures, z)
        if activation == "relu":
            x = torch.relu(z)
            slopes.append((z > 0).to(z.dtype))
            curvatures.append(None)
        else:
            x = torch.tanh(z)
            slope = 1.0 - x * x
            slopes.append(slope)
            curvatures.append(-2.0 * x * slope)
        inputs.append(x)
    raise ValueError("the policy has no layers")


def _tangent_mean(forward: _Forward, params: Params, vector: dict[str, Tensor]
                  ) -> tuple[Tensor, list[Tensor]]:
    """R{μ} ``(T, N, A)`` and the R{z_l} of the hidden layers, for a direction ``vector``."""
    num_layers = len(forward.inputs)
    tangent_input: Tensor | None = None  # R{x_0} = 0: observations do not depend on θ
    tangent_pre = []
    for i in range(num_layers):
        x = forward.inputs[i]
        rz = torch.baddbmm(vector[f"b{i}"].unsqueeze(1), x, vector[f"w{i}"])
        if tangent_input is not None:
            rz = rz + torch.bmm(tangent_input, params[f"w{i}"])
        if i == num_layers - 1:
            return rz, tangent_pre
        tangent_pre.append(rz)
        tangent_input = forward.slopes[i] * rz
    raise AssertionError("unreachable")


def _backward(forward: _Forward, params: Params, output_grad: Tensor,
              ) -> tuple[dict[str, Tensor], list[Tensor]]:
    """Gradients of Σ output_grad · μ with respect to the layer parameters, and the
    back-propagated δ_l = ∂/∂z_l of every layer, in layer order."""
    num_layers = len(forward.inputs)
    grads: dict[str, Tensor] = {}
    deltas: list[Tensor] = [output_grad]
    delta = output_grad
    for i in reversed(range(num_layers)):
        grads[f"w{i}"] = torch.bmm(forward.inputs[i].transpose(1, 2), delta)
        grads[f"b{i}"] = delta.sum(dim=1)
        if i > 0:
            delta = torch.bmm(delta, params[f"w{i}"].transpose(1, 2)) * forward.slopes[i - 1]
            deltas.append(delta)
    deltas.reverse()
    return grads, deltas


class PolicyGradientHessian:
    """v ↦ H v, H the Hessian (per task) of the inner policy-gradient loss
    ``Σ_tasks −mean_steps[log π(a|o) · A]`` (:func:`metarl.rl.losses.reinforce_loss`) at
    task-batched parameters ``params`` (each ``(T, *shape)``).

    ``product`` takes and returns lists of tensors in the order of ``params``.
    """

    def __init__(self, params: Params, steps: StepBatch, activation: Activation) -> None:
        self.names = list(params)
        self.params = {k: v.detach() for k, v in params.items()}
        self.forward = _forward(self.params, steps.observations, activation)
        count = steps.mask.sum(dim=1).clamp_min(1.0)
        self.weight = (steps.advantages * steps.mask / count[:, None]).unsqueeze(-1)  # c
        self.inv_var = torch.exp(-2.0 * self.params["log_std"]).unsqueeze(1)  # (T, 1, A)
        self.error = self.forward.mean - steps.actions  # μ − a
        grad_mean = self.weight * self.error * self.inv_var  # ∂loss/∂μ
        _, self.deltas = _backward(self.forward, self.params, grad_mean)

    def product(self, vector: list[Tensor]) -> list[Tensor]:
        v = dict(zip(self.names, vector, strict=True))
        fw, params = self.forward, self.params
        num_layers = len(fw.inputs)
        v_log_std = v["log_std"].unsqueeze(1)  # (T, 1, A)
        r_mean, r_pre = _tangent_mean(fw, params, v)
        # R{∂loss/∂μ} and R{∂loss/∂s} for ∂loss/∂μ = c (μ − a)/σ², ∂loss/∂s = Σ c (1 − (μ−a)²/σ²)
        r_delta = self.weight * self.inv_var * (r_mean - 2.0 * self.error * v_log_std)
        scaled_error = self.weight * self.error * self.inv_var
        out = {"log_std": (-2.0 * scaled_error * (r_mean - self.error * v_log_std)).sum(dim=1)}
        for i in reversed(range(num_layers)):
            delta = self.deltas[i]
            r_grad_w = torch.bmm(fw.inputs[i].transpose(1, 2), r_delta)
            if i > 0:
                r_input = fw.slopes[i - 1] * r_pre[i - 1]
                r_grad_w = r_grad_w + torch.bmm(r_input.transpose(1, 2), delta)
            out[f"w{i}"] = r_grad_w
            out[f"b{i}"] = r_delta.sum(dim=1)
            if i > 0:
                back = torch.bmm(r_delta, params[f"w{i}"].transpose(1, 2)) + torch.bmm(
                    delta, v[f"w{i}"].transpose(1, 2))
                next_delta = back * fw.slopes[i - 1]
                curvature = fw.curvatures[i - 1]
                if curvature is not None:
                    upstream = torch.bmm(delta, params[f"w{i}"].transpose(1, 2))
                    next_delta = next_delta + upstream * curvature * r_pre[i - 1]
                r_delta = next_delta
        return [out[k] for k in self.names]


class MeanKLFisher:
    """v ↦ F v, F the Hessian of ``mean_tasks mean_steps KL(π_old ‖ π)`` at π = π_old, for
    task-batched parameters ``params`` (each ``(T, *shape)``) on ``steps`` (the Fisher
    information: 1/σ² on the action mean, 2 on log σ, each task weighted 1/T).

    ``product`` takes and returns lists of tensors in the order of ``params``.
    """

    def __init__(self, params: Params, steps: StepBatch, activation: Activation) -> None:
        self.names = list(params)
        self.params = {k: v.detach() for k, v in params.items()}
        self.forward = _forward(self.params, steps.observations, activation)
        num_tasks = steps.mask.shape[0]
        count = steps.mask.sum(dim=1).clamp_min(1.0)
        inv_var = torch.exp(-2.0 * self.params["log_std"]).unsqueeze(1)
        self.mean_weight = (steps.mask / (count[:, None] * num_tasks)).unsqueeze(-1) * inv_var
        has_steps = (steps.mask.sum(dim=1) > 0).to(inv_var.dtype)[:, None]
        self.log_std_weight = 2.0 * has_steps / num_tasks

    def product(self, vector: list[Tensor]) -> list[Tensor]:
        v = dict(zip(self.names, vector, strict=True))
        r_mean, _ = _tangent_mean(self.forward, self.params, v)
        out, _ = _backward(self.forward, self.params, self.mean_weight * r_mean)
        out["log_std"] = self.log_std_weight * v["log_std"]
        return [out[k] for k in self.names]
