"""Returns, GAE, baseline, conjugate gradient, Hessian-vector products and TRPO steps."""

from __future__ import annotations

import itertools
import math

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


def test_trpo_step_solves_with_the_damped_curvature():
    """The default Fisher product adds cg_damping · v: the step is −(A + λI)⁻¹c, scaled so
    that ½ dᵀ(A + λI)d is the bound (the true KL then lies below it)."""
    theta, theta0, loss_and_kl, a, c = _quadratic_problem(0.01)
    damped = a + 0.5 * torch.eye(3, dtype=torch.float64)
    step = trpo_update([theta], loss_and_kl, max_kl=0.01, cg_iterations=10, cg_damping=0.5)
    assert step.accepted and step.backtracks == 0
    d = theta.detach() - theta0
    natural = -torch.linalg.solve(damped, c)
    torch.testing.assert_close(d / d.norm(), natural / natural.norm())
    assert float(0.5 * d @ (damped @ d)) == pytest.approx(0.01, rel=1e-6)
    assert step.kl == pytest.approx(float(0.5 * d @ (a @ d))) and step.kl < 0.01 * 0.9


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


def test_normalize_per_task_divides_by_each_tasks_population_std():
    # Task 0: valid [0, 3, 6] (mean 3, population std √6), padding 50.
    # Task 1: valid [1, 1, 1, 5] (mean 2, population std √3).
    values = torch.tensor([[[0.0, 3.0], [6.0, 50.0]], [[1.0, 1.0], [1.0, 5.0]]],
                          dtype=torch.float64)
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]],
                        dtype=torch.float64)
    s0, s1 = math.sqrt(6.0), math.sqrt(3.0)
    expected = torch.tensor([[[-3 / s0, 0.0], [3 / s0, 0.0]],
                             [[-1 / s1, -1 / s1], [-1 / s1, 3 / s1]]], dtype=torch.float64)
    torch.testing.assert_close(normalize_per_task(values, mask), expected, rtol=1e-7, atol=1e-7)


def test_normalize_per_task_gives_unit_std_to_a_tiny_spread():
    """(x - mean) / (std + 1e-8), as rllab: advantages that differ by 1e-5 still come out
    with unit standard deviation (ε added to the variance instead would shrink it)."""
    values = torch.tensor([[[1.0, 1.0 + 2e-5, 1.0 - 2e-5, 1.0]]], dtype=torch.float64)
    normalized = normalize_per_task(values, torch.ones_like(values))
    assert float(normalized.pow(2).mean().sqrt()) == pytest.approx(1.0, abs=1e-3)


def test_baseline_features_are_o_o2_s_s2_s3_1_with_observations_clipped():
    # rllab's LinearFeatureBaseline: o = clip(obs, -10, 10), s = t / 100,
    # features [o, o², s, s², s³, 1]; padding rows are zero.
    obs = torch.tensor([[[[0.5, -2.0], [20.0, -30.0], [1.0, 3.0], [7.0, 7.0]]]])
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])
    rows = []
    for t, (a, b) in enumerate([(0.5, -2.0), (10.0, -10.0), (1.0, 3.0)]):
        s = t / 100
        rows.append([a, b, a * a, b * b, s, s**2, s**3, 1.0])
    rows.append([0.0] * 8)
    expected = torch.tensor([[rows]], dtype=torch.float64)
    features = baseline_features(obs, mask)
    assert features.dtype == torch.float64
    torch.testing.assert_close(features, expected, rtol=1e-12, atol=1e-15)


def test_linear_baseline_fits_returns_given_by_hand_in_the_features():
    # A target written out by hand (not through baseline_features): intercept, linear,
    # squared and time terms must all be representable.
    gen = torch.Generator().manual_seed(0)
    obs = torch.rand(1, 4, 50, 1, generator=gen, dtype=torch.float64) * 4 - 2
    mask = torch.ones(1, 4, 50, dtype=torch.float64)
    s = torch.arange(50, dtype=torch.float64) / 100
    o = obs[..., 0]
    returns = 3.0 + 2.0 * o - 1.5 * o**2 + 4.0 * s + 200.0 * s**3
    features = baseline_features(obs, mask)
    coefficients = fit_linear_baseline(features, returns, mask, reg=1e-12)
    torch.testing.assert_close(predict_baseline(features, coefficients), returns,
                               rtol=1e-6, atol=1e-6)


