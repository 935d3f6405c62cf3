"""The hand-written curvature products of the Gaussian MLP equal autograd's."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch.distributions import Normal

from metarl.rl.losses import StepBatch, mean_kl, reinforce_loss
from metarl.rl.mlp_products import MeanKLFisher, PolicyGradientHessian
from metarl.rl.policy import GaussianMLPPolicy, init_policy_params

T, N = 3, 7


def task_params(hidden, seed=1):
    """Different float64 parameters for each of T tasks."""
    base = init_policy_params(2, 2, hidden, init_std=0.7, scheme="torch",
                              generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    return OrderedDict(
        (k, (v.detach().double().expand(T, *v.shape)
             + 0.1 * torch.randn(T, *v.shape, generator=g, dtype=torch.float64))
         .requires_grad_(True)) for k, v in base.items())


def steps(seed=2):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(T, N, dtype=torch.float64)
    mask[1, 5:] = 0.0
    mask[2] = 0.0  # a task without steps
    return StepBatch(torch.randn(T, N, 2, generator=g, dtype=torch.float64),
                     torch.randn(T, N, 2, generator=g, dtype=torch.float64),
                     torch.randn(T, N, generator=g, dtype=torch.float64) * mask, mask,
                     torch.zeros(T, N, dtype=torch.float64))


CASES = [("relu", [5]), ("relu", [4, 3]), ("tanh", [5]), ("tanh", [4, 3, 3])]


@pytest.mark.parametrize(("activation", "hidden"), CASES)
def test_policy_gradient_hessian_product_equals_autograd(activation, hidden):
    params, batch = task_params(hidden), steps()
    policy = GaussianMLPPolicy(activation)
    grads = torch.autograd.grad(reinforce_loss(policy, params, batch), list(params.values()),
                                create_graph=True)
    hessian = PolicyGradientHessian(params, batch, activation)
    g = torch.Generator().manual_seed(3)
    for _ in range(2):
        vector = [torch.randn(v.shape, generator=g, dtype=torch.float64)
                  for v in params.values()]
        expected = torch.autograd.grad(grads, list(params.values()), grad_outputs=vector,
                                       retain_graph=True)
        for name, ours, reference in zip(params, hessian.product(vector), expected,
                                         strict=True):
            torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize(("activation", "hidden"), CASES)
def test_mean_kl_fisher_product_equals_autograd_kl_hessian(activation, hidden):
    params, batch = task_params(hidden), steps()
    policy = GaussianMLPPolicy(activation)
    with torch.no_grad():
        old = policy(params, batch.observations)
        old = Normal(old.loc.clone(), old.scale.clone())
    grads = torch.autograd.grad(mean_kl(policy, params, batch, old), list(params.values()),
                                create_graph=True)
    fisher = MeanKLFisher(params, batch, activation)
    g = torch.Generator().manual_seed(4)
    vector = [torch.randn(v.shape, generator=g, dtype=torch.float64) for v in params.values()]
    expected = torch.autograd.grad(grads, list(params.values()), grad_outputs=vector)
    for name, ours, reference in zip(params, fisher.product(vector), expected, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12, msg=name)
