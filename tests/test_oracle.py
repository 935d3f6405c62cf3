"""The oracle baseline: observations with the task appended, trained without adaptation."""

import contextlib

import numpy as np
import pytest
import torch

from metarl.config import from_dict
from metarl.envs import ENV_FAMILIES
from metarl.evaluation import format_table
from metarl.experiment import get_experiment, resolve_baselines
from metarl.plots import plot_adaptation_curves
from metarl.rl.baseline_policies import oracle_params, pretrained_params
from metarl.rl.build import evaluation_rollouts, new_policy_params
from metarl.rl.config import MetaRLConfig
from metarl.rl.oracle import TaskObservations, oracle_family, task_features
from metarl.runner import TrainingStopped


def test_task_features_are_the_goal_velocity_or_direction():
    goals = [{"goal": np.array([0.3, -0.2])}, {"goal": np.array([-0.1, 0.4])}]
    np.testing.assert_allclose(task_features(goals), [[0.3, -0.2], [-0.1, 0.4]], rtol=1e-6)
    assert task_features([{"velocity": 1.5}, {"velocity": 0.25}]).tolist() == [[1.5], [0.25]]
    assert task_features([{"direction": -1.0}]).tolist() == [[-1.0]]
    assert task_features(goals).dtype == np.float32


def test_task_observations_append_each_tasks_features_to_its_environments():
    family = ENV_FAMILIES["navigation2d"]
    tasks = [{"goal": np.array([0.4, 0.1])}, {"goal": np.array([-0.3, -0.2])}]
    plain = family.make_batched(tasks, 3, np.random.default_rng(0))
    wrapped = oracle_family(family).make_batched(tasks, 3, np.random.default_rng(0))
    assert isinstance(wrapped, TaskObservations)
    assert wrapped.observation_dim == 4 and wrapped.action_dim == 2
    expected_features = torch.tensor([[0.4, 0.1]] * 3 + [[-0.3, -0.2]] * 3)  # task-major
    actions = torch.randn(6, 2, generator=torch.Generator().manual_seed(0)) * 0.05
    for observed, plain_observed in [(wrapped.reset(), plain.reset())]:
        torch.testing.assert_close(observed[:, :2], plain_observed)
        torch.testing.assert_close(observed[:, 2:], expected_features)
    for _ in range(3):
        observed, rewards, terminated = wrapped.step(actions)
        plain_observed, plain_rewards, plain_terminated = plain.step(actions)
        torch.testing.assert_close(observed[:, :2], plain_observed)
        torch.testing.assert_close(observed[:, 2:], expected_features)
        torch.testing.assert_close(rewards, plain_rewards)
        assert torch.equal(terminated, plain_terminated)
    where = torch.tensor([True, False, False, False, False, True])
    restarted = wrapped.restart(where)
    assert torch.equal(restarted[where, :2], torch.zeros(2, 2))
    # the others are not reset: they stay where their episodes are
    assert torch.equal(restarted[~where, :2], observed[~where, :2])
    assert (observed[~where, :2] != 0).all()
    torch.testing.assert_close(restarted[:, 2:], expected_features)


@pytest.mark.parametrize(("name", "extra"), [("navigation2d", 2), ("half_cheetah_vel", 1),
                                             ("half_cheetah_dir", 1)])
def test_oracle_family_observes_the_task(name, extra):
    family = ENV_FAMILIES[name]
    oracle = oracle_family(family)
    assert oracle.observation_dim == family.observation_dim + extra
    assert oracle.action_dim == family.action_dim and oracle.gym_id == family.gym_id
    if family.mujoco:
        tasks = family.sample_tasks(2, np.random.default_rng(1))
        env = oracle.make_batched(tasks, 2, np.random.default_rng(2))
        observed = env.reset()
        assert observed.shape == (4, oracle.observation_dim)
        key = next(iter(tasks[0]))
        assert observed[:, -1].tolist() == pytest.approx(
            [tasks[0][key]] * 2 + [tasks[1][key]] * 2)


