"""The sine task distribution, evaluation statistics and a short meta-training that must help."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import metarl.supervised.sine_experiment as sine_experiment
from metarl.config import from_dict
from metarl.evaluation import summarize
from metarl.experiment import EvaluateOptions
from metarl.supervised.sine import SineTaskConfig, sample_sine_batch
from metarl.supervised.sine_experiment import SineConfig, SineExperiment, evaluation_lr


def test_make_mlp_builds_the_layers_asked_for_with_pytorchs_default_initialization():
    """1 -> 40 -> 30 -> 2 with tanh between the layers (none after the last), float64;
    each layer's weights and biases drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), filling
    that range; an unknown activation is refused."""
    from torch import nn

    from metarl.supervised.models import make_mlp

    model = make_mlp(1, [40, 30], 2, "tanh", generator=torch.Generator().manual_seed(0),
                     dtype=torch.float64)
    assert [type(layer) for layer in model] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh,
                                                nn.Linear]
    assert model(torch.zeros(5, 1, dtype=torch.float64)).shape == (5, 2)
    for layer in model[::2]:
        bound = layer.in_features ** -0.5
        for tensor in (layer.weight, layer.bias):
            assert tensor.dtype == torch.float64
            assert 0.8 * bound < float(tensor.detach().abs().max()) <= bound
    assert make_mlp(1, [4], 1)[1].__class__ is nn.ReLU  # the default
    with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'tanh'\], "
                                         r"got 'gelu'"):
        make_mlp(1, [4], 1, "gelu")  # type: ignore[arg-type]


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


def meta_sgd_trained(iterations: int, meta_batch_size: int):
    """A Meta-SGD sine config and its trainer after ``iterations`` meta-iterations."""
    config = from_dict(SineConfig, {"adaptation": {"learn_inner_lr": True},
                                    "training": {"iterations": 20,
                                                 "meta_batch_size": meta_batch_size},
                                    "run": {"progress": False, "tensorboard": False}})
    trainer = SineExperiment().make_trainer(config)
    for i in range(iterations):
        trainer.train_iteration(i)
    return config, trainer


def test_meta_sgd_learns_per_parameter_rates_and_evaluation_uses_them(tmp_path):
    config, trainer = meta_sgd_trained(20, 5)
    experiment = SineExperiment()
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


def test_inputs_cover_minus_5_to_5_and_query_points_are_drawn_apart_from_the_support():
    """MAML paper 5.1: x ~ U[-5, 5] for support and query points alike; the query points are
    new draws (not the support points) and their targets are A sin(x + φ) of their own x."""
    tasks, batch = sample_sine_batch(SineTaskConfig(), 2000, torch.Generator().manual_seed(0))
    for x in (batch.support_x, batch.query_x):  # 20 000 draws each: U[-5, 5] fills the range
        assert -5.0 <= x.min() < -4.99 and 4.99 < x.max() <= 5.0
        assert abs(x.mean().item()) < 0.1
        assert abs(x.std().item() - 10 / math.sqrt(12)) < 0.05  # std of U[-5, 5]
    shared = batch.query_x[:, :, None, 0] == batch.support_x[:, None, :, 0]
    assert not bool(shared.any()), "query points repeat support points"
    expected = tasks.amplitude[:, None, None] * torch.sin(batch.query_x
                                                          + tasks.phase[:, None, None])
    torch.testing.assert_close(batch.query_y, expected)


def test_shots_arguments_override_the_configs_support_and_query_sizes():
    config = SineTaskConfig()  # K = 10, 10 query points
    tasks, batch = sample_sine_batch(config, 3, torch.Generator().manual_seed(1),
                                     support_shots=4, query_shots=7)
    assert batch.support_x.shape == batch.support_y.shape == (3, 4, 1)
    assert batch.query_x.shape == batch.query_y.shape == (3, 7, 1)
    torch.testing.assert_close(batch.support_y, tasks(batch.support_x))


def test_a_range_of_one_value_fixes_that_parameter():
    """min == max is a valid range (a fixed amplitude); only min > max is refused."""
    config = from_dict(SineConfig, {"task": {"amplitude_min": 2.0, "amplitude_max": 2.0}})
    tasks, _ = sample_sine_batch(config.task, 50, torch.Generator().manual_seed(0))
    assert torch.equal(tasks.amplitude, torch.full((50,), 2.0))


def test_evaluation_learning_rates_follow_the_evaluation_section():
    # REFERENCE: the first step at inner_lr, later steps at inner_lr · later_lr_scale (0.5)
    default = from_dict(SineConfig, {})
    assert evaluation_lr(default, None, 3) == [0.01, 0.005, 0.005]
    own = from_dict(SineConfig, {"evaluation": {"inner_lr": 0.1, "later_lr_scale": 0.25}})
    assert evaluation_lr(own, None, 3) == [0.1, 0.025, 0.025]
    learned = {"w": torch.ones(2)}
    assert evaluation_lr(own, learned, 3) is learned  # Meta-SGD keeps its learned rates


def spy_on_test_batches(monkeypatch) -> list:
    """The (tasks, batch) of each sample_sine_test_batch call from here on, in order."""
    drawn = []
    real = sine_experiment.sample_sine_test_batch

    def spy(*args, **kwargs):
        drawn.append(real(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(sine_experiment, "sample_sine_test_batch", spy)
    return drawn


def test_evaluation_draws_query_points_tasks_and_shots_as_asked(monkeypatch):
    """curves(): K = shots support points, evaluation.query_points query points, `tasks`
    tasks, and test tasks that depend on the seed."""
    config = from_dict(SineConfig, {"evaluation": {"query_points": 3}})
    experiment = SineExperiment()
    params = experiment.make_trainer(config).state_dict()["params"]
    drawn_pairs = spy_on_test_batches(monkeypatch)
    curve = experiment.curves(config, params, 0.01, shots=4, tasks=2, steps=1, seed=0)
    assert curve.shape == (2, 2)
    experiment.curves(config, params, 0.01, shots=4, tasks=2, steps=1, seed=1)
    drawn = [batch for _, batch in drawn_pairs]
    assert drawn[0].support_x.shape == (2, 4, 1) and drawn[0].query_x.shape == (2, 3, 1)
    assert not torch.equal(drawn[0].support_x, drawn[1].support_x), "the seed picks the tasks"
    assert not torch.equal(drawn[0].query_x, drawn[1].query_x)


def test_every_k_is_evaluated_on_the_same_tasks_with_nested_support_sets(monkeypatch, tmp_path):
    """evaluate(): K = 5, 10 and 20 share the test tasks and query points, so the loss before
    adaptation is the same for each K; K = 10's support points start with K = 5's."""
    config = from_dict(SineConfig, {"evaluation": {"tasks": 6, "steps": 1,
                                                   "query_points": 7}})
    experiment = SineExperiment()
    drawn = []
    real = sine_experiment.sample_sine_test_batch

    def spy(*args, **kwargs):
        tasks, batch = real(*args, **kwargs)
        drawn.append((tasks, batch))
        return tasks, batch

    monkeypatch.setattr(sine_experiment, "sample_sine_test_batch", spy)
    state = {"trainer": experiment.make_trainer(config).state_dict(), "iteration": 0}
    result = experiment.evaluate(config, state, tmp_path, EvaluateOptions())
    by_shots = result["by_shots"]
    assert by_shots["5"]["mean"][0] == by_shots["10"]["mean"][0] == by_shots["20"]["mean"][0]
    assert by_shots["5"]["mean"][1] != by_shots["20"]["mean"][1]
    (tasks5, five), (tasks10, ten), (_, twenty) = drawn
    assert torch.equal(tasks5.amplitude, tasks10.amplitude)
    assert torch.equal(tasks5.phase, tasks10.phase)
    assert torch.equal(five.query_x, twenty.query_x) and five.query_x.shape == (6, 7, 1)
    assert [b.support_x.shape[1] for b in (five, ten, twenty)] == [5, 10, 20]
    assert torch.equal(ten.support_x[:, :5], five.support_x)
    assert torch.equal(twenty.support_x[:, :10], ten.support_x)
    assert not torch.equal(ten.support_x[:, 5:], ten.support_x[:, :5])


def test_a_ks_score_does_not_depend_on_the_other_ks_evaluated(tmp_path):
    """K = 5 alone (evaluation.shots: [5]) gives the numbers of K = 5 among 5, 10 and 20."""
    experiment = SineExperiment()
    scores = []
    for shots in ([5], [5, 10, 20], [20, 5]):
        config = from_dict(SineConfig, {"evaluation": {"tasks": 6, "steps": 2,
                                                       "shots": shots}})
        state = {"trainer": experiment.make_trainer(config).state_dict(), "iteration": 0}
        scores.append(experiment.evaluate(config, state, tmp_path,
                                          EvaluateOptions())["by_shots"]["5"]["mean"])
    assert scores[0] == scores[1] == scores[2]


def test_evaluate_reports_the_training_k_and_the_seed_it_was_given(tmp_path):
    """With shots [5, 10, 20] and training K = 10, the headline curve is K = 10's; the test
    tasks come from the seed of the options, recorded in the result."""
    config = from_dict(SineConfig, {"evaluation": {"tasks": 4, "steps": 1}})
    experiment = SineExperiment()
    state = {"trainer": experiment.make_trainer(config).state_dict(), "iteration": 0}
    result = experiment.evaluate(config, state, tmp_path, EvaluateOptions(seed=3))
    assert result["shots"] == 10 and result["seed"] == 3 and result["tasks"] == 4
    assert result["mean"] == result["by_shots"]["10"]["mean"]
    lr = evaluation_lr(config, None, 1)
    expected = summarize(experiment.curves(config, state["trainer"]["params"], lr, shots=10,
                                           tasks=4, steps=1, seed=3))
    assert result["mean"] == pytest.approx(expected["mean"])
    assert result["ci95"] == pytest.approx(expected["ci95"])
    assert np.isfinite(result["sem"]).all()


@pytest.mark.parametrize(("setting", "message"), [
    ({"inner_lr": -1.0}, "inner_lr = -1.0: must be > 0"),
    ({"method": "sgd"}, "method = 'sgd': allowed values are 'maml', 'fomaml', 'reptile'"),
])
def test_a_trainer_checks_an_adaptation_config_built_in_code(setting, message):
    from metarl.config import AdaptationConfig, ConfigError
    from metarl.supervised.meta import mse_loss
    from metarl.supervised.trainer import SupervisedMetaTrainer

    with pytest.raises(ConfigError, match=re.escape(message)):
        SupervisedMetaTrainer(torch.nn.Linear(1, 1), lambda generator: None, mse_loss,
                              adaptation=AdaptationConfig(**setting), vectorize=True,
                              outer_optimizer="adam", outer_lr=1e-3,
                              task_generator=torch.Generator())


def test_meta_sgd_state_round_trip_restores_learned_rates_and_continues_identically():
    config, a = meta_sgd_trained(3, 3)
    assert any(not torch.allclose(r, torch.full_like(r, 0.01)) for r in a.inner_lr.values())
    b = SineExperiment().make_trainer(config)
    b.load_state_dict(a.state_dict())
    for k in a.inner_lr:
        assert torch.equal(b.inner_lr[k], a.inner_lr[k]), k
    assert b.train_iteration(3) == a.train_iteration(3)


def test_sine_test_tasks_do_not_depend_on_the_support_generator():
    from metarl.supervised.sine import SineTaskConfig, sample_sine_test_batch
    config = SineTaskConfig()
    a, batch_a = sample_sine_test_batch(config, 4, support_shots=5, query_shots=3,
                                        task_generator=torch.Generator().manual_seed(0),
                                        support_generator=torch.Generator().manual_seed(1))
    b, batch_b = sample_sine_test_batch(config, 4, support_shots=5, query_shots=3,
                                        task_generator=torch.Generator().manual_seed(0),
                                        support_generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.amplitude, b.amplitude) and torch.equal(a.phase, b.phase)
    assert torch.equal(batch_a.query_x, batch_b.query_x)
    assert not torch.equal(batch_a.support_x, batch_b.support_x)


@pytest.mark.parametrize(("means", "learned", "expected"), [
    ([1.4, 0.5, 0.2], False, None),
    ([1.4, 0.5, 9.0], False, "K=5: the mean test MSE after 2 steps (9) is above the one "
     "before adaptation (1.4): adapting diverges; ask for fewer steps (--steps 1) or adapt "
     "with a smaller evaluation.inner_lr or evaluation.later_lr_scale (--set)"),
    ([1.4, 87.3, 2e3], False, "after 1 step (87.3) is above the one before adaptation "
     "(1.4): adapting diverges; adapt with a smaller evaluation.inner_lr (--set)"),
    ([1.4, 0.5, 6e17], True, "(6e+17) is above the one before adaptation (1.4): adapting "
     "diverges; this Meta-SGD run adapts with the rates it learned; ask for fewer steps "
     "(--steps 1)"),
    ([1.4, 3.0], True, "adapting diverges; this Meta-SGD run adapts with the rates it "
     "learned\n"),
])
def test_evaluate_notes_an_adaptation_that_diverges_but_stays_finite(capsys, means, learned,
                                                                     expected):
    sine_experiment._note_divergence({"5": {"mean": means}}, learned_rates=learned)
    err = capsys.readouterr().err
    if expected is None:
        assert err == ""
    else:
        assert expected in err and err.startswith("metarl: note: K=5: ")


def test_a_diverging_evaluation_through_the_cli_is_noted_and_still_written(tmp_path, capsys):
    from metarl.cli import main

    run = tmp_path / "run"
    assert main(["train", "sine-quick", "--run-dir", str(run), "--set",
                 "training.iterations=4", "--set", "run.progress=false",
                 "--set", "run.tensorboard=false"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--steps", "1", "--tasks", "4",
                 "--set", "evaluation.inner_lr=2"]) == 0
    err = capsys.readouterr().err
    assert err.count("adapting diverges; adapt with a smaller evaluation.inner_lr") == 3
    assert (run / "evaluation.json").is_file()
    assert main(["evaluate", str(run), "--steps", "1", "--tasks", "4"]) == 0
    assert "diverges" not in capsys.readouterr().err


def test_a_meta_sgd_runs_divergence_note_does_not_suggest_rates_it_ignores(tmp_path, capsys,
                                                                           monkeypatch):
    from metarl.cli import main

    run = tmp_path / "run"
    assert main(["train", "sine-quick", "--run-dir", str(run), "--set",
                 "training.iterations=2", "--set", "adaptation.learn_inner_lr=true",
                 "--set", "run.progress=false", "--set", "run.tensorboard=false"]) == 0
    monkeypatch.setattr(sine_experiment, "first_step_worse_than_start", lambda means: 2)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--steps", "2", "--tasks", "4"]) == 0
    err = capsys.readouterr().err
    assert err.count("this Meta-SGD run adapts with the rates it learned; ask for fewer "
                     "steps (--steps 1)") == 3  # K = 5, 10, 20
    assert "inner_lr" not in err


def test_test_tasks_are_not_the_training_tasks_of_a_run_with_the_same_seed(monkeypatch):
    from metarl.seeding import torch_generator
    from metarl.supervised.sine import sample_sine_tasks

    config = from_dict(SineConfig, {"seed": 3, "training": {"meta_batch_size": 4}})
    experiment = SineExperiment()
    params = experiment.make_trainer(config).state_dict()["params"]
    drawn = spy_on_test_batches(monkeypatch)
    experiment.curves(config, params, 0.01, shots=2, tasks=4, steps=0, seed=3)
    trained_on = sample_sine_tasks(config.task, 4, torch_generator(3, "tasks"))
    assert not torch.allclose(drawn[0][0].amplitude, trained_on.amplitude)


def test_the_pretrained_baseline_fits_with_its_own_settings_and_is_cached_per_seed(
        tmp_path, monkeypatch):
    """baseline.iterations batches of baseline.batch_tasks tasks x points_per_task points,
    Adam at baseline.lr; the cached network is reused for the same settings and seed only."""
    baseline = {"iterations": 3, "batch_tasks": 4, "points_per_task": 7, "lr": 0.004}
    config = from_dict(SineConfig, {"baseline": baseline})
    batches, optimizers, fits = [], [], []
    real_sample, real_adam, real_pretrain = (sine_experiment.sample_sine_batch,
                                             torch.optim.Adam, sine_experiment.pretrain)
    monkeypatch.setattr(sine_experiment, "sample_sine_batch", lambda *args, **kwargs: (
        batches.append(real_sample(*args, **kwargs)[1]) or (None, batches[-1])))
    monkeypatch.setattr(torch.optim, "Adam", lambda params, lr: optimizers.append(lr)
                        or real_adam(params, lr=lr))
    monkeypatch.setattr(sine_experiment, "pretrain", lambda c: fits.append(c.seed)
                        or real_pretrain(c))
    first = sine_experiment.pretrained_params(config, tmp_path)
    assert optimizers == [0.004] and len(batches) == 3
    assert all(batch.support_x.shape == (4, 7, 1) for batch in batches)
    again = sine_experiment.pretrained_params(config, tmp_path)
    assert fits == [0] and all(torch.equal(first[k], again[k]) for k in first)
    other = sine_experiment.pretrained_params(
        from_dict(SineConfig, {"baseline": baseline, "seed": 1}), tmp_path)
    assert fits == [0, 1] and not torch.equal(first["0.weight"], other["0.weight"])


def test_evaluation_with_the_pretrained_baseline_of_a_meta_sgd_run(tmp_path, monkeypatch):
    """Every curve of `evaluate --seed S --baselines pretrained` is scored on seed S's
    tasks; the Meta-SGD policy adapts with its learned rates, the pretrained network with
    the evaluation's fixed ones."""
    _, trainer = meta_sgd_trained(1, 2)
    config = from_dict(SineConfig, {"adaptation": {"learn_inner_lr": True},
                                    "baseline": {"iterations": 2},
                                    "evaluation": {"shots": [5]}})
    experiment = SineExperiment()
    calls = []
    real_curves = SineExperiment.curves
    monkeypatch.setattr(SineExperiment, "curves", lambda self, c, params, lr, **kw: (
        calls.append((lr, kw["seed"])) or real_curves(self, c, params, lr, **kw)))
    experiment.evaluate(config, {"trainer": trainer.state_dict(), "iteration": 1}, tmp_path,
                        EvaluateOptions(steps=2, tasks=3, seed=9, baselines=("pretrained",)))
    (meta_sgd_lr, meta_sgd_seed), (baseline_lr, baseline_seed) = calls
    assert isinstance(meta_sgd_lr, dict)
    assert baseline_lr == sine_experiment.evaluation_lr(config, None, 2)
    assert meta_sgd_seed == baseline_seed == 9


