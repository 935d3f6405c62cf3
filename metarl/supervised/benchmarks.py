"""Seconds per meta-iteration for the supervised tasks: per-task loop vs vmap vs learn2learn."""

from __future__ import annotations

import copy

import torch

from metarl.adaptation import params_of
from metarl.benchmark import (
    announce,
    is_installed,
    print_table,
    seconds_per_call,
    spread_note,
    synchronized,
)
from metarl.config import from_dict
from metarl.seeding import torch_generator
from metarl.supervised.meta import MetaMethod, meta_gradient, mse_loss
from metarl.supervised.sine import sample_sine_batch
from metarl.supervised.sine_experiment import SineConfig, SineExperiment
from metarl.supervised.tasks import TaskBatch


def _metarl_iteration(method: MetaMethod, steps: int, vectorize: str):
    config = from_dict(SineConfig, {"adaptation": {"method": method, "inner_steps": steps,
                                                   "vectorize": vectorize}})
    trainer = SineExperiment().make_trainer(config)
    counter = iter(range(10**9))
    return lambda: trainer.train_iteration(next(counter))


def _learn2learn_iteration(method: MetaMethod, steps: int):
    import learn2learn as l2l

    from metarl.supervised.sine_experiment import make_model

    config = SineConfig()
    model = make_model(config, torch_generator(0, "init"))
    maml = l2l.algorithms.MAML(model, lr=config.adaptation.inner_lr,
                               first_order=method == "fomaml")
    optimizer = torch.optim.Adam(maml.parameters(), lr=config.training.outer_lr)
    generator = torch_generator(0, "tasks")

    def iteration() -> None:
        _, batch = sample_sine_batch(config.task, config.training.meta_batch_size, generator)
        optimizer.zero_grad()
        _learn2learn_backward(maml, batch, mse_loss, steps)
        optimizer.step()

    return iteration


def _learn2learn_backward(maml, batch: TaskBatch, loss_fn, steps: int) -> None:
    """Accumulate learn2learn's meta-gradient of the mean query loss into ``maml``'s grads."""
    for t in range(batch.num_tasks):
        learner = maml.clone()
        for _ in range(steps):
            learner.adapt(loss_fn(learner(batch.support_x[t]), batch.support_y[t]))
        (loss_fn(learner(batch.query_x[t]), batch.query_y[t]) / batch.num_tasks).backward()


def learn2learn_gradient_gap(model: torch.nn.Module, batch: TaskBatch, loss_fn, *,
                             method: MetaMethod, steps: int, lr: float) -> float:
    """max |ours - learn2learn's| / max |ours| over the meta-gradient of one batch, ours
    vectorized, both in float64: shows that the timed computations are the same (~1e-15;
    in float32, batch norm over a few images leaves rounding differences of up to ~1e-2)."""
    import dataclasses

    import learn2learn as l2l

    model = copy.deepcopy(model).double()
    batch = dataclasses.replace(batch, **{
        field.name: getattr(batch, field.name).double()
        for field in dataclasses.fields(batch) if getattr(batch, field.name).is_floating_point()})
    ours = meta_gradient(model, params_of(model), batch, loss_fn, method=method, steps=steps,
                         lr=lr, vectorize=True).params
    twin = copy.deepcopy(model)
    maml = l2l.algorithms.MAML(twin, lr=lr, first_order=method == "fomaml")
    _learn2learn_backward(maml, batch, loss_fn, steps)
    theirs = {name: p.grad if p.grad is not None else torch.zeros_like(p)
              for name, p in twin.named_parameters()}
    scale = max(float(g.abs().max()) for g in ours.values())
    return max(float((ours[k] - theirs[k]).abs().max()) for k in ours) / scale


def benchmark_sine(*, repeats: int) -> list[list[object]]:
    """Print (and return) ms per meta-iteration, paper setting: meta-batch 25, K = 10."""
    rows: list[list[object]] = []
    has_l2l = is_installed("learn2learn")
    for method in ("maml", "fomaml", "reptile"):
        for steps in (1, 5):
            announce(f"sine {method}, {steps} inner step{'s' if steps > 1 else ''}")
            loop = seconds_per_call(_metarl_iteration(method, steps, "loop"), repeats)
            vmap = seconds_per_call(_metarl_iteration(method, steps, "vmap"), repeats)
            compared = has_l2l and method != "reptile"  # learn2learn has no Reptile
            l2l = (seconds_per_call(_learn2learn_iteration(method, steps), repeats)
                   if compared else None)
            gap = _sine_gradient_gap(method, steps) if compared else None
            rows.append([method, steps, loop.scaled(1e3), vmap.scaled(1e3),
                         f"{loop.median / vmap.median:.1f}x",
                         "-" if l2l is None else l2l.scaled(1e3),
                         "-" if l2l is None else f"{l2l.median / vmap.median:.1f}x",
                         "-" if gap is None else f"{gap:.0e}"])
    print_table("sine regression, ms per meta-iteration (meta-batch 25, K=10, MLP 1-40-40-1; "
                f"{spread_note(repeats)})" + _learn2learn_note(has_l2l),
                ["method", "inner steps", "loop ms", "vmap ms", "vmap speed-up",
                 "learn2learn ms", "vmap speed-up vs l2l", "gradient gap"], rows)
    return rows


def _learn2learn_note(installed: bool) -> str:
    if installed:
        return ("\n(gradient gap: max |ours - learn2learn's| / max |ours| of one batch's "
                "meta-gradient, in float64 on the CPU)")
    return " (learn2learn not installed; docs/BENCHMARKS.md says how to install it)"