def _navigation_config(**baselines) -> MetaRLConfig:
    return from_dict(MetaRLConfig, {
        "env": {"name": "navigation2d"},
        "policy": {"hidden_sizes": [32, 32], "normalized_actions": True},
        "training": {"meta_batch_size": 5, "episodes_per_task": 5, "sampling": "steps"},
        "trpo": {"max_kl": 0.05},  # larger steps than the paper's, to learn in seconds
        "evaluation": {"tasks": 10, "episodes_per_task": 5},
        "baselines": baselines, "run": {"progress": False}})


def test_oracle_learns_to_reach_goals_it_is_told(tmp_path):
    config = _navigation_config(oracle_iterations=15)
    params, training_returns = oracle_params(config, tmp_path)
    assert len(training_returns) == 15
    assert params["w0"].shape[0] == 4  # (fan_in, fan_out): position and goal
    oracle = oracle_family(ENV_FAMILIES["navigation2d"])

    def test_return(policy_params, family=None):
        _, rollouts = evaluation_rollouts(config, policy_params, tasks=10, steps=0, seed=5,
                                          family=family)
        return float(rollouts.episodes[0].task_returns().mean())

    random_init = test_return(new_policy_params(config, "random-baseline-init"))
    trained = test_return(params, oracle)
    # Measured: -80 for the random policy and -8 for the oracle (the paper's, trained longer:
    # -2.29). A policy blind to the goal does best by staying at the origin: about -38
    # (100 steps at the mean distance 0.38 of a goal ~ U[-0.5, 0.5]^2).
    assert random_init < -60
    assert trained > -20
    # cached: the same parameters again, without training
    with counting_iterations() as trained_iterations:
        again, _ = oracle_params(config, tmp_path)
    assert trained_iterations == []
    assert all(torch.equal(again[k], params[k]) for k in params)


@contextlib.contextmanager
def counting_iterations():
    """The iterations MAMLTRPO trains inside the block (training is deterministic, so equal
    parameters alone cannot tell a cache hit from training again)."""
    from metarl.rl.maml_trpo import MAMLTRPO

    original, calls = MAMLTRPO.train_iteration, []

    def counted(self, iteration):
        calls.append(iteration)
        return original(self, iteration)

    MAMLTRPO.train_iteration = counted
    try:
        yield calls
    finally:
        MAMLTRPO.train_iteration = original


def test_oracle_cache_is_keyed_by_its_iterations_not_the_pretrained_ones(tmp_path):
    first, _ = oracle_params(_navigation_config(oracle_iterations=1), tmp_path)
    with counting_iterations() as trained_iterations:
        same, _ = oracle_params(_navigation_config(oracle_iterations=1,
                                                   pretrained_iterations=7), tmp_path)
    assert trained_iterations == []
    assert all(torch.equal(same[k], first[k]) for k in first)
    with counting_iterations() as trained_iterations:
        _, returns = oracle_params(_navigation_config(oracle_iterations=2), tmp_path)
    assert trained_iterations == [0, 1] and len(returns) == 2


def test_baselines_for_an_evaluation_elsewhere_are_cached_there_and_read_from_the_run(
        tmp_path):
    config = _navigation_config(oracle_iterations=1, pretrained_iterations=1)
    run, out = tmp_path / "run", tmp_path / "out"
    oracle, _ = oracle_params(config, run, out)
    pretrained_params(config, run, out)
    assert not run.exists()
    assert sorted(p.name for p in (out / "baselines").iterdir()) == ["oracle.pt",
                                                                       "pretrained.pt"]
    run_oracle, _ = oracle_params(config, run)
    assert all(torch.equal(run_oracle[k], oracle[k]) for k in oracle)  # same seed, same one
    pretrained_params(config, run)
    with counting_iterations() as trained_iterations:
        again, _ = oracle_params(config, run, tmp_path / "other")
        pretrained_params(config, run, tmp_path / "other")
    assert trained_iterations == [] and not (tmp_path / "other").exists()
    assert all(torch.equal(again[k], oracle[k]) for k in oracle)


