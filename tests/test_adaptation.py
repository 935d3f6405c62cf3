"""Meta-gradients of the adaptation core against answers derived another way.

A tiny float64 network (2-3-1, tanh so that Hessians are informative) and one task. The
meta-objective is F(θ) = L_query(φ(θ)) with φ the result of k inner SGD steps on L_support.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import pytest
import torch
from torch.func import functional_call

from metarl.adaptation import adapt, params_of, reptile_gradient
from metarl.supervised.meta import adaptation_curve, meta_gradient, mse_loss, task_losses
from metarl.supervised.tasks import TaskBatch

from param_vectors import flatten, unflatten

LR = 0.3


def tiny_problem(seed: int = 0, num_tasks: int = 1):
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    params = params_of(model)
    batch = TaskBatch(
        torch.randn(num_tasks, 5, 2, generator=gen, dtype=torch.float64),
        torch.randn(num_tasks, 5, 1, generator=gen, dtype=torch.float64),
        torch.randn(num_tasks, 7, 2, generator=gen, dtype=torch.float64),
        torch.randn(num_tasks, 7, 1, generator=gen, dtype=torch.float64),
    )
    return model, params, batch




def losses_on(model, batch):
    def support(p):
        return mse_loss(functional_call(model, p, (batch.support_x[0],)), batch.support_y[0])

    def query(p):
        return mse_loss(functional_call(model, p, (batch.query_x[0],)), batch.query_y[0])

    return support, query


def plain_sgd(model, params, batch, steps):
    """φ_0..φ_k by explicit, graph-free gradient descent on the support loss."""
    support, _ = losses_on(model, batch)
    phis = [flatten(params).detach()]
    for _ in range(steps):
        grad = torch.autograd.functional.jacobian(
            lambda v: support(unflatten(v, params)), phis[-1])
        phis.append(phis[-1] - LR * grad)
    return phis


def meta_objective(model, params, batch, steps):
    support, query = losses_on(model, batch)

    def objective(vector):
        fast = adapt(unflatten(vector, params), support, steps=steps, lr=LR, mode="second_order")
        return query(fast)

    return objective


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("vectorize", [False, True])
def test_maml_gradient_matches_finite_differences(steps, vectorize):
    model, params, batch = tiny_problem()
    grads, *_ = meta_gradient(model, params, batch, mse_loss, method="maml", steps=steps,
                                lr=LR, vectorize=vectorize)
    objective = meta_objective(model, params, batch, steps)
    theta = flatten(params).detach()
    eps = 1e-6
    numeric = torch.stack([
        (objective(theta + eps * e) - objective(theta - eps * e)) / (2 * eps)
        for e in torch.eye(theta.numel(), dtype=torch.float64)
    ])
    torch.testing.assert_close(flatten(grads), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("steps", [1, 3])
def test_maml_gradient_matches_explicit_hessian_formula(steps):
    """∇F = (I − αH(φ_0)) ... (I − αH(φ_{k−1})) ∇L_query(φ_k), Hessians formed explicitly."""
    model, params, batch = tiny_problem(seed=1)
    support, query = losses_on(model, batch)
    phis = plain_sgd(model, params, batch, steps)
    vector = torch.autograd.functional.jacobian(lambda v: query(unflatten(v, params)), phis[-1])
    identity = torch.eye(vector.numel(), dtype=torch.float64)
    for phi in reversed(phis[:-1]):
        hessian = torch.autograd.functional.hessian(lambda v: support(unflatten(v, params)), phi)
        vector = (identity - LR * hessian) @ vector
    grads, *_ = meta_gradient(model, params, batch, mse_loss, method="maml", steps=steps,
                                lr=LR, vectorize=False)
    torch.testing.assert_close(flatten(grads), vector, rtol=1e-9, atol=1e-12)
    # The Hessian term matters here: the first-order answer differs.
    first_order = torch.autograd.functional.jacobian(
        lambda v: query(unflatten(v, params)), phis[-1])
    assert (flatten(grads) - first_order).abs().max() > 1e-3


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("vectorize", [False, True])
def test_first_order_gradient_is_query_gradient_at_fast_weights(steps, vectorize):
    model, params, batch = tiny_problem(seed=2)
    _, query = losses_on(model, batch)
    phis = plain_sgd(model, params, batch, steps)
    expected = torch.autograd.functional.jacobian(lambda v: query(unflatten(v, params)), phis[-1])
    grads, *_ = meta_gradient(model, params, batch, mse_loss, method="fomaml", steps=steps,
                                lr=LR, vectorize=vectorize)
    torch.testing.assert_close(flatten(grads), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("vectorize", [False, True])
def test_reptile_gradient_is_parameter_difference(steps, vectorize):
    model, params, batch = tiny_problem(seed=3)
    phis = plain_sgd(model, params, batch, steps)
    grads, *_ = meta_gradient(model, params, batch, mse_loss, method="reptile", steps=steps,
                                lr=LR, vectorize=vectorize)
    torch.testing.assert_close(flatten(grads), flatten(params).detach() - phis[-1],
                               rtol=1e-9, atol=1e-12)


def test_meta_sgd_learning_rate_gradient_matches_finite_differences():
    model, params, batch = tiny_problem(seed=4)
    support, query = losses_on(model, batch)
    lrs = OrderedDict((k, torch.full_like(v, LR).requires_grad_(True)) for k, v in params.items())
    _, grad_lr, *_ = meta_gradient(model, params, batch, mse_loss, method="maml", steps=2,
                                  lr=lrs, vectorize=False)
    assert grad_lr is not None

    def objective(lr_vector):
        fast = adapt(params, support, steps=2, lr=unflatten(lr_vector, params),
                     mode="second_order")
        return query(fast)

    base = flatten(lrs).detach()
    eps = 1e-6
    numeric = torch.stack([
        (objective(base + eps * e) - objective(base - eps * e)) / (2 * eps)
        for e in torch.eye(base.numel(), dtype=torch.float64)
    ])
    torch.testing.assert_close(flatten(grad_lr), numeric.detach(), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", ["maml", "fomaml", "reptile"])
def test_vectorized_equals_per_task_loop_on_many_tasks(method):
    model, params, batch = tiny_problem(seed=5, num_tasks=6)
    loop = meta_gradient(model, params, batch, mse_loss, method=method, steps=2,
                         lr=[LR, LR / 2], vectorize=False)
    vmapped = meta_gradient(model, params, batch, mse_loss, method=method, steps=2,
                            lr=[LR, LR / 2], vectorize=True)
    torch.testing.assert_close(flatten(loop[0]), flatten(vmapped[0]), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loop[2], vmapped[2], rtol=1e-10, atol=1e-12)


def test_adapt_does_not_modify_inputs_and_zero_steps_is_identity():
    model, params, batch = tiny_problem(seed=6)
    support, _ = losses_on(model, batch)
    before = {k: v.detach().clone() for k, v in params.items()}
    fast = adapt(params, support, steps=3, lr=LR)
    for k in params:
        assert torch.equal(params[k], before[k])
        assert not torch.equal(fast[k], before[k])
    same = adapt(params, support, steps=0, lr=LR)
    assert all(same[k] is params[k] for k in params)
    with pytest.raises(ValueError, match="steps"):
        adapt(params, support, steps=-1, lr=LR)


def test_reptile_gradient_averages_over_tasks():
    theta = OrderedDict(w=torch.tensor([1.0, 2.0]))
    fast = OrderedDict(w=torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    torch.testing.assert_close(reptile_gradient(theta, fast)["w"], torch.tensor([0.5, 1.5]))


def one_task_of(batch, t):
    return TaskBatch(batch.support_x[t:t + 1], batch.support_y[t:t + 1],
                     batch.query_x[t:t + 1], batch.query_y[t:t + 1])


@pytest.mark.parametrize("method", ["maml", "fomaml", "reptile"])
@pytest.mark.parametrize("vectorize", [False, True])
def test_meta_gradient_of_several_tasks_is_the_mean_of_their_own(method, vectorize):
    """The outer objective is the mean over tasks, not their sum (nor one task's)."""
    model, params, batch = tiny_problem(seed=11, num_tasks=3)
    grads, _, losses, _ = meta_gradient(model, params, batch, mse_loss, method=method,
                                        steps=2, lr=LR, vectorize=vectorize)
    each = [meta_gradient(model, params, one_task_of(batch, t), mse_loss, method=method,
                          steps=2, lr=LR, vectorize=vectorize) for t in range(3)]
    torch.testing.assert_close(flatten(grads), torch.stack([flatten(g.params) for g in each])
                               .mean(0), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(losses, torch.cat([g.query_losses for g in each]))
    assert (flatten(each[0].params) - flatten(each[1].params)).norm() > 1e-3  # tasks differ


@pytest.mark.parametrize("method", ["maml", "reptile"])
def test_trainer_applies_the_outer_step_of_each_method(method):
    """One SupervisedMetaTrainer iteration with outer SGD at rate ε: θ ← θ − ε ∇F for MAML,
    θ ← θ + ε (mean φ − θ) for Reptile, φ by plain SGD on each task's support set."""
    from metarl.config import AdaptationConfig
    from metarl.supervised.trainer import SupervisedMetaTrainer

    model, params, batch = tiny_problem(seed=12, num_tasks=2)
    theta = flatten(params).detach().clone()
    epsilon = 0.25
    trainer = SupervisedMetaTrainer(
        model, lambda generator: batch, mse_loss,
        adaptation=AdaptationConfig(method=method, inner_steps=2, inner_lr=LR),
        vectorize=False, outer_optimizer="sgd", outer_lr=epsilon,
        task_generator=torch.Generator().manual_seed(0))
    if method == "reptile":
        phis = [plain_sgd(model, params, one_task_of(batch, t), 2)[-1] for t in range(2)]
        expected = theta + epsilon * (torch.stack(phis).mean(0) - theta)
    else:
        grads, *_ = meta_gradient(model, params, batch, mse_loss, method="maml", steps=2,
                                  lr=LR, vectorize=False)
        expected = theta - epsilon * flatten(grads)
    trainer.train_iteration(0)
    updated = flatten(trainer.params).detach()
    assert (updated - theta).norm() > 1e-3  # a step was taken
    torch.testing.assert_close(updated, expected, rtol=1e-9, atol=1e-12)


def test_task_losses_shapes():
    model, params, batch = tiny_problem(seed=7, num_tasks=4)
    losses, fast, _ = task_losses(model, params, batch, mse_loss, steps=1, lr=LR,
                               mode="second_order", vectorize=True)
    assert losses.shape == (4,)
    assert all(fast[k].shape == (4, *params[k].shape) for k in params)


def test_vectorized_meta_sgd_learning_rate_gradient_equals_the_loop():
    """The vmapped gradient with respect to per-parameter rates, task by task."""
    model, params, batch = tiny_problem(seed=8, num_tasks=4)
    gen = torch.Generator().manual_seed(1)
    lrs = OrderedDict((k, (LR * (0.5 + torch.rand(v.shape, generator=gen, dtype=v.dtype)))
                       .requires_grad_(True)) for k, v in params.items())
    loop = meta_gradient(model, params, batch, mse_loss, method="maml", steps=2, lr=lrs,
                         vectorize=False)
    vmapped = meta_gradient(model, params, batch, mse_loss, method="maml", steps=2, lr=lrs,
                            vectorize=True)
    assert flatten(loop.lr).abs().max() > 1e-3
    torch.testing.assert_close(flatten(vmapped.lr), flatten(loop.lr), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(flatten(vmapped.params), flatten(loop.params),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("learned", [False, True])
def test_adaptation_curve_vectorized_equals_loop_and_plain_sgd(learned):
    """Query MSE after 0..3 steps: vmap, the per-task loop and graph-free SGD written out,
    with a smaller rate after the first step (or Meta-SGD's per-parameter rates)."""
    model, params, batch = tiny_problem(seed=9, num_tasks=3)
    gen = torch.Generator().manual_seed(2)
    lr = (OrderedDict((k, LR * (0.5 + torch.rand(v.shape, generator=gen, dtype=v.dtype)))
                      for k, v in params.items()) if learned else [LR, LR / 2, LR / 2])
    curves = {vectorize: adaptation_curve(model, params, batch, mse_loss, mse_loss, steps=3,
                                          lr=lr, vectorize=vectorize)
              for vectorize in (False, True)}
    assert curves[True].shape == (3, 4)
    torch.testing.assert_close(curves[True], curves[False], rtol=1e-10, atol=1e-12)
    for task in range(3):
        one = TaskBatch(*(getattr(batch, name)[task:task + 1]
                          for name in ("support_x", "support_y", "query_x", "query_y")))
        support, query = losses_on(model, one)
        theta = flatten(params).detach()
        expected = [query(unflatten(theta, params))]
        for step in range(3):
            grad = torch.autograd.functional.jacobian(
                lambda v, support=support: support(unflatten(v, params)), theta)
            rate = flatten(lr) if learned else lr[step]
            theta = theta - rate * grad
            expected.append(query(unflatten(theta, params)))
        torch.testing.assert_close(curves[False][task], torch.stack(expected).detach(),
                                   rtol=1e-10, atol=1e-12)
    assert (curves[False].diff(dim=1).abs() > 1e-3).all()  # every step moves the fit


@pytest.mark.parametrize("vectorize", [False, True])
def test_adaptation_curve_refuses_to_score_diverged_weights(vectorize):
    """A rate that sends the weights to inf/nan at the second step: an error naming the step
    and its rate (in both paths), not a curve of what nan weights score."""
    from metarl.experiment import NonFiniteLossError

    model, params, batch = tiny_problem(seed=9, num_tasks=3)
    with pytest.raises(NonFiniteLossError, match=re.escape(
            "not finite after 2 test-time step(s) (lr 1e+300): adaptation diverged; lower "
            "evaluation.inner_lr or evaluation.later_lr_scale, or evaluate at most 1 step(s) "
            "(metarl evaluate --steps 1)")):
        adaptation_curve(model, params, batch, mse_loss, mse_loss, steps=3,
                         lr=[LR, 1e300, 1e300], vectorize=vectorize)
    learned = OrderedDict((k, torch.full_like(v, 1e300)) for k, v in params.items())
    with pytest.raises(NonFiniteLossError, match=re.escape(
            "after 1 test-time step(s) with the learned (Meta-SGD) rates, which are used at "
            "every step: adaptation diverged at the first step on these tasks")):
        adaptation_curve(model, params, batch, mse_loss, mse_loss, steps=3, lr=learned,
                         vectorize=vectorize)
    with pytest.raises(NonFiniteLossError, match=re.escape(
            "after 1 test-time step(s) (lr 1e+300): adaptation diverged; lower "
            "evaluation.inner_lr") + "$"):
        adaptation_curve(model, params, batch, mse_loss, mse_loss, steps=3, lr=1e300,
                         vectorize=vectorize)
    broken = OrderedDict((k, torch.full_like(v, math.inf)) for k, v in params.items())
    with pytest.raises(NonFiniteLossError, match="before any test-time step: the weights "
                                                 "themselves are broken"):
        adaptation_curve(model, broken, batch, mse_loss, mse_loss, steps=3, lr=LR,
                         vectorize=vectorize)
    finite = adaptation_curve(model, params, batch, mse_loss, mse_loss, steps=1, lr=[LR],
                              vectorize=vectorize)
    assert bool(torch.isfinite(finite).all())


def test_mse_loss_is_the_mean_not_the_sum_of_squared_errors():
    # The inner learning rate (and the sine results) assume the mean over points and outputs.
    prediction = torch.tensor([[1.0, 0.0], [2.0, 0.0], [4.0, 3.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    assert float(mse_loss(prediction, target)) == pytest.approx((1 + 4 + 9 + 4) / 6)


def test_detached_adaptation_returns_weights_without_a_graph():
    from metarl.adaptation import adapt

    gen = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(3, generator=gen, dtype=torch.float64).requires_grad_(True)}
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)

    def support(p):
        return ((x @ p["w"]) ** 2).mean()

    fast = adapt(params, support, steps=2, lr=0.1, mode="detached")
    assert not fast["w"].requires_grad and fast["w"].grad_fn is None


def test_mistakes_a_library_user_makes_get_errors_that_say_what_is_wrong():
    model, params, batch = tiny_problem(num_tasks=2)
    with pytest.raises(ValueError, match="predictions \\(5, 1\\) and targets \\(5,\\) differ"):
        mse_loss(torch.zeros(5, 1), torch.zeros(5))
    with pytest.raises(ValueError, match="method must be one of maml, fomaml, reptile, got "
                                         "'second_order'"):
        meta_gradient(model, params, batch, mse_loss, method="second_order", steps=1, lr=LR,
                      vectorize=False)
    plain = {k: v.detach() for k, v in params.items()}  # as a checkpoint holds them
    for theta in (plain, {**params, "0.bias": plain["0.bias"]}):  # plain, or one part frozen
        for vectorize in (False, True):
            with pytest.raises(ValueError, match="all of them must require grad"):
                meta_gradient(model, theta, batch, mse_loss, method="maml", steps=1, lr=LR,
                              vectorize=vectorize)
    # Meta-SGD learning its rates alone: θ plain, the rates require grad
    rates = {k: torch.full_like(v, LR).requires_grad_() for k, v in params.items()}
    rates_only = [meta_gradient(model, plain, batch, mse_loss, method="maml", steps=1,
                                lr=rates, vectorize=vectorize) for vectorize in (False, True)]
    both = meta_gradient(model, params, batch, mse_loss, method="maml", steps=1, lr=rates,
                         vectorize=False)
    for name in params:
        assert not rates_only[0].params[name].any()
        for result in rates_only:
            torch.testing.assert_close(result.lr[name], both.lr[name])
    # forgetting functional_call: the loss uses the module's own weights, not θ
    with pytest.raises(ValueError, match="the loss does not depend on the parameters"):
        adapt(params, lambda p: model(batch.support_x[0]).sum(), steps=1, lr=LR)
    # learning rates as tensors: one, or one per step; not a tensor that requires grad
    with pytest.raises(ValueError, match="give learned \\(Meta-SGD\\) rates as a dict"):
        meta_gradient(model, params, batch, mse_loss, method="maml", steps=1,
                      lr=torch.tensor(LR, requires_grad=True), vectorize=False)
    per_step = meta_gradient(model, params, batch, mse_loss, method="maml", steps=2,
                             lr=torch.tensor([LR, LR / 2], dtype=torch.float64), vectorize=False)
    as_list = meta_gradient(model, params, batch, mse_loss, method="maml", steps=2,
                            lr=[LR, LR / 2], vectorize=False)
    for name in params:
        torch.testing.assert_close(per_step.params[name], as_list.params[name])
    # a scalar tensor learning rate is a float
    as_tensor = meta_gradient(model, params, batch, mse_loss, method="maml", steps=1,
                              lr=torch.tensor(LR), vectorize=False)
    as_float = meta_gradient(model, params, batch, mse_loss, method="maml", steps=1, lr=LR,
                             vectorize=False)
    for name in params:
        torch.testing.assert_close(as_tensor.params[name], as_float.params[name])


@pytest.mark.parametrize("method", ["maml", "fomaml", "reptile"])
def test_a_parameter_the_loss_does_not_use_gets_gradient_zero_on_both_paths(method):
    net, _, batch = tiny_problem(num_tasks=3)

    class WithAnUnusedLayer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.unused = net, torch.nn.Linear(1, 1).double()

        def forward(self, x):
            return self.net(x)

    model = WithAnUnusedLayer()
    params = params_of(model)
    results = [meta_gradient(model, params, batch, mse_loss, method=method, steps=2, lr=LR,
                             vectorize=vectorize) for vectorize in (False, True)]
    for name in params:
        torch.testing.assert_close(results[0].params[name], results[1].params[name])
    assert not results[0].params["unused.weight"].any()


@pytest.mark.parametrize("method", ["maml", "fomaml", "reptile"])
@pytest.mark.parametrize("vectorize", [False, True])
def test_query_metric_is_measured_after_adaptation(method, vectorize):
    from metarl.supervised.meta import meta_gradient, mse_loss
    model, params, batch = tiny_problem(seed=3, num_tasks=4)
    out = meta_gradient(model, params, batch, mse_loss, method=method, steps=2, lr=LR,
                        vectorize=vectorize, metric_fn=mse_loss)
    torch.testing.assert_close(out.query_metric, out.query_losses, rtol=1e-12, atol=1e-12)
    before = meta_gradient(model, params, batch, mse_loss, method=method, steps=0, lr=LR,
                           vectorize=vectorize, metric_fn=mse_loss).query_metric
    assert (out.query_metric - before).abs().max() > 1e-3


def test_too_few_inner_rates_is_a_value_error():
    from metarl.adaptation import step_learning_rate
    assert step_learning_rate([0.1, 0.2], 1) == 0.2
    with pytest.raises(ValueError, match="2 inner learning rates given for step 2"):
        step_learning_rate([0.1, 0.2], 2)


def test_learned_rates_that_diverge_later_name_the_steps_to_evaluate():
    from metarl.experiment import NonFiniteLossError

    model, params, batch = tiny_problem(seed=9, num_tasks=3)
    # a rate that sends the weights to inf within a few steps, used at every step
    learned = OrderedDict((k, torch.full_like(v, 1e10)) for k, v in params.items())
    with pytest.raises(NonFiniteLossError, match=re.escape(
            "with the learned (Meta-SGD) rates, which are used at every step: adaptation "
            "diverged; evaluate at most ")) as error:
        adaptation_curve(model, params, batch, mse_loss, mse_loss, steps=20, lr=learned,
                         vectorize=False)
    steps = int(re.search(r"--steps (\d+)\)$", str(error.value)).group(1))
    assert steps >= 1
    fine = adaptation_curve(model, params, batch, mse_loss, mse_loss, steps=steps, lr=learned,
                            vectorize=False)
    assert bool(torch.isfinite(fine).all())
