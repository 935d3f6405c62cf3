"""Options and bounds at their edges: --seed 0, --tasks/--steps/--seed reaching evaluate and
render, evaluation overrides, config bounds and cross-field checks, and which steps, tasks and
frames the meta-RL pictures and videos show (behaviour a mutation pass found unpinned)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from metarl.cli import main
from metarl.config import ConfigError, parse_override, validate_config
from metarl.experiment import (
    EvaluateOptions,
    RenderOptions,
    config_from_data,
    get_experiment,
    load_config,
    with_evaluation_overrides,
)

FAST = ["--set", "training.iterations=2", "--set", "training.meta_batch_size=2",
        "--set", "run.progress=false", "--set", "run.tensorboard=false"]


# ------------------------------------------------------------------ metarl/config.py, experiment.py

def test_seed_zero_given_to_load_config_replaces_the_files_seed_and_wins_over_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("experiment: sine\nseed: 5\n")
    assert load_config(path)[1].seed == 5
    assert load_config(path, seed=0)[1].seed == 0          # mutant `if seed:` keeps 5
    assert load_config(path, ["seed=7"], seed=3)[1].seed == 3  # --seed applied after --set


def test_first_order_maml_may_learn_its_inner_rates():
    _, config = config_from_data({"experiment": "sine",
                                  "adaptation": {"method": "fomaml", "learn_inner_lr": True}})
    assert config.adaptation.label == "fomaml + Meta-SGD"


def test_a_list_given_as_a_tuple_in_code_validates_as_a_list():
    _, config = config_from_data({"experiment": "meta_rl"})
    config.policy.hidden_sizes = (8, 8)
    assert validate_config(config).policy.hidden_sizes == [8, 8]


def test_an_empty_override_value_is_the_empty_string():
    assert parse_override("data.root=") == (["data", "root"], "")
    assert parse_override("data.root=null") == (["data", "root"], None)


def test_evaluation_overrides_take_location_keys_and_baselines_only_where_drawn():
    omniglot = get_experiment("omniglot")
    _, config = config_from_data({"experiment": "omniglot"})
    moved = with_evaluation_overrides(omniglot, config, ["data.root=/elsewhere",
                                                         "data.cache_dir=/cache"])
    assert (moved.data.root, moved.data.cache_dir) == ("/elsewhere", "/cache")
    # whether a progress bar shows changes nothing about the run
    assert not with_evaluation_overrides(omniglot, config, ["run.progress=false"]).run.progress
    with pytest.raises(ConfigError, match=r"how the run is evaluated, and where it computes.*"
                                          r"and run\.progress"):
        with_evaluation_overrides(omniglot, config, ["run.checkpoint_every=3"])
    meta_rl = get_experiment("meta_rl")
    _, rl = config_from_data({"experiment": "meta_rl"})
    assert with_evaluation_overrides(
        meta_rl, rl, ["baselines.oracle_iterations=5"]).baselines.oracle_iterations == 5
    with pytest.raises(ConfigError, match=r"--set changes only evaluation\.\* keys, how"):
        with_evaluation_overrides(meta_rl, rl, ["baselines.oracle_iterations=5"],
                                  baselines=False)  # render draws no baselines
    with pytest.raises(ConfigError,
                       match=re.escape("--set changes only evaluation.* and baselines.*")):
        with_evaluation_overrides(meta_rl, rl, ["evaluation={steps: 7}"])  # not a whole section
    for key in ("steps", "tasks", "seed"):  # they have options of their own
        with pytest.raises(ConfigError, match=re.escape(
                f"--set 'evaluation.{key}=3': give --{key} {key.upper()} instead")):
            with_evaluation_overrides(meta_rl, rl, [f"evaluation.{key}=3"])


# ------------------------------------------------------------------ metarl/rl/config.py bounds

@pytest.mark.parametrize(("data", "message"), [
    ({"env": {"max_episode_steps": 0}}, r"^env.max_episode_steps = 0: must be >= 1$"),
    ({"evaluation": {"later_lr_scale": 1.5}},
     r"^evaluation.later_lr_scale = 1.5: must be <= 1$"),
    ({"evaluation": {"seed": -1}}, r"^evaluation.seed = -1: must be >= 0$"),
    ({"trpo": {"curvature_stride": 0}}, r"^trpo.curvature_stride = 0: must be >= 1$"),
    ({"env": {"name": "navigation2d", "reset_noise": "rllab"}},
     r"^env.reset_noise = rllab: navigation2d starts every episode at its origin"),
])
def test_more_bad_meta_rl_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_data({"experiment": "meta_rl", **data})


def test_meta_rl_accepts_zero_damping():
    _, config = config_from_data({"experiment": "meta_rl", "trpo": {"cg_damping": 0}})
    assert config.trpo.cg_damping == 0.0


# ------------------------------------------------------------------ omniglot cross-field checks

def _omniglot(**sections):
    return config_from_data({"experiment": "omniglot", **sections})[1]


def test_omniglot_cross_field_checks_at_their_boundaries():
    assert _omniglot(task={"shots": 10, "queries": 10}).task.queries == 10  # 20 drawings: all
    with pytest.raises(ConfigError, match=r"^task.shots \+ evaluation.queries = 21: a character "
                                          r"has only 20 drawings$"):
        _omniglot(task={"shots": 15}, evaluation={"queries": 6})
    assert _omniglot(task={"shots": 1, "queries": 15}, evaluation={"shots": 5}).task.shots == 1
    with pytest.raises(ConfigError, match=r"^evaluation.shots \+ task.queries = 21: a "
                                          r"character has only 20 drawings$"):
        _omniglot(task={"shots": 1, "queries": 16}, evaluation={"shots": 5})
    assert _omniglot(evaluation={"shots": 18, "queries": 2}).evaluation.shots == 18
    with pytest.raises(ConfigError, match=r"^evaluation.shots \+ evaluation.queries = 21"):
        _omniglot(evaluation={"shots": 18, "queries": 3})
    assert _omniglot(evaluation={"shots": 2, "inner_batch_size": 10}).evaluation.shots == 2
    with pytest.raises(ConfigError, match=r"^evaluation.inner_batch_size = 11 exceeds the 10 "
                                          r"support images of a test task"):
        _omniglot(evaluation={"shots": 2, "inner_batch_size": 11})
    assert _omniglot(task={"ways": 20}, data={"train_characters": 20}).task.ways == 20
    with pytest.raises(ConfigError, match=r"^task.ways = 21 exceeds data.train_characters = 20"):
        _omniglot(task={"ways": 21}, data={"train_characters": 20})
    assert _omniglot(task={"ways": 20}, data={"train_characters": 1603}).task.ways == 20
    with pytest.raises(ConfigError, match=r"^task.ways = 21 exceeds the 20 test characters"):
        _omniglot(task={"ways": 21}, data={"train_characters": 1603})
    with pytest.raises(ConfigError, match=r"^data.train_characters = 1604: must be <= 1603$"):
        _omniglot(data={"train_characters": 1604})
    assert _omniglot(model={"downsample": "maxpool"}, data={"image_size": 16}).data.image_size == 16
    with pytest.raises(ConfigError, match=r"^data.image_size = 12 with model.downsample = maxpool"):
        _omniglot(model={"downsample": "maxpool"}, data={"image_size": 12})


# ------------------------------------------------------------------ metarl/cli.py

def test_resume_refuses_seed_zero_too(capsys):
    assert main(["train", "--resume", "/nonexistent/run", "--seed", "0"]) == 2
    assert "give no CONFIG, --seed or --run-dir with it" in capsys.readouterr().err


def test_a_yml_name_that_does_not_exist_is_a_missing_file(capsys):
    assert main(["config", "mine.yml"]) == 2
    assert "config file mine.yml does not exist" in capsys.readouterr().err


def test_evaluate_and_render_options_reach_the_experiment(tmp_path, monkeypatch, capsys):
    from metarl.supervised.sine_experiment import SineExperiment

    run = tmp_path / "run"
    assert main(["train", "sine-quick", "--run-dir", str(run), *FAST,
                 "--set", "adaptation.learn_inner_lr=true"]) == 0
    seen = []
    monkeypatch.setattr(SineExperiment, "evaluate",
                        lambda self, config, state, run_dir, options: seen.append(options) or {})
    monkeypatch.setattr(SineExperiment, "render",
                        lambda self, config, state, run_dir, options: seen.append(options) or [])
    capsys.readouterr()
    assert main(["evaluate", str(run), "--steps", "1", "--tasks", "3", "--seed", "5",
                 "--set", "evaluation.later_lr_scale=0.25"]) == 0
    assert seen[-1] == EvaluateOptions(steps=1, tasks=3, seed=5, baselines=())
    assert ("evaluation.later_lr_scale=0.25 has no effect" in capsys.readouterr().err)  # Meta-SGD
    assert main(["render", str(run), "--steps", "2", "--tasks", "3", "--seed", "6"]) == 0
    assert seen[-1] == RenderOptions(tasks=3, steps=2, seed=6)
    assert main(["render", str(run)]) == 0
    assert seen[-1] == RenderOptions(tasks=4, steps=None, seed=None)
    capsys.readouterr()
    assert main(["render", str(run), "--set", "baseline.iterations=5"]) == 2  # draws none
    assert "--set changes only evaluation.* keys" in capsys.readouterr().err


# ------------------------------------------------------------ meta-RL render and evaluate plumbing

def _tiny_rl():
    from metarl.rl.build import new_policy_params

    _, config = config_from_data({
        "experiment": "meta_rl", "policy": {"hidden_sizes": [4]},
        "env": {"max_episode_steps": 5}, "evaluation": {"episodes_per_task": 2, "tasks": 3}})
    return config, {"trainer": {"params": new_policy_params(config, "init")}, "iteration": 0}


def test_meta_rl_pictures_draw_the_chosen_tasks_seed_and_steps(tmp_path, monkeypatch):
    import metarl.rl.render as render
    from metarl.rl.build import evaluation_rollouts
    from metarl.rl.experiment import MetaRLExperiment

    config, state = _tiny_rl()
    drawn = {}
    monkeypatch.setattr(render, "plot_navigation_trajectories",
                        lambda tasks, episodes, output, **kw: drawn.update(
                            tasks=tasks, episodes=episodes, **kw) or output)
    MetaRLExperiment().render(config, state, tmp_path, RenderOptions(tasks=2, steps=7, seed=5))
    tasks, rollouts = evaluation_rollouts(config, state["trainer"]["params"], tasks=2, steps=7,
                                          seed=5)
    assert drawn["step_numbers"] == [0, 1, 2, 4, 5, 7]
    assert [t["goal"].tolist() for t in drawn["tasks"]] == [t["goal"].tolist() for t in tasks]
    for step, episodes in zip(drawn["step_numbers"], drawn["episodes"], strict=True):
        assert torch.equal(episodes.observations, rollouts.episodes[step].observations)


def test_meta_rl_evaluate_takes_tasks_and_seed_of_its_options(tmp_path):
    from metarl.rl.build import sample_test_tasks
    from metarl.rl.experiment import MetaRLExperiment, jsonable_task

    config, state = _tiny_rl()
    result = MetaRLExperiment().evaluate(config, state, tmp_path,
                                         EvaluateOptions(steps=1, tasks=2, seed=5))
    assert (result["tasks"], result["seed"], result["steps"]) == (2, 5, [0, 1])
    assert result["test_tasks"] == [jsonable_task(t) for t in sample_test_tasks(config, 2, 5)]
    assert json.loads((tmp_path / "evaluation.json").read_text())["seed"] == 5


# ------------------------------------------------------------------ metarl/rl/render.py, video.py

def test_six_steps_are_drawn_as_six_of_seven():
    from metarl.rl.render import steps_shown

    assert steps_shown(6) == [0, 1, 2, 3, 5, 6]


def test_a_video_takes_ten_steps_but_not_eleven():
    from metarl.rl.video import check_video_steps

    check_video_steps(10)
    with pytest.raises(ConfigError, match="11 adaptation steps: a video shows"):
        check_video_steps(11)


def test_trajectory_pictures_draw_no_more_episodes_than_a_task_has(tmp_path):
    from test_navigation import _two_slot_episodes

    from metarl.rl.render import plot_navigation_trajectories

    goal = {"goal": np.array([0.3, -0.2])}
    output = plot_navigation_trajectories([goal, goal], [_two_slot_episodes()], tmp_path / "t.png",
                                          episodes_shown=3, action_scale=0.1)
    assert output.is_file()


def test_a_video_episode_ends_when_the_task_is_done():
    from metarl.rl.video import run_episode

    class Done:  # terminates after its second step
        t = 0

        def reset(self, seed):
            self.t = 0
            return np.zeros(2, np.float32), {}

        def render(self):
            return np.full((4, 4, 3), self.t, np.uint8)

        def step(self, action):
            self.t += 1
            return np.zeros(2, np.float32), -1.0, self.t == 2, False, {}

    def policy(params, obs):
        return torch.distributions.Normal(torch.zeros(1, 1, 2), torch.ones(1, 1, 2))

    frames, rewards = run_episode(Done(), policy, {}, steps=10, seed=0,
                                  generator=torch.Generator().manual_seed(0))
    assert len(frames) == 3 and rewards.tolist() == [-1.0, -1.0]


def test_a_video_task_index_is_below_evaluation_tasks():
    from metarl.rl.experiment import parse_task

    config, _ = _tiny_rl()  # evaluation.tasks = 3
    assert set(parse_task(config, "2", 0)) == {"goal"}
    with pytest.raises(ConfigError, match=r"--task 3: a test-task index must be >= 0 and < 3"):
        parse_task(config, "3", 0)


def test_a_bound_with_a_reason_says_it():
    with pytest.raises(ConfigError, match=r"^task.train_shots = 25: must be <= 19 \(a character "
                                          r"has 20 drawings, and a task keeps one for a query "
                                          r"at least\)$"):
        _omniglot(task={"train_shots": 25})
    with pytest.raises(ConfigError, match=r"^task.ways = 0: must be >= 2$"):  # none given
        _omniglot(task={"ways": 0})
