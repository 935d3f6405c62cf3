"""MAML-TRPO: policy-gradient adaptation per task, TRPO on the post-adaptation episodes.

One meta-iteration (Finn et al. 2017, Algorithm 3):

1. draw T tasks; sample E episodes of each with θ;
2. adapt: φ_t = θ − α ∇θ L_PG(θ; episodes of t) (one or more steps, resampling with the
   current φ before each further step);
3. sample E post-adaptation episodes of each task with φ_t;
4. TRPO on θ: minimize the importance-weighted surrogate of the post-adaptation episodes
   subject to mean KL(π_φ_old ‖ π_φ(θ)) ≤ δ, differentiating through step 2 (second order,
   or first order with ∂φ/∂θ = I).
"""

from __future__ import annotations

import functools
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Normal

from metarl.adaptation import MODE_OF_METHOD, AdaptMode, Params, adapt
from metarl.experiment import NonFiniteLossError
from metarl.rl.baseline import baseline_features, fit_linear_baseline, predict_baseline
from metarl.rl.episodes import BatchedEnv, Episodes, PolicyFn, sample_episodes
from metarl.rl.losses import (
    StepBatch,
    log_probs,
    mean_kl,
    pack_steps,
    reinforce_loss,
    subsample_steps,
    surrogate_loss,
)
from metarl.rl.policy import expand_params
from metarl.rl.returns import discounted_returns, generalized_advantages, normalize_per_task
from metarl.rl.trpo import TRPOStep, trpo_update


@dataclass(frozen=True)
class AdvantageSettings:
    discount: float = 0.99
    gae_lambda: float = 1.0
    normalize: bool = True


