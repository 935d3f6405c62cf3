"""Batched MAML, first-order MAML and Reptile for supervised tasks, on ``adapt``.

Two interchangeable paths compute the same numbers: ``torch.func.vmap`` over the task
dimension, and a per-task Python loop. Which is faster depends on the model and is measured
by ``metarl benchmark`` (for the sine MLP the vmap path wins); tests hold them equal.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metarl.adaptation import (
    AdamMoments,
    AdaptMode,
    LearningRate,
    MetaMethod,
    Params,
    adapt,
    detached_step,
    merge_task_moments,
    mode_of_method,
    reptile_gradient,
    step_learning_rate,
)
from metarl.experiment import NonFiniteLossError
from metarl.supervised.tasks import TaskBatch

LossFn = Callable[[Tensor, Tensor], Tensor]
"""(predictions ``(N, *out)``, targets ``(N, *target)``) -> scalar loss."""


def mse_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error of predictions and targets of one shape ``(N, *out)``, a scalar."""
    if prediction.shape != target.shape:  # broadcasting would average the wrong pairs
        raise ValueError(f"mse_loss: predictions {tuple(prediction.shape)} and targets "
                         f"{tuple(target.shape)} differ in shape")
    return ((prediction - target) ** 2).mean()


def map_tasks(fn: Callable[..., Any], batch: TaskBatch, *, vectorize: bool,
              extras: tuple[Tensor, ...] = ()) -> Any:
    """Run ``fn(support_x, support_y, query_x, query_y, functional, *extras_t)`` for every task.

    With ``vectorize`` one ``torch.func.vmap`` call runs all tasks (``functional=True``, so
    ``fn`` must use ``torch.func`` gradients); otherwise a Python loop does. ``extras`` are
    further per-task tensors, each with a leading task dimension. Either way the outputs
    (tensors, tuples and dicts of tensors) come back stacked along a new leading task
    dimension.
    """
    if vectorize:
        def functional_fn(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, *more: Tensor) -> Any:
            return fn(sx, sy, qx, qy, True, *more)

        return vmap(functional_fn)(batch.support_x, batch.support_y, batch.query_x,
                                   batch.query_y, *extras)
    outputs = [fn(batch.support_x[t], batch.support_y[t], batch.query_x[t], batch.query_y[t],
                  False, *(extra[t] for extra in extras)) for t in range(batch.num_tasks)]
    return _stack(outputs)


def _stack(items: list[Any]) -> Any:
    first = items[0]
    if isinstance(first, Tensor):
        return torch.stack(items)
    if isinstance(first, Mapping):
        return OrderedDict((k, _stack([item[k] for item in items])) for k in first)
    if isinstance(first, tuple):
        return tuple(_stack(list(parts)) for parts in zip(*items, strict=True))
    raise TypeError(f"cannot stack task outputs of type {type(first).__name__}")


def task_losses(model: nn.Module, params: Params, batch: TaskBatch, loss_fn: LossFn, *,
                steps: int, lr: LearningRate, mode: AdaptMode, vectorize: bool,
                metric_fn: LossFn | None = None) -> tuple[Tensor, Params, Tensor | None]:
    """Adapt to each task on its support set, then score the fast weights on its query set.

    Returns:
        query losses of shape ``(T,)`` (differentiable w.r.t. ``params`` as ``mode`` says),
        the fast weights stacked over tasks, each of shape ``(T, *param_shape)``, and the
        detached query ``metric_fn`` (e.g. accuracy) of shape ``(T,)`` if one is given.
    """

    def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor,
                 functional: bool) -> tuple[Tensor, Params, Tensor]:
        def support_loss(p: Params) -> Tensor:
            return loss_fn(functional_call(model, p, (sx,)), sy)

        fast = adapt(params, support_loss, steps=steps, lr=lr, mode=mode, functional=functional)
        prediction = functional_call(model, fast, (qx,))
        metric = (metric_fn(prediction.detach(), qy) if metric_fn is not None
                  else prediction.new_zeros(()))
        return loss_fn(prediction, qy), fast, metric

    losses, fast, metrics = map_tasks(one_task, batch, vectorize=vectorize)
    return losses, fast, (metrics if metric_fn is not None else None)


