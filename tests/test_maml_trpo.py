"""MAML-TRPO: sampler, packed losses, meta-gradient and KL Hessian through the PG step."""

from __future__ import annotations

import dataclasses
import functools
import math
import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch.distributions import Normal

from metarl.config import from_dict
from metarl.envs.navigation import BatchedNavigation2D, Navigation2DEnv
from metarl.rl.build import make_trainer
from metarl.rl.config import MetaRLConfig
from metarl.rl.episodes import Episodes, sample_episodes
from metarl.rl.losses import (
    StepBatch,
    mean_kl,
    pack_steps,
    reinforce_loss,
    subsample_steps,
    surrogate_loss,
)
from metarl.rl.maml_trpo import (
    AdvantageSettings,
    adapt_policy,
    compute_advantages,
    detached,
    meta_fisher_product,
)
from metarl.rl.policy import expand_params, init_policy_params, policy_distribution
from metarl.rl.trpo import hessian_vector_product

import policy_reference as ref
from param_vectors import flatten, unflatten

POLICY = functools.partial(policy_distribution, activation="tanh")
T, N = 2, 6


def tiny_params(seed=0):
    params = init_policy_params(2, 2, [3], init_std=0.7,
                                generator=torch.Generator().manual_seed(seed))
    return OrderedDict((k, v.detach().double().requires_grad_(True)) for k, v in params.items())


def random_steps(seed, n=N):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(T, n, dtype=torch.float64)
    mask[1, -2:] = 0.0  # task 1 has fewer steps
    return StepBatch(torch.randn(T, n, 2, generator=g, dtype=torch.float64),
                     torch.randn(T, n, 2, generator=g, dtype=torch.float64),
                     torch.randn(T, n, generator=g, dtype=torch.float64) * mask, mask,
                     torch.zeros(T, n, dtype=torch.float64))