@functools.cache
def _load_jvp_rules_quietly() -> None:
    """Run ``torch.func.jvp`` once without the warning torch raises on its first call: it
    loads its jvp decompositions with ``torch.jit.script``, which is deprecated (in torch
    2.13 a DeprecationWarning, which pytest and ``python -W`` show; filtered by its message,
    so a FutureWarning, which every user sees, is kept quiet too). Later calls raise none."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")
        torch.func.jvp(torch.sin, (torch.zeros(1),), (torch.ones(1),))


def compute_advantages(episodes: Episodes, settings: AdvantageSettings) -> Tensor:
    """GAE with the per-task linear feature baseline fitted on these episodes, ``(T, S, L)``.

    Raises :class:`NonFiniteLossError` when a reward or observation is nan or inf (the
    environment's fault, reported before the baseline's fit breaks on it; padding is checked
    too, since masking multiplies and nan · 0 stays nan).
    """
    mask = episodes.mask.to(torch.float64)
    rewards = episodes.rewards.to(torch.float64)
    for name, values in (("reward", rewards), ("observation", episodes.observations)):
        if not bool(torch.isfinite(values).all()):
            bad = values[~torch.isfinite(values)][0]
            raise NonFiniteLossError(f"a sampled {name} is {float(bad)}: the environment "
                                     f"returned a non-finite value")
    ends = episodes.ends
    returns = discounted_returns(rewards, mask, settings.discount, ends)
    features = baseline_features(episodes.observations, mask, episodes.times)
    values = predict_baseline(features, fit_linear_baseline(features, returns, mask))
    advantages = generalized_advantages(rewards, values, mask, settings.discount,
                                        settings.gae_lambda, ends)
    if settings.normalize:
        advantages = normalize_per_task(advantages, mask)
    return advantages.to(torch.float32)


def adapt_policy(policy: PolicyFn, params: Params, support: Sequence[StepBatch],
                 learning_rates: Sequence[float], mode: AdaptMode) -> Params:
    """Task-batched fast weights after one policy-gradient step per support batch.

    Args:
        params: task-batched parameters ``(T, ...)`` to start from.
        support: the episodes of each inner step (step s was sampled with the weights
            after s steps).
        learning_rates: the inner learning rate of each step.
    """
    fast = params
    for batch, lr in zip(support, learning_rates, strict=True):
        def support_loss(p: Params, batch: StepBatch = batch) -> Tensor:
            return reinforce_loss(policy, p, batch)

        fast = adapt(fast, support_loss, steps=1, lr=lr, mode=mode)
    return fast


def check_adapted_policy(fast: Params, step: int, lr: float) -> None:
    """Raise :class:`NonFiniteLossError` when the fast weights after inner step ``step`` (at
    learning rate ``lr``) can't act: a weight is nan or inf, or an action standard deviation
    ``exp(log_std)`` is 0 or inf. A too large inner learning rate does this."""
    for name, tensor in fast.items():
        if not bool(torch.isfinite(tensor).all()):
            bad = float(tensor[~torch.isfinite(tensor)][0])
            raise NonFiniteLossError(f"inner step {step} (lr {lr:g}) diverged: a weight of "
                                     f"{name} is {bad}; lower the inner learning rate")
    std = fast["log_std"].exp()
    broken = (std == 0) | torch.isinf(std)
    if bool(broken.any()):
        raise NonFiniteLossError(f"inner step {step} (lr {lr:g}) diverged: an action standard "
                                 f"deviation is {float(std[broken][0])}; lower the inner "
                                 "learning rate")


def detached(params: Params) -> Params:
    return OrderedDict((k, v.detach()) for k, v in params.items())


@dataclass
class Rollouts:
    """Episodes sampled before adaptation and after each inner step, per task.

    ``weights[s]`` are the task-batched parameters (detached) that sampled ``episodes[s]``:
    θ for s = 0, the fast weights after s steps otherwise.
    """

    episodes: list[Episodes]
    support: list[StepBatch]
    weights: list[Params]

    @property
    def fast(self) -> Params:
        """The final fast weights."""
        return self.weights[-1]


def rollouts_with_adaptation(env: BatchedEnv, policy: PolicyFn, params: Params, *,
                             num_tasks: int, episodes_per_task: int, max_steps: int,
                             learning_rates: Sequence[float], advantages: AdvantageSettings,
                             generator: torch.Generator, action_scale: float = 1.0,
                             step_budget: bool = False,
                             timings: dict[str, float] | None = None,
                             on_sampled: Callable[[], object] | None = None) -> Rollouts:
    """Sample with θ, adapt, sample with φ_1, adapt, ... (len(learning_rates) steps).

    ``step_budget``: sample ``episodes_per_task · max_steps`` steps per task rather than
    ``episodes_per_task`` episodes (see :func:`sample_episodes`). ``on_sampled`` is called
    after each of the ``len(learning_rates) + 1`` batches is sampled (a progress bar's).

    Returns :class:`Rollouts`: every sampled batch of episodes (``len(learning_rates) + 1``
    of them), the support batches used for the steps, and the detached task-batched weights
    that sampled each batch (``.fast``: the final ones).
    """
    timings = timings if timings is not None else {}
    # a copy: expand_params gives views, and θ is updated in place after sampling
    fast = expand_params(OrderedDict((k, v.detach().clone()) for k, v in params.items()),
                         num_tasks)
    episodes, support, weights = [], [], []
    for step in range(len(learning_rates) + 1):
        weights.append(fast)
        start = time.perf_counter()
        batch = sample_episodes(env, policy, fast, num_tasks=num_tasks,
                                episodes_per_task=episodes_per_task, max_steps=max_steps,
                                generator=generator, action_scale=action_scale,
                                step_budget=step_budget)
        timings["sampling"] = timings.get("sampling", 0.0) + time.perf_counter() - start
        episodes.append(batch)
        if on_sampled is not None:
            on_sampled()
        if step == len(learning_rates):
            break
        start = time.perf_counter()
        support.append(pack_steps(batch, compute_advantages(batch, advantages)))
        fast = detached(adapt_policy(policy, fast, support[-1:], [learning_rates[step]],
                                     "detached"))
        check_adapted_policy(fast, step + 1, learning_rates[step])
        timings["adaptation"] = timings.get("adaptation", 0.0) + time.perf_counter() - start
    return Rollouts(episodes, support, weights)


def _leaf_copy(params: Params) -> Params:
    return OrderedDict((k, v.detach().clone().requires_grad_(True)) for k, v in params.items())


def meta_fisher_product(policy: PolicyFn, params: Params, support: Sequence[StepBatch],
                        learning_rates: Sequence[float], valid: StepBatch, *, mode: AdaptMode,
                        damping: float, curvature_stride: int = 1) -> Callable[[Tensor], Tensor]:
    """v ↦ (∇²_θ KL) v + damping · v at θ, the KL taken through the adaptation (estimated from
    every ``curvature_stride``-th step when that is above 1).

    At θ_old the KL's gradient with respect to the adapted weights φ vanishes, so its Hessian
    is exactly Jᵀ F J with F the Fisher information of the post-adaptation policy (on the
    valid steps) and J = ∂φ/∂θ = Π_s (I − α_s H_s), H_s the Hessian of inner step s's loss
    (J = I for first-order adaptation). Each product costs two inner Hessian-vector
    products per inner step and one Fisher-vector product, instead of differentiating the
    whole adaptation three times.

    Args:
        params: θ (shared by all tasks), each tensor of shape S.
        support: the packed steps of each inner step; valid: the post-adaptation steps.
        learning_rates: inner learning rate of each step.
        curvature_stride: estimate the inner Hessians H_s and the Fisher F from every
            ``curvature_stride``-th step of their batches (:func:`subsample_steps`), about
            that many times cheaper per product; the points they are taken at (θ, φ_1, ...)
            still come from all the support steps. 1: exact.
    """
    if curvature_stride < 1:
        raise ValueError(f"curvature_stride must be at least 1, got {curvature_stride}")
    num_tasks = valid.observations.shape[0]
    names = list(params)
    second_order = mode == "second_order"
    # Inner gradients at the (old) fast weights before each step, kept for Hessian products.
    points: list[Params] = []
    inner_grads: list[tuple[Tensor, ...]] = []
    fast = expand_params(detached(params), num_tasks)
    for batch, lr in zip(support, learning_rates, strict=True):
        point = _leaf_copy(fast)
        grads = torch.autograd.grad(reinforce_loss(policy, point, batch),
                                    list(point.values()),
                                    create_graph=second_order and curvature_stride == 1)
        points.append(point)
        if second_order and curvature_stride > 1:
            inner_grads.append(torch.autograd.grad(
                reinforce_loss(policy, point, subsample_steps(batch, curvature_stride)),
                list(point.values()), create_graph=True))
        else:
            inner_grads.append(grads)
        fast = OrderedDict((k, (point[k] - lr * g).detach())
                           for k, g in zip(names, grads, strict=True))
    valid = subsample_steps(valid, curvature_stride)
    final = _leaf_copy(fast)
    mean = policy(final, valid.observations).mean
    std = final["log_std"].detach().exp()  # (T, act_dim)
    count = valid.mask.sum(dim=1).clamp_min(1.0)  # (T,)
    # Fisher of mean_t mean_i KL: 1/σ² on the action mean, 2 on log σ, per task weight.
    mean_weight = (valid.mask / (count[:, None] * num_tasks))[:, :, None] / std[:, None, :] ** 2
    has_steps = (valid.mask.sum(dim=1) > 0).to(std.dtype)[:, None]
    mean_params = [k for k in names if k != "log_std"]

    def hessian_product(step: int, vector: list[Tensor]) -> list[Tensor]:
        return list(torch.autograd.grad(inner_grads[step], list(points[step].values()),
                                        grad_outputs=vector, retain_graph=True))

    def jacobian_step(step: int, vector: list[Tensor]) -> list[Tensor]:
        if not second_order:
            return vector
        hv = hessian_product(step, vector)
        return [v - learning_rates[step] * h for v, h in zip(vector, hv, strict=True)]

    _load_jvp_rules_quietly()

    def fisher(vector: list[Tensor]) -> list[Tensor]:
        tangents = dict(zip(names, vector, strict=True))

        def mean_of(p: dict[str, Tensor]) -> Tensor:
            return policy({**final, **p}, valid.observations).mean

        mean_tangent = torch.func.jvp(
            mean_of, ({k: final[k].detach() for k in mean_params},),
            ({k: tangents[k] for k in mean_params},))[1]
        pulled = torch.autograd.grad(mean, [final[k] for k in mean_params],
                                     grad_outputs=mean_weight * mean_tangent,
                                     retain_graph=True)
        out = dict(zip(mean_params, pulled, strict=True))
        out["log_std"] = 2.0 * tangents["log_std"] * has_steps / num_tasks
        return [out[k] for k in names]

    def product(flat_vector: Tensor) -> Tensor:
        pieces, offset = [], 0
        for k in names:
            n = params[k].numel()
            piece = flat_vector[offset:offset + n].view_as(params[k])
            pieces.append(piece.unsqueeze(0).expand(num_tasks, *piece.shape))
            offset += n
        vector = pieces
        for step in range(len(points)):
            vector = jacobian_step(step, vector)
        vector = fisher(vector)
        for step in reversed(range(len(points))):
            vector = jacobian_step(step, vector)
        flat = torch.cat([v.sum(dim=0).reshape(-1) for v in vector])
        return flat.detach() + damping * flat_vector

    return product


@dataclass(frozen=True)
class TRPOSettings:
    max_kl: float = 0.01
    cg_iterations: int = 10
    cg_damping: float = 1e-5
    backtrack_ratio: float = 0.8
    max_backtracks: int = 15
    curvature_stride: int = 1


@dataclass
class MAMLTRPO:
    """The state of a MAML-TRPO run: θ and the generators of tasks (and reset noise) and of
    action noise.

    ``inner_steps = 0`` gives plain multi-task TRPO (the paper's "pretrained" baseline).
    """

    policy: PolicyFn
    params: Params
    sample_tasks: Callable[[int, np.random.Generator], list[dict[str, Any]]]
    make_env: Callable[[list[dict[str, Any]], int, np.random.Generator], BatchedEnv]
    num_tasks: int
    episodes_per_task: int
    max_steps: int
    inner_steps: int
    inner_lr: float
    method: Literal["maml", "fomaml"]
    advantages: AdvantageSettings
    trpo: TRPOSettings
    task_rng: np.random.Generator
    action_generator: torch.Generator
    action_scale: float = 1.0
    step_budget: bool = False
    last_timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in ("maml", "fomaml"):  # TRPO needs φ differentiable in θ
            raise ValueError(f"method must be maml or fomaml, got {self.method!r}")

    def train_iteration(self, iteration: int) -> dict[str, float]:
        timings: dict[str, float] = {}
        tasks = self.sample_tasks(self.num_tasks, self.task_rng)
        env = self.make_env(tasks, self.episodes_per_task, self.task_rng)
        lrs = [self.inner_lr] * self.inner_steps
        rollouts = rollouts_with_adaptation(
            env, self.policy, self.params, num_tasks=self.num_tasks,
            episodes_per_task=self.episodes_per_task, max_steps=self.max_steps,
            learning_rates=lrs, advantages=self.advantages, generator=self.action_generator,
            action_scale=self.action_scale, step_budget=self.step_budget, timings=timings)
        start = time.perf_counter()
        valid = pack_steps(rollouts.episodes[-1],
                           compute_advantages(rollouts.episodes[-1], self.advantages))
        with torch.no_grad():
            old = self.policy(rollouts.fast, valid.observations)
            old = Normal(old.loc.detach(), old.scale.detach())
            old_log_probs = log_probs(self.policy, rollouts.fast, valid)
        mode: AdaptMode = MODE_OF_METHOD[self.method]

        def loss_and_kl(differentiable: bool) -> tuple[Tensor, Tensor]:
            theta = self.params if differentiable else detached(self.params)
            fast = adapt_policy(self.policy, expand_params(theta, self.num_tasks),
                                rollouts.support, lrs, mode if differentiable else "detached")
            if not differentiable:
                fast = detached(fast)
            with torch.set_grad_enabled(differentiable):
                loss = surrogate_loss(self.policy, fast, valid, old_log_probs)
                kl = mean_kl(self.policy, fast, valid, old)
            return loss, kl

        fisher = meta_fisher_product(self.policy, self.params, rollouts.support, lrs, valid,
                                     mode=mode, damping=self.trpo.cg_damping,
                                     curvature_stride=self.trpo.curvature_stride)
        step: TRPOStep = trpo_update(
            list(self.params.values()), loss_and_kl, fisher_product=fisher,
            max_kl=self.trpo.max_kl,
            cg_iterations=self.trpo.cg_iterations, cg_damping=self.trpo.cg_damping,
            backtrack_ratio=self.trpo.backtrack_ratio, max_backtracks=self.trpo.max_backtracks)
        timings["trpo"] = time.perf_counter() - start
        if not np.isfinite(step.loss_before):
            raise NonFiniteLossError(f"surrogate loss {step.loss_before} is not finite")
        self.last_timings = timings
        returns = [float(e.task_returns().mean()) for e in rollouts.episodes]
        metrics = {"return_before": returns[0], "return_after": returns[-1],
                   "episodes_after": float(rollouts.episodes[-1].num_episodes().float().mean()),
                   "surrogate_before": step.loss_before, "surrogate_after": step.loss_after,
                   "kl": step.kl, "backtracks": float(step.backtracks),
                   "step_accepted": float(step.accepted)}
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": detached(OrderedDict((k, v.clone()) for k, v in self.params.items())),
            "task_rng": self.task_rng.bit_generator.state,
            "action_generator": self.action_generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for name, tensor in self.params.items():
                tensor.copy_(state["params"][name])
        self.task_rng.bit_generator.state = state["task_rng"]
        self.action_generator.set_state(state["action_generator"])
