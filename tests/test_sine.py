"""The sine task distribution, evaluation statistics and a short meta-training that must help."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metarl.config import from_dict
from metarl.evaluation import summarize
from metarl.experiment import EvaluateOptions
from metarl.supervised.sine import SineTaskConfig, sample_sine_batch
from metarl.supervised.sine_experiment import SineConfig, SineExperiment


def test_sine_tasks_follow_the_paper_distribution():
    config = SineTaskConfig()
    generator = torch.Generator().manual_seed(0)
    tasks, batch = sample_sine_batch(config, 2000, generator)
    assert batch.support_x.shape == (2000, 10, 1) and batch.query_y.shape == (2000, 10, 1)
    assert tasks.amplitude.min() >= 0.1 and tasks.amplitude.max() <= 5.0
    assert tasks.phase.min() >= 0.0 and tasks.phase.max() <= math.pi
    assert batch.support_x.min() >= -5.0 and batch.query_x.max() <= 5.0
    # roughly uniform: means of U[0.1, 5] and U[0, π]
    assert abs(tasks.amplitude.mean().item() - 2.55) < 0.1
    assert abs(tasks.phase.mean().item() - math.pi / 2) < 0.1
    expected = tasks.amplitude[:, None, None] * torch.sin(batch.support_x
                                                          + tasks.phase[:, None, None])
    torch.testing.assert_close(batch.support_y, expected)


def test_task_sampling_is_reproducible_from_a_seed():
    a = sample_sine_batch(SineTaskConfig(), 5, torch.Generator().manual_seed(3))[1]
    b = sample_sine_batch(SineTaskConfig(), 5, torch.Generator().manual_seed(3))[1]
    c = sample_sine_batch(SineTaskConfig(), 5, torch.Generator().manual_seed(4))[1]
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_y, b.query_y)
    assert not torch.equal(a.support_x, c.support_x)


def test_summarize_matches_hand_computation():
    values = np.array([[1.0, 10.0], [3.0, 14.0], [5.0, 12.0]])
    out = summarize(values)
    assert out["mean"] == pytest.approx([3.0, 12.0])
    # std with ddof=1: [2, 2]; sem = 2 / sqrt(3)
    assert out["sem"] == pytest.approx([2 / math.sqrt(3)] * 2)
    assert out["ci95"] == pytest.approx([1.959964 * 2 / math.sqrt(3)] * 2, rel=1e-6)


def test_short_meta_training_makes_one_step_adaptation_help(tmp_path):
    config = from_dict(SineConfig, {"training": {"iterations": 300},
                                    "run": {"progress": False, "tensorboard": False}})
    experiment = SineExperiment()
    trainer = experiment.make_trainer(config)
    for i in range(config.training.iterations):
        trainer.train_iteration(i)
    state = {"trainer": trainer.state_dict(), "iteration": 300}
    result = experiment.evaluate(config, state, tmp_path,
                                 EvaluateOptions(steps=1, tasks=200, seed=5))
    before, after = result["by_shots"]["10"]["mean"]
    assert after < 0.85 * before, (before, after)
    # the same tasks evaluated with the untrained initialization do not improve as much
    untrained = experiment.make_trainer(config).state_dict()
    result0 = experiment.evaluate(config, {"trainer": untrained, "iteration": 0}, tmp_path,
                                  EvaluateOptions(steps=1, tasks=200, seed=5))
    _, a0 = result0["by_shots"]["10"]["mean"]
    assert after < a0


def test_meta_sgd_learns_per_parameter_rates_and_evaluation_uses_them(tmp_path):
    config = from_dict(SineConfig, {"adaptation": {"learn_inner_lr": True},
                                    "training": {"iterations": 20, "meta_batch_size": 5},
                                    "run": {"progress": False, "tensorboard": False}})
    experiment = SineExperiment()
    trainer = experiment.make_trainer(config)
    for i in range(20):
        trainer.train_iteration(i)
    state = {"trainer": trainer.state_dict(), "iteration": 20}
    rates = state["trainer"]["inner_lr"]
    assert rates is not None and set(rates) == set(state["trainer"]["params"])
    assert any(not torch.allclose(r, torch.full_like(r, 0.01)) for r in rates.values())
    result = experiment.evaluate(config, state, tmp_path,
                                 EvaluateOptions(steps=2, tasks=10, seed=1))
    assert result["inner_lr"] == "learned (Meta-SGD)"
    assert "maml + Meta-SGD, K=5 " in result["table"]
    params = state["trainer"]["params"]
    for k in config.evaluation.shots:
        with_rates, with_fixed = (
            experiment.curves(config, params, lr, shots=k, tasks=10, steps=2, seed=1)
            for lr in (rates, [0.01, 0.005]))
        np.testing.assert_allclose(result["by_shots"][str(k)]["mean"], with_rates.mean(axis=0),
                                   rtol=1e-6)
        assert np.abs(with_rates[:, 1:] - with_fixed[:, 1:]).max() > 1e-4