def test_resolve_baselines_names_and_errors():
    meta_rl, omniglot = get_experiment("meta_rl"), get_experiment("omniglot")
    assert resolve_baselines(meta_rl, None) == ()
    assert resolve_baselines(meta_rl, "all") == ("random", "pretrained", "oracle")
    assert resolve_baselines(meta_rl, "oracle, random") == ("oracle", "random")
    assert resolve_baselines(omniglot, "all") == ()
    with pytest.raises(Exception, match="experiment omniglot defines no baselines"):
        resolve_baselines(omniglot, "pretrained")
    with pytest.raises(Exception, match="meta_rl baselines are random, pretrained, oracle"):
        resolve_baselines(meta_rl, "oracel")
    for empty in ("", ",", " , "):
        with pytest.raises(Exception, match="give some of them, comma-separated, or none"):
            resolve_baselines(meta_rl, empty)


def test_a_curve_without_adaptation_is_a_line_in_the_plot_and_blank_in_the_table(
        tmp_path, saved_figures):
    curves = {"maml": {"mean": [-40.0, -12.0, -5.0], "ci95": [2.0, 1.0, 0.5]},
              "oracle": {"mean": [-2.5], "ci95": [0.25]}}
    table = format_table(curves, [0, 1, 2], "return").splitlines()
    assert table[2].startswith("oracle") and "-2.5 ± 0.25" in table[2]
    assert table[2].rstrip().endswith("0.25"), "no numbers after step 0"
    output = plot_adaptation_curves(curves, [0, 1, 2], tmp_path / "curves.png",
                                    ylabel="return", reference={"paper: oracle": {0: -2.29}})
    assert output.read_bytes().startswith(b"\x89PNG")
    (ax,) = saved_figures[-1].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    (maml,) = ax.containers  # the adapting curve: points with error bars
    assert maml.get_label() == "maml"
    assert list(maml.lines[0].get_xdata()) == [0, 1, 2]
    assert list(maml.lines[0].get_ydata()) == [-40.0, -12.0, -5.0]
    for label, y, style in [("oracle (no adaptation)", -2.5, "--"),
                            ("paper: oracle", -2.29, ":")]:
        line = lines[label]  # axhline: across the axes (x in axes units 0..1), one height
        assert list(line.get_xdata()) == [0, 1] and list(line.get_ydata()) == [y, y]
        assert line.get_linestyle() == style
    assert len(ax.patches) == 1  # the oracle's 95% band
    band = ax.transData.inverted().transform(ax.patches[0].get_verts())[:, 1]
    assert (band.min(), band.max()) == pytest.approx((-2.75, -2.25))


def test_interrupted_baseline_training_continues_to_the_same_result(tmp_path, monkeypatch):
    from metarl.rl.maml_trpo import MAMLTRPO

    config = _navigation_config(oracle_iterations=3)
    uninterrupted, uninterrupted_returns = oracle_params(config, tmp_path / "whole")

    original = MAMLTRPO.train_iteration
    calls = []

    def interrupted(self, iteration):
        calls.append(iteration)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, iteration)

    monkeypatch.setattr(MAMLTRPO, "train_iteration", interrupted)
    with pytest.raises(TrainingStopped, match=r"the oracle baseline stopped after 2 of 3 "
                       r"iterations, kept in .*oracle\.partial\.pt; the same command continues it"
                       ) as stop:
        oracle_params(config, tmp_path / "cut")
    assert stop.value.exit_code == 130
    calls.clear()
    with pytest.raises(TrainingStopped, match="stopped before finishing its first iteration; "
                       "nothing to keep"):
        calls.extend([0, 1])  # the next call is the third: interrupted at once
        oracle_params(config, tmp_path / "cut-at-once")
    assert not (tmp_path / "cut-at-once" / "baselines" / "oracle.partial.pt").exists()
    assert (tmp_path / "cut" / "baselines" / "oracle.partial.pt").is_file()
    assert not (tmp_path / "cut" / "baselines" / "oracle.pt").exists()
    monkeypatch.undo()
    calls.clear()
    monkeypatch.setattr(MAMLTRPO, "train_iteration", interrupted)  # counts again from here
    resumed, resumed_returns = oracle_params(config, tmp_path / "cut")
    assert calls == [2], "only the iteration that was cut short is trained again"
    assert resumed_returns == uninterrupted_returns
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    assert not (tmp_path / "cut" / "baselines" / "oracle.partial.pt").exists()