def minibatch_indices(num_tasks: int, support_size: int, steps: int, batch_size: int,
                      generator: torch.Generator) -> Tensor:
    """Which support examples each inner step of each task trains on, as Reptile's paper
    draws them: the support set shuffled, cut into batches of ``batch_size`` in order, and
    shuffled again whenever it runs out (a batch may span two shuffles; a batch larger than
    the set repeats examples). Returns ``(num_tasks, steps, batch_size)`` indices."""
    needed = steps * batch_size
    if needed == 0:
        return torch.empty(num_tasks, steps, batch_size, dtype=torch.long)
    shuffles = -(-needed // support_size)
    order = torch.stack([torch.randperm(support_size, generator=generator)
                         for _ in range(num_tasks * shuffles)])
    return order.reshape(num_tasks, shuffles * support_size)[:, :needed].reshape(
        num_tasks, steps, batch_size)


def reptile_adaptation(model: nn.Module, params: Params, batch: TaskBatch, loss_fn: LossFn, *,
                       steps: int, lr: LearningRate, vectorize: bool,
                       minibatches: Tensor | None = None, moments: AdamMoments | None = None,
                       metric_fn: LossFn | None = None
                       ) -> tuple[Params, AdamMoments | None, Tensor, Tensor | None]:
    """Reptile's inner loop on each task: ``steps`` detached steps on the support set.

    Args:
        minibatches: ``(T, steps, B)`` indices of the support examples of each step (see
            :func:`minibatch_indices`); None: the whole support set at every step.
        moments: the inner Adam's state at the start of this meta-batch; None: gradient
            steps with ``lr`` (see :func:`metarl.adaptation.detached_step`).

    Returns:
        the fast weights φ stacked over tasks (each ``(T, *S)``), the inner Adam's state after
        all tasks (:func:`metarl.adaptation.merge_task_moments`; None without one), the query
        losses ``(T,)`` at φ and the query ``metric_fn`` ``(T,)`` (None without one).
    """
    start = OrderedDict((k, v.detach()) for k, v in params.items())

    def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, functional: bool,
                 *indices: Tensor) -> tuple[Params, Params, Tensor, Tensor]:
        fast: Params = start
        state = moments
        for step in range(steps):
            fast, state = detached_step(fast, _support_loss(model, loss_fn, sx, sy, indices, step),
                                        lr=step_learning_rate(lr, step), moments=state,
                                        functional=functional)
        with torch.no_grad():
            prediction = functional_call(model, fast, (qx,))
            metric = (metric_fn(prediction, qy) if metric_fn is not None
                      else prediction.new_zeros(()))
            loss = loss_fn(prediction, qy)
        second = state.second_moment if state is not None else OrderedDict()
        return fast, second, loss, metric

    fast, second, losses, metrics = map_tasks(
        one_task, batch, vectorize=vectorize, extras=_minibatch_extras(minibatches, batch, steps))
    merged = (merge_task_moments(moments, AdamMoments(second, moments.steps + steps), steps)
              if moments is not None else None)
    return fast, merged, losses, (metrics if metric_fn is not None else None)


class MetaGradient(NamedTuple):
    """What :func:`meta_gradient` returns.

    ``params``: the gradient for each entry of θ (for Reptile the pseudo-gradient θ − mean φ,
    see :func:`reptile_gradient`); ``lr``: for Meta-SGD (``lr`` a mapping of tensors that
    require grad) the gradient for each learning-rate tensor, else None; ``query_losses``:
    the detached post-adaptation query losses ``(T,)``; ``query_metric``: the post-adaptation
    query metric ``(T,)`` when a ``metric_fn`` was given, else None.
    """

    params: Params
    lr: Params | None
    query_losses: Tensor
    query_metric: Tensor | None