def test_test_tasks_and_support_points_come_from_their_own_streams(monkeypatch):
    from metarl.seeding import derive_seed

    seeds = []
    real = sine_experiment.sample_sine_test_batch
    monkeypatch.setattr(sine_experiment, "sample_sine_test_batch", lambda *args, **kwargs: (
        seeds.append((kwargs["task_generator"].initial_seed(),
                      kwargs["support_generator"].initial_seed())) or real(*args, **kwargs)))
    config = from_dict(SineConfig, {})
    params = SineExperiment().make_trainer(config).state_dict()["params"]
    SineExperiment().curves(config, params, 0.01, shots=5, tasks=2, steps=1, seed=3)
    assert seeds == [(derive_seed(3, "evaluate-tasks"), derive_seed(3, "evaluate-support"))]


def test_render_draws_each_task_after_0_1_and_the_last_step_from_the_seed_asked(
        tmp_path, monkeypatch):
    """5 tasks: a second row of panels; lines after 0, 1 and 4 steps; `--seed` picks the
    tasks; a Meta-SGD run's fits adapt with its learned rates."""
    import matplotlib.figure

    from metarl.experiment import RenderOptions

    figures, lrs = [], []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, *args, **kwargs: figures.append(self))
    real_predictions = sine_experiment.query_predictions
    monkeypatch.setattr(sine_experiment, "query_predictions", lambda *args, **kwargs: (
        lrs.append(kwargs["lr"]) or real_predictions(*args, **kwargs)))
    config, trainer = meta_sgd_trained(1, 2)
    state = {"trainer": trainer.state_dict(), "iteration": 1}
    experiment = SineExperiment()

    def titles(seed):
        experiment.render(config, state, tmp_path,
                          RenderOptions(tasks=5, steps=4, seed=seed, output=tmp_path / "s.png"))
        return [ax.get_title() for ax in figures[-1].axes if ax.get_visible() and ax.axison]

    shown = titles(5)
    assert len(shown) == 5 and len(figures[-1].axes) == 8  # 2 rows of 4, 3 left empty
    labels = [line.get_label() for line in figures[-1].axes[4].get_lines()]
    assert labels == ["ground truth", "after 0 step(s)", "after 1 step(s)", "after 4 step(s)"]
    assert (figures[-1].axes[4].get_xlabel(), figures[-1].axes[4].get_ylabel()) == (
        "x", "y = A sin(x + φ)")
    assert titles(5) == shown and titles(6) != shown
    assert all(isinstance(lr, dict) for lr in lrs)  # the learned per-parameter rates


def test_the_logged_query_loss_is_the_batch_mean_and_a_state_dict_is_a_snapshot(
        monkeypatch):
    """train_iteration reports the mean query loss over the batch's tasks; a state_dict
    taken before an iteration keeps the weights it held (a copy, not the live tensors)."""
    import metarl.supervised.trainer as trainer_module

    config = from_dict(SineConfig, {"training": {"meta_batch_size": 2}})
    trainer = SineExperiment().make_trainer(config)
    before = trainer.state_dict()
    kept = {name: value.clone() for name, value in before["params"].items()}
    real = trainer_module.meta_gradient

    def losses_one_and_three(*args, **kwargs):
        result = real(*args, **kwargs)
        return result._replace(query_losses=torch.tensor([1.0, 3.0]))

    monkeypatch.setattr(trainer_module, "meta_gradient", losses_one_and_three)
    metrics = trainer.train_iteration(0)
    assert metrics["query_loss"] == pytest.approx(2.0)
    assert all(torch.equal(before["params"][k], kept[k]) for k in kept)
    assert any(not torch.equal(trainer.params[k].detach(), kept[k]) for k in kept)
