"""Seconds per meta-iteration for sine regression: per-task loop vs vmap vs learn2learn."""

from __future__ import annotations

import torch

from metarl.benchmark import is_installed, print_table, seconds_per_call
from metarl.config import from_dict
from metarl.seeding import torch_generator
from metarl.supervised.sine import sample_sine_batch
from metarl.supervised.sine_experiment import SineConfig, SineExperiment


def _metarl_iteration(method: str, steps: int, vectorize: str):
    config = from_dict(SineConfig, {"adaptation": {"method": method, "inner_steps": steps,
                                                   "vectorize": vectorize}})
    trainer = SineExperiment().make_trainer(config)
    counter = iter(range(10**9))
    return lambda: trainer.train_iteration(next(counter))


def _learn2learn_iteration(steps: int):
    import learn2learn as l2l

    config = SineConfig()
    from metarl.supervised.sine_experiment import make_model

    model = make_model(config, torch_generator(0, "init"))
    maml = l2l.algorithms.MAML(model, lr=config.adaptation.inner_lr, first_order=False)
    optimizer = torch.optim.Adam(maml.parameters(), lr=config.training.outer_lr)
    generator = torch_generator(0, "tasks")
    loss_fn = torch.nn.MSELoss()

    def iteration() -> None:
        _, batch = sample_sine_batch(config.task, config.training.meta_batch_size, generator)
        optimizer.zero_grad()
        for t in range(batch.num_tasks):
            learner = maml.clone()
            for _ in range(steps):
                learner.adapt(loss_fn(learner(batch.support_x[t]), batch.support_y[t]))
            loss = loss_fn(learner(batch.query_x[t]), batch.query_y[t])
            (loss / batch.num_tasks).backward()
        optimizer.step()

    return iteration


def benchmark_sine(*, repeats: int) -> list[list[object]]:
    """Print (and return) ms per meta-iteration, paper setting: meta-batch 25, K = 10."""
    rows: list[list[object]] = []
    has_l2l = is_installed("learn2learn")
    for method in ("maml", "fomaml", "reptile"):
        for steps in (1, 5):
            loop = seconds_per_call(_metarl_iteration(method, steps, "loop"), repeats)
            vmap = seconds_per_call(_metarl_iteration(method, steps, "vmap"), repeats)
            l2l = (seconds_per_call(_learn2learn_iteration(steps), repeats)
                   if has_l2l and method == "maml" else None)
            rows.append([method, steps, loop * 1e3, vmap * 1e3, f"{loop / vmap:.1f}x",
                         "-" if l2l is None else l2l * 1e3])
    note = "" if has_l2l else " (learn2learn not installed: pip install learn2learn)"
    print_table("sine regression, ms per meta-iteration (meta-batch 25, K=10, MLP 1-40-40-1)"
                + note, ["method", "inner steps", "loop ms", "vmap ms", "vmap speed-up",
                         "learn2learn ms"], rows)
    return rows