def _interrupt_after(monkeypatch, iterations: int) -> None:
    """Make MAMLTRPO raise KeyboardInterrupt once ``iterations`` iterations have trained."""
    from metarl.rl.maml_trpo import MAMLTRPO

    original, calls = MAMLTRPO.train_iteration, []

    def interrupted(self, iteration):
        calls.append(iteration)
        if len(calls) > iterations:
            raise KeyboardInterrupt
        return original(self, iteration)

    monkeypatch.setattr(MAMLTRPO, "train_iteration", interrupted)


@pytest.mark.parametrize("baseline", ["oracle", "pretrained"])
def test_a_baseline_written_elsewhere_continues_the_runs_interrupted_training(
        tmp_path, monkeypatch, baseline):
    """An evaluation written to another folder continues the run's own interrupted baseline
    training (or its own, where that is further along) and leaves the run's file as it was."""
    config = _navigation_config(oracle_iterations=4, pretrained_iterations=4)
    train = oracle_params if baseline == "oracle" else pretrained_params

    def params_of(trained):
        return trained[0] if baseline == "oracle" else trained

    whole = params_of(train(config, tmp_path / "whole"))
    run, out = tmp_path / "run", tmp_path / "out"
    run_partial = run / "baselines" / f"{baseline}.partial.pt"
    out_partial = out / "baselines" / f"{baseline}.partial.pt"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 2)
        with pytest.raises(TrainingStopped, match="after 2 of 4"):
            train(config, run)
    runs_progress = run_partial.read_bytes()

    with monkeypatch.context() as patch:
        _interrupt_after(patch, 0)  # nothing trained here: the run's file still holds it all
        with pytest.raises(TrainingStopped, match=f"after 2 of 4 iterations, kept in "
                           f".*run/baselines/{baseline}\\.partial\\.pt"):
            train(config, run, out)
    assert not out_partial.exists()
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 1)  # continues from the run's 2 and stops after 3
        with pytest.raises(TrainingStopped, match=f"after 3 of 4 iterations, kept in "
                           f".*out/baselines/{baseline}\\.partial\\.pt"):
            train(config, run, out)
    assert run_partial.read_bytes() == runs_progress
    with counting_iterations() as trained_iterations:
        finished = params_of(train(config, run, out))  # its own 3 beat the run's 2
    assert trained_iterations == [3]
    assert all(torch.equal(finished[k], whole[k]) for k in whole)
    assert run_partial.read_bytes() == runs_progress
    assert not out_partial.exists() and (out / "baselines" / f"{baseline}.pt").is_file()
    assert sorted(p.name for p in run.rglob("*")) == ["baselines", f"{baseline}.partial.pt"]


def test_task_features_are_in_key_order():
    assert task_features([{"velocity": 1.5, "direction": -1.0}]).tolist() == [[-1.0, 1.5]]


def _partial_of_other_settings(path):
    from metarl.checkpoint import save_checkpoint

    save_checkpoint(path, {"key": {"seed": 12345}, "trainer": {}, "returns": [7.0, 8.0]})
    return ""  # nothing to report: progress of other settings is not continued


def _damaged_partial(path):
    path.write_bytes(b"PK\x03\x04 cut short")
    return ("oracle.partial.pt can't be read as a metarl checkpoint (",
            "; the oracle baseline does not continue from it")


@pytest.mark.parametrize("make_partial", [_partial_of_other_settings, _damaged_partial])
def test_a_partial_baseline_of_other_settings_or_damaged_is_trained_afresh(
        tmp_path, capsys, make_partial):
    partial = tmp_path / "baselines" / "oracle.partial.pt"
    partial.parent.mkdir()
    reported = make_partial(partial)
    config = from_dict(MetaRLConfig, {
        "env": {"name": "navigation2d", "max_episode_steps": 5},
        "policy": {"hidden_sizes": [4]}, "training": {"meta_batch_size": 2,
                                                      "episodes_per_task": 2},
        "baselines": {"oracle_iterations": 1}, "run": {"progress": False}})
    with counting_iterations() as trained_iterations:
        _, returns = oracle_params(config, tmp_path)
    assert trained_iterations == [0] and len(returns) == 1 and returns[0] < 0
    assert not partial.exists()
    err = capsys.readouterr().err
    if reported:
        assert reported[0] in err and err.rstrip().endswith(reported[1])
    else:
        assert "can't be read" not in err
    assert not partial.exists()


