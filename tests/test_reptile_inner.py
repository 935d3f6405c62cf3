"""Reptile as its paper trains Omniglot: the inner Adam (β1 = 0) against torch's Adam and a
hand computation, its state carried over tasks as if they ran in turn, the inner minibatches,
and the vmap path against the per-task loop."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch.func import functional_call

import metarl.adaptation as adaptation
from metarl.adaptation import (
    AdamMoments,
    inner_adam_step,
    merge_task_moments,
    params_of,
    reptile_gradient,
    zero_moments,
)
from metarl.supervised.meta import (
    meta_gradient,
    minibatch_indices,
    mse_loss,
    reptile_adaptation,
)
from metarl.supervised.tasks import TaskBatch

from param_vectors import flatten


def _problem(num_tasks: int, support: int = 12, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(),
                                torch.nn.Linear(4, 1)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    batch = TaskBatch(*(torch.randn(num_tasks, n, d, generator=gen, dtype=torch.float64)
                        for n, d in ((support, 2), (support, 1), (5, 2), (5, 1))))
    return model, params_of(model), batch


def _random_moments(params, seed: int, steps: int) -> AdamMoments:
    gen = torch.Generator().manual_seed(seed)
    return AdamMoments(OrderedDict((k, torch.rand(v.shape, generator=gen, dtype=v.dtype))
                                   for k, v in params.items()), steps)


def _torch_adam_from(params, start: AdamMoments, lr: float):
    """A module holding ``params`` and torch's Adam (β1 = 0, ε = 0) with ``start`` loaded."""
    module = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(),
                                 torch.nn.Linear(4, 1)).double()
    module.load_state_dict({k: v.detach() for k, v in params.items()})
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, betas=(0.0, 0.999), eps=0.0)
    for p, name in zip(module.parameters(), params, strict=True):
        optimizer.state[p] = {"step": torch.tensor(float(start.steps)),
                              "exp_avg": torch.zeros_like(p),
                              "exp_avg_sq": start.second_moment[name].clone()}
    return module, optimizer