def _sine_gradient_gap(method: MetaMethod, steps: int) -> float:
    from metarl.supervised.sine_experiment import make_model

    config = SineConfig()
    _, batch = sample_sine_batch(config.task, config.training.meta_batch_size,
                                 torch_generator(1, "tasks"))
    return learn2learn_gradient_gap(make_model(config, torch_generator(0, "init")), batch,
                                    mse_loss, method=method, steps=steps,
                                    lr=config.adaptation.inner_lr)


def _omniglot_setup(ways: int, shots: int, meta_batch: int, steps: int, lr: float,
                    device: torch.device):
    from metarl.supervised.omniglot import Conv4, class_pool, reset_conv4, sample_omniglot_batch
    from metarl.supervised.omniglot_data import OmniglotImages

    # Random strokes cost the same as real images: the benchmark needs no data set.
    images = OmniglotImages(
        (torch.rand(1200, 20, 28, 28, generator=torch_generator(0, "bench-images")) > 0.8)
        .to(torch.uint8).mul_(255).numpy(), tuple(f"c{i}" for i in range(1200)))
    pool = class_pool(images, range(1200), rotations=True)
    model = Conv4(ways)
    reset_conv4(model, torch_generator(0, "init"))
    generator = torch_generator(0, "tasks")

    def sample():  # drawn on the CPU and moved, as training does
        return sample_omniglot_batch(pool, meta_batch, ways, shots, shots,
                                     generator).to(device)

    return model.to(device), sample


def _omniglot_metarl(setting: tuple[int, int, int, int, float], method: MetaMethod,
                     vectorize: bool, device: torch.device):
    from metarl.supervised.meta import meta_gradient
    from metarl.supervised.omniglot import cross_entropy

    ways, shots, meta_batch, steps, lr = setting
    model, sample = _omniglot_setup(ways, shots, meta_batch, steps, lr, device)
    params = params_of(model)
    optimizer = torch.optim.Adam(list(params.values()), lr=1e-3)

    def iteration() -> None:
        grads = meta_gradient(model, params, sample(), cross_entropy, method=method,
                              steps=steps, lr=lr, vectorize=vectorize).params
        for name, tensor in params.items():
            tensor.grad = grads[name]
        optimizer.step()

    return synchronized(iteration, device)


def _omniglot_learn2learn(setting: tuple[int, int, int, int, float], method: str,
                          device: torch.device):
    import learn2learn as l2l

    from metarl.supervised.omniglot import cross_entropy

    ways, shots, meta_batch, steps, lr = setting
    model, sample = _omniglot_setup(ways, shots, meta_batch, steps, lr, device)
    maml = l2l.algorithms.MAML(model, lr=lr, first_order=method == "fomaml")
    optimizer = torch.optim.Adam(maml.parameters(), lr=1e-3)

    def iteration() -> None:
        batch = sample()
        optimizer.zero_grad()
        _learn2learn_backward(maml, batch, cross_entropy, steps)
        optimizer.step()

    return synchronized(iteration, device)


def _omniglot_gradient_gap(setting: tuple[int, int, int, int, float],
                           method: MetaMethod) -> float:
    """On the CPU: the gap is a float64 check of the computation, not a timing."""
    from metarl.supervised.omniglot import cross_entropy

    ways, shots, meta_batch, steps, lr = setting
    model, sample = _omniglot_setup(ways, shots, meta_batch, steps, lr, torch.device("cpu"))
    return learn2learn_gradient_gap(model, sample(), cross_entropy, method=method,
                                    steps=steps, lr=lr)


# (ways, shots, meta-batch, inner steps, inner lr) of the paper's Omniglot training settings
OMNIGLOT_SETTINGS: dict[str, tuple[int, int, int, int, float]] = {
    "5-way 1-shot, batch 32, 1 step": (5, 1, 32, 1, 0.4),
    "20-way 1-shot, batch 16, 5 steps": (20, 1, 16, 5, 0.1),
}


def benchmark_omniglot(*, repeats: int,
                       device: torch.device | None = None) -> list[list[object]]:
    """Print (and return) seconds per meta-iteration for the paper's Omniglot settings, on
    ``device`` (default the CPU)."""
    device = torch.device("cpu") if device is None else device
    repeats = max(1, repeats // 4)
    has_l2l = is_installed("learn2learn")
    rows: list[list[object]] = []
    for name, setting in OMNIGLOT_SETTINGS.items():
        for method in ("maml", "fomaml", "reptile"):
            announce(f"Omniglot {name}, {method}")
            loop = seconds_per_call(_omniglot_metarl(setting, method, False, device), repeats,
                                    warmup=1)
            vmap = seconds_per_call(_omniglot_metarl(setting, method, True, device), repeats,
                                    warmup=1)
            compared = has_l2l and method != "reptile"  # learn2learn has no Reptile
            l2l = (seconds_per_call(_omniglot_learn2learn(setting, method, device), repeats,
                                    warmup=1) if compared else None)
            gap = _omniglot_gradient_gap(setting, method) if compared else None
            rows.append([name, method, loop, vmap, f"{loop.median / vmap.median:.2f}x",
                         "-" if l2l is None else l2l,
                         "-" if l2l is None else f"{l2l.median / vmap.median:.2f}x",
                         "-" if gap is None else f"{gap:.0e}"])
    print_table(f"Omniglot on {device}, seconds per meta-iteration (Conv4, 28x28, 1 query "
                f"per class; {spread_note(repeats)})" + _learn2learn_note(has_l2l),
                ["setting", "method", "loop s", "vmap s", "vmap speed-up", "learn2learn s",
                 "vmap speed-up vs l2l", "gradient gap"], rows)
    return rows