def test_the_pretrained_cache_ignores_the_oracles_iterations(tmp_path, monkeypatch):
    import metarl.rl.baseline_policies as baseline_policies

    keys = []
    monkeypatch.setattr(baseline_policies, "load_or_compute",
                        lambda path, key, compute, **kwargs: keys.append((path.name, key)))
    for oracle_iterations in (1, 2):
        baseline_policies.pretrained_params(
            _navigation_config(oracle_iterations=oracle_iterations, pretrained_iterations=3),
            tmp_path)
    assert keys[0] == keys[1] and keys[0][0] == "pretrained.pt"
    assert keys[0][1]["baselines"] == {"pretrained_iterations": 3}


def test_a_run_trained_longer_keeps_its_cached_baselines(tmp_path):
    """training.iterations (how long MAML trains) is not part of a baseline's key, also for
    caches written when it was; the other training settings are."""
    from metarl.checkpoint import load_checkpoint, save_checkpoint
    from metarl.config import to_dict

    def config(**training):
        data = to_dict(_navigation_config(oracle_iterations=1))
        data["training"] |= training
        return from_dict(MetaRLConfig, data)

    first, _ = oracle_params(config(iterations=3), tmp_path)
    with counting_iterations() as trained_iterations:
        same, _ = oracle_params(config(iterations=900), tmp_path)
    assert trained_iterations == []
    assert all(torch.equal(same[k], first[k]) for k in first)
    cache = tmp_path / "baselines" / "oracle.pt"
    written_before = load_checkpoint(cache)
    assert "iterations" not in written_before["key"]["training"]
    written_before["key"]["training"]["iterations"] = 500  # as keyed by earlier versions
    save_checkpoint(cache, written_before)
    with counting_iterations() as trained_iterations:
        oracle_params(config(iterations=900), tmp_path)
    assert trained_iterations == []
    with counting_iterations() as trained_iterations:
        oracle_params(config(iterations=900, meta_batch_size=6), tmp_path)
    assert trained_iterations == [0]


def test_baselines_train_multitask_trpo_without_inner_steps(tmp_path, monkeypatch):
    from metarl.rl.maml_trpo import MAMLTRPO
    seen = []
    original = MAMLTRPO.train_iteration

    def recording(self, iteration):
        seen.append(self.inner_steps)
        return original(self, iteration)

    monkeypatch.setattr(MAMLTRPO, "train_iteration", recording)
    config = _navigation_config(oracle_iterations=1, pretrained_iterations=2)
    assert config.adaptation.inner_steps >= 1
    pretrained_params(config, tmp_path)
    assert seen == [0, 0]  # baselines.pretrained_iterations
    oracle_params(config, tmp_path)
    assert seen == [0, 0, 0]  # and baselines.oracle_iterations


def test_evaluate_adapts_each_policy_from_its_own_start(tmp_path, monkeypatch):
    """`evaluate --steps 2 --baselines`: the run's θ, a fresh initialization (random) and
    the pretrained policy are adapted 2 steps (the config says 3); the oracle, told the
    task, is not adapted. The record names the steps asked for, the episodes of the run's
    own policy, and the paper's labels in its table."""
    import metarl.rl.experiment as rl_experiment
    from metarl.experiment import EvaluateOptions
    from metarl.rl.experiment import MetaRLExperiment

    config = _navigation_config(oracle_iterations=1, pretrained_iterations=1)
    theta = new_policy_params(config, "init")
    calls = []
    real = rl_experiment.evaluation_rollouts

    def spy(config, params, **kwargs):
        result = real(config, params, **kwargs)
        calls.append((params, kwargs["steps"], result[1]))
        return result

    monkeypatch.setattr(rl_experiment, "evaluation_rollouts", spy)
    result = MetaRLExperiment().evaluate(
        config, {"trainer": {"params": theta}, "iteration": 0}, tmp_path,
        EvaluateOptions(steps=2, tasks=4, seed=2, baselines=("random", "pretrained", "oracle")))
    (run, run_steps, rollouts), (random, random_steps, _), (_, pretrained_steps, _), (
        oracle, oracle_steps, _) = calls
    assert config.evaluation.steps == 3
    assert (run_steps, random_steps, pretrained_steps, oracle_steps) == (2, 2, 2, 0)
    assert run is theta
    fresh = new_policy_params(config, "random-baseline-init")
    assert all(torch.equal(random[k], fresh[k]) for k in theta)
    assert not torch.equal(random["w0"], theta["w0"])
    assert oracle["w0"].shape[0] == 4  # position and goal
    assert len(result["inner_lr"]) == 2 and result["steps"] == [0, 1, 2]
    assert result["episodes_sampled"] == [float(e.num_episodes().float().mean())
                                          for e in rollouts.episodes]
    assert "random init" in result["table"] and len(result["baselines"]["oracle"]["mean"]) == 1