def problem(inner_steps, mode="second_order", policy=POLICY, valid=None):
    params = tiny_params()
    support = [random_steps(10 + s) for s in range(inner_steps)]
    lrs = [0.2, 0.1][:inner_steps]
    valid = random_steps(20) if valid is None else valid
    fast_old = detached(adapt_policy(policy, expand_params(detached(params), T), support, lrs,
                                     "detached"))
    old = policy(fast_old, valid.observations)
    old = Normal(old.loc.detach(), old.scale.detach())
    old_log_probs = old.log_prob(valid.actions).sum(-1)

    def fast_of(vector):
        theta = unflatten(vector, params)
        return adapt_policy(policy, expand_params(theta, T), support, lrs, mode)

    def surrogate(vector):
        return surrogate_loss(policy, fast_of(vector), valid, old_log_probs)

    def kl(vector):
        return mean_kl(policy, fast_of(vector), valid, old)

    return params, support, lrs, valid, surrogate, kl


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_batched_adaptation_and_outer_losses_match_a_per_task_reference(inner_steps):
    """adapt_policy, surrogate_loss and mean_kl over T tasks, values and meta-gradients,
    against one task at a time with the policy and losses written out (policy_reference)."""
    params = tiny_params()
    support = [random_steps(10 + s) for s in range(inner_steps)]
    lrs = [0.2, 0.1][:inner_steps]
    valid = random_steps(20)
    old_params = tiny_params(seed=1)
    old = POLICY(expand_params(detached(old_params), T), valid.observations)
    old_log_probs = old.log_prob(valid.actions).sum(-1)

    fast = adapt_policy(POLICY, expand_params(params, T), support, lrs, "second_order")
    surrogate = surrogate_loss(POLICY, fast, valid, old_log_probs)
    kl = mean_kl(POLICY, fast, valid, Normal(old.loc, old.scale))
    surrogate_grad = torch.autograd.grad(surrogate, list(params.values()), retain_graph=True)
    kl_grad = torch.autograd.grad(kl, list(params.values()))

    reference = [ref.adapt_one_task(params, t, support, lrs, create_graph=True)
                 for t in range(T)]
    for t, phi in enumerate(reference):
        for name in params:
            torch.testing.assert_close(fast[name][t], phi[name], rtol=1e-10, atol=1e-12)
    ref_surrogate = torch.stack([ref.surrogate_one_task(phi, t, valid, old_log_probs)
                                 for t, phi in enumerate(reference)]).mean()
    ref_kl = torch.stack([ref.kl_one_task(old.loc[t], old.scale[t], phi, t, valid)
                          for t, phi in enumerate(reference)]).mean()
    torch.testing.assert_close(surrogate, ref_surrogate, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(kl, ref_kl, rtol=1e-10, atol=1e-12)
    assert kl > 0.01  # the two policies differ: the comparison is not of zeros
    for got, want in zip(surrogate_grad, torch.autograd.grad(ref_surrogate, list(params.values()),
                                                             retain_graph=True), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    for got, want in zip(kl_grad, torch.autograd.grad(ref_kl, list(params.values())),
                         strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    # Each task moved by its own gradient: tasks' fast weights differ from θ and each other.
    assert (fast["w0"][0] - params["w0"]).abs().max() > 1e-3
    assert (fast["w0"][0] - fast["w0"][1]).abs().max() > 1e-3


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_meta_gradient_through_policy_gradient_step_matches_finite_differences(inner_steps):
    params, _, _, _, surrogate, _ = problem(inner_steps)
    theta = flatten(params).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(surrogate(theta), [theta])
    eps = 1e-6
    numeric = torch.stack([
        (surrogate(theta.detach() + eps * e) - surrogate(theta.detach() - eps * e)) / (2 * eps)
        for e in torch.eye(theta.numel(), dtype=torch.float64)])
    torch.testing.assert_close(grad, numeric.detach(), rtol=1e-5, atol=1e-8)
    # the second-order terms matter: the first-order gradient differs
    _, _, _, _, first_order, _ = problem(inner_steps, mode="first_order")
    (fo_grad,) = torch.autograd.grad(first_order(theta), [theta])
    assert (fo_grad - grad).abs().max() > 1e-4


@pytest.mark.parametrize("inner_steps", [1, 2])
@pytest.mark.parametrize("mode", ["second_order", "first_order"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])  # relu: the shipped default
def test_kl_hessian_product_through_adaptation_matches_explicit_matrix(inner_steps, mode,
                                                                       activation):
    policy = functools.partial(policy_distribution, activation=activation)
    params, support, lrs, valid, _, kl = problem(inner_steps, mode, policy)
    theta = flatten(params).detach()
    hessian = torch.autograd.functional.hessian(kl, theta)
    assert hessian.abs().max() > 1e-3  # not a comparison of zeros
    product = meta_fisher_product(policy, params, support, lrs, valid, mode=mode, damping=1e-3)
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):
        v = torch.randn(theta.numel(), generator=gen, dtype=torch.float64)
        torch.testing.assert_close(product(v), hessian @ v + 1e-3 * v, rtol=1e-7, atol=1e-10)


def test_a_task_without_post_adaptation_steps_adds_nothing_to_the_kl_curvature():
    """Its mean KL counts as 0 in the mean over tasks, so its standard deviation's Fisher
    term must be 0 too: the product stays the explicit Hessian of the mean KL."""
    empty = random_steps(20)
    empty.mask[1] = 0.0
    empty = StepBatch(empty.observations, empty.actions, empty.advantages * empty.mask,
                      empty.mask, empty.log_probs)
    params, support, lrs, valid, _, kl = problem(1, valid=empty)
    theta = flatten(params).detach()
    hessian = torch.autograd.functional.hessian(kl, theta)
    product = meta_fisher_product(POLICY, params, support, lrs, valid, mode="second_order",
                                  damping=0.0)
    v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    torch.testing.assert_close(product(v), hessian @ v, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("inner_steps", [1, 2])
@pytest.mark.parametrize("mode", ["second_order", "first_order"])
def test_subsampled_curvature_is_the_kl_hessian_of_every_kth_step_at_the_exact_points(
        inner_steps, mode):
    """curvature_stride k: J and F from every k-th step, taken at the exactly adapted φ_s."""
    stride, n = 3, 8  # task 1's steps 6 and 7 are padding: its third subsampled step too
    params = tiny_params()
    support = [random_steps(10 + s, n) for s in range(inner_steps)]
    lrs = [0.2, 0.1][:inner_steps]
    valid = random_steps(20, n)
    sub_valid = subsample_steps(valid, stride)
    assert sub_valid.mask.tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    assert torch.equal(sub_valid.actions, valid.actions[:, ::3])
    assert subsample_steps(valid, 1) is valid
    points = [expand_params(detached(params), T)]
    for batch, lr in zip(support, lrs, strict=True):
        points.append(detached(adapt_policy(POLICY, points[-1], [batch], [lr], "detached")))

    def inner_grads(p, batch, create_graph=False):
        return torch.autograd.grad(reinforce_loss(POLICY, p, batch), list(p.values()),
                                   create_graph=create_graph)

    # The subsampled inner loss plus a constant linear term: its gradient equals the full
    # loss's at the exact points, its Hessian is that of every k-th step.
    shifts = []
    for point, batch in zip(points[:-1], support, strict=True):
        leaf = OrderedDict((k, v.clone().requires_grad_(True)) for k, v in point.items())
        full = inner_grads(leaf, batch)
        sub = inner_grads(leaf, subsample_steps(batch, stride))
        shifts.append([f - g for f, g in zip(full, sub, strict=True)])
    old = POLICY(points[-1], sub_valid.observations)
    old = Normal(old.loc.detach(), old.scale.detach())

    def kl(vector):
        fast = expand_params(unflatten(vector, params), T)
        for batch, lr, shift in zip(support, lrs, shifts, strict=True):
            grads = inner_grads(fast, subsample_steps(batch, stride), create_graph=True)
            if mode == "first_order":  # ∂φ/∂θ = I
                grads = [g.detach() for g in grads]
            fast = OrderedDict((k, fast[k] - lr * (g + c))
                               for k, g, c in zip(fast, grads, shift, strict=True))
        return mean_kl(POLICY, fast, sub_valid, old)

    theta = flatten(params).detach()
    hessian = torch.autograd.functional.hessian(kl, theta)
    product = meta_fisher_product(POLICY, params, support, lrs, valid, mode=mode,
                                  damping=1e-3, curvature_stride=stride)
    exact = meta_fisher_product(POLICY, params, support, lrs, valid, mode=mode, damping=1e-3)
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):
        v = torch.randn(theta.numel(), generator=gen, dtype=torch.float64)
        torch.testing.assert_close(product(v), hessian @ v + 1e-3 * v, rtol=1e-7, atol=1e-10)
        assert (product(v) - exact(v)).abs().max() > 1e-3


def test_sampler_masks_after_termination_and_is_reproducible():
    goals = torch.tensor([[0.0, 0.0], [0.4, 0.4]], dtype=torch.float64)
    env = BatchedNavigation2D(goals.repeat_interleave(3, dim=0))
    params = expand_params(init_policy_params(2, 2, [8], init_std=0.01,
                                              generator=torch.Generator().manual_seed(0)), 2)
    with torch.no_grad():
        params["w1"].zero_()
        params["b1"].zero_()  # mean action 0: task 0 (goal at the origin) ends at once
    episodes = sample_episodes(env, POLICY, params, num_tasks=2, episodes_per_task=3,
                               max_steps=20, generator=torch.Generator().manual_seed(1))
    assert episodes.observations.shape == (2, 3, 20, 2)
    assert episodes.mask.sum(-1)[0].tolist() == [1, 1, 1]
    assert episodes.mask.sum(-1)[1].tolist() == [20] * 3
    assert episodes.num_episodes().tolist() == [3, 3]
    assert episodes.times[1, 0].tolist() == list(range(20)) and bool(episodes.ends[0, :, 0].all())
    assert (episodes.rewards[0, :, 1:] == 0).all() and (episodes.mask[0, :, 1:] == 0).all()
    again = sample_episodes(env, POLICY, params, num_tasks=2, episodes_per_task=3,
                            max_steps=20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(episodes.actions, again.actions)
    packed = pack_steps(episodes, torch.ones_like(episodes.rewards))
    assert packed.observations.shape == (2, 60, 2)
    assert packed.mask[0].sum() == 3 and packed.mask[1].sum() == 60
    torch.testing.assert_close(packed.actions[0, :3], episodes.actions[0, :, 0])
    # log-probabilities recorded by the sampler are those of the sampling policy, on every
    # valid step of both tasks
    recorded = POLICY(params, episodes.observations.reshape(2, 60, 2)).log_prob(
        episodes.actions.reshape(2, 60, 2)).sum(-1).view(2, 3, 20)
    valid = episodes.mask.bool()
    torch.testing.assert_close(episodes.log_probs[valid], recorded[valid])


def budget_episodes(step_budget: bool, goals, *, max_steps=20, std=0.01, mean_action=0.05,
                    seed=1):
    """3 slots per task; a policy of mean action ``mean_action`` and std ``std``."""
    goals = torch.tensor(goals, dtype=torch.float64)
    env = BatchedNavigation2D(goals.repeat_interleave(3, dim=0))
    params = expand_params(init_policy_params(2, 2, [8], init_std=std,
                                              generator=torch.Generator().manual_seed(0)),
                           len(goals))
    with torch.no_grad():
        params["w1"].zero_()
        params["b1"].fill_(mean_action)
    return sample_episodes(env, POLICY, params, num_tasks=len(goals), episodes_per_task=3,
                           max_steps=max_steps, generator=torch.Generator().manual_seed(seed),
                           step_budget=step_budget)


def test_step_budget_restarts_episodes_that_end_early_and_keeps_whole_episodes():
    # Task 0's goal is one step away (most episodes end at once); task 1's is never reached.
    episodes = budget_episodes(True, [[0.05, 0.05], [0.4, 0.4]])
    budget = 3 * 20
    steps = episodes.mask.sum(dim=(1, 2))
    assert steps[1] == budget and episodes.num_episodes().tolist()[1] == 3
    assert [length for _, _, length in episodes.episode_spans(1)] == [20] * 3
    # Task 0 gets many more, shorter episodes, back to back in its 3 slots; new ones start
    # only while under budget, so no slot runs past 2H steps.
    assert episodes.num_episodes()[0] > 10
    assert budget <= steps[0] < budget + 3 * 20
    assert episodes.mask.shape == (2, 3, episodes.mask.shape[2]) and episodes.mask.shape[2] < 40
    spans = episodes.episode_spans(0)
    lengths = torch.tensor([length for _, _, length in spans])
    assert bool((lengths < 20).any()) and bool((lengths == 1).any())
    assert int(lengths.sum()) == steps[0]
    # Episodes are numbered by first step, then slot; each step carries its episode's number.
    assert [(slot, first) for slot, first, _ in spans] == sorted(
        [(slot, first) for slot, first, _ in spans], key=lambda span: (span[1], span[0]))
    ids = episodes.episode_ids()
    for number, (slot, first, length) in enumerate(spans):
        assert ids[0, slot, first:first + length].tolist() == [number] * length
        assert episodes.times[0, slot, first:first + length].tolist() == list(range(length))
    assert bool((ids[episodes.mask == 0] == -1).all())
    pad = episodes.mask == 0  # after each slot's last episode: nothing recorded
    for name in ("rewards", "log_probs", "times"):
        assert bool((getattr(episodes, name)[pad] == 0).all()), name
    assert bool((episodes.observations[pad] == 0).all())
    assert bool((episodes.actions[pad] == 0).all())
    # The losses see each task's steps packed in episode-then-time order.
    packed = pack_steps(episodes, episodes.rewards)
    in_order = torch.cat([episodes.observations[0, slot, first:first + length]
                          for slot, first, length in spans])
    torch.testing.assert_close(packed.observations[0, :len(in_order)], in_order, rtol=0, atol=0)
    assert packed.mask[0].sum() == len(in_order)
    # Per-episode returns, and the mean return over only the episodes each task has.
    returns = episodes.episode_returns()
    for number, (slot, first, length) in enumerate(spans):
        torch.testing.assert_close(returns[0, number],
                                   episodes.rewards[0, slot, first:first + length].sum())
    assert bool((returns[1, 3:] == 0).all())
    torch.testing.assert_close(episodes.task_returns(),
                               torch.stack([returns[0].mean(), returns[1, :3].mean()]))
    # Every recorded episode is a whole episode of the Gymnasium form, from its start.
    for t, goal in enumerate([[0.05, 0.05], [0.4, 0.4]]):
        env = Navigation2DEnv({"goal": goal})
        for slot, first, length in episodes.episode_spans(t):
            observation, _ = env.reset()
            for step in range(first, first + length):
                torch.testing.assert_close(episodes.observations[t, slot, step],
                                           torch.as_tensor(observation), atol=1e-6, rtol=0)
                observation, reward, terminated, _, _ = env.step(
                    episodes.actions[t, slot, step].numpy())
                assert episodes.rewards[t, slot, step].item() == pytest.approx(reward, abs=1e-6)
                assert not terminated or step == first + length - 1  # ends where the record does
                assert bool(episodes.ends[t, slot, step]) == (step == first + length - 1)
            assert terminated or length == 20  # at the goal, or at the time limit


def one_episode_per_row(episodes: Episodes, values: list[torch.Tensor], horizon: int):
    """The same episodes laid out one per row, ``(T, K, horizon)``, as are ``values``."""
    t_, k_ = episodes.num_tasks, int(episodes.num_episodes().max())
    out = [v.new_zeros(t_, k_, horizon, *v.shape[3:]) for v in values]
    for t in range(t_):
        for k, (slot, first, length) in enumerate(episodes.episode_spans(t)):
            for target, source in zip(out, values, strict=True):
                target[t, k, :length] = source[t, slot, first:first + length]
    return out


def test_advantages_of_back_to_back_episodes_equal_those_of_one_episode_per_row():
    episodes = budget_episodes(True, [[0.05, 0.05], [0.04, 0.06]])
    assert int(episodes.num_episodes().min()) > 3  # both tasks restart episodes
    rows = Episodes(*one_episode_per_row(episodes, [
        episodes.observations, episodes.actions, episodes.rewards, episodes.mask,
        episodes.log_probs, episodes.times], 20))
    settings = AdvantageSettings(discount=0.9, gae_lambda=0.7, normalize=True)
    slotted = compute_advantages(episodes, settings)
    (expected,) = one_episode_per_row(episodes, [slotted], 20)
    torch.testing.assert_close(compute_advantages(rows, settings), expected,
                               atol=1e-5, rtol=1e-5)
    assert float(expected.abs().sum()) > 1.0
    torch.testing.assert_close(rows.task_returns(), episodes.task_returns())
    torch.testing.assert_close(rows.episode_returns(), episodes.episode_returns())


def test_episode_numbers_skip_empty_slots():
    # One task, three slots: a 2-step episode, an empty slot, a 1-step episode.
    mask = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    rewards = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [6.0, 0.0, 0.0]]])
    times = torch.tensor([[[0, 1, 0], [0, 0, 0], [0, 0, 0]]])
    episodes = Episodes(torch.zeros(1, 3, 3, 2), torch.zeros(1, 3, 3, 2), rewards, mask,
                        torch.zeros(1, 3, 3), times)
    assert episodes.episode_spans(0) == [(0, 0, 2), (2, 0, 1)]
    assert episodes.episode_ids()[0, 2, 0] == 1
    assert episodes.episode_returns().tolist() == [[3.0, 6.0]]
    assert episodes.task_returns().tolist() == [4.5]