def test_linear_baseline_default_ridge_is_rllabs_1e_5():
    # Coefficients = (XᵀX + 1e-5·I)⁻¹ Xᵀy per task, X and y masked; the system is small and
    # badly scaled so that the ridge term visibly matters.
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64) * 0.05
    returns = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    mask = torch.ones(2, 3, 5, dtype=torch.float64)
    mask[1, 2, 3:] = 0.0
    got = fit_linear_baseline(features, returns, mask)
    for t in range(2):
        x = (features[t] * mask[t, ..., None]).reshape(-1, 4)
        y = (returns[t] * mask[t]).reshape(-1)
        want = torch.linalg.solve(x.T @ x + 1e-5 * torch.eye(4, dtype=torch.float64), x.T @ y)
        torch.testing.assert_close(got[t], want, rtol=1e-9, atol=1e-12)


def test_conjugate_gradient_stops_once_the_residual_vanishes():
    # b an eigenvector of A: one iteration solves it exactly (residual exactly 0); a further
    # iteration would divide 0 by 0. b = 0: x = 0 without iterating.
    matrix = 2.0 * torch.eye(4, dtype=torch.float64)
    b = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    x = conjugate_gradient(lambda v: matrix @ v, b, iterations=10)
    assert torch.equal(x, b / 2)
    zero = conjugate_gradient(lambda v: matrix @ v, torch.zeros(4, dtype=torch.float64),
                              iterations=10)
    assert torch.equal(zero, torch.zeros(4, dtype=torch.float64))


def _linear_loss_problem():
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64, requires_grad=True)
    theta0 = theta.detach().clone()
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    return theta, theta0, c


def test_trpo_rejects_a_step_that_only_ties_the_loss():
    theta, theta0, c = _linear_loss_problem()

    def ties(differentiable):
        with torch.set_grad_enabled(differentiable):
            d = theta - theta0
            loss = c @ theta
            if not differentiable:
                loss = (c @ theta0).detach()  # every candidate equals the current loss
            return loss, 0.5 * d @ d

    step = trpo_update([theta], ties, max_kl=0.01, max_backtracks=3)
    assert not step.accepted
    assert torch.equal(theta.detach(), theta0)


def test_trpo_line_search_tries_max_backtracks_shrinking_candidates():
    theta, theta0, c = _linear_loss_problem()
    candidates = []

    def never_improves(differentiable):
        with torch.set_grad_enabled(differentiable):
            d = theta - theta0
            loss = c @ theta
            if not differentiable:
                candidates.append(d.detach().clone())
                loss = loss.detach() + 1.0
            return loss, 0.5 * d @ d

    trpo_update([theta], never_improves, max_kl=0.01, cg_damping=0.0, backtrack_ratio=0.5,
                max_backtracks=4)
    assert len(candidates) == 4
    # full step on the KL boundary (½|d|² = 0.01), then halved each time
    norms = [float(d.norm()) for d in candidates]
    assert norms == pytest.approx([math.sqrt(0.02) * 0.5**k for k in range(4)], rel=1e-9)