def test_render_draws_paths_in_the_environments_units_and_a_video_follows_the_seed(
        tmp_path, monkeypatch):
    """Trajectories of a normalized-action policy are drawn with the config's action scale
    (0.1: policy units to the plane's); `render --video --seed 5` draws the resets, actions
    and the recorded episode from seed 5."""
    import metarl.rl.experiment as rl_experiment
    import metarl.rl.render as render
    import metarl.rl.video as video
    from metarl.experiment import RenderOptions
    from metarl.rl.build import action_scale
    from metarl.rl.experiment import MetaRLExperiment

    config = _navigation_config()
    state = {"trainer": {"params": new_policy_params(config, "init")}, "iteration": 0}
    drawn = []
    monkeypatch.setattr(render, "plot_navigation_trajectories",
                        lambda tasks, episodes, output, **kwargs: drawn.append(kwargs) or output)
    MetaRLExperiment().render(config, state, tmp_path, RenderOptions(tasks=2, steps=1))
    assert drawn[0]["action_scale"] == action_scale(config) == 0.1

    streams, recorded = [], []
    for name in ("numpy_generator", "torch_generator"):
        real = getattr(rl_experiment, name)
        monkeypatch.setattr(rl_experiment, name, lambda seed, purpose, real=real: (
            streams.append((seed, purpose)) or real(seed, purpose)))
    monkeypatch.setattr(video, "check_rendering", lambda *args, **kwargs: None)
    monkeypatch.setattr(video, "record_adaptation_video", lambda *args, **kwargs: (
        recorded.append(kwargs["seed"]) or args[4]))
    MetaRLExperiment().render(config, state, tmp_path, RenderOptions(
        steps=1, seed=5, video=tmp_path / "v.gif", task="goal=0.3,-0.2"))
    assert {(5, "video-resets"), (5, "video-actions")} <= set(streams)
    assert [stream for stream in streams if stream[1].startswith("video")] == [
        (5, "video-resets"), (5, "video-actions")] and recorded == [5]


def test_a_velocity_target_outside_the_training_range_is_noted(capsys):
    from metarl.rl.experiment import _note_unseen_task

    for inside in (0.0, 1.3, 2.0):
        _note_unseen_task("velocity", inside)
    assert capsys.readouterr().err == ""
    _note_unseen_task("velocity", 2.5)
    assert ("note: velocity 2.5 lies outside the training targets, U[0, 2] m/s"
            in capsys.readouterr().err)


def test_the_papers_returns_are_shown_only_for_the_papers_episode_length(tmp_path):
    from metarl.experiment import EvaluateOptions
    from metarl.rl.experiment import MetaRLExperiment

    shown = {}
    for steps in (100, 150):
        config = from_dict(MetaRLConfig, {"env": {"name": "navigation2d",
                                                  "max_episode_steps": steps},
                                          "policy": {"hidden_sizes": [8]},
                                          "evaluation": {"episodes_per_task": 2}})
        state = {"trainer": {"params": new_policy_params(config, "init")}, "iteration": 0}
        shown[steps] = MetaRLExperiment().evaluate(
            config, state, tmp_path, EvaluateOptions(steps=0, tasks=2))["published"]
    assert shown[100]["MAML paper"]["1"] == -11.68 and shown[150] == {}