def test_step_budget_equals_fixed_episodes_when_none_ends_early():
    far = [[0.5, -0.5], [-0.5, 0.5]]
    fixed = budget_episodes(False, far, max_steps=5, std=0.5)
    budgeted = budget_episodes(True, far, max_steps=5, std=0.5)
    for name in ("observations", "actions", "rewards", "mask", "log_probs", "times"):
        torch.testing.assert_close(getattr(budgeted, name), getattr(fixed, name))


def test_step_budget_needs_an_env_that_can_restart():
    class NoRestart:
        observation_dim = action_dim = 2

        def __init__(self):
            self.inner = BatchedNavigation2D(torch.zeros(2, 2, dtype=torch.float64))

        def reset(self):
            return self.inner.reset()

        def step(self, actions):
            return self.inner.step(actions)

    params = expand_params(init_policy_params(2, 2, [4], init_std=1e-4,
                                              generator=torch.Generator().manual_seed(0)), 1)
    with torch.no_grad():
        params["w1"].zero_()
        params["b1"].zero_()  # the goal is the origin: every episode ends at its first step
    with pytest.raises(TypeError, match="cannot restart"):
        sample_episodes(NoRestart(), POLICY, params, num_tasks=1, episodes_per_task=2,
                        max_steps=5, generator=torch.Generator().manual_seed(0),
                        step_budget=True)