def test_trpo_backtracks_until_the_true_kl_is_within_the_bound():
    # KL = ½ dᵀAd + q·(dᵀd)²: the quartic term has no curvature at θ₀, so the full step, sized
    # by the quadratic part to KL = max_kl, overshoots; q makes its true KL 1.3·max_kl. The
    # line search must shrink it to the first candidate within max_kl.
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64, requires_grad=True)
    theta0 = theta.detach().clone()
    a = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.1], [0.0, 0.1, 0.5]], dtype=torch.float64)
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    max_kl, ratio = 0.01, 0.8
    natural = -torch.linalg.solve(a, c)
    full = natural * math.sqrt(max_kl / float(0.5 * natural @ (a @ natural)))
    q = 0.3 * max_kl / float(full @ full) ** 2

    def kl_of(d):
        return 0.5 * d @ (a @ d) + q * (d @ d) ** 2

    def loss_and_kl(differentiable):
        with torch.set_grad_enabled(differentiable):
            d = theta - theta0
            return c @ theta, kl_of(d)

    assert float(kl_of(full)) == pytest.approx(1.3 * max_kl)
    assert float(kl_of(ratio * full)) < max_kl  # so the first backtrack is accepted
    step = trpo_update([theta], loss_and_kl, max_kl=max_kl, cg_damping=0.0,
                       backtrack_ratio=ratio)
    assert step.accepted and step.backtracks == 1
    d = theta.detach() - theta0
    assert step.kl == pytest.approx(float(kl_of(d))) and step.kl <= max_kl
    torch.testing.assert_close(d, ratio * full, rtol=1e-8, atol=1e-12)


def test_torch_scheme_bounds_are_one_over_sqrt_fan_in():
    # PyTorch's nn.Linear default: weights and biases U(±1/√fan_in).
    from metarl.rl.policy import init_policy_params

    params = init_policy_params(17, 6, [100, 100], generator=torch.Generator().manual_seed(0))
    for i, fan_in in enumerate([17, 100, 100]):
        bound = fan_in**-0.5
        weight = params[f"w{i}"].detach()
        bias = params[f"b{i}"].detach()
        assert float(weight.abs().max()) <= bound
        assert float(weight.abs().max()) > 0.95 * bound
        assert float(bias.abs().max()) <= bound


@pytest.mark.parametrize("broken", ["nan", "refused"])
def test_trpo_line_search_rejects_a_candidate_it_cannot_score_and_shrinks_on(broken):
    """A candidate whose loss comes out NaN, or whose policy distributions refuse their
    parameters (torch.distributions raises ValueError), is rejected like a worse one."""
    theta, theta0, loss_and_kl, _, _ = _quadratic_problem(0.01)
    calls = []

    def breaks_on_the_full_step(differentiable):
        loss, kl = loss_and_kl(differentiable)
        if not differentiable:
            calls.append(1)
            if len(calls) == 1:
                if broken == "refused":
                    torch.distributions.Normal(torch.tensor([math.nan]), 1.0)  # raises
                return loss * math.nan, kl
        return loss, kl

    step = trpo_update([theta], breaks_on_the_full_step, max_kl=0.01, backtrack_ratio=0.5,
                       cg_damping=0.0)
    assert step.accepted and step.backtracks == 1 and len(calls) == 2
    d = theta.detach() - theta0
    assert step.kl == pytest.approx(0.25 * 0.01, rel=1e-6)  # the half step: a quarter of it
    assert step.step_norm == pytest.approx(float(d.norm()))


def test_trpo_leaves_the_parameters_when_the_curvature_is_not_positive_or_not_finite():
    for fisher in (lambda v: -v, lambda v: v * math.inf, lambda v: 0.0 * v):
        theta, theta0, loss_and_kl, _, _ = _quadratic_problem(0.01)
        searched = []

        def counting(differentiable, loss_and_kl=loss_and_kl, searched=searched):
            searched.append(differentiable)
            return loss_and_kl(differentiable)

        step = trpo_update([theta], counting, max_kl=0.01, fisher_product=fisher)
        assert not step.accepted and step.backtracks == 0
        assert searched == [True]  # no candidate was tried
        assert torch.equal(theta.detach(), theta0)


def test_trpo_at_a_stationary_point_tries_no_step():
    """A zero gradient makes the search direction 0 and sᵀFs exactly 0: the step stops
    there, rather than dividing 0 by 0 into candidates of NaN parameters."""
    theta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    calls = []

    def loss_and_kl(differentiable):
        calls.append(differentiable)
        with torch.set_grad_enabled(differentiable):
            if not bool(torch.isfinite(theta).all()):
                raise ValueError("parameters are not finite")  # as a Normal policy's would
            return (theta ** 2).sum(), 0.5 * (theta ** 2).sum()

    step = trpo_update([theta], loss_and_kl, max_kl=0.01)
    assert not step.accepted and step.backtracks == 0 and calls == [True]
    assert torch.equal(theta.detach(), torch.zeros(2, dtype=torch.float64))


