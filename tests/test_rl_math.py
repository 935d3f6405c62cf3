"""Returns, GAE, baseline, conjugate gradient, Hessian-vector products and TRPO steps."""

from __future__ import annotations

import itertools

import pytest
import torch

from metarl.rl.baseline import baseline_features, fit_linear_baseline, predict_baseline
from metarl.rl.returns import discounted_returns, generalized_advantages, normalize_per_task
from metarl.rl.trpo import (
    assign_flat_parameters,
    conjugate_gradient,
    flat_parameters,
    hessian_vector_product,
    trpo_update,
)


def test_discounted_returns_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the episode ended after 3 steps
    expected = torch.tensor([[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0, 0.0]])
    torch.testing.assert_close(discounted_returns(rewards, mask, 0.5), expected)


def test_gae_by_hand():
    gamma, lam = 0.9, 0.5
    r = torch.tensor([[1.0, -1.0, 2.0, 0.0]])
    v = torch.tensor([[0.5, 0.2, -0.3, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    d0 = 1.0 + gamma * 0.2 - 0.5
    d1 = -1.0 + gamma * -0.3 - 0.2
    d2 = 2.0 + gamma * 0.0 - -0.3  # value after the last valid step is 0
    expected = torch.tensor([[d0 + gamma * lam * d1 + (gamma * lam) ** 2 * d2,
                              d1 + gamma * lam * d2, d2, 0.0]])
    torch.testing.assert_close(generalized_advantages(r, v, mask, gamma, lam), expected)


def test_gae_with_lambda_one_is_returns_minus_values():
    gen = torch.Generator().manual_seed(0)
    r = torch.randn(3, 4, 10, generator=gen)
    v = torch.randn(3, 4, 10, generator=gen)
    mask = (torch.arange(10) < torch.randint(1, 11, (3, 4, 1), generator=gen)).float()
    expected = (discounted_returns(r, mask, 0.99) - v) * mask
    torch.testing.assert_close(generalized_advantages(r, v, mask, 0.99, 1.0), expected)


def test_returns_and_gae_restart_at_episode_ends_within_a_row():
    # One row holding two episodes back to back (2 steps, then 2 steps), then padding.
    gamma, lam = 0.9, 0.5
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0]])
    v = torch.tensor([[0.5, 0.2, -0.3, 0.1, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    ends = torch.tensor([[False, True, False, True, False]])
    expected_returns = torch.tensor([[1 + gamma * 2, 2.0, 3 + gamma * 4, 4.0, 0.0]])
    torch.testing.assert_close(discounted_returns(r, mask, gamma, ends), expected_returns)
    d = [1 + gamma * 0.2 - 0.5, 2 - 0.2, 3 + gamma * 0.1 + 0.3, 4 - 0.1]
    expected = torch.tensor([[d[0] + gamma * lam * d[1], d[1], d[2] + gamma * lam * d[3], d[3],
                              0.0]])
    torch.testing.assert_close(generalized_advantages(r, v, mask, gamma, lam, ends), expected)
    # Split into one row per episode, the same numbers come out.
    rows_r = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    rows_v = torch.tensor([[0.5, 0.2], [-0.3, 0.1]])
    ones = torch.ones(2, 2)
    torch.testing.assert_close(discounted_returns(rows_r, ones, gamma),
                               expected_returns[:, :4].view(2, 2))
    torch.testing.assert_close(generalized_advantages(rows_r, rows_v, ones, gamma, lam),
                               expected[:, :4].view(2, 2))


def test_baseline_time_feature_counts_steps_within_each_episode():
    obs = torch.zeros(1, 1, 4, 2)
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])
    times = torch.tensor([[[0, 1, 0, 0]]])  # two episodes in one row
    features = baseline_features(obs, mask, times)
    torch.testing.assert_close(features[0, 0, :, 4],
                               torch.tensor([0.0, 0.01, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(baseline_features(obs, mask)[0, 0, :, 4],
                               torch.tensor([0.0, 0.01, 0.02, 0.0], dtype=torch.float64))


def test_normalize_per_task_ignores_padding():
    values = torch.tensor([[[1.0, 3.0, 100.0]], [[2.0, 2.0, 4.0]]])
    mask = torch.tensor([[[1.0, 1.0, 0.0]], [[1.0, 1.0, 1.0]]])
    out = normalize_per_task(values, mask)
    torch.testing.assert_close(out[0, 0], torch.tensor([-1.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    assert abs(float(out[1].mean())) < 1e-6


def test_linear_baseline_recovers_a_linear_target_per_task():
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(2, 5, 7, 2, generator=gen)
    mask = torch.ones(2, 5, 7)
    features = baseline_features(obs, mask)
    assert features.shape == (2, 5, 7, 8)
    true = torch.randn(2, 8, generator=gen, dtype=torch.float64)
    returns = torch.einsum("tehf,tf->teh", features, true)
    coefficients = fit_linear_baseline(features, returns, mask, reg=1e-10)
    torch.testing.assert_close(predict_baseline(features, coefficients), returns,
                               rtol=1e-5, atol=1e-6)


def test_conjugate_gradient_matches_direct_solve():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    matrix = a @ a.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    x = conjugate_gradient(lambda v: matrix @ v, b, iterations=6)
    torch.testing.assert_close(x, torch.linalg.solve(matrix, b), rtol=1e-8, atol=1e-10)
    # fewer iterations than dimensions: each one lowers ½xᵀAx − bᵀx (the A-norm error)
    def energy(v):
        return float(0.5 * v @ matrix @ v - b @ v)

    energies = [energy(conjugate_gradient(lambda v: matrix @ v, b, iterations=k))
                for k in range(7)]
    assert all(later < earlier - 1e-9 for earlier, later in itertools.pairwise(energies))
    assert energies[6] == pytest.approx(energy(torch.linalg.solve(matrix, b)), rel=1e-10)


def test_hessian_vector_product_matches_explicit_hessian():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    c = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)

    def f(flat):
        w_, c_ = flat[:6].view(3, 2), flat[6:]
        return (torch.tanh(x @ w_).sum(1, keepdim=True) * c_).pow(2).sum()

    flat = flat_parameters([w, c])
    hessian = torch.autograd.functional.hessian(f, flat)
    product = hessian_vector_product(f(torch.cat([w.reshape(-1), c])), [w, c], damping=0.1)
    v = torch.randn(10, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(product(v), hessian @ v + 0.1 * v, rtol=1e-9, atol=1e-10)


def _quadratic_problem(max_kl):
    """loss = cᵀθ, KL = ½ (θ − θ₀)ᵀ A (θ − θ₀): TRPO's step must land on the KL boundary."""
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64, requires_grad=True)
    theta0 = theta.detach().clone()
    a = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.1], [0.0, 0.1, 0.5]], dtype=torch.float64)
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def loss_and_kl(differentiable):
        with torch.set_grad_enabled(differentiable):
            d = theta - theta0
            return c @ theta, 0.5 * d @ (a @ d)

    return theta, theta0, loss_and_kl, a, c


def test_accepted_trpo_step_keeps_kl_within_bound_and_improves():
    theta, theta0, loss_and_kl, a, c = _quadratic_problem(0.01)
    step = trpo_update([theta], loss_and_kl, max_kl=0.01, cg_iterations=10, cg_damping=0.0)
    assert step.accepted and step.backtracks == 0
    d = theta.detach() - theta0
    kl = float(0.5 * d @ (a @ d))
    assert kl <= 0.01 + 1e-12 and kl == pytest.approx(0.01, rel=1e-6)
    assert float(c @ theta.detach()) < float(c @ theta0)
    # the direction is the natural gradient −A⁻¹c
    natural = -torch.linalg.solve(a, c)
    torch.testing.assert_close(d / d.norm(), natural / natural.norm())


def test_rejected_trpo_step_restores_parameters_exactly():
    theta, theta0, _, _, c = _quadratic_problem(0.01)

    def never_improves(differentiable):
        with torch.set_grad_enabled(differentiable):
            d = theta - theta0
            loss = c @ theta
            if not differentiable:
                loss = loss.detach() + 1.0  # every candidate is worse
            return loss, 0.5 * d @ d

    step = trpo_update([theta], never_improves, max_kl=0.01, max_backtracks=4)
    assert not step.accepted and step.backtracks == 4
    assert torch.equal(theta.detach(), theta0)


def test_assign_flat_parameters_round_trip():
    a, b = torch.zeros(2, 2), torch.zeros(3)
    assign_flat_parameters([a, b], torch.arange(7.0))
    torch.testing.assert_close(flat_parameters([a, b]), torch.arange(7.0))


def test_policy_initializations():
    from metarl.rl.policy import init_policy_params

    xavier = init_policy_params(17, 6, [100, 100], init_std=0.5, scheme="xavier",
                                generator=torch.Generator().manual_seed(0))
    xavier = {k: v.detach() for k, v in xavier.items()}
    bound = (6 / (100 + 100)) ** 0.5
    assert float(xavier["w1"].abs().max()) <= bound
    assert float(xavier["w1"].abs().max()) > 0.95 * bound
    assert all(float(xavier[f"b{i}"].abs().max()) == 0.0 for i in range(3))
    assert torch.allclose(xavier["log_std"].exp(), torch.full((6,), 0.5))
    default = init_policy_params(17, 6, [100, 100], generator=torch.Generator().manual_seed(0))
    default = {k: v.detach() for k, v in default.items()}
    assert float(default["b0"].abs().max()) > 0.0
    assert float(default["w0"].abs().max()) <= 1 / 17**0.5
