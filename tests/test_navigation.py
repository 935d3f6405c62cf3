"""The 2D navigation environment: Gymnasium checks, REFERENCE.md dynamics, batched form."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import metarl  # noqa: F401  (registers the environments)
from metarl.envs import ENV_FAMILIES
from metarl.envs.navigation import BatchedNavigation2D, Navigation2DEnv


def test_passes_gymnasium_env_checker():
    env = gym.make("metarl/Navigation2D-v0")
    check_env(env.unwrapped, skip_render_check=False)


def test_make_with_module_prefix_and_time_limit():
    env = gym.make("metarl.envs:metarl/Navigation2D-v0")
    assert env.spec.max_episode_steps == 100
    env.reset(seed=0)
    env.unwrapped.reset_task({"goal": np.array([5.0, 5.0])})  # unreachable: runs to the limit
    steps = 0
    while True:
        _, _, terminated, truncated, _ = env.step(np.zeros(2, dtype=np.float32))
        steps += 1
        if terminated or truncated:
            break
    assert steps == 100 and truncated and not terminated


def test_dynamics_and_reward_follow_the_reference():
    env = Navigation2DEnv()
    obs, _ = env.reset(seed=0, options={"task": {"goal": np.array([0.25, -0.1])}})
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    obs, reward, terminated, _, _ = env.step(np.array([0.5, -0.05]))  # clipped to 0.1
    np.testing.assert_allclose(obs, [0.1, -0.05], atol=1e-7)
    assert reward == pytest.approx(-np.hypot(0.1 - 0.25, -0.05 + 0.1))  # L2, not squared
    assert not terminated
    env.step(np.array([0.1, -0.05]))
    _, reward, terminated, _, _ = env.step(np.array([0.055, 0.0]))  # within 0.01 of goal
    assert terminated and reward == pytest.approx(-0.005)


def test_task_sampling_is_uniform_and_reproducible():
    env = Navigation2DEnv()
    env.reset(seed=3)
    tasks = env.sample_tasks(2000)
    goals = np.stack([t["goal"] for t in tasks])
    assert goals.shape == (2000, 2) and goals.min() >= -0.5 and goals.max() <= 0.5
    assert abs(goals.mean()) < 0.02 and abs(goals.std() - 1 / np.sqrt(12)) < 0.01
    again = Navigation2DEnv()
    again.reset(seed=3)
    np.testing.assert_array_equal(goals[:5], np.stack([t["goal"]
                                                       for t in again.sample_tasks(5)]))
    rng_tasks = env.sample_tasks(3, np.random.default_rng(7))
    np.testing.assert_array_equal(
        np.stack([t["goal"] for t in rng_tasks]),
        np.stack([t["goal"] for t in env.sample_tasks(3, np.random.default_rng(7))]))


def test_batched_form_equals_gymnasium_form_step_by_step():
    rng = np.random.default_rng(0)
    family = ENV_FAMILIES["navigation2d"]
    tasks = family.sample_tasks(3, rng)
    tasks[1] = {"goal": np.array([0.02, 0.0])}  # reachable early: exercises termination
    batched = family.make_batched(tasks, 2, np.random.default_rng(0))
    assert isinstance(batched, BatchedNavigation2D)
    singles = [Navigation2DEnv(task) for task in tasks for _ in range(2)]
    obs_b = batched.reset().numpy()
    obs_s = np.stack([env.reset()[0] for env in singles])
    np.testing.assert_array_equal(obs_b, obs_s)
    done = np.zeros(6, dtype=bool)
    for _ in range(100):
        actions = rng.normal(0, 0.1, size=(6, 2))
        actions[2:4] = [0.01, 0.0]
        obs_b, rewards_b, terminated_b = (x.numpy() for x in batched.step(torch.tensor(actions)))
        for i, env in enumerate(singles):
            if done[i]:
                assert rewards_b[i] == 0.0 and not terminated_b[i]
                continue
            obs, reward, terminated, _, _ = env.step(actions[i])
            np.testing.assert_allclose(obs_b[i], obs, atol=1e-6)
            assert rewards_b[i] == pytest.approx(reward, abs=1e-9)
            assert terminated_b[i] == terminated
            done[i] |= terminated
    assert done[2] and done[3]


def test_render_draws_goal_and_trail():
    env = Navigation2DEnv({"goal": np.array([0.3, 0.3])}, render_mode="rgb_array")
    env.reset()
    env.step(np.array([0.1, 0.1]))
    image = env.render()
    assert image.shape == (200, 200, 3) and image.dtype == np.uint8
    assert (image == [220, 40, 40]).all(axis=-1).any()


@pytest.mark.parametrize(("miss", "terminates"), [(0.015, False), (0.009, True)])
def test_success_radius_is_0_01_in_each_coordinate(miss, terminates):
    goal = np.array([0.05, -0.04])
    action = goal - np.array([miss, -0.5 * miss])  # one step, lands `miss` short in x
    env = Navigation2DEnv({"goal": goal})
    env.reset()
    _, reward, terminated, _, _ = env.step(action)
    assert terminated == terminates
    assert reward == pytest.approx(-math.hypot(miss, 0.5 * miss))
    batched = BatchedNavigation2D(torch.tensor(goal[None], dtype=torch.float64))
    batched.reset()
    _, _, terminated_b = batched.step(torch.tensor(action[None], dtype=torch.float64))
    assert bool(terminated_b[0]) == terminates


def test_batched_environments_that_are_done_stay_put_without_reward():
    # Environment 0 reaches its goal (0.005 short in each coordinate) at step 1; the next
    # action would move it away, but it is done: no move and reward exactly 0.
    env = BatchedNavigation2D(torch.tensor([[0.05, 0.05], [0.4, 0.4]], dtype=torch.float64))
    env.reset()
    _, _, terminated = env.step(torch.tensor([[0.045, 0.045], [0.1, 0.1]], dtype=torch.float64))
    assert terminated.tolist() == [True, False]
    obs, rewards, terminated = env.step(torch.tensor([[0.1, 0.1], [0.1, 0.1]],
                                                     dtype=torch.float64))
    assert float(rewards[0]) == 0.0 and not bool(terminated[0])
    torch.testing.assert_close(obs[0], torch.tensor([0.045, 0.045]))
    assert float(rewards[1]) == pytest.approx(-math.hypot(0.2, 0.2))


def test_a_goal_must_be_two_numbers():
    with pytest.raises(ValueError, match=r"task goal must have shape \(2,\), got \(3,\)"):
        Navigation2DEnv({"goal": np.zeros(3)})
    with pytest.raises(ValueError, match=r"goals must have shape \(N, 2\), got \(4,\)"):
        BatchedNavigation2D(torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="render_mode must be one of"):
        Navigation2DEnv(render_mode="human")
    with pytest.raises(ValueError, match=r"a navigation task is \{'goal': \(x, y\)\}"):
        Navigation2DEnv({"velocity": 1.0})
    with pytest.raises(ValueError, match=r"task goal must be finite, got \[0.1, nan\]"):
        Navigation2DEnv({"goal": [0.1, float("nan")]})


def test_the_task_keeps_its_own_goal_and_actions_must_be_two_numbers():
    goal = np.array([0.3, -0.2])
    env = Navigation2DEnv()
    env.reset(options={"task": {"goal": goal}})
    goal[:] = 0.0  # the caller's array changes; the task does not
    np.testing.assert_array_equal(env.goal, [0.3, -0.2])
    for action in (np.zeros(1), np.zeros((2, 2))):
        with pytest.raises(ValueError, match=r"a navigation action has shape \(2,\), got"):
            env.step(action)


def test_reset_reports_the_task_and_the_environments_generator_draws_the_tasks():
    env = Navigation2DEnv({"goal": np.array([0.2, -0.3])})
    _, info = env.reset(seed=1)
    np.testing.assert_array_equal(info["task"]["goal"], [0.2, -0.3])
    first = np.stack([t["goal"] for t in env.sample_tasks(3)])
    env.reset(seed=2)
    assert not np.array_equal(first, np.stack([t["goal"] for t in env.sample_tasks(3)]))


def test_observations_stay_in_the_observation_space_for_a_whole_episode_of_any_length():
    env = gym.make("metarl/Navigation2D-v0", max_episode_steps=300)
    obs, _ = env.reset(options={"task": {"goal": np.array([0.5, 0.5])}})
    truncated = False
    steps = 0
    while not truncated:  # the farthest it can go: 0.1 per step and coordinate
        obs, _, _, truncated, _ = env.step(np.array([1.0, -1.0]))
        steps += 1
        assert env.observation_space.contains(obs)
    assert steps == 300
    np.testing.assert_allclose(obs, [30.0, -30.0], atol=1e-4)


def test_render_draws_the_goal_and_the_trail_where_they_are():
    """The picture spans [-1, 1]^2 with y up: (x, y) is at row (1 - y)/2 · 199, column
    (x + 1)/2 · 199; the goal is a red 7x7 square, each visited position a blue 3x3 dot."""
    env = Navigation2DEnv({"goal": np.array([0.5, 0.5])}, render_mode="rgb_array")
    env.reset()
    env.step(np.array([0.1, 0.1]))
    image = env.render()
    red = np.argwhere((image == [220, 40, 40]).all(axis=-1))
    blue = np.argwhere((image == [40, 90, 200]).all(axis=-1))
    assert red.mean(axis=0).tolist() == [50.0, 149.0] and len(red) == 49  # row, column
    dots = {(r, c) for r in range(99, 102) for c in range(99, 102)}  # the origin
    dots |= {(r, c) for r in range(89, 92) for c in range(108, 111)}  # (0.1, 0.1)
    assert {tuple(p) for p in blue.tolist()} == dots


def test_a_frame_of_another_size_keeps_one_scale_on_both_axes():
    """320 x 240: y from 1 to -1 over the rows (119.5 pixels per unit), x around the middle
    column at the same scale (so from -1.34 to 1.34)."""
    env = Navigation2DEnv({"goal": np.array([-0.5, 0.25])}, render_mode="rgb_array",
                          width=320, height=240)
    env.reset()
    env.step(np.array([0.1, 0.0]))
    image = env.render()
    assert image.shape == (240, 320, 3)
    red = np.argwhere((image == [220, 40, 40]).all(axis=-1))
    assert red.mean(axis=0).tolist() == [round(119.5 - 0.25 * 119.5), round(159.5 - 0.5 * 119.5)]
    blue = {tuple(p) for p in np.argwhere((image == [40, 90, 200]).all(axis=-1)).tolist()}
    assert (120, 160) in blue and (120, round(159.5 + 0.1 * 119.5)) in blue
    for size in ({"width": 1}, {"height": 2.5}):
        with pytest.raises(ValueError, match="whole numbers of at least 2 x 2"):
            Navigation2DEnv(render_mode="rgb_array", **size)
    Navigation2DEnv(width=1)  # no rendering, no size to check


def test_positions_out_of_view_are_not_drawn_on_its_edge():
    env = Navigation2DEnv({"goal": np.array([0.0, 0.5])}, render_mode="rgb_array")
    env.reset()
    for _ in range(15):  # to x = 1.5, beyond the right edge (x = 1)
        env.step(np.array([0.1, 0.0]))
    blue = np.argwhere((env.render() == [40, 90, 200]).all(axis=-1))
    # x = 0 .. 0.9 in view, and the dot at x = 1.0 cut by the edge (its third column off it)
    assert blue[:, 1].max() == 199 and len(blue) == 3 * 3 * 10 + 3 * 2
    assert sorted({int(c) for c in blue[:, 1]})[-2:] == [198, 199]  # the dot at x = 1.0


def test_batched_reset_and_restart_start_done_environments_again():
    """After reaching the goal an environment is done; reset (all) and restart (those
    chosen) put it back at the origin, running: it moves and is rewarded again."""
    goals = torch.tensor([[0.05, 0.0], [0.05, 0.0]], dtype=torch.float64)
    reach = torch.tensor([[0.05, 0.0], [0.05, 0.0]], dtype=torch.float64)
    env = BatchedNavigation2D(goals)
    env.reset()
    assert env.step(reach)[2].tolist() == [True, True]
    observations = env.restart(torch.tensor([True, False]))
    torch.testing.assert_close(observations, torch.tensor([[0.0, 0.0], [0.05, 0.0]]))
    _, rewards, terminated = env.step(reach)
    assert terminated.tolist() == [True, False] and rewards.tolist() == [0.0, 0.0]
    env.reset()
    obs, rewards, _ = env.step(torch.tensor([[0.01, 0.0], [0.02, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(obs, torch.tensor([[0.01, 0.0], [0.02, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([-0.04, -0.03], dtype=torch.float64))


def _two_slot_episodes():
    """Episodes of 2 tasks x 2 slots x 3 steps from the origin, actions in policy units:
    slot 0 steps (1, 0.5), slot 1 (-2, 0) (beyond the bound); each step is rewarded -1."""
    from metarl.rl.episodes import Episodes

    actions = torch.tensor([[1.0, 0.5], [-2.0, 0.0]]).view(1, 2, 1, 2).expand(2, 2, 3, 2)
    moves = actions.clamp(-1.0, 1.0) * 0.1
    observations = torch.cat([torch.zeros(2, 2, 1, 2), moves.cumsum(dim=2)[:, :, :2]], dim=2)
    ones = torch.ones(2, 2, 3)
    return Episodes(observations=observations, actions=actions.clone(), rewards=-ones,
                    mask=ones, log_probs=0 * ones, times=torch.arange(3).expand(2, 2, 3))


def test_an_episodes_positions_end_with_its_last_move_scaled_and_clipped():
    from metarl.rl.render import episode_positions

    episodes = _two_slot_episodes()
    np.testing.assert_allclose(episode_positions(episodes, 0, 0, action_scale=0.1),
                               [[0.0, 0.0], [0.1, 0.05], [0.2, 0.1], [0.3, 0.15]], atol=1e-6)
    np.testing.assert_allclose(episode_positions(episodes, 1, 1, action_scale=0.1),
                               [[0.0, 0.0], [-0.1, 0.0], [-0.2, 0.0], [-0.3, 0.0]], atol=1e-6)


def test_trajectory_plot_draws_the_episodes_shown_and_the_goal_of_each_task(tmp_path,
                                                                          saved_figures):
    from metarl.rl.render import plot_navigation_trajectories

    tasks = [{"goal": np.array([0.3, -0.2])}, {"goal": np.array([-0.4, 0.1])}]
    episodes = _two_slot_episodes()
    output = plot_navigation_trajectories(tasks, [episodes, episodes], tmp_path / "t.png",
                                          episodes_shown=1, action_scale=0.1, title="maml")
    assert output.read_bytes().startswith(b"\x89PNG")
    fig = saved_figures[-1]
    assert fig._suptitle.get_text() == "2D navigation: maml"
    for ax, task in zip(fig.axes, tasks, strict=True):
        lines = ax.get_lines()  # the first episode of each step only
        assert [line.get_label() for line in lines] == ["0 step(s): return -3.0",
                                                        "1 step(s): return -3.0"]
        np.testing.assert_allclose(lines[0].get_xydata()[-1], [0.3, 0.15], atol=1e-6)
        (goal,) = [c for c in ax.collections if c.get_label() == "goal"]
        np.testing.assert_allclose(goal.get_offsets(), [task["goal"]])


def test_trajectory_panels_show_the_goal_square_and_widen_for_paths_that_leave_it(
        tmp_path, saved_figures):
    from metarl.rl.episodes import Episodes
    from metarl.rl.render import plot_navigation_trajectories

    near = _two_slot_episodes()  # paths within 0.3 of the origin
    far = Episodes(**{**vars(near), "observations": near.observations * 4})  # to (-0.9, 0)
    plot_navigation_trajectories([{"goal": np.array([0.3, -0.2])}] * 2, [near, far],
                                 tmp_path / "t.png", episodes_shown=2, action_scale=0.1)
    for ax in saved_figures[-1].axes:
        limit = -ax.get_xlim()[0]
        assert ax.get_xlim() == (-limit, limit) and ax.get_ylim() == (-limit, limit)
        # the path that reached 0.9 from the origin is in view, with room around it
        assert 0.95 < limit < 1.0
    plot_navigation_trajectories([{"goal": np.array([0.3, -0.2])}] * 2, [near, near],
                                 tmp_path / "t.png", episodes_shown=2, action_scale=0.1)
    assert saved_figures[-1].axes[0].get_xlim() == (-0.6, 0.6)


def test_a_path_ends_with_its_own_last_action_and_each_panel_shows_its_tasks_return(
        tmp_path, saved_figures):
    """One slot of 3 steps whose last action differs from the others, for 2 tasks rewarded
    -1 and -2 a step: the path's last point is the last observation plus the last action,
    and each task's panel labels its own return."""
    from metarl.rl.episodes import Episodes
    from metarl.rl.render import episode_positions, plot_navigation_trajectories

    actions = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).expand(2, 1, 3, 2)
    observations = torch.cat([torch.zeros(2, 1, 1, 2),
                              (actions * 0.1).cumsum(dim=2)[:, :, :2]], dim=2)
    ones = torch.ones(2, 1, 3)
    episodes = Episodes(observations=observations, actions=actions.clone(),
                        rewards=-ones * torch.tensor([1.0, 2.0]).view(2, 1, 1), mask=ones,
                        log_probs=0 * ones, times=torch.arange(3).expand(2, 1, 3))
    np.testing.assert_allclose(episode_positions(episodes, 0, 0, action_scale=0.1),
                               [[0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [0.2, 0.1]], atol=1e-6)
    plot_navigation_trajectories([{"goal": np.array([0.3, -0.2])}] * 2, [episodes],
                                 tmp_path / "t.png", episodes_shown=1, action_scale=0.1)
    assert [[line.get_label() for line in ax.get_lines()]
            for ax in saved_figures[-1].axes] == [["0 step(s): return -3.0"],
                                                  ["0 step(s): return -6.0"]]


@pytest.mark.parametrize(("steps", "shown"), [
    (0, [0]), (3, [0, 1, 2, 3]), (5, [0, 1, 2, 3, 4, 5]), (7, [0, 1, 2, 4, 5, 7]),
    (1000, [0, 1, 2, 335, 667, 1000])])
def test_pictures_draw_at_most_six_of_the_adaptation_steps(steps, shown):
    from metarl.rl.render import steps_shown

    assert steps_shown(steps) == shown


def test_trajectory_lines_are_labelled_with_the_steps_they_show(tmp_path, saved_figures):
    from metarl.rl.render import plot_navigation_trajectories

    episodes = _two_slot_episodes()
    plot_navigation_trajectories([{"goal": np.array([0.3, -0.2])}] * 2, [episodes] * 3,
                                 tmp_path / "t.png", episodes_shown=1, action_scale=0.1,
                                 step_numbers=[0, 1, 40])
    lines = saved_figures[-1].axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["0 step(s): return -3.0",
                                                    "1 step(s): return -3.0",
                                                    "40 step(s): return -3.0"]
    assert [line.get_color() for line in lines] == ["C0", "C1", "C2"]  # not C40


def test_too_small_a_limit_of_shown_steps_is_refused():
    from metarl.rl.render import steps_shown

    with pytest.raises(ValueError, match="limit must be at least 4"):
        steps_shown(10, limit=3)


def test_a_navigation_drawing_failure_is_not_blamed_on_opengl(monkeypatch):
    """Only MuJoCo renders through OpenGL: navigation's own errors surface as they are."""
    import metarl.rl.video as video

    def broken(self):
        raise RuntimeError("a bug in the drawing")

    monkeypatch.setattr(Navigation2DEnv, "render", broken)
    with pytest.raises(RuntimeError, match="a bug in the drawing") as error:
        video.check_rendering("metarl/Navigation2D-v0", {"goal": np.zeros(2)}, mujoco=False)
    assert not isinstance(error.value, video.RenderBackendError)


def test_navigation_videos_do_not_load_mujoco(tmp_path):
    """A MUJOCO_GL that MuJoCo refuses (at import) does not stop a navigation video: the
    video module loads MuJoCo only to explain a half-cheetah rendering failure."""
    import os
    import subprocess
    import sys

    code = ("import sys, metarl.cli, metarl.rl.video, metarl.rl.render; "
            "print('mujoco' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "MUJOCO_GL": "no-such-backend"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