def test_one_inner_adam_step_by_hand():
    """t = 1 from zero moments: v = (1 − β2) g², p − lr √(1 − β2) g / (√v + ε), the epsilon
    outside the bias correction as in TensorFlow's Adam."""
    params = OrderedDict(w=torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    grads = {"w": torch.tensor([0.3, -4.0, 1e-9], dtype=torch.float64)}
    updated, moments = inner_adam_step(params, grads, zero_moments(params), lr=0.01)
    beta2, eps = 0.999, 1e-8
    for i, g in enumerate([0.3, -4.0, 1e-9]):
        v = (1 - beta2) * g * g
        assert float(moments.second_moment["w"][i]) == pytest.approx(v, rel=1e-12)
        expected = float(params["w"][i]) - 0.01 * math.sqrt(1 - beta2) * g / (math.sqrt(v) + eps)
        assert float(updated["w"][i]) == pytest.approx(expected, rel=1e-12)
    assert moments.steps == 1
    assert float(params["w"][0]) == 1.0, "inputs are not modified"


def test_inner_adam_steps_are_torchs_adam_with_beta1_0_from_any_state(monkeypatch):
    """With ε = 0 (where the two forms of Adam agree) several steps from a given state are
    torch.optim.Adam's with betas (0, 0.999) and that state loaded."""
    monkeypatch.setattr(adaptation, "ADAM_EPS", 0.0)
    model, params, batch = _problem(1)
    start = _random_moments(params, seed=3, steps=7)
    module, torch_adam = _torch_adam_from(params, start, lr=0.05)
    ours, moments = OrderedDict((k, v.detach()) for k, v in params.items()), start
    for step in range(4):
        x, y = batch.support_x[0, 3 * step: 3 * step + 3], batch.support_y[0, 3 * step:][:3]
        torch_adam.zero_grad()
        mse_loss(module(x), y).backward()
        torch_adam.step()
        leaf = OrderedDict((k, v.requires_grad_(True)) for k, v in ours.items())
        loss = mse_loss(functional_call(model, leaf, (x,)), y)
        grads = dict(zip(leaf, torch.autograd.grad(loss, list(leaf.values())), strict=True))
        ours, moments = inner_adam_step(OrderedDict((k, v.detach()) for k, v in leaf.items()),
                                        grads, moments, lr=0.05)
    for p, name in zip(module.parameters(), params, strict=True):
        torch.testing.assert_close(ours[name], p.detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(moments.second_moment[name], torch_adam.state[p]["exp_avg_sq"],
                                   rtol=1e-12, atol=1e-14)
    assert moments.steps == 11


def test_merged_moments_are_those_of_the_tasks_run_in_turn():
    """For given squared gradients, T tasks of S steps each, started together from one state
    and merged, leave the state that one Adam running them in batch order reaches."""
    tasks, steps, beta2 = 4, 3, 0.999
    gen = torch.Generator().manual_seed(0)
    start = AdamMoments(OrderedDict(w=torch.rand(5, dtype=torch.float64, generator=gen)), 20)
    grads = torch.randn(tasks, steps, 5, dtype=torch.float64, generator=gen)
    in_turn = start.second_moment["w"].clone()
    for t in range(tasks):
        for s in range(steps):
            in_turn = beta2 * in_turn + (1 - beta2) * grads[t, s] ** 2
    each = []
    for t in range(tasks):
        v = start.second_moment["w"].clone()
        for s in range(steps):
            v = beta2 * v + (1 - beta2) * grads[t, s] ** 2
        each.append(v)
    merged = merge_task_moments(start, AdamMoments(OrderedDict(w=torch.stack(each)), 23), steps)
    torch.testing.assert_close(merged.second_moment["w"], in_turn, rtol=1e-13, atol=0.0)
    assert merged.steps == 20 + tasks * steps


@pytest.mark.parametrize(("support", "steps", "batch_size"), [(75, 3, 25), (12, 5, 5),
                                                               (5, 2, 25)])
def test_minibatches_go_through_shuffles_of_the_support_set_in_order(support, steps,
                                                                      batch_size):
    """As the Reptile paper's sampler: consecutive stretches of ``support`` indices are each a
    permutation, batches are cut from them in order (a batch may span two)."""
    indices = minibatch_indices(3, support, steps, batch_size, torch.Generator().manual_seed(0))
    assert indices.shape == (3, steps, batch_size)
    for task in indices.reshape(3, -1):
        for start in range(0, len(task) - support + 1, support):
            assert sorted(task[start: start + support].tolist()) == list(range(support))
        tail = task[len(task) // support * support:].tolist()
        assert len(set(tail)) == len(tail) and all(0 <= i < support for i in tail)
    again = minibatch_indices(3, support, steps, batch_size, torch.Generator().manual_seed(0))
    assert torch.equal(indices, again)
    assert not torch.equal(indices, minibatch_indices(3, support, steps, batch_size,
                                                      torch.Generator().manual_seed(1)))


def test_each_task_and_each_pass_over_its_support_set_is_shuffled_anew():
    """One permutation reused for every task, or for every pass, would still be a
    permutation in each stretch: the tasks' rows and a task's passes must differ."""
    support, passes = 10, 3
    indices = minibatch_indices(4, support, passes * support // 5, 5,
                                torch.Generator().manual_seed(3)).reshape(4, -1)
    assert len({tuple(row.tolist()) for row in indices}) == 4
    for row in indices:
        assert len({tuple(row[start: start + support].tolist())
                    for start in range(0, passes * support, support)}) == passes


def test_zero_steps_take_no_minibatches():
    empty = minibatch_indices(3, 6, 0, 4, torch.Generator().manual_seed(0))
    assert empty.shape == (3, 0, 4) and empty.dtype == torch.long


def test_reptile_inner_loop_is_each_tasks_own_adam_on_its_minibatches(monkeypatch):
    """Each task's fast weights are torch's Adam (β1 = 0, ε = 0, the start state loaded)
    stepping on that task's minibatches; the state returned merges the states torch's Adam
    leaves; the query losses are those of the fast weights."""
    monkeypatch.setattr(adaptation, "ADAM_EPS", 0.0)
    model, params, batch = _problem(3)
    start = _random_moments(params, seed=5, steps=2)
    indices = minibatch_indices(3, 12, 4, 5, torch.Generator().manual_seed(1))
    fast, merged, losses, _ = reptile_adaptation(model, params, batch, mse_loss, steps=4,
                                                 lr=0.02, vectorize=False, minibatches=indices,
                                                 moments=start)
    finals = []
    for t in range(3):
        module, opt = _torch_adam_from(params, start, lr=0.02)
        for s in range(4):
            opt.zero_grad()
            mse_loss(module(batch.support_x[t, indices[t, s]]),
                     batch.support_y[t, indices[t, s]]).backward()
            opt.step()
        for p, name in zip(module.parameters(), params, strict=True):
            torch.testing.assert_close(fast[name][t], p.detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(losses[t], mse_loss(module(batch.query_x[t]),
                                                       batch.query_y[t]).detach())
        own = AdamMoments(OrderedDict((n, opt.state[p]["exp_avg_sq"]) for p, n in
                                      zip(module.parameters(), params, strict=True)), 6)
        finals.append(own.second_moment)
    expected = merge_task_moments(start, AdamMoments(OrderedDict(
        (n, torch.stack([f[n] for f in finals])) for n in params), 6), 4)
    assert merged is not None
    torch.testing.assert_close(flatten(merged.second_moment), flatten(expected.second_moment),
                               rtol=1e-12, atol=1e-15)
    assert merged is not None and merged.steps == 2 + 3 * 4


def test_reptile_with_neither_option_takes_full_batch_gradient_steps():
    """No minibatches and no Adam: the fast weights are plain gradient steps on the whole
    support set, as MAML's inner loop takes them, and meta_gradient's reptile is θ − mean φ."""
    model, params, batch = _problem(2)
    fast, moments, _, _ = reptile_adaptation(model, params, batch, mse_loss, steps=2,
                                             lr=[0.1, 0.05], vectorize=False)
    assert moments is None
    for t in range(2):
        def support_loss(p, t=t):
            return mse_loss(functional_call(model, p, (batch.support_x[t],)), batch.support_y[t])

        expected = adaptation.adapt(params, support_loss, steps=2, lr=[0.1, 0.05],
                                    mode="detached")
        for name in params:
            torch.testing.assert_close(fast[name][t], expected[name], rtol=1e-12, atol=1e-14)
    grads = meta_gradient(model, params, batch, mse_loss, method="reptile", steps=2,
                          lr=[0.1, 0.05], vectorize=False).params
    torch.testing.assert_close(flatten(grads), flatten(reptile_gradient(params, fast)))


@pytest.mark.parametrize("with_adam", [False, True])
def test_reptile_inner_loop_vmap_equals_the_per_task_loop(with_adam):
    model, params, batch = _problem(4)
    start = _random_moments(params, seed=2, steps=9) if with_adam else None
    indices = minibatch_indices(4, 12, 3, 5, torch.Generator().manual_seed(0))
    outputs = [reptile_adaptation(model, params, batch, mse_loss, steps=3, lr=0.03,
                                  vectorize=vectorize, minibatches=indices, moments=start,
                                  metric_fn=mse_loss) for vectorize in (False, True)]
    (loop_fast, loop_moments, loop_losses, loop_metric), (fast, moments, losses, metric) = outputs
    torch.testing.assert_close(flatten(fast), flatten(loop_fast), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(losses, loop_losses)
    torch.testing.assert_close(metric, loop_metric)
    if with_adam:
        torch.testing.assert_close(flatten(moments.second_moment),
                                   flatten(loop_moments.second_moment), rtol=1e-10, atol=1e-14)
    else:
        assert moments is None and loop_moments is None


def test_evaluation_curves_adapt_each_task_with_the_inner_adam_from_the_given_state():
    """adaptation_curve and query_predictions take Adam steps on the whole support set from
    the given state, each task from the same state: the query loss after each step is that
    of weights stepped by hand with inner_adam_step."""
    from metarl.supervised.meta import adaptation_curve, query_predictions

    model, params, batch = _problem(2)
    start = _random_moments(params, seed=4, steps=30)
    curve = adaptation_curve(model, params, batch, mse_loss, mse_loss, steps=3, lr=0.05,
                             vectorize=False, moments=start)
    outputs = query_predictions(model, params, batch, mse_loss, steps=3, lr=0.05,
                                moments=start)
    for t in range(2):
        fast, moments = OrderedDict((k, v.detach()) for k, v in params.items()), start
        for step in range(4):
            prediction = functional_call(model, fast, (batch.query_x[t],))
            torch.testing.assert_close(curve[t, step], mse_loss(prediction, batch.query_y[t]))
            torch.testing.assert_close(outputs[t, step], prediction)
            leaf = OrderedDict((k, v.clone().requires_grad_(True)) for k, v in fast.items())
            loss = mse_loss(functional_call(model, leaf, (batch.support_x[t],)),
                            batch.support_y[t])
            grads = dict(zip(leaf, torch.autograd.grad(loss, list(leaf.values())), strict=True))
            fast, moments = inner_adam_step(fast, grads, moments, lr=0.05)
    plain = adaptation_curve(model, params, batch, mse_loss, mse_loss, steps=3, lr=0.05,
                             vectorize=False)
    assert not torch.allclose(plain[:, 1:], curve[:, 1:]), "gradient steps differ"


@pytest.mark.parametrize("with_adam", [False, True])
def test_evaluation_curves_adapt_each_step_on_its_minibatch(with_adam):
    """With test-time minibatches, step s of task t trains on support examples
    ``minibatches[t, s]`` only (checked by hand, with gradient steps and with the inner Adam),
    the vmap path gives the loop's numbers, and query_predictions steps the same way."""
    from metarl.supervised.meta import adaptation_curve, query_predictions

    model, params, batch = _problem(3)
    start = _random_moments(params, seed=6, steps=40) if with_adam else None
    indices = minibatch_indices(3, 12, 4, 5, torch.Generator().manual_seed(2))
    counted: dict[bool, list[int]] = {False: [], True: []}
    curves = [adaptation_curve(model, params, batch, mse_loss, mse_loss, steps=4, lr=0.05,
                               vectorize=vectorize, moments=start, minibatches=indices,
                               on_steps=counted[vectorize].append)
              for vectorize in (False, True)]
    assert counted == {False: [1] * 12, True: [3] * 4}, "3 tasks x 4 steps, told as done"
    torch.testing.assert_close(curves[1], curves[0], rtol=1e-10, atol=1e-12)
    outputs = query_predictions(model, params, batch, mse_loss, steps=4, lr=0.05,
                                moments=start, minibatches=indices)
    for t in range(3):
        fast, moments = OrderedDict((k, v.detach()) for k, v in params.items()), start
        for step in range(5):
            prediction = functional_call(model, fast, (batch.query_x[t],))
            torch.testing.assert_close(curves[0][t, step],
                                       mse_loss(prediction, batch.query_y[t]))
            torch.testing.assert_close(outputs[t, step], prediction)
            if step == 4:
                break
            leaf = OrderedDict((k, v.clone().requires_grad_(True)) for k, v in fast.items())
            chosen = indices[t, step]
            loss = mse_loss(functional_call(model, leaf, (batch.support_x[t, chosen],)),
                            batch.support_y[t, chosen])
            grads = dict(zip(leaf, torch.autograd.grad(loss, list(leaf.values())), strict=True))
            if moments is not None:
                fast, moments = inner_adam_step(fast, grads, moments, lr=0.05)
            else:
                fast = OrderedDict((k, v - 0.05 * grads[k]) for k, v in fast.items())
    whole = adaptation_curve(model, params, batch, mse_loss, mse_loss, steps=4, lr=0.05,
                             vectorize=False, moments=start)
    assert not torch.allclose(whole[:, 1:], curves[0][:, 1:]), "full-batch steps differ"
    with pytest.raises(ValueError, match=r"minibatches must be \(tasks, steps, batch\)"):
        adaptation_curve(model, params, batch, mse_loss, mse_loss, steps=3, lr=0.05,
                         moments=start, minibatches=indices)
    for bad in (indices + 12, indices - 13, indices.int()):
        with pytest.raises(ValueError, match="int64 indices into the 12 support examples"):
            adaptation_curve(model, params, batch, mse_loss, mse_loss, steps=4, lr=0.05,
                             moments=start, minibatches=bad)


@pytest.mark.parametrize("batch_size", [None, 3])
def test_the_trainer_gives_reptile_the_minibatches_of_its_inner_batch_size(monkeypatch,
                                                                           batch_size):
    import metarl.supervised.trainer as trainer_module
    from metarl.config import AdaptationConfig

    model, _, batch = _problem(2)
    given = []
    real = trainer_module.reptile_adaptation

    def recording(*args, **kwargs):
        given.append(kwargs["minibatches"])
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "reptile_adaptation", recording)
    trainer = trainer_module.SupervisedMetaTrainer(
        model, lambda generator: batch, mse_loss,
        adaptation=AdaptationConfig(method="reptile", inner_steps=4, inner_lr=0.01),
        vectorize=False, outer_optimizer="sgd", outer_lr=1.0,
        task_generator=torch.Generator().manual_seed(0), inner_optimizer="adam",
        inner_batch_size=batch_size)
    trainer.train_iteration(0)
    if batch_size is None:
        assert given == [None]
        return
    (indices,) = given
    assert indices.shape == (2, 4, 3) and int(indices.max()) < 12
    assert torch.equal(indices, minibatch_indices(2, 12, 4, 3, torch.Generator().manual_seed(0)))