def small_config(**training):
    return from_dict(MetaRLConfig, {
        "policy": {"hidden_sizes": [16, 16]},
        "training": {"iterations": 3, "meta_batch_size": 4, "episodes_per_task": 5,
                     **training},
        "run": {"progress": False, "tensorboard": False}})


@pytest.mark.parametrize("sampling", ["episodes", "steps"])
def test_meta_iteration_is_deterministic_and_accepted_steps_keep_kl_bound(sampling, monkeypatch):
    """Each iteration's reported KL and surrogate are those of the parameters it left,
    recomputed per task with the reference policy; accepted steps keep the KL bound."""
    import metarl.rl.maml_trpo as maml_trpo

    seen = []

    def recording(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    real = maml_trpo.rollouts_with_adaptation
    monkeypatch.setattr(maml_trpo, "rollouts_with_adaptation", recording)
    config = small_config(sampling=sampling)
    a, b = make_trainer(config), make_trainer(config)
    accepted = 0
    for i in range(3):
        before = {k: v.detach().clone() for k, v in a.params.items()}
        ma, mb = a.train_iteration(i), b.train_iteration(i)
        assert ma == mb
        after = {k: v.detach().clone() for k, v in a.params.items()}
        rollouts = seen[-2]  # a's (b's is the last)
        valid = pack_steps(rollouts.episodes[-1],
                           compute_advantages(rollouts.episodes[-1], a.advantages))
        lrs = [a.inner_lr] * a.inner_steps
        activation = config.policy.activation
        old, new = ([ref.adapt_one_task({k: v.requires_grad_(True) for k, v in theta.items()},
                                        t, rollouts.support, lrs, create_graph=False,
                                        activation=activation) for t in range(a.num_tasks)]
                    for theta in (before, after))
        old_log_probs = torch.stack([
            ref.log_prob(phi, valid.observations[t], valid.actions[t], activation)
            for t, phi in enumerate(old)])
        kl = torch.stack([ref.kl_one_task(*ref.gaussian_mlp(old[t], valid.observations[t],
                                                             activation), new[t], t, valid,
                                          activation) for t in range(a.num_tasks)]).mean()
        surrogate = torch.stack([ref.surrogate_one_task(phi, t, valid, old_log_probs,
                                                        activation)
                                 for t, phi in enumerate(new)]).mean()
        kl, surrogate = kl.item(), surrogate.item()
        assert ma["kl"] == pytest.approx(kl, rel=1e-3, abs=1e-7)
        assert ma["surrogate_after"] == pytest.approx(surrogate, rel=1e-3, abs=1e-6)
        if ma["step_accepted"]:
            accepted += 1
            assert kl <= config.trpo.max_kl * (1 + 1e-4)
            assert kl > 0.05 * config.trpo.max_kl  # a real step, not a vanishing one
            assert ma["surrogate_after"] < ma["surrogate_before"]
        else:
            assert all(torch.equal(before[k], after[k]) for k in before)
    assert accepted >= 2
    state = a.state_dict()
    c = make_trainer(config)
    c.load_state_dict(state)
    assert c.train_iteration(3) == a.train_iteration(3)


@pytest.mark.parametrize("step_budget", [False, True])
def test_sampler_scales_actions_for_the_environment_and_keeps_policy_units(step_budget):
    env = BatchedNavigation2D(torch.tensor([[0.45, 0.45]], dtype=torch.float64))
    params = expand_params(init_policy_params(2, 2, [4], init_std=1e-4,
                                              generator=torch.Generator().manual_seed(0)), 1)
    with torch.no_grad():
        params["w1"].zero_()
        params["b1"].fill_(0.5)  # mean action 0.5 in policy units
    episodes = sample_episodes(env, POLICY, params, num_tasks=1, episodes_per_task=1,
                               max_steps=3, generator=torch.Generator().manual_seed(0),
                               action_scale=0.1, step_budget=step_budget)
    torch.testing.assert_close(episodes.actions[0, 0, 0], torch.tensor([0.5, 0.5]),
                               atol=1e-3, rtol=0)
    # 0.1 · 0.5 per step (unscaled, 0.5 would be clipped to the bound 0.1)
    torch.testing.assert_close(episodes.observations[0, 0, 1], torch.tensor([0.05, 0.05]),
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(episodes.observations[0, 0, 2], torch.tensor([0.10, 0.10]),
                               atol=1e-3, rtol=0)


def test_curvature_stride_leaves_the_gradient_and_the_kl_check_on_every_step(monkeypatch):
    import metarl.rl.maml_trpo as maml_trpo

    widths = {"surrogate": set(), "kl": set()}

    def spy(name, function):
        def wrapped(policy, params, steps, *args):
            widths[name].add(steps.mask.shape[1])
            return function(policy, params, steps, *args)
        return wrapped

    monkeypatch.setattr(maml_trpo, "surrogate_loss", spy("surrogate", surrogate_loss))
    monkeypatch.setattr(maml_trpo, "mean_kl", spy("kl", mean_kl))
    config = small_config()
    config.trpo.curvature_stride = 5
    trainer = make_trainer(config)
    assert trainer.trpo.curvature_stride == 5
    metrics = trainer.train_iteration(0)
    full = 5 * 100  # 5 episodes of 100 steps (navigation: none reaches its goal this early)
    assert widths == {"surrogate": {full}, "kl": {full}}
    assert metrics["step_accepted"] and metrics["kl"] <= config.trpo.max_kl


def test_check_adapted_policy_names_the_broken_weight_or_standard_deviation():
    from metarl.experiment import NonFiniteLossError
    from metarl.rl.maml_trpo import check_adapted_policy

    good = OrderedDict(w0=torch.zeros(2, 3, 4), log_std=torch.zeros(2, 4))
    check_adapted_policy(good, 1, 0.1)  # acts: nothing raised
    cases = [({"w0": torch.full((2, 3, 4), float("nan"))}, "a weight of w0 is nan"),
             ({"log_std": torch.full((2, 4), 1e3)}, "an action standard deviation is inf"),
             ({"log_std": torch.full((2, 4), -1e3)}, "an action standard deviation is 0.0")]
    for change, message in cases:
        with pytest.raises(NonFiniteLossError, match=rf"inner step 2 \(lr 50\) diverged: "
                                                     rf"{message}; lower the inner"):
            check_adapted_policy(OrderedDict({**good, **change}), 2, 50.0)


def _reference_advantages(obs, rewards, mask, times, gamma, lam, normalize):
    """compute_advantages written out episode by episode, in plain Python: discounted returns,
    rllab features [o, o², s, s², s³, 1] (o clipped to ±10, s = step / 100), ridge 1e-5 fit per
    task, GAE(γ, λ) with value 0 after each episode's last step, per-task standardization."""
    num_tasks, slots, length = mask.shape
    out = torch.zeros(num_tasks, slots, length, dtype=torch.float64)
    for t in range(num_tasks):
        episodes = []
        for s in range(slots):
            current = []
            for h in range(length):
                if mask[t, s, h] == 0:
                    break
                if times[t, s, h] == 0 and current:
                    episodes.append((s, current))
                    current = []
                current.append(h)
            if current:
                episodes.append((s, current))

        def feature(s, h, k, t=t):
            o = min(max(float(obs[t, s, h, 0]), -10.0), 10.0)
            step = k / 100
            return [o, o * o, step, step**2, step**3, 1.0]

        rows, targets = [], []
        for s, steps in episodes:
            running, returns = 0.0, {}
            for h in reversed(steps):
                running = float(rewards[t, s, h]) + gamma * running
                returns[h] = running
            for k, h in enumerate(steps):
                rows.append(feature(s, h, k))
                targets.append(returns[h])
        x = torch.tensor(rows, dtype=torch.float64)
        y = torch.tensor(targets, dtype=torch.float64)
        coefficients = torch.linalg.solve(x.T @ x + 1e-5 * torch.eye(6, dtype=torch.float64),
                                          x.T @ y)
        for s, steps in episodes:
            values = [float(torch.tensor(feature(s, h, k), dtype=torch.float64) @ coefficients)
                      for k, h in enumerate(steps)]
            advantage = 0.0
            for k in reversed(range(len(steps))):
                next_value = values[k + 1] if k + 1 < len(steps) else 0.0
                delta = float(rewards[t, s, steps[k]]) + gamma * next_value - values[k]
                advantage = delta + gamma * lam * advantage
                out[t, s, steps[k]] = advantage
        if normalize:
            valid = mask[t] > 0
            mean = out[t][valid].mean()
            std = out[t][valid].std(unbiased=False)
            out[t] = torch.where(valid, (out[t] - mean) / std, 0.0)
    return out


@pytest.mark.parametrize("normalize", [True, False])
def test_compute_advantages_matches_a_per_episode_reference(normalize):
    # Task 0: slot 0 holds two 3-step episodes back to back, slot 1 one 6-step episode.
    # Task 1: a 5-step and a 4-step episode, then padding (with junk that must not count).
    times = torch.tensor([[[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]],
                          [[0, 1, 2, 3, 4, 0], [0, 1, 2, 3, 0, 0]]])
    mask = torch.tensor([[[1.0] * 6, [1.0] * 6],
                         [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]]], dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    obs = torch.rand(2, 2, 6, 1, generator=gen) * 6 - 3
    obs[0, 1, 4, 0] = 12.0  # clipped to 10 by the baseline's features
    rewards = torch.randn(2, 2, 6, generator=gen)
    rewards[mask == 0] = 0.0
    episodes = Episodes(obs, torch.zeros(2, 2, 6, 1), rewards, mask, torch.zeros(2, 2, 6),
                        times)
    settings = AdvantageSettings(discount=0.9, gae_lambda=0.7, normalize=normalize)
    expected = _reference_advantages(obs, rewards, mask, times, 0.9, 0.7, normalize)
    got = compute_advantages(episodes, settings)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("method", "inner_steps"), [("maml", 1), ("fomaml", 1), ("maml", 2)])
def test_train_iteration_steps_along_the_methods_gradient_and_fisher(monkeypatch, method,
                                                                      inner_steps):
    """The surrogate's gradient and the Fisher product that train_iteration hands to TRPO are
    those of the KL and surrogate differentiated through the method's adaptation (second
    order for maml, first order for fomaml), not the other's; with two inner steps, each
    step adapts on its own support batch."""
    import metarl.rl.maml_trpo as maml_trpo

    config = from_dict(MetaRLConfig, {
        "env": {"max_episode_steps": 20},
        "policy": {"hidden_sizes": [8], "activation": "tanh"},
        "adaptation": {"method": method, "inner_steps": inner_steps, "inner_lr": 0.5},
        "training": {"iterations": 1, "meta_batch_size": 2, "episodes_per_task": 3},
        "run": {"progress": False, "tensorboard": False}})
    trainer = make_trainer(config)
    seen = {}
    real_rollouts = maml_trpo.rollouts_with_adaptation

    class Checked(Exception):
        pass

    def recording_rollouts(*args, **kwargs):
        seen["rollouts"] = real_rollouts(*args, **kwargs)
        return seen["rollouts"]

    def checking_update(params, loss_and_kl, *, fisher_product, **kwargs):
        rollouts, policy = seen["rollouts"], trainer.policy
        lrs = [trainer.inner_lr] * trainer.inner_steps
        assert len(rollouts.support) == inner_steps
        if inner_steps == 2:  # the steps' batches differ, so using one for both shows
            assert not torch.equal(rollouts.support[0].observations,
                                   rollouts.support[1].observations)
        mode, other = (("second_order", "first_order") if method == "maml"
                       else ("first_order", "second_order"))
        valid = pack_steps(rollouts.episodes[-1],
                           compute_advantages(rollouts.episodes[-1], trainer.advantages))
        with torch.no_grad():
            old = policy(rollouts.fast, valid.observations)
        old = Normal(old.loc, old.scale)
        old_log_probs = old.log_prob(valid.actions).sum(-1)

        def through(mode):
            return adapt_policy(policy, expand_params(trainer.params, trainer.num_tasks),
                                rollouts.support, lrs, mode)

        def grad(loss):
            return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])

        want = grad(surrogate_loss(policy, through(mode), valid, old_log_probs))
        unwanted = grad(surrogate_loss(policy, through(other), valid, old_log_probs))
        assert (want - unwanted).norm() > 0.05 * want.norm()  # the check tells them apart
        got = grad(loss_and_kl(True)[0])
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * float(want.norm()))

        kl = mean_kl(policy, through(mode), valid, old)
        hvp = hessian_vector_product(kl, params, damping=config.trpo.cg_damping)
        kl_other = mean_kl(policy, through(other), valid, old)
        hvp_other = hessian_vector_product(kl_other, params, damping=config.trpo.cg_damping)
        v = torch.randn(want.numel(), generator=torch.Generator().manual_seed(0))
        exact, unwanted_product = hvp(v), hvp_other(v)
        assert (exact - unwanted_product).norm() > 0.05 * exact.norm()
        torch.testing.assert_close(fisher_product(v), exact, rtol=1e-3,
                                   atol=1e-4 * float(exact.norm()))
        raise Checked  # the step itself is tested elsewhere

    monkeypatch.setattr(maml_trpo, "rollouts_with_adaptation", recording_rollouts)
    monkeypatch.setattr(maml_trpo, "trpo_update", checking_update)
    with pytest.raises(Checked):
        trainer.train_iteration(0)