def meta_gradient(model: nn.Module, params: Params, batch: TaskBatch, loss_fn: LossFn, *,
                  method: MetaMethod, steps: int, lr: LearningRate, vectorize: bool,
                  metric_fn: LossFn | None = None) -> MetaGradient:
    """Outer gradient of the mean query loss over the batch's tasks (see :class:`MetaGradient`).

    Args:
        model: the architecture, run with ``functional_call(model, params, (x,))``; its own
            parameters are not used. Models that keep state (batch norm's running
            statistics) must not track it: the per-task loop would update the module and
            ``vmap`` refuses to.
        params: θ, leaf tensors that require grad (:func:`metarl.adaptation.params_of`).
        batch: T tasks (shapes in :class:`TaskBatch`).
        loss_fn: ``(predictions (N, *out), targets (N, *target)) -> scalar``, for support
            and query sets alike.
        method: ``"maml"`` (second order), ``"fomaml"`` (first order) or ``"reptile"`` (the
            pseudo-gradient θ − mean φ, for an outer SGD step).
        steps, lr: inner steps and their learning rate(s) (see :data:`LearningRate`).
        vectorize: all tasks in one ``torch.func.vmap`` call, or a per-task Python loop;
            the two give the same numbers (tested), and which is faster depends on the model.
        metric_fn: an optional query metric (e.g. accuracy), reported detached.

    Reptile with inner minibatches or the inner Adam: :func:`reptile_adaptation`, which
    also returns the Adam's new state, then :func:`metarl.adaptation.reptile_gradient`.
    """
    mode = mode_of_method(method)
    if method == "reptile":
        fast, _, losses, metrics = reptile_adaptation(model, params, batch, loss_fn,
                                                      steps=steps, lr=lr, vectorize=vectorize,
                                                      metric_fn=metric_fn)
        return MetaGradient(reptile_gradient(params, fast), None, losses, metrics)
    learned_lr = (lr if isinstance(lr, Mapping) and any(v.requires_grad for v in lr.values())
                  else None)
    trained = [v.requires_grad for v in params.values()]
    if method != "reptile" and not all(trained) and (any(trained) or learned_lr is None):
        raise ValueError("meta_gradient differentiates every tensor of θ, so all of them must "
                         "require grad (a checkpoint's weights are plain tensors: use "
                         "{k: v.detach().requires_grad_() for k, v in params.items()}); "
                         "freezing some of them is not supported")
    losses, fast, metrics = task_losses(model, params, batch, loss_fn, steps=steps, lr=lr,
                                        mode=mode, vectorize=vectorize, metric_fn=metric_fn)
    inputs = list(params.values()) + (list(learned_lr.values()) if learned_lr else [])
    # θ without grad with learned rates: Meta-SGD that learns its rates alone
    differentiated = [x for x in inputs if x.requires_grad]
    found = iter(torch.autograd.grad(losses.mean(), differentiated, allow_unused=True))
    raw_grads = [next(found) if x.requires_grad else None for x in inputs]
    grads = [torch.zeros_like(x) if g is None else g
             for x, g in zip(inputs, raw_grads, strict=True)]
    grad_params = OrderedDict(zip(params, grads[: len(params)], strict=True))
    grad_lr = (OrderedDict(zip(learned_lr, grads[len(params):], strict=True))
               if learned_lr else None)
    return MetaGradient(grad_params, grad_lr, losses.detach(), metrics)


def adaptation_curve(model: nn.Module, params: Params, batch: TaskBatch, loss_fn: LossFn,
                     metric_fn: LossFn, *, steps: int, lr: LearningRate,
                     vectorize: bool = True, moments: AdamMoments | None = None,
                     minibatches: Tensor | None = None,
                     on_steps: Callable[[int], None] | None = None,
                     transductive: bool = True) -> Tensor:
    """Query metric before adaptation and after each of ``steps`` inner steps on the support set.

    The steps are gradient steps, or with ``moments`` steps of the inner Adam, each task
    starting from that state (a Reptile run adapts as it trained). ``minibatches``:
    ``(T, steps, B)`` indices of the support examples each step trains on (see
    :func:`minibatch_indices`); None: the whole support set at every step. ``on_steps(n)``
    is called as ``n`` more task-steps are done (for a progress bar; ``T * steps`` in all).
    ``transductive=False`` scores each query beside the support set alone
    (:func:`query_outputs`), where a model that normalizes with its batch's statistics
    otherwise sees all the queries at once.

    Returns a detached tensor of shape ``(T, steps + 1)``; column s is the metric after s steps.
    Raises :class:`NonFiniteLossError` when a step leaves a weight or the metric nan or inf
    (a too large learning rate), rather than report what such weights score (an accuracy of
    NaN logits is chance, not a result).
    """
    start = OrderedDict((k, v.detach()) for k, v in params.items())

    def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, functional: bool,
                 *indices: Tensor) -> Tensor:
        def scored(fast: Params) -> Tensor:
            """(metric, 1 if it and every weight are finite else 0)."""
            metric = metric_fn(query_outputs(model, fast, sx, qx, transductive), qy).detach()
            finite = torch.stack([torch.isfinite(v).all() for v in fast.values()]
                                 + [torch.isfinite(metric)]).all()
            return torch.stack([metric, finite.to(metric.dtype)])

        fast: Params = start
        state = moments
        values = [scored(fast)]
        for step in range(steps):
            fast, state = detached_step(fast, _support_loss(model, loss_fn, sx, sy, indices, step),
                                        lr=step_learning_rate(lr, step), moments=state,
                                        functional=functional)
            values.append(scored(fast))
            if on_steps is not None:  # under vmap this runs once for all the tasks
                on_steps(batch.num_tasks if functional else 1)
        return torch.stack(values)

    scores = map_tasks(one_task, batch, vectorize=vectorize,
                       extras=_minibatch_extras(minibatches, batch, steps))  # (T, steps + 1, 2)
    broken = (scores[..., 1] == 0).any(dim=0)
    if bool(broken.any()):
        step = int(broken.nonzero()[0])
        if step == 0:
            raise NonFiniteLossError(
                "the weights or the query metric are not finite before any test-time step: "
                "the weights themselves are broken (their training diverged)")
        rate = step_learning_rate(lr, step - 1)
        fewer = f"evaluate at most {step - 1} step(s) (metarl evaluate --steps {step - 1})"
        if isinstance(rate, Mapping):
            raise NonFiniteLossError(
                f"the weights or the query metric are not finite after {step} test-time "
                f"step(s) with the learned (Meta-SGD) rates, which are used at every step: "
                f"adaptation diverged" + (f"; {fewer}" if step > 1
                                          else " at the first step on these tasks"))
        raise NonFiniteLossError(
            f"the weights or the query metric are not finite after {step} test-time step(s) "
            f"(lr {rate:g}): adaptation diverged; lower evaluation.inner_lr"
            + (f" or evaluation.later_lr_scale, or {fewer}" if step > 1 else ""))
    return scores[..., 0]