def test_linear_baseline_raises_the_ridge_tenfold_while_the_system_is_singular(monkeypatch):
    """Normal equations reported singular get 1e-4, 1e-3, ... (five tries), then least
    squares with the last ridge."""
    gen = torch.Generator().manual_seed(2)
    features = torch.randn(1, 2, 5, 3, generator=gen, dtype=torch.float64)
    returns = torch.randn(1, 2, 5, generator=gen, dtype=torch.float64)
    mask = torch.ones(1, 2, 5, dtype=torch.float64)
    x = features.reshape(-1, 3)
    gram = x.T @ x
    real_solve = torch.linalg.solve_ex
    ridges = []

    def singular_until(tries):
        def solve_ex(matrix, target):
            ridges.append(float((matrix[0] - gram)[0, 0]))
            solution, info = real_solve(matrix, target)
            return solution, info + (1 if len(ridges) <= tries else 0)
        return solve_ex

    def ridge_solution(ridge):
        return torch.linalg.solve(gram + ridge * torch.eye(3, dtype=torch.float64),
                                  x.T @ returns.reshape(-1))

    monkeypatch.setattr(torch.linalg, "solve_ex", singular_until(2))
    got = fit_linear_baseline(features, returns, mask)
    assert ridges == pytest.approx([1e-5, 1e-4, 1e-3])
    torch.testing.assert_close(got[0], ridge_solution(1e-3), rtol=1e-9, atol=1e-12)

    ridges.clear()
    lstsq = []
    real_lstsq = torch.linalg.lstsq
    monkeypatch.setattr(torch.linalg, "solve_ex", singular_until(5))
    monkeypatch.setattr(torch.linalg, "lstsq",
                        lambda matrix, target: lstsq.append(matrix) or real_lstsq(matrix, target))
    got = fit_linear_baseline(features, returns, mask)
    assert ridges == pytest.approx([1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    assert float((lstsq[0][0] - gram)[0, 0]) == pytest.approx(1.0)
    torch.testing.assert_close(got[0], ridge_solution(1.0), rtol=1e-9, atol=1e-12)


def test_trpo_raises_when_every_candidate_fails_to_score_and_restores_the_parameters():
    theta, theta0, loss_and_kl, _, _ = _quadratic_problem(0.01)

    def broken_line_search(differentiable):
        if not differentiable:
            raise ValueError("a fault of the line search's own computation")
        return loss_and_kl(differentiable)

    with pytest.raises(ValueError, match="a fault of the line search's own computation"):
        trpo_update([theta], broken_line_search, max_kl=0.01, max_backtracks=4)
    assert torch.equal(theta.detach(), theta0)


def test_trpo_rejects_a_search_where_some_candidates_raise_and_the_rest_do_not_improve():
    theta, theta0, loss_and_kl, _, _ = _quadratic_problem(0.01)
    calls = []

    def first_raises_then_worse(differentiable):
        loss, kl = loss_and_kl(differentiable)
        if differentiable:
            return loss, kl
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("a refused candidate")
        return loss.detach() + 1.0, kl

    step = trpo_update([theta], first_raises_then_worse, max_kl=0.01, max_backtracks=3)
    assert not step.accepted and len(calls) == 3
    assert torch.equal(theta.detach(), theta0)


def test_trpo_line_search_lets_errors_other_than_refused_values_through():
    theta, _, loss_and_kl, _, _ = _quadratic_problem(0.01)

    calls = []

    def buggy(differentiable):  # once only: a caught error would read as one bad candidate
        loss, kl = loss_and_kl(differentiable)
        if not differentiable:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("a bug, not a candidate's values")
        return loss, kl

    with pytest.raises(RuntimeError, match="a bug"):
        trpo_update([theta], buggy, max_kl=0.01)