def test_pack_steps_zeroes_the_advantages_of_padding():
    # Task 0 took 3 steps (a 2-step and a 1-step episode), task 1 took 6: task 0's packed row
    # ends in 3 padding steps, gathered from padding whose advantage is given as 1.
    mask = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]])
    times = torch.tensor([[[0, 1, 0], [0, 0, 0]], [[0, 1, 2], [0, 1, 2]]])
    episodes = Episodes(torch.zeros(2, 2, 3, 2), torch.zeros(2, 2, 3, 2), torch.zeros(2, 2, 3),
                        mask, torch.zeros(2, 2, 3), times)
    packed = pack_steps(episodes, torch.ones(2, 2, 3))
    assert packed.mask.tolist() == [[1.0, 1.0, 1.0, 0.0, 0.0, 0.0], [1.0] * 6]
    assert torch.equal(packed.advantages, packed.mask)


def test_sampler_zeroes_rewards_after_an_episode_ends_whatever_the_env_reports():
    # An env that keeps paying 1 after its first environment terminates at step 1.
    class PaysAfterDone:
        observation_dim = action_dim = 1

        def reset(self):
            self.t = 0
            return torch.zeros(2, 1)

        def step(self, actions):
            self.t += 1
            return (torch.zeros(2, 1), torch.ones(2, dtype=torch.float64),
                    torch.tensor([self.t == 1, False]))

    params = expand_params(init_policy_params(1, 1, [2], generator=torch.Generator()
                                              .manual_seed(0)), 1)
    episodes = sample_episodes(PaysAfterDone(), policy_distribution,
                               params, num_tasks=1, episodes_per_task=2, max_steps=3,
                               generator=torch.Generator().manual_seed(0))
    assert episodes.mask.tolist() == [[[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]]
    assert episodes.rewards.tolist() == [[[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]]


class FixedLengthEpisodes:
    """Environment i's episodes end after exactly lengths[i] steps; it observes (and is paid)
    the number of steps taken in its current episode."""

    observation_dim = action_dim = 1

    def __init__(self, lengths: list[int]) -> None:
        self.lengths = torch.tensor(lengths)
        self.t = torch.zeros(len(lengths), dtype=torch.long)

    def reset(self) -> torch.Tensor:
        self.t.zero_()
        return self.t[:, None].float()

    def step(self, actions):
        self.t += 1
        return self.t[:, None].float(), self.t.double(), self.t >= self.lengths

    def restart(self, where):
        self.t[where] = 0
        return self.t[:, None].float()


def test_step_budget_starts_episodes_while_under_budget_by_hand():
    """One slot per task, H = 10: a budget of 10 steps per task. Task 0's episodes last 3
    steps: they end after 3, 6 and 9 steps (under budget: restart) and 12 (stop): 4 episodes.
    Task 1's last 5: they end after 5 (restart) and 10 steps, exactly the budget: 2."""
    params = expand_params(init_policy_params(1, 1, [2], generator=torch.Generator()
                                              .manual_seed(0)), 2)
    episodes = sample_episodes(FixedLengthEpisodes([3, 5]), policy_distribution, params,
                               num_tasks=2, episodes_per_task=1, max_steps=10,
                               generator=torch.Generator().manual_seed(0), step_budget=True)
    assert episodes.num_episodes().tolist() == [4, 2]
    assert episodes.mask.shape == (2, 1, 12)
    assert episodes.mask.sum(dim=(1, 2)).tolist() == [12.0, 10.0]
    assert episodes.times[0, 0].tolist() == [0, 1, 2] * 4
    assert episodes.times[1, 0].tolist() == [0, 1, 2, 3, 4] * 2 + [0, 0]
    # each episode starts from its environment's restart, not from where the last one ended
    assert episodes.observations[0, 0, :, 0].tolist() == [0.0, 1.0, 2.0] * 4
    assert episodes.observations[1, 0, :10, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] * 2
    assert episodes.episode_spans(0) == [(0, 0, 3), (0, 3, 3), (0, 6, 3), (0, 9, 3)]
    assert episodes.episode_spans(1) == [(0, 0, 5), (0, 5, 5)]
    assert episodes.episode_returns().tolist() == [[6.0] * 4, [15.0, 15.0, 0.0, 0.0]]
    assert episodes.task_returns().tolist() == [6.0, 15.0]


def test_time_limit_ends_an_episode_after_exactly_h_steps_in_both_samplers():
    params = expand_params(init_policy_params(1, 1, [2], generator=torch.Generator()
                                              .manual_seed(0)), 1)
    for budget in (False, True):
        episodes = sample_episodes(FixedLengthEpisodes([100, 100]), policy_distribution,
                                   params, num_tasks=1, episodes_per_task=2, max_steps=4,
                                   generator=torch.Generator().manual_seed(0),
                                   step_budget=budget)
        assert episodes.mask.tolist() == [[[1.0] * 4, [1.0] * 4]], budget
        assert episodes.times.tolist() == [[[0, 1, 2, 3], [0, 1, 2, 3]]], budget
        assert episodes.episode_returns().tolist() == [[10.0, 10.0]], budget


# --------------------------------------------------------------------------- config wiring

def test_make_trainer_takes_each_setting_from_the_config():
    import math

    from metarl.config import from_dict
    from metarl.rl.build import make_trainer
    from metarl.rl.config import MetaRLConfig

    config = from_dict(MetaRLConfig, {
        "env": {"name": "navigation2d", "max_episode_steps": 30},
        "policy": {"hidden_sizes": [8], "init_std": 0.5, "normalized_actions": True},
        "adaptation": {"inner_steps": 2, "inner_lr": 0.3, "method": "fomaml"},
        "training": {"meta_batch_size": 4, "episodes_per_task": 6, "sampling": "steps",
                     "discount": 0.9, "gae_lambda": 0.8, "normalize_advantages": False},
        "trpo": {"max_kl": 0.02}})
    trainer = make_trainer(config)
    assert (trainer.num_tasks, trainer.episodes_per_task, trainer.max_steps) == (4, 6, 30)
    assert (trainer.inner_steps, trainer.inner_lr, trainer.method) == (2, 0.3, "fomaml")
    assert trainer.action_scale == 0.1  # navigation's action bound: ±1 policy unit is ±0.1
    assert trainer.step_budget is True
    assert (trainer.advantages.discount, trainer.advantages.gae_lambda,
            trainer.advantages.normalize) == (0.9, 0.8, False)
    assert trainer.trpo.max_kl == 0.02
    assert torch.allclose(trainer.params["log_std"], torch.full((2,), math.log(0.5)))
    assert make_trainer(config, inner_steps=0).inner_steps == 0  # the pretrained baseline
    plain = make_trainer(from_dict(MetaRLConfig, {}))
    assert (plain.max_steps, plain.action_scale, plain.step_budget) == (100, 1.0, False)


def test_evaluation_learning_rates_and_test_tasks_follow_the_evaluation_section():
    from metarl.config import from_dict
    from metarl.rl.build import evaluation_learning_rates, sample_test_tasks
    from metarl.rl.config import MetaRLConfig

    config = from_dict(MetaRLConfig, {"adaptation": {"inner_lr": 0.1}})
    assert evaluation_learning_rates(config, 3) == [0.1, 0.05, 0.05]
    own = from_dict(MetaRLConfig, {"adaptation": {"inner_lr": 0.1},
                                   "evaluation": {"inner_lr": 0.4, "later_lr_scale": 0.25}})
    assert evaluation_learning_rates(own, 3) == [0.4, 0.1, 0.1]
    assert evaluation_learning_rates(own, 0) == []

    def goals(seed):
        return [task["goal"].tolist() for task in sample_test_tasks(config, 5, seed)]

    assert goals(1) == goals(1) and goals(1) != goals(2)  # the evaluation seed draws them


def test_evaluation_rollouts_take_the_episodes_per_task_they_are_given():
    from metarl.config import from_dict
    from metarl.rl.build import evaluation_rollouts, new_policy_params
    from metarl.rl.config import MetaRLConfig
    config = from_dict(MetaRLConfig, {"env": {"max_episode_steps": 5},
                                      "policy": {"hidden_sizes": [4]},
                                      "evaluation": {"episodes_per_task": 3}})
    params = new_policy_params(config, "init")
    for given, slots in ((None, 3), (2, 2)):
        _, rollouts = evaluation_rollouts(config, params, tasks=2, steps=0, seed=0,
                                          episodes_per_task=given)
        assert rollouts.episodes[0].mask.shape == (2, slots, 5)


def test_library_mistakes_with_the_policy_and_the_trainer_say_what_is_wrong():
    params = init_policy_params(2, 2, [4], generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"observations \(5, 2\) and w0 \(2, 4\); "
                                         r"expand_params\(θ, T\) gives θ a task dimension"):
        policy_distribution(params, torch.zeros(5, 2))
    trainer = make_trainer(small_config())
    with pytest.raises(ValueError, match="method must be maml or fomaml, got 'reptile'"):
        dataclasses.replace(trainer, method="reptile")


def test_a_meta_rl_config_changed_in_code_is_checked_before_sampling():
    import re

    from metarl.config import ConfigError
    from metarl.rl.build import evaluation_rollouts

    config = MetaRLConfig()
    config.training.episodes_per_task = -3
    with pytest.raises(ConfigError, match=re.escape("training.episodes_per_task = -3")):
        make_trainer(config)
    config = MetaRLConfig()
    config.env.name = "half_cheetah_speed"  # type: ignore[assignment]
    message = "env.name = 'half_cheetah_speed': allowed values"
    with pytest.raises(ConfigError, match=re.escape(message)):
        evaluation_rollouts(config, {}, tasks=2, steps=1, seed=0)


def test_fixed_episode_padding_is_zero():
    from metarl.envs.navigation import BatchedNavigation2D
    from metarl.rl.episodes import sample_episodes
    from metarl.rl.policy import expand_params, init_policy_params
    params = expand_params(init_policy_params(2, 2, [4], init_std=0.01,
                                              generator=torch.Generator().manual_seed(0)), 2)
    with torch.no_grad():
        params["w1"].zero_()
        params["b1"].zero_()  # mean action 0: task 0 (goal at the origin) ends at once
    env = BatchedNavigation2D(torch.tensor([[0.0, 0.0]] * 2 + [[0.4, 0.4]] * 2,
                                           dtype=torch.float64))
    episodes = sample_episodes(env, POLICY, params, num_tasks=2, episodes_per_task=2,
                               max_steps=10, generator=torch.Generator().manual_seed(1))
    pad = episodes.mask == 0
    assert bool(pad.any())
    for name in ("rewards", "log_probs", "times"):
        assert bool((getattr(episodes, name)[pad] == 0).all()), name


def test_rollouts_sample_each_batch_with_its_weights_and_keep_theta_as_it_was():
    """episodes[s] were sampled by weights[s] (θ, then φ_1, φ_2): their recorded behaviour
    log-probabilities are those weights' own; and weights[0] is a copy of θ, not a view that
    the in-place TRPO update would change afterwards."""
    from metarl.rl.losses import log_probs
    from metarl.rl.maml_trpo import rollouts_with_adaptation

    trainer = make_trainer(small_config(meta_batch_size=2, episodes_per_task=3))
    theta = {k: v.detach().clone() for k, v in trainer.params.items()}
    rollouts = rollouts_with_adaptation(
        trainer.make_env(trainer.sample_tasks(2, trainer.task_rng), 3, trainer.task_rng),
        trainer.policy, trainer.params, num_tasks=2, episodes_per_task=3, max_steps=100,
        learning_rates=[0.1, 0.1], advantages=trainer.advantages,
        generator=torch.Generator().manual_seed(0))
    for weights, episodes in zip(rollouts.weights, rollouts.episodes, strict=True):
        steps = pack_steps(episodes, torch.zeros_like(episodes.rewards))
        recorded = pack_steps(episodes, episodes.log_probs).advantages
        torch.testing.assert_close(log_probs(trainer.policy, weights, steps) * steps.mask,
                                   recorded * steps.mask, rtol=1e-5, atol=1e-5)
    # the batches differ, so the check above could tell a batch sampled with other weights
    assert not torch.allclose(rollouts.weights[0]["w1"], rollouts.weights[2]["w1"])
    with torch.no_grad():
        for value in trainer.params.values():
            value.add_(1.0)
    for name, value in theta.items():
        assert torch.equal(rollouts.weights[0][name][0], value)


def test_train_iteration_uses_the_configured_advantage_and_trpo_settings(monkeypatch):
    import metarl.rl.maml_trpo as maml_trpo

    config = from_dict(MetaRLConfig, {
        "policy": {"hidden_sizes": [8]},
        "adaptation": {"inner_steps": 2},
        "training": {"meta_batch_size": 2, "episodes_per_task": 3, "discount": 0.9,
                     "gae_lambda": 0.8, "normalize_advantages": False},
        "trpo": {"max_kl": 0.03, "cg_iterations": 7, "cg_damping": 1e-3,
                 "backtrack_ratio": 0.6, "max_backtracks": 9, "curvature_stride": 4},
        "run": {"progress": False, "tensorboard": False}})
    trainer = make_trainer(config)
    settings, updates, fishers = [], [], []
    real_advantages, real_update = maml_trpo.compute_advantages, maml_trpo.trpo_update
    real_fisher = maml_trpo.meta_fisher_product

    def recording_advantages(episodes, advantage_settings):
        settings.append(advantage_settings)
        return real_advantages(episodes, advantage_settings)

    def recording_update(*args, **kwargs):
        updates.append(kwargs)
        return real_update(*args, **kwargs)

    def recording_fisher(*args, **kwargs):
        fishers.append(kwargs)
        return real_fisher(*args, **kwargs)

    monkeypatch.setattr(maml_trpo, "compute_advantages", recording_advantages)
    monkeypatch.setattr(maml_trpo, "trpo_update", recording_update)
    monkeypatch.setattr(maml_trpo, "meta_fisher_product", recording_fisher)
    trainer.train_iteration(0)
    assert len(settings) == 3  # two support batches and the validation batch
    # trpo_update is given this product, so its own cg_damping goes unused: the product's
    # damping and stride are the ones that shape the step
    assert len(fishers) == 1
    assert (fishers[0]["damping"], fishers[0]["curvature_stride"]) == (1e-3, 4)
    assert all(s == AdvantageSettings(discount=0.9, gae_lambda=0.8, normalize=False)
               for s in settings)
    assert len(updates) == 1
    assert {k: updates[0][k] for k in ("max_kl", "cg_iterations", "cg_damping",
                                        "backtrack_ratio", "max_backtracks")} == {
        "max_kl": 0.03, "cg_iterations": 7, "cg_damping": 1e-3, "backtrack_ratio": 0.6,
        "max_backtracks": 9}


def test_evaluation_draws_from_its_own_seed_not_the_runs():
    """The test tasks of an evaluation seed are not the training tasks of a run with that
    seed, and the run's own seed changes nothing in an evaluation: not its tasks, its
    initial states (the half-cheetah's reset noise) or its actions."""
    from metarl.rl.build import evaluation_rollouts, new_policy_params, sample_test_tasks

    def cheetah(seed):
        return from_dict(MetaRLConfig, {
            "seed": seed, "env": {"name": "half_cheetah_vel", "max_episode_steps": 3},
            "policy": {"hidden_sizes": [4]}, "training": {"meta_batch_size": 4},
            "evaluation": {"episodes_per_task": 2}})

    config = cheetah(5)
    trainer = make_trainer(config)
    trained_on = trainer.sample_tasks(4, trainer.task_rng)
    assert sample_test_tasks(config, 4, seed=5) != trained_on
    params = new_policy_params(config, "init")

    def evaluated(config, seed):
        tasks, rollouts = evaluation_rollouts(config, params, tasks=2, steps=1, seed=seed)
        return tasks, [(e.observations, e.actions) for e in rollouts.episodes]

    tasks, episodes = evaluated(config, 9)
    same_tasks, same_episodes = evaluated(cheetah(6), 9)  # another run's seed
    assert same_tasks == tasks
    for (obs, actions), (same_obs, same_actions) in zip(episodes, same_episodes, strict=True):
        assert torch.equal(obs, same_obs) and torch.equal(actions, same_actions)
    _, other_episodes = evaluated(config, 10)  # the evaluation seed draws them
    assert not torch.equal(other_episodes[0][0][:, :, 0], episodes[0][0][:, :, 0])  # resets
    assert not torch.equal(other_episodes[0][1], episodes[0][1])


@pytest.mark.parametrize("sampling", ["episodes", "steps"])
def test_evaluation_samples_as_training_does(monkeypatch, sampling):
    """training.sampling applies to evaluation too: a budget of steps restarts episodes
    that end early there as well."""
    import metarl.rl.build as build

    config = from_dict(MetaRLConfig, {"env": {"max_episode_steps": 4},
                                      "policy": {"hidden_sizes": [4]},
                                      "training": {"sampling": sampling}})
    seen = []
    real = build.rollouts_with_adaptation

    def spy(*args, **kwargs):
        seen.append(kwargs["step_budget"])
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "rollouts_with_adaptation", spy)
    build.evaluation_rollouts(config, build.new_policy_params(config, "init"), tasks=2,
                              steps=0, seed=0)
    assert seen == [sampling == "steps"]


def test_sampler_stops_stepping_once_every_episode_has_ended():
    """No steps (nor action draws) after the last episode ends; what follows is padding."""
    env = FixedLengthEpisodes([2, 3])
    calls = []
    real_step = env.step

    def counted(actions):
        calls.append(1)
        return real_step(actions)

    env.step = counted
    params = expand_params(init_policy_params(1, 1, [2], generator=torch.Generator()
                                              .manual_seed(0)), 1)
    generator = torch.Generator().manual_seed(0)
    episodes = sample_episodes(env, policy_distribution, params, num_tasks=1,
                               episodes_per_task=2, max_steps=10, generator=generator)
    assert len(calls) == 3
    assert episodes.mask.tolist() == [[[1.0] * 2 + [0.0] * 8, [1.0] * 3 + [0.0] * 7]]
    assert (episodes.actions[0, :, 3:] == 0).all() and (episodes.observations[0, :, 3:] == 0).all()
    # three steps' action noise drawn, no more
    torch.randn(3, 2, 1, generator=(drawn := torch.Generator().manual_seed(0)))
    assert torch.equal(generator.get_state(), drawn.get_state())


def test_the_step_budget_worst_case_script_makes_every_episode_end_after_one_step(
        monkeypatch, capsys):
    """scripts/step_budget_worst_case.py at 2 tasks x 2 episodes' budget of 5 steps: every
    episode reaches its goal in one step, so each task runs 10 of them in its 2 slots."""
    import re

    from script_modules import load_script

    monkeypatch.setattr("sys.argv", ["step_budget_worst_case.py", "--tasks", "2",
                                     "--episodes", "2", "--horizon", "5"])
    load_script("step_budget_worst_case").main()
    out = capsys.readouterr().out
    assert out.startswith("episodes per task 10, layout (2, 2, 5), sampling ")
    peak_mb = float(re.search(r"peak RSS (\d+) MB", out).group(1))
    assert 50 < peak_mb < 100_000  # this test process's, in MB


def test_the_kl_hessian_product_raises_no_warning_of_torchs_own():
    """torch.func.jvp warns that torch.jit.script is deprecated the first time it runs (a
    DeprecationWarning in torch 2.13): the product keeps it quiet."""
    code = textwrap.dedent("""
        import warnings
        import torch
        import test_maml_trpo as t
        from metarl.rl.maml_trpo import meta_fisher_product
        params, support, lrs, valid, _, _ = t.problem(1, "second_order")
        product = meta_fisher_product(t.POLICY, params, support, lrs, valid,
                                      mode="second_order", damping=1e-3)
        vector = torch.ones(t.flatten(params).numel(), dtype=torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            print(float(product(vector).sum()))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parent, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert math.isfinite(float(done.stdout))
