"""Meta-training of a functional model on batches of supervised tasks (any meta-method)."""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from metarl.adaptation import (
    AdamMoments,
    LearningRate,
    Params,
    params_of,
    reptile_gradient,
    zero_moments,
)
from metarl.config import AdaptationConfig, ConfigError, validate_config
from metarl.experiment import NonFiniteLossError
from metarl.supervised.meta import LossFn, meta_gradient, minibatch_indices, reptile_adaptation
from metarl.supervised.tasks import TaskBatch

SampleBatch = Callable[[torch.Generator], TaskBatch]
"""Draws one meta-batch of tasks from the given generator."""


def make_outer_optimizer(kind: Literal["adam", "sgd"], tensors: list[torch.Tensor],
                         lr: float) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(tensors, lr=lr)
    return torch.optim.SGD(tensors, lr=lr)


class SupervisedMetaTrainer:
    """θ (and Meta-SGD learning rates) updated from the meta-gradient of each task batch.

    Args:
        model: the network architecture; its own parameters are only the initial θ.
        sample_batch: draws a meta-batch of tasks.
        loss_fn: support and query loss.
        adaptation: inner-loop settings (method, steps, learning rate), validated as a
            config file's are (its ``vectorize`` setting is resolved into ``vectorize``).
        vectorize: resolved choice of the vmap path (True) or per-task loop (False).
        outer_optimizer, outer_lr: the outer update of θ.
        task_generator: the generator that every task batch is drawn from.
        metric: optional ``(name, fn)`` of a query metric (e.g. accuracy) reported after
            adaptation next to the query loss.
        device: where θ, the optimizer's state and each task batch are computed on. A copy
            of the model is moved there (the caller's stays where it is). Batches are drawn
            on the CPU, from ``task_generator``, and moved, so a seed draws the same tasks on
            every device. ``state_dict`` holds CPU tensors whatever the device.
        inner_optimizer: Reptile only: ``"adam"`` adapts with Adam with β1 = 0, whose state
            carries over from task to task and is kept in checkpoints (the Reptile paper's
            Omniglot protocol), ``"sgd"`` with gradient steps.
        inner_batch_size: Reptile only: each inner step trains on this many support examples
            (:func:`metarl.supervised.meta.minibatch_indices`); None: on all of them.
        outer_lr_final, total_iterations: with ``outer_lr_final`` the outer learning rate
            falls linearly from ``outer_lr`` at iteration 0 to ``outer_lr_final`` after
            ``total_iterations`` (the Reptile paper anneals its step size to 0).
    """

    def __init__(self, model: nn.Module, sample_batch: SampleBatch, loss_fn: LossFn, *,
                 adaptation: AdaptationConfig, vectorize: bool,
                 outer_optimizer: Literal["adam", "sgd"], outer_lr: float,
                 task_generator: torch.Generator,
                 metric: tuple[str, LossFn] | None = None,
                 device: torch.device | None = None,
                 inner_optimizer: Literal["sgd", "adam"] = "sgd",
                 inner_batch_size: int | None = None,
                 outer_lr_final: float | None = None,
                 total_iterations: int | None = None) -> None:
        adaptation = validate_config(adaptation)  # one built in code, checked too
        if adaptation.method != "reptile" and (inner_optimizer != "sgd"
                                               or inner_batch_size is not None):
            raise ValueError("the inner Adam and inner minibatches are Reptile's: MAML and "
                             "first-order MAML differentiate full-batch gradient steps")
        if outer_lr_final is not None and (total_iterations is None or total_iterations < 1):
            raise ValueError("outer_lr_final needs total_iterations, the length of the schedule")
        self.device = torch.device("cpu") if device is None else device
        on_device = all(p.device == self.device for p in model.parameters())
        # a copy: Module.to would move the caller's module too
        self.model = model if on_device else copy.deepcopy(model).to(self.device)
        self.params: Params = params_of(self.model)
        self.inner_lr: Params | None = None
        if adaptation.learn_inner_lr:
            self.inner_lr = OrderedDict(
                (k, torch.full_like(v, adaptation.inner_lr).requires_grad_(True))
                for k, v in self.params.items())
        self.sample_batch = sample_batch
        self.loss_fn = loss_fn
        self.adaptation = adaptation
        self.vectorize = vectorize
        self.task_generator = task_generator
        self.metric = metric
        tensors = list(self.params.values()) + list((self.inner_lr or {}).values())
        self.optimizer = make_outer_optimizer(outer_optimizer, tensors, outer_lr)
        self.outer_lr = outer_lr
        self.outer_lr_final = outer_lr_final
        self.total_iterations = total_iterations
        self.inner_batch_size = inner_batch_size
        self.inner_moments: AdamMoments | None = (zero_moments(self.params)
                                                  if inner_optimizer == "adam" else None)

    def outer_lr_at(self, iteration: int) -> float:
        """The outer learning rate of 0-based meta-iteration ``iteration``."""
        if self.outer_lr_final is None or self.total_iterations is None:
            return self.outer_lr
        done = min(iteration / self.total_iterations, 1.0)
        return self.outer_lr + (self.outer_lr_final - self.outer_lr) * done

    @property
    def learning_rate(self) -> LearningRate:
        return self.inner_lr if self.inner_lr is not None else self.adaptation.inner_lr

    def train_iteration(self, iteration: int) -> dict[str, float]:
        outer_lr = self.outer_lr_at(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = outer_lr
        batch = self.sample_batch(self.task_generator).to(self.device)
        metric_fn = self.metric[1] if self.metric is not None else None
        moments = None
        if self.adaptation.method == "reptile":
            minibatches = None
            if self.inner_batch_size is not None:
                minibatches = minibatch_indices(
                    batch.num_tasks, batch.support_x.shape[1], self.adaptation.inner_steps,
                    self.inner_batch_size, self.task_generator).to(self.device)
            fast, moments, losses, query_metric = reptile_adaptation(
                self.model, self.params, batch, self.loss_fn,
                steps=self.adaptation.inner_steps, lr=self.learning_rate,
                vectorize=self.vectorize, minibatches=minibatches, moments=self.inner_moments,
                metric_fn=metric_fn)
            grads, grad_lr = reptile_gradient(self.params, fast), None
        else:
            grads, grad_lr, losses, query_metric = meta_gradient(
                self.model, self.params, batch, self.loss_fn, method=self.adaptation.method,
                steps=self.adaptation.inner_steps, lr=self.learning_rate,
                vectorize=self.vectorize, metric_fn=metric_fn)
        # one read of the device's results (a GPU waits for its queued work at each read)
        grads_finite = torch.stack([torch.isfinite(g).all() for g in grads.values()]).all()
        query_loss, finite = torch.stack([losses.mean(), grads_finite.to(losses.dtype)]).tolist()
        if not math.isfinite(query_loss) or not finite:
            raise NonFiniteLossError(
                f"query loss {query_loss} or its gradient is not finite: meta-training "
                f"diverged; lower adaptation.inner_lr or training.outer_lr")
        for name, tensor in self.params.items():
            tensor.grad = grads[name]
        if self.inner_lr is not None and grad_lr is not None:
            for name, tensor in self.inner_lr.items():
                tensor.grad = grad_lr[name]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        updated = [p for group in self.optimizer.param_groups for p in group["params"]]
        if not bool(torch.stack([torch.isfinite(tensor).all() for tensor in updated]).all()):
            raise NonFiniteLossError(
                "the outer update made the weights (or learned rates) non-finite: "
                "meta-training diverged; lower training.outer_lr")
        if moments is not None:
            self.inner_moments = moments
        metrics = {"query_loss": query_loss}
        if self.outer_lr_final is not None:
            metrics["outer_lr"] = outer_lr
        if self.metric is not None and query_metric is not None:
            metrics[f"query_{self.metric[0]}"] = float(query_metric.mean())
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": _on_cpu(self.params),
            "inner_lr": None if self.inner_lr is None else _on_cpu(self.inner_lr),
            # load_state_dict moves the optimizer's state back to its tensors' device
            "optimizer": _on_cpu(self.optimizer.state_dict()),
            "task_generator": self.task_generator.get_state(),
            "inner_moments": None if self.inner_moments is None else {
                "second_moment": _on_cpu(self.inner_moments.second_moment),
                "steps": self.inner_moments.steps},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for name, tensor in self.params.items():
                tensor.copy_(state["params"][name])
            if self.inner_lr is not None:
                for name, tensor in self.inner_lr.items():
                    tensor.copy_(state["inner_lr"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.task_generator.set_state(state["task_generator"])
        if self.inner_moments is not None:
            self.inner_moments = stored_moments(state, self.device)


def stored_moments(state: dict[str, Any], device: torch.device) -> AdamMoments:
    """The inner Adam's state kept in a trainer's ``state`` (its ``state_dict``), on
    ``device``."""
    stored = state.get("inner_moments")
    if stored is None:
        raise ConfigError("the checkpoint holds no inner Adam state, which a run with "
                          "adaptation.inner_optimizer = adam keeps: it was not trained with it")
    return AdamMoments(OrderedDict((k, v.to(device)) for k, v in stored["second_moment"].items()),
                       int(stored["steps"]))


def _on_cpu(value: Any) -> Any:
    """``value`` (tensors in dicts and lists) with every tensor a detached copy on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return type(value)((k, _on_cpu(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return type(value)(_on_cpu(v) for v in value)
    return value