def query_outputs(model: nn.Module, params: Params, support_x: Tensor, query_x: Tensor,
                  transductive: bool = True) -> Tensor:
    """The model's outputs ``(Q, *out)`` for one task's ``Q`` queries.

    Transductive: the queries as one batch. Otherwise each query in a batch of its own with
    the ``S`` support inputs (``(S + 1, ...)``, the query last), as the Reptile paper's
    non-transductive evaluation runs them: a model that normalizes with its batch's
    statistics then learns nothing from the other queries. Costs ``Q (S + 1)`` inputs.
    """
    if transductive:
        return functional_call(model, params, (query_x,))
    queries = query_x.shape[0]
    groups = torch.cat([support_x.unsqueeze(0).expand(queries, *support_x.shape),
                        query_x.unsqueeze(1)], dim=1)

    def last_output(inputs: Tensor) -> Tensor:
        return functional_call(model, params, (inputs,))[-1]

    return vmap(last_output)(groups)


def query_predictions(model: nn.Module, params: Params, batch: TaskBatch, loss_fn: LossFn, *,
                      steps: int, lr: LearningRate, moments: AdamMoments | None = None,
                      minibatches: Tensor | None = None, transductive: bool = True) -> Tensor:
    """Model outputs on each task's query inputs before and after each of ``steps`` inner steps
    (gradient steps, or with ``moments`` the inner Adam's; on ``minibatches`` of the support
    set where given; queries scored ``transductive``-ly or not: as :func:`adaptation_curve`
    takes them).

    Returns a detached tensor of shape ``(T, steps + 1, N_q, *out)``; index s along the second
    dimension is the output after s steps on the support set (for pictures, not training).
    """
    start = OrderedDict((k, v.detach()) for k, v in params.items())

    def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, functional: bool,
                 *indices: Tensor) -> Tensor:
        fast: Params = start
        state = moments
        outputs = [query_outputs(model, fast, sx, qx, transductive).detach()]
        for step in range(steps):
            fast, state = detached_step(fast, _support_loss(model, loss_fn, sx, sy, indices, step),
                                        lr=step_learning_rate(lr, step), moments=state,
                                        functional=functional)
            outputs.append(query_outputs(model, fast, sx, qx, transductive).detach())
        return torch.stack(outputs)

    return map_tasks(one_task, batch, vectorize=False,
                     extras=_minibatch_extras(minibatches, batch, steps))


def _support_loss(model: nn.Module, loss_fn: LossFn, support_x: Tensor, support_y: Tensor,
                  indices: tuple[Tensor, ...], step: int) -> Callable[[Params], Tensor]:
    """The loss of inner step ``step`` on one task's support set, or on its minibatch
    ``indices[0][step]`` where a task's ``(steps, B)`` indices are given."""
    if indices:
        support_x, support_y = support_x[indices[0][step]], support_y[indices[0][step]]

    def support_loss(p: Params) -> Tensor:
        return loss_fn(functional_call(model, p, (support_x,)), support_y)

    return support_loss


def _minibatch_extras(minibatches: Tensor | None, batch: TaskBatch,
                      steps: int) -> tuple[Tensor, ...]:
    if minibatches is None:
        return ()
    if minibatches.dim() != 3 or tuple(minibatches.shape[:2]) != (batch.num_tasks, steps):
        raise ValueError(f"minibatches must be (tasks, steps, batch) = ({batch.num_tasks}, "
                         f"{steps}, B) indices, got {tuple(minibatches.shape)}")
    support = batch.support_x.shape[1]
    if minibatches.dtype != torch.long or (
            minibatches.numel() and not 0 <= int(minibatches.min()) <= int(minibatches.max())
            < support):
        raise ValueError(f"minibatches must be int64 indices into the {support} support "
                         f"examples of a task")
    return (minibatches,)
