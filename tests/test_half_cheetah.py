"""Half-cheetah velocity and direction: Gymnasium checks, REFERENCE.md rewards on the
HalfCheetah-v5 model and observation, and the mujoco.batch form equal to the Gymnasium form."""

from __future__ import annotations

import functools
import pickle
import re

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from script_modules import load_script

import metarl  # noqa: F401  (registers the environments)
from metarl.envs import ENV_FAMILIES, env_family
from metarl.envs.half_cheetah import (
    FRAME_SKIP,
    BatchedHalfCheetah,
    HalfCheetahDirEnv,
    HalfCheetahVelEnv,
    compile_model,
    forward_velocity_index,
    model_path,
    reset_noise_draws,
    sample_targets,
)
from metarl.rl.episodes import sample_episodes
from metarl.rl.policy import expand_params, init_policy_params, policy_distribution

import policy_reference as ref

ENV_IDS = ["metarl/HalfCheetahVel-v0", "metarl/HalfCheetahDir-v0"]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_passes_gymnasium_env_checker(env_id):
    env = gym.make(env_id)
    assert env.spec.max_episode_steps == 200
    check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_episode_length_is_a_parameter(env_id):
    env = gym.make(env_id, max_episode_steps=100)
    env.reset(seed=0)
    for step in range(1, 101):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated and truncated == (step == 100)


def test_observation_and_dynamics_are_half_cheetah_v5():
    ours = HalfCheetahVelEnv({"velocity": 1.0})
    reference = gym.make("HalfCheetah-v5").unwrapped
    obs, _ = ours.reset(seed=4)
    ref_obs, _ = reference.reset(seed=4)
    np.testing.assert_array_equal(obs, ref_obs)
    assert obs.shape == (17,) and ours.dt == pytest.approx(0.05)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(20, 6))
    for action in actions:
        obs, *_ = ours.step(action)
        ref_obs, *_ = reference.step(action)
        np.testing.assert_array_equal(obs, ref_obs)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_frame_skip_is_a_parameter_with_v5s_dynamics(env_id):
    """frame_skip=1 (the rllab rate): dt 0.01 s, the checker passes, and the dynamics and
    observation are HalfCheetah-v5's at that frame skip."""
    env = gym.make(env_id, frame_skip=1)
    check_env(env.unwrapped, skip_render_check=True)
    ours = env.unwrapped
    assert ours.dt == pytest.approx(0.01) and ours.metadata["render_fps"] == 100
    reference = gym.make("HalfCheetah-v5", frame_skip=1).unwrapped
    obs, _ = ours.reset(seed=7)
    ref_obs, _ = reference.reset(seed=7)
    np.testing.assert_array_equal(obs, ref_obs)
    for action in np.random.default_rng(1).uniform(-1, 1, size=(30, 6)):
        x_before = ours.data.qpos[0]
        obs, _, _, _, info = ours.step(action)
        ref_obs, *_ = reference.step(action)
        np.testing.assert_array_equal(obs, ref_obs)
        assert info["x_velocity"] == pytest.approx((ours.data.qpos[0] - x_before) / 0.01)
    copy = pickle.loads(pickle.dumps(ours))
    assert copy.frame_skip == 1 and copy.dt == pytest.approx(0.01)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="frame_skip must be an integer >= 1"):
            gym.make(env_id, frame_skip=bad)
        with pytest.raises(ValueError, match="frame_skip must be an integer >= 1"):
            BatchedHalfCheetah("velocity", np.ones(2), np.random.default_rng(0),
                               frame_skip=bad)


def _model_fields(model) -> dict[str, object]:
    fields = {name: getattr(model, name) for name in dir(model) if not name.startswith("_")}
    arrays = {name: value.copy() for name, value in fields.items()
              if isinstance(value, np.ndarray)}
    stat = {f"stat.{name}": np.copy(getattr(model.stat, name)) for name in dir(model.stat)
            if not name.startswith("_")}
    return {**arrays, **stat}


def test_model_is_the_compilers_without_the_deprecated_settotalmass(capfd):
    import mujoco

    ours = compile_model()
    gym_form = HalfCheetahVelEnv().model
    captured = capfd.readouterr()
    assert "settotalmass" not in captured.out + captured.err
    assert mujoco.mj_getTotalmass(ours) == pytest.approx(14.0, rel=1e-12)
    try:
        reference = mujoco.MjModel.from_xml_path(str(model_path()))
    except ValueError:
        pytest.skip("this MuJoCo no longer compiles settotalmass")
    expected = _model_fields(reference)
    for model in (ours, gym_form):
        fields = _model_fields(model)
        assert fields.keys() == expected.keys()
        for name, value in expected.items():
            np.testing.assert_array_equal(fields[name], value, err_msg=name)


@pytest.mark.parametrize("kind", ["velocity", "direction"])
def test_rewards_follow_the_reference(kind):
    env_class = HalfCheetahVelEnv if kind == "velocity" else HalfCheetahDirEnv
    target = 1.3 if kind == "velocity" else -1.0
    env = env_class({kind: target})
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(10):
        action = rng.uniform(-1.6, 1.6, size=6)  # partly out of range: clipped, then costed
        x_before = env.data.qpos[0]
        _, reward, terminated, _, info = env.step(action)
        x_velocity = (env.data.qpos[0] - x_before) / 0.05
        assert info["x_velocity"] == pytest.approx(x_velocity)
        cost = 0.05 * np.sum(np.clip(action, -1, 1) ** 2)
        expected = (-abs(x_velocity - target) if kind == "velocity" else target * x_velocity)
        assert reward == pytest.approx(expected - cost)
        np.testing.assert_array_equal(env.data.ctrl, np.clip(action, -1, 1))
        assert not terminated


def test_tracking_camera_is_the_default_and_camera_id_still_works():
    assert HalfCheetahVelEnv({"velocity": 1.0}).camera_name == "track"
    chosen = HalfCheetahVelEnv({"velocity": 1.0}, camera_id=0)
    assert chosen.camera_id == 0 and chosen.camera_name is None


def test_task_interface_and_sampling():
    env = HalfCheetahVelEnv()
    env.reset(seed=2)
    tasks = env.sample_tasks(4000)
    velocities = np.array([t["velocity"] for t in tasks])
    assert velocities.min() >= 0.0 and velocities.max() <= 2.0
    assert abs(velocities.mean() - 1.0) < 0.05
    again = HalfCheetahVelEnv()
    again.reset(seed=2)
    assert again.sample_tasks(3) == tasks[:3]
    directions = sample_targets("direction", 4000, np.random.default_rng(0))
    assert set(np.unique(directions)) == {-1.0, 1.0}
    assert abs(directions.mean()) < 0.05
    env.reset_task({"velocity": 0.4})
    assert env.task == {"velocity": 0.4}
    _, info = env.reset(options={"task": {"velocity": 1.5}})
    assert info["task"] == {"velocity": 1.5}
    with pytest.raises(ValueError, match="direction"):
        HalfCheetahDirEnv({"direction": 0.5})
    with pytest.raises(ValueError, match="velocity"):
        env.reset_task({"goal": 1.0})
    with pytest.raises(ValueError, match="task velocity must be finite, got nan"):
        env.reset_task({"velocity": float("nan")})


@pytest.mark.parametrize(("kind", "frame_skip", "observe_x", "reward_velocity"), [
    ("velocity", 5, False, "torso"), ("direction", 5, False, "torso"),
    ("velocity", 1, False, "torso"), ("direction", 1, False, "torso"),
    ("direction", 5, True, "torso"), ("velocity", 5, False, "centre_of_mass"),
    ("direction", 1, False, "centre_of_mass")])
def test_batched_form_equals_gymnasium_form(kind, frame_skip, observe_x, reward_velocity):
    env_class = HalfCheetahVelEnv if kind == "velocity" else HalfCheetahDirEnv
    targets = np.array([0.3, 1.7, 1.0]) if kind == "velocity" else np.array([1.0, -1.0, 1.0])
    envs = [env_class({kind: float(t)}, frame_skip=frame_skip, reward_velocity=reward_velocity,
                      exclude_current_positions_from_observation=not observe_x)
            for t in targets]
    starts = [env.reset(seed=10 + i) for i, env in enumerate(envs)]
    batched = BatchedHalfCheetah(kind, targets, np.random.default_rng(0), threads=2,
                                 frame_skip=frame_skip, observe_x_position=observe_x,
                                 reward_velocity=reward_velocity)
    assert batched.observation_dim == envs[0].observation_space.shape[0] == 17 + observe_x
    assert batched.dt == pytest.approx(envs[0].dt)
    _assert_batched_follows_gymnasium(batched, envs, [s[0] for s in starts], steps=60, seed=3)


def _assert_batched_follows_gymnasium(batched, envs, starts, steps: int, seed: int) -> None:
    """From the Gymnasium envs' start states (observations ``starts``), the batched form gives
    the same observations and rewards as each env for ``steps`` random actions, some outside
    the bounds; nothing terminates."""
    obs = batched.reset(np.stack([env.data.qpos for env in envs]),
                        np.stack([env.data.qvel for env in envs]))
    np.testing.assert_allclose(obs.numpy(), np.stack(starts), rtol=0, atol=1e-6)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        actions = rng.uniform(-1.5, 1.5, size=(len(envs), 6))
        obs, rewards, terminated = batched.step(torch.from_numpy(actions))
        for i, env in enumerate(envs):
            env_obs, env_reward, *_ = env.step(actions[i])
            np.testing.assert_allclose(obs[i].numpy(), env_obs, rtol=1e-6, atol=1e-5)
            assert float(rewards[i]) == pytest.approx(env_reward, rel=1e-9, abs=1e-9)
        assert not terminated.any()


def _centre_of_mass_x(env) -> float:
    """The cheetah's centre-of-mass x (m), computed from the bodies' masses and centres on a
    copy of the simulation state, independently of the environment's code path."""
    import mujoco

    data = mujoco.MjData(env.model)
    data.qpos[:], data.qvel[:] = env.data.qpos, env.data.qvel
    mujoco.mj_forward(env.model, data)
    masses = env.model.body_mass
    return float((masses * data.xipos[:, 0]).sum() / masses.sum())


@pytest.mark.parametrize("kind", ["velocity", "direction"])
def test_centre_of_mass_reward_velocity(kind):
    """reward_velocity="centre_of_mass": v_x is the whole cheetah's centre-of-mass x
    displacement over the control step / dt, the reward follows REFERENCE.md's formula with it,
    the dynamics and observations stay v5's, the checker passes and copies keep the option."""
    env_class = HalfCheetahVelEnv if kind == "velocity" else HalfCheetahDirEnv
    target = 1.3 if kind == "velocity" else -1.0
    ours = env_class({kind: target}, reward_velocity="centre_of_mass")
    check_env(ours, skip_render_check=True)
    torso = env_class({kind: target})
    ours.reset(seed=6)
    torso.reset(seed=6)
    differences = []
    for action in np.random.default_rng(1).uniform(-1.2, 1.2, size=(30, 6)):
        com_before = _centre_of_mass_x(ours)
        obs, reward, *_, info = ours.step(action)
        torso_obs, _, *_, torso_info = torso.step(action)
        np.testing.assert_array_equal(obs, torso_obs)
        v_x = (_centre_of_mass_x(ours) - com_before) / ours.dt
        assert info["x_velocity"] == pytest.approx(v_x, rel=1e-9, abs=1e-9)
        cost = 0.05 * float((np.clip(action, -1, 1) ** 2).sum())
        expected = -abs(v_x - target) - cost if kind == "velocity" else target * v_x - cost
        assert reward == pytest.approx(expected, rel=1e-9, abs=1e-9)
        differences.append(abs(info["x_velocity"] - torso_info["x_velocity"]))
    assert max(differences) > 0.01, "the centre of mass and the torso move differently"
    copy = pickle.loads(pickle.dumps(ours))
    assert copy.reward_velocity == "centre_of_mass"
    with pytest.raises(ValueError, match="reward_velocity must be one of torso, centre_of_mass"):
        env_class(reward_velocity="hips")


def test_env_family_with_the_centre_of_mass_reward_velocity():
    family = env_family("half_cheetah_vel", reward_velocity="centre_of_mass")
    assert dict(family.gym_kwargs) == {"frame_skip": 5, "reward_velocity": "centre_of_mass"}
    assert gym.make(family.gym_id, **family.gym_kwargs).unwrapped.reward_velocity == (
        "centre_of_mass")
    env = family.make_batched([{"velocity": 1.0}], 2, np.random.default_rng(0))
    assert env.reward_velocity == "centre_of_mass"
    assert env_family("half_cheetah_vel", reward_velocity="torso") is (
        ENV_FAMILIES["half_cheetah_vel"])
    with pytest.raises(ValueError, match="reward_velocity must be one of"):
        env_family("half_cheetah_vel", reward_velocity="hips")
    with pytest.raises(ValueError, match="navigation2d has no frame skip, x position, centre "
                       "of mass, reward velocity"):
        env_family("navigation2d", reward_velocity="centre_of_mass")


@pytest.mark.parametrize("frame_skip", [0, -2, 1.5, True])
def test_env_family_refuses_a_frame_skip_below_one_or_not_whole(frame_skip):
    """0 is not the default and -2 not a negative control step: both are refused at once."""
    with pytest.raises(ValueError, match="frame_skip must be an integer >= 1"):
        env_family("half_cheetah_vel", frame_skip=frame_skip)
    assert env_family("half_cheetah_dir", frame_skip=1).control_dt == pytest.approx(0.01)


def _centre_of_mass(env) -> np.ndarray:
    """The cheetah's centre of mass ``(3,)`` (m), from the bodies' masses and centres on a copy
    of the simulation state, independently of the environment's code path."""
    import mujoco

    data = mujoco.MjData(env.model)
    data.qpos[:], data.qvel[:] = env.data.qpos, env.data.qvel
    mujoco.mj_forward(env.model, data)
    masses = env.model.body_mass
    return (masses[:, None] * data.xipos).sum(0) / masses.sum()


@pytest.mark.parametrize("frame_skip", [5, 1])
def test_centre_of_mass_observation(frame_skip):
    """observe_centre_of_mass=True: v5's 17 numbers, unchanged, then the cheetah's centre of
    mass (x, y, z) at the state observed: the rllab half-cheetah's 20 numbers. The dynamics and
    rewards stay; the checker passes; copies keep the option."""
    ours = HalfCheetahVelEnv({"velocity": 0.8}, frame_skip=frame_skip,
                             observe_centre_of_mass=True)
    check_env(ours, skip_render_check=True)
    plain = HalfCheetahVelEnv({"velocity": 0.8}, frame_skip=frame_skip)
    assert ours.observation_space.shape == (20,)
    obs, _ = ours.reset(seed=4)
    plain_obs, _ = plain.reset(seed=4)
    np.testing.assert_array_equal(obs[:17], plain_obs)
    np.testing.assert_allclose(obs[17:], _centre_of_mass(ours), rtol=0, atol=1e-12)
    x_start = obs[17]
    for action in np.random.default_rng(5).uniform(-1, 1, size=(40, 6)):
        obs, reward, *_ = ours.step(action)
        plain_obs, plain_reward, *_ = plain.step(action)
        np.testing.assert_array_equal(obs[:17], plain_obs)
        assert reward == plain_reward
        np.testing.assert_allclose(obs[17:], _centre_of_mass(ours), rtol=0, atol=1e-12)
        assert obs[18] == pytest.approx(0.0, abs=1e-12)  # a planar cheetah: y stays 0
    assert abs(obs[17] - x_start) > 0.01, "the centre of mass moved"
    copy = pickle.loads(pickle.dumps(ours))
    assert copy.observe_centre_of_mass and copy.reset(seed=0)[0].shape == (20,)


@pytest.mark.parametrize(("observe_x", "reward_velocity"), [(False, "centre_of_mass"),
                                                            (True, "torso")])
def test_batched_centre_of_mass_observation_equals_gymnasium_form(observe_x, reward_velocity):
    targets = np.array([0.2, 1.9])
    envs = [HalfCheetahVelEnv({"velocity": float(t)}, frame_skip=1, observe_centre_of_mass=True,
                              reward_velocity=reward_velocity,
                              exclude_current_positions_from_observation=not observe_x)
            for t in targets]
    starts = [env.reset(seed=20 + i)[0] for i, env in enumerate(envs)]
    batched = BatchedHalfCheetah("velocity", targets, np.random.default_rng(0), threads=2,
                                 frame_skip=1, observe_x_position=observe_x,
                                 observe_centre_of_mass=True, reward_velocity=reward_velocity)
    assert batched.observation_dim == envs[0].observation_space.shape[0] == 20 + observe_x
    _assert_batched_follows_gymnasium(batched, envs, starts, steps=40, seed=8)


def test_env_family_with_the_centre_of_mass_observed():
    family = env_family("half_cheetah_vel", observe_centre_of_mass=True)
    assert family.observation_dim == 20
    assert dict(family.gym_kwargs) == {"frame_skip": 5, "observe_centre_of_mass": True}
    assert gym.make(family.gym_id, **family.gym_kwargs).observation_space.shape == (20,)
    env = family.make_batched([{"velocity": 1.0}, {"velocity": 0.5}], 3,
                              np.random.default_rng(0))
    assert env.observation_dim == 20 and env.reset().shape == (6, 20)
    both = env_family("half_cheetah_dir", observe_x_position=True, observe_centre_of_mass=True)
    assert both.observation_dim == 21
    assert ENV_FAMILIES["half_cheetah_vel"].observation_dim == 17  # the registry is unchanged
    with pytest.raises(ValueError, match="navigation2d has no frame skip, x position, centre"):
        env_family("navigation2d", observe_centre_of_mass=True)


def test_config_centre_of_mass_observation_reaches_the_policy_and_the_sampler():
    from metarl.config import ConfigError
    from metarl.experiment import config_from_data
    from metarl.rl.build import env_title, family_of, new_policy_params

    _, config = config_from_data({"experiment": "meta_rl", "env": {
        "name": "half_cheetah_vel", "frame_skip": 1, "observe_centre_of_mass": True}})
    assert family_of(config).observation_dim == 20
    assert env_title(config) == "half_cheetah_vel (dt 0.01 s, centre of mass observed)"
    assert new_policy_params(config, "test")["w0"].shape == (20, 100)  # (inputs, units)
    env = family_of(config).make_batched([{"velocity": 1.0}], 2, np.random.default_rng(0))
    assert env.reset().shape == (2, 20)
    with pytest.raises(ConfigError, match=r"env\.observe_centre_of_mass = true: navigation2d"):
        config_from_data({"experiment": "meta_rl", "env": {"name": "navigation2d",
                                                           "observe_centre_of_mass": True}})


def test_config_reward_velocity_reaches_the_sampler():
    from metarl.experiment import config_from_data
    from metarl.rl.build import env_title, family_of

    _, config = config_from_data({"experiment": "meta_rl", "env": {
        "name": "half_cheetah_vel", "reward_velocity": "centre_of_mass"}})
    assert env_title(config) == "half_cheetah_vel (centre-of-mass velocity)"
    env = family_of(config).make_batched([{"velocity": 1.0}], 1, np.random.default_rng(0))
    assert env.reward_velocity == "centre_of_mass"


def test_batched_reset_noise_is_gymnasiums_and_seeded():
    targets = np.ones(500)  # each simulation reserves (not uses) MuJoCo's 6 MB arena
    batched = BatchedHalfCheetah("velocity", targets, np.random.default_rng(5), threads=1)
    obs = batched.reset().numpy().astype(np.float64)
    reference = gym.make("HalfCheetah-v5").unwrapped
    init_qpos = reference.init_qpos[1:]
    position_noise, velocity_noise = obs[:, :8] - init_qpos, obs[:, 8:]
    assert np.abs(position_noise).max() <= 0.1 + 1e-6
    assert abs(position_noise.std() - 0.2 / np.sqrt(12)) < 0.003  # U(-0.1, 0.1)
    assert abs(velocity_noise.std() - 0.1) < 0.004  # 0.1 · N(0, 1)
    again = BatchedHalfCheetah("velocity", targets, np.random.default_rng(5), threads=1)
    np.testing.assert_array_equal(again.reset().numpy(), obs.astype(np.float32))


@pytest.mark.parametrize("reset_noise", ["v5", "rllab"])
def test_both_forms_start_alike_for_a_seed(reset_noise):
    """With one simulation and a generator of the same seed, the batched form's reset draws
    the Gymnasium form's initial state exactly; with v5's noise that is HalfCheetah-v5's."""
    env = HalfCheetahVelEnv({"velocity": 1.0}, reset_noise=reset_noise)
    batched = BatchedHalfCheetah("velocity", np.ones(1), np.random.default_rng(42), threads=1,
                                 reset_noise=reset_noise)
    for _ in range(3):  # later resets continue both streams alike
        observation, _ = env.reset(seed=42) if _ == 0 else env.reset()
        np.testing.assert_allclose(batched.reset().numpy()[0], observation, rtol=0, atol=1e-6)
    if reset_noise == "v5":
        reference = gym.make("HalfCheetah-v5").unwrapped
        np.testing.assert_array_equal(reference.reset(seed=42)[0],
                                      env.reset(seed=42)[0])


def test_rllab_reset_noise():
    """reset_noise="rllab": positions + 0.01·N(0, 1), velocities 0.1·N(0, 1), in both forms;
    the option survives copies, reaches the sampler from a config and is refused where it does
    not apply."""
    from metarl.config import ConfigError
    from metarl.experiment import config_from_data
    from metarl.rl.build import env_title, evaluation_family, family_of

    batched = BatchedHalfCheetah("velocity", np.ones(1000), np.random.default_rng(5), threads=1,
                                 reset_noise="rllab")
    obs = batched.reset().numpy().astype(np.float64)
    init_qpos = gym.make("HalfCheetah-v5").unwrapped.init_qpos[1:]
    position_noise, velocity_noise = obs[:, :8] - init_qpos, obs[:, 8:]
    assert abs(position_noise.std() - 0.01) < 0.0004 and abs(position_noise.mean()) < 0.00045
    assert np.abs(position_noise).max() > 0.03  # normal tails, not U(±0.01)
    assert abs(velocity_noise.std() - 0.1) < 0.004
    env = HalfCheetahDirEnv({"direction": 1.0}, reset_noise="rllab")
    check_env(env, skip_render_check=True)
    starts = np.stack([env.reset(seed=i)[0] for i in range(400)])
    assert abs((starts[:, :8] - init_qpos).std() - 0.01) < 0.0007
    assert pickle.loads(pickle.dumps(env)).reset_noise == "rllab"
    position, velocity = reset_noise_draws("v5", np.random.default_rng(0), 20000, 20000)
    assert np.abs(position).max() <= 0.1 and abs(position.std() - 0.2 / np.sqrt(12)) < 0.002
    assert abs(velocity.std() - 0.1) < 0.002
    with pytest.raises(ValueError, match="reset_noise must be one of v5, rllab"):
        HalfCheetahVelEnv(reset_noise="gymnasium")

    family = env_family("half_cheetah_vel", reset_noise="rllab")
    assert dict(family.gym_kwargs) == {"frame_skip": 5, "reset_noise": "rllab"}
    assert gym.make(family.gym_id, **family.gym_kwargs).unwrapped.reset_noise == "rllab"
    assert env_family("half_cheetah_vel", reset_noise="v5") is ENV_FAMILIES["half_cheetah_vel"]
    with pytest.raises(ValueError, match="reset noise"):
        env_family("navigation2d", reset_noise="rllab")

    _, trained = config_from_data({"experiment": "meta_rl", "env": {
        "name": "half_cheetah_vel", "reset_noise": "rllab"}})
    assert family_of(trained).make_batched([{"velocity": 1.0}], 1,
                                           np.random.default_rng(0)).reset_noise == "rllab"
    assert env_title(trained) == "half_cheetah_vel (rllab reset noise)"
    _, evaluated = config_from_data({"experiment": "meta_rl", "env": {"name": "half_cheetah_vel"},
                                     "evaluation": {"reset_noise": "rllab"}})
    assert family_of(evaluated) is ENV_FAMILIES["half_cheetah_vel"]  # training keeps v5's
    assert env_title(evaluated) == "half_cheetah_vel (evaluated with rllab reset noise)"
    assert evaluation_family(evaluated).gym_kwargs["reset_noise"] == "rllab"
    assert evaluation_family(trained).gym_kwargs["reset_noise"] == "rllab"
    for data, message in [
            ({"env": {"name": "navigation2d", "reset_noise": "rllab"}},
             "env.reset_noise = rllab: navigation2d starts every episode at its origin"),
            ({"env": {"name": "navigation2d"}, "evaluation": {"reset_noise": "rllab"}},
             "evaluation.reset_noise = rllab: navigation2d"),
            ({"env": {"name": "half_cheetah_dir", "reset_noise": "uniform"}},
             "env.reset_noise")]:
        with pytest.raises(ConfigError, match=message):
            config_from_data({"experiment": "meta_rl", **data})


def test_env_family_with_another_frame_skip():
    default = env_family("half_cheetah_dir")
    assert default is ENV_FAMILIES["half_cheetah_dir"] and default.frame_skip == FRAME_SKIP == 5
    assert env_family("half_cheetah_dir", frame_skip=5) is default
    assert default.control_dt == pytest.approx(0.05)
    family = env_family("half_cheetah_dir", frame_skip=1)
    assert family.frame_skip == 1 and family.control_dt == pytest.approx(0.01)
    assert dict(family.gym_kwargs) == {"frame_skip": 1}
    assert gym.make(family.gym_id, **family.gym_kwargs).unwrapped.frame_skip == 1
    env = family.make_batched([{"direction": -1.0}], 2, np.random.default_rng(0))
    assert env.frame_skip == 1 and env.dt == pytest.approx(0.01)
    assert ENV_FAMILIES["half_cheetah_dir"].frame_skip == 5  # the registry is unchanged
    with pytest.raises(ValueError, match="navigation2d has no frame skip"):
        env_family("navigation2d", frame_skip=1)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_x_position_observation_is_v5s(env_id):
    """With the x position observed: 18 numbers, x first, equal to HalfCheetah-v5's with
    exclude_current_positions_from_observation=False; the checker passes; copies keep it."""
    env = gym.make(env_id, exclude_current_positions_from_observation=False)
    check_env(env.unwrapped, skip_render_check=True)
    ours = env.unwrapped
    assert ours.observation_space.shape == (18,)
    reference = gym.make("HalfCheetah-v5",
                         exclude_current_positions_from_observation=False).unwrapped
    obs, _ = ours.reset(seed=3)
    ref_obs, _ = reference.reset(seed=3)
    np.testing.assert_array_equal(obs, ref_obs)
    for action in np.random.default_rng(2).uniform(-1, 1, size=(20, 6)):
        obs, *_ = ours.step(action)
        ref_obs, *_ = reference.step(action)
        np.testing.assert_array_equal(obs, ref_obs)
        assert obs[0] == ours.data.qpos[0]
    copy = pickle.loads(pickle.dumps(ours))
    assert copy.observation_space.shape == (18,) and copy.reset(seed=0)[0].shape == (18,)


def test_env_family_with_the_x_position_observed():
    family = env_family("half_cheetah_vel", observe_x_position=True)
    assert family.observation_dim == 18 and family.frame_skip == 5
    assert dict(family.gym_kwargs) == {"frame_skip": 5,
                                       "exclude_current_positions_from_observation": False}
    env = family.make_batched([{"velocity": 1.0}, {"velocity": 0.5}], 3,
                              np.random.default_rng(0))
    assert env.observation_dim == 18 and env.reset().shape == (6, 18)
    both = env_family("half_cheetah_dir", frame_skip=1, observe_x_position=True)
    assert both.observation_dim == 18 and both.control_dt == pytest.approx(0.01)
    assert gym.make(both.gym_id, **both.gym_kwargs).observation_space.shape == (18,)
    assert ENV_FAMILIES["half_cheetah_vel"].observation_dim == 17  # the registry is unchanged
    with pytest.raises(ValueError, match="navigation2d has no frame skip, x position"):
        env_family("navigation2d", observe_x_position=True)


def test_config_x_position_reaches_the_policy_and_the_sampler():
    from metarl.experiment import config_from_data
    from metarl.rl.build import env_title, family_of, new_policy_params

    _, config = config_from_data({"experiment": "meta_rl", "env": {
        "name": "half_cheetah_dir", "observe_x_position": True}})
    family = family_of(config)
    assert family.observation_dim == 18
    assert env_title(config) == "half_cheetah_dir (x observed)"
    params = new_policy_params(config, "test")
    assert params["w0"].shape == (18, 100)  # (inputs, units)
    _, default = config_from_data({"experiment": "meta_rl", "env": {"name": "half_cheetah_dir"}})
    assert family_of(default).observation_dim == 17 and env_title(default) == "half_cheetah_dir"


def test_config_frame_skip_reaches_the_sampler():
    from metarl.experiment import config_from_data
    from metarl.rl.build import episode_length, family_of

    _, config = config_from_data({"experiment": "meta_rl",
                                  "env": {"name": "half_cheetah_vel", "frame_skip": 1}})
    family = family_of(config)
    assert family.frame_skip == 1 and episode_length(config) == 200
    assert family.make_batched([{"velocity": 1.0}], 1, np.random.default_rng(0)).frame_skip == 1
    _, default = config_from_data({"experiment": "meta_rl", "env": {"name": "half_cheetah_vel"}})
    assert family_of(default).frame_skip == 5


@pytest.mark.parametrize(("data", "message"), [
    ({"env": {"name": "navigation2d"}, "evaluation": {"test_velocities": [0.1, 0.8]}},
     "only half_cheetah_vel has target velocities"),
    ({"env": {"name": "half_cheetah_dir"}, "evaluation": {"test_velocities": [0.1, 0.8]}},
     "only half_cheetah_vel has target velocities"),
    ({"env": {"name": "half_cheetah_vel"}, "evaluation": {"test_velocities": [0.8, 0.1]}},
     r"give \[low, high\] with low < high"),
    ({"env": {"name": "half_cheetah_vel"}, "evaluation": {"test_velocities": [0.5]}},
     r"give \[low, high\] with low < high"),
    ({"env": {"name": "half_cheetah_vel"}, "evaluation": {"test_velocities": [-0.1, 0.8]}},
     "must be >= 0"),
])
def test_config_rejects_bad_test_velocities(data, message):
    from metarl.config import ConfigError
    from metarl.experiment import config_from_data

    with pytest.raises(ConfigError, match=message):
        config_from_data({"experiment": "meta_rl", **data})


def test_test_velocities_pick_the_test_tasks_of_evaluate_and_render():
    from metarl.experiment import config_from_data
    from metarl.rl.build import sample_test_tasks
    from metarl.rl.experiment import parse_task

    _, default = config_from_data({"experiment": "meta_rl", "env": {"name": "half_cheetah_vel"}})
    _, authors = config_from_data({"experiment": "meta_rl", "env": {"name": "half_cheetah_vel"},
                                   "evaluation": {"test_velocities": [0.1, 0.8]}})
    wide = [task["velocity"] for task in sample_test_tasks(default, 200, 7)]
    narrow = [task["velocity"] for task in sample_test_tasks(authors, 200, 7)]
    assert min(wide) < 0.1 and max(wide) > 1.5
    assert 0.1 <= min(narrow) < 0.15 and 0.75 < max(narrow) <= 0.8
    assert sample_test_tasks(authors, 3, 7) == sample_test_tasks(authors, 200, 7)[:3]
    # metarl render --video --task INDEX shows the test task that evaluate calls INDEX
    assert parse_task(authors, "5", 7) == {"velocity": narrow[5]}


def test_family_and_sampler_roll_out_full_episodes():
    family = ENV_FAMILIES["half_cheetah_vel"]
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    env = family.make_batched(tasks, 3, np.random.default_rng(1))
    np.testing.assert_array_equal(env.targets, np.repeat([t["velocity"] for t in tasks], 3))
    params = init_policy_params(17, 6, [8], generator=torch.Generator().manual_seed(0))
    episodes = sample_episodes(env, policy_distribution, expand_params(params, 2),
                               num_tasks=2, episodes_per_task=3, max_steps=25,
                               generator=torch.Generator().manual_seed(0))
    assert episodes.observations.shape == (2, 3, 25, 17)
    assert episodes.actions.shape == (2, 3, 25, 6)
    assert bool((episodes.mask == 1).all()) and episodes.num_episodes().tolist() == [3, 3]
    assert bool((episodes.rewards < 0).all())  # -|v - v_goal| - cost


@pytest.mark.parametrize("observe_x", [False, True])
@pytest.mark.parametrize("observe_com", [False, True])
def test_forward_velocity_index_picks_the_torsos_qvel0(observe_x, observe_com):
    env = HalfCheetahVelEnv({"velocity": 1.0}, observe_centre_of_mass=observe_com,
                            exclude_current_positions_from_observation=not observe_x)
    env.reset(seed=0)
    batched = BatchedHalfCheetah("velocity", np.ones(2), np.random.default_rng(0),
                                 observe_x_position=observe_x, observe_centre_of_mass=observe_com)
    batched.reset()
    index = forward_velocity_index(observe_x)
    for _ in range(5):
        observation = env.step(env.action_space.sample())[0]
        assert observation[index] == pytest.approx(env.unwrapped.data.qvel[0])
        observations = batched.step(torch.rand(2, 6) * 2 - 1)[0]
        assert observations[:, index].numpy() == pytest.approx(batched._qvel[:, 0], abs=1e-6)


def test_velocity_plot_of_short_episodes_draws_lines(tmp_path, monkeypatch):
    """10-step episodes: the 10-step smoothing shrinks so that each curve keeps 5 points."""
    import metarl.rl.render as render

    family = ENV_FAMILIES["half_cheetah_vel"]
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    params = init_policy_params(17, 6, [8], generator=torch.Generator().manual_seed(0))
    episodes = [sample_episodes(family.make_batched(tasks, 2, np.random.default_rng(step)),
                                policy_distribution, expand_params(params, 2), num_tasks=2,
                                episodes_per_task=2, max_steps=10,
                                generator=torch.Generator().manual_seed(step))
                for step in range(2)]
    figures, real = [], render.save_figure
    monkeypatch.setattr(render, "save_figure",
                        lambda fig, output, **kw: figures.append(fig) or real(fig, output, **kw))
    render.plot_cheetah_velocities(tasks, episodes, tmp_path / "v.png",
                                   velocity_index=forward_velocity_index(False))
    velocity_lines = [line for ax in figures[0].axes for line in ax.get_lines()
                      if "step(s)" in line.get_label()]
    assert len(velocity_lines) == 4  # 2 tasks x 2 steps
    assert all(len(line.get_xdata()) == 9 for line in velocity_lines)  # 10 - 2 + 1


TINY_CHEETAH = ["--set", "policy.hidden_sizes=[16, 16]", "--set", "training.iterations=1",
                "--set", "training.meta_batch_size=3", "--set", "training.episodes_per_task=3",
                "--set", "evaluation.tasks=3", "--set", "evaluation.episodes_per_task=3",
                "--set", "run.progress=false"]


@pytest.fixture(scope="module")
def cheetah_run(tmp_path_factory):
    from metarl.cli import main

    run = tmp_path_factory.mktemp("cheetah") / "vel"
    assert main(["train", "half-cheetah-vel", "--run-dir", str(run), *TINY_CHEETAH]) == 0
    return run


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A run with 30-step episodes, for quick videos."""
    from metarl.cli import main

    run = tmp_path_factory.mktemp("cheetah") / "dir"
    assert main(["train", "half-cheetah-dir", "--run-dir", str(run), *TINY_CHEETAH,
                 "--set", "env.max_episode_steps=30"]) == 0
    return run


def test_cheetah_train_evaluate_render(cheetah_run, capsys):
    import json

    from metarl.cli import main

    assert main(["evaluate", str(cheetah_run), "--steps", "2"]) == 0
    result = json.loads((cheetah_run / "evaluation.json").read_text())
    assert result["env"] == "half_cheetah_vel" and result["steps"] == [0, 1, 2]
    assert result["published"]["MAML paper"]["1"] == -78.57  # 200-step episodes: comparable
    assert all(-2 * 200 < m < 0 for m in result["mean"])
    # per-task returns: one row per test task, whose column means are the curve
    task_returns = np.array(result["task_returns"])
    assert task_returns.shape == (result["tasks"], 3)
    assert task_returns.mean(axis=0) == pytest.approx(result["mean"], rel=1e-9)
    assert (task_returns.std(axis=0, ddof=1) > 0).all()
    assert len(result["test_tasks"]) == result["tasks"]
    assert all(set(task) == {"velocity"} and 0 <= task["velocity"] <= 2
               for task in result["test_tasks"])
    assert main(["render", str(cheetah_run), "--tasks", "2", "--steps", "1"]) == 0
    assert (cheetah_run / "velocities.png").stat().st_size > 0


def test_evaluate_on_other_test_velocities(cheetah_run, tmp_path, capsys):
    import json
    import shutil

    from metarl.cli import main

    run = tmp_path / "vel"
    shutil.copytree(cheetah_run, run)
    assert main(["evaluate", str(run), "--set", "evaluation.test_velocities=[0.1, 0.8]"]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    assert result["evaluation_config"]["test_velocities"] == [0.1, 0.8]
    assert result["published"] == {}, "the paper's returns are on U[0, 2]"
    velocities = [task["velocity"] for task in result["test_tasks"]]
    assert len(velocities) == 3 and all(0.1 <= v <= 0.8 for v in velocities)
    assert "test_velocities: null" in (run / "config.yaml").read_text()
    assert main(["evaluate", str(run)]) == 0
    default = json.loads((run / "evaluation.json").read_text())
    assert default["evaluation_config"]["test_velocities"] is None
    assert default["published"]["MAML paper"]["1"] == -78.57
    assert [task["velocity"] for task in default["test_tasks"]] != velocities
    assert main(["evaluate", str(run), "--set", "evaluation.test_velocities=[1, 0]"]) == 2
    assert "low < high" in capsys.readouterr().err


def test_evaluate_on_the_authors_test_tasks(cheetah_run, tmp_path):
    """evaluate --set evaluation.task_draw=maml_authors: the tasks of the MAML authors' test
    script for every --seed, which then draws only the episodes; the paper's curve stays."""
    import json
    import shutil

    from metarl.cli import main
    from metarl.rl.authors_tasks import maml_authors_test_tasks

    run = tmp_path / "vel"
    shutil.copytree(cheetah_run, run)
    authors = maml_authors_test_tasks("half_cheetah_vel", 3)
    results = []
    for seed in ("7", "8"):
        assert main(["evaluate", str(run), "--set", "evaluation.task_draw=maml_authors",
                     "--seed", seed]) == 0
        results.append(json.loads((run / "evaluation.json").read_text()))
    for result in results:
        assert result["test_tasks"] == authors
        assert result["evaluation_config"]["task_draw"] == "maml_authors"
        assert result["published"]["MAML paper"]["1"] == -78.57
    assert results[0]["task_returns"] != results[1]["task_returns"]
    assert "task_draw: seeded" in (run / "config.yaml").read_text()


def test_render_takes_the_evaluation_settings_of_set(cheetah_run, monkeypatch):
    from metarl.cli import main
    from metarl.rl.experiment import MetaRLExperiment

    seen = []
    monkeypatch.setattr(MetaRLExperiment, "render",
                        lambda self, config, *a: seen.append(config.evaluation) or [])
    assert main(["render", str(cheetah_run), "--set", "evaluation.test_velocities=[0.1, 0.8]",
                 "--set", "evaluation.later_lr_scale=0.25"]) == 0
    assert seen[0].test_velocities == [0.1, 0.8] and seen[0].later_lr_scale == 0.25
    assert main(["render", str(cheetah_run), "--set", "training.iterations=3"]) == 2


def test_evaluate_with_rllab_reset_noise(cheetah_run, tmp_path):
    """evaluate --set evaluation.reset_noise=rllab starts the test episodes with rllab's
    noise (a new evaluation, recorded as such, the paper's returns still shown), and the
    run's own evaluation is not taken for it."""
    import json
    import shutil

    from metarl.cli import main

    run = tmp_path / "vel"
    shutil.copytree(cheetah_run, run)
    assert main(["evaluate", str(run)]) == 0
    v5 = json.loads((run / "evaluation.json").read_text())
    assert v5["reset_noise"] == "v5"
    assert main(["evaluate", str(run), "--set", "evaluation.reset_noise=rllab"]) == 0
    rllab = json.loads((run / "evaluation.json").read_text())
    assert rllab["reset_noise"] == "rllab"
    assert rllab["evaluation_config"]["reset_noise"] == "rllab"
    assert rllab["test_tasks"] == v5["test_tasks"]
    assert rllab["mean"] != v5["mean"]
    assert rllab["published"]["MAML paper"]["1"] == -78.57


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_render_video(short_run, suffix, capsys, monkeypatch):
    from metarl.cli import main

    video = short_run / f"adaptation{suffix}"
    code = main(["render", str(short_run), "--video", str(video), "--steps", "1",
                 "--task", "direction=-1"])
    err = capsys.readouterr().err
    if code == 2 and "could not render" in err:
        pytest.skip(f"no OpenGL backend for MuJoCo here: {err}")
    assert code == 0, err
    frames = read_video_frames(video)
    assert len(frames) == 31  # the reset frame and one per step
    height, width = frames[0].shape[:2]
    assert width >= 2 * 320 and height >= 240  # two panels side by side, and a title band
    assert np.asarray(frames[-1]).std() > 10  # a picture, not a blank frame


@pytest.mark.parametrize(("args", "message"), [
    (["--video", "out.avi"], "must end in .mp4 or .gif"),
    (["--video", "out.gif", "--task", "direction=fast"], "is not a number"),
    (["--video", "out.gif", "--task", "goal=0.1,0.2"], "tasks have the key direction"),
    (["--video", "out.gif", "--task", "direction=0.5"], "direction is +1 or -1"),
    (["--video", "out.gif", "--task", "direction=nan"], "give finite numbers"),
    (["--video", "out.gif", "--task", "backward"], "give a test-task index or key=value, e.g. "
                                                   "direction=-1"),
    (["--video", "out.gif", "--task", "-3"], "must be >= 0 and < 3"),
    (["--video", "out.gif", "--task", "3"], "must be >= 0 and < 3"),
    (["--video", "out.gif", "--output", "x.png"], "give no --output with it"),
    (["--task", "2"], "--task picks the task of a --video"),
    (["--video", "out.mp4", "--steps", "11"],
     "11 adaptation steps: a video shows the episode before adaptation and after each step side "
     "by side, for at most 10 steps; give --steps 0 to 10"),
])
def test_render_rejects_bad_video_options(short_run, args, message, capsys):
    from metarl.cli import main

    assert main(["render", str(short_run), *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_gl_backend_is_a_clear_error(short_run, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "MUJOCO_GL": "no-such-backend"}
    done = subprocess.run([sys.executable, "-m", "metarl", "render", str(short_run),
                           "--video", str(tmp_path / "v.gif"), "--steps", "0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "MuJoCo could not be loaded (MUJOCO_GL=no-such-backend)" in done.stderr
    assert "libosmesa6" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "v.gif").exists()


def test_video_of_navigation(tmp_path, capsys):
    """Navigation draws its own frames (no OpenGL): 320 x 240 panels under a 40-row text band,
    before and after one step, one frame per control step at the env's 10 frames per second,
    the goal in red where the task puts it: y from 1 (top) to -1, 119.5 pixels per unit,
    the whole under a 24-row title band."""
    from PIL import Image

    from metarl.cli import main

    run = tmp_path / "nav"
    assert main(["train", "navigation2d", "--run-dir", str(run), *TINY_CHEETAH,
                 "--set", "env.max_episode_steps=12"]) == 0
    video = tmp_path / "nav.gif"
    assert main(["render", str(run), "--video", str(video), "--steps", "1",
                 "--task", "goal=0.3,-0.2"]) == 0, capsys.readouterr().err
    assert "note" not in capsys.readouterr().err  # a goal of the training distribution
    frames = read_video_frames(video)
    assert 2 <= len(frames) <= 13  # the reset frame and one per step until the goal
    assert frames[0].shape == (24 + 40 + 240, 2 * 320, 3)
    assert Image.open(video).info["duration"] == 100  # ms: 10 frames per second
    red = (frames[-1][..., 0] > 180) & (frames[-1][..., 1] < 90) & (frames[-1][..., 2] < 90)
    rows, columns = np.nonzero(red)
    for panel in (0, 1):
        in_panel = (columns >= 320 * panel) & (columns < 320 * (panel + 1))
        assert abs(rows[in_panel].mean() - (24 + 40 + 119.5 + 0.2 * 119.5)) < 1.5
        assert abs(columns[in_panel].mean() - (320 * panel + 159.5 + 0.3 * 119.5)) < 1.5

    # a goal beyond the usual view: noted, and the view widens to show it
    assert main(["render", str(run), "--video", str(video), "--steps", "0",
                 "--task", "goal=2,-2"]) == 0
    assert ("note: goal [2.0, -2.0] lies outside the training goals, U[-0.5, 0.5]^2"
            in capsys.readouterr().err)
    last = read_video_frames(video)[-1][24 + 40:]
    rows, columns = np.nonzero((last[..., 0] > 180) & (last[..., 1] < 90) & (last[..., 2] < 90))
    scale = 239 / (2 * 2.2)  # pixels per unit: y from -2.2 to 2.2
    assert abs(rows.mean() - (119.5 + 2 * scale)) < 1.5
    assert abs(columns.mean() - (159.5 + 2 * scale)) < 1.5


def test_a_pyopengl_platform_other_than_the_backend_is_named_without_a_traceback(short_run,
                                                                                 tmp_path):
    """MuJoCo refuses MUJOCO_GL=osmesa under PYOPENGL_PLATFORM=egl (whatever is installed);
    the error says so, and the half-made viewer is freed without Gymnasium's traceback."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "egl"}
    done = subprocess.run([sys.executable, "-m", "metarl", "render", str(short_run),
                           "--video", str(tmp_path / "v.gif"), "--steps", "0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "MuJoCo could not render with MUJOCO_GL=osmesa" in done.stderr
    assert ("PYOPENGL_PLATFORM=egl is set too, and MuJoCo needs it unset or the same as "
            "MUJOCO_GL") in done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


@pytest.mark.parametrize(("backend", "pyopengl", "named"), [
    ("osmesa", "egl", True), ("egl", "osmesa", True), ("egl", "EGL", False),
    ("glfw", "egl", False), ("egl", None, False)])
def test_a_render_failure_names_a_pyopengl_platform_only_where_mujoco_refuses_it(
        monkeypatch, backend, pyopengl, named):
    from metarl.rl.video import _render_failure

    monkeypatch.setenv("MUJOCO_GL", backend)
    if pyopengl is None:
        monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    else:
        monkeypatch.setenv("PYOPENGL_PLATFORM", pyopengl)
    message = str(_render_failure(RuntimeError("no context.")))
    assert f"MUJOCO_GL={backend}: RuntimeError: no context. " in message  # one full stop
    assert ("PYOPENGL_PLATFORM=" in message) == named


def test_only_the_failed_viewers_cleanup_error_is_silenced_and_the_hook_is_restored(
        monkeypatch):
    import sys

    from metarl.rl.video import _collect_failed_viewer

    class OffScreenViewer:  # as Gymnasium's, half made: its __del__ finds no context
        def __del__(self):
            raise AttributeError("'OffScreenViewer' object has no attribute 'opengl_context'")

    class Other:
        def __del__(self):
            raise AttributeError("another object's cleanup failed")

    def failing_render():
        held = [OffScreenViewer(), Other()]  # by the traceback's frame
        raise RuntimeError(f"no context ({len(held)} objects made)")

    try:
        failing_render()
    except RuntimeError as caught:
        error = caught
    seen = []

    def recording(unraisable):
        seen.append(unraisable.exc_value)

    monkeypatch.setattr(sys, "unraisablehook", recording)
    _collect_failed_viewer(error)
    assert [str(e) for e in seen] == ["another object's cleanup failed"]  # reported
    assert sys.unraisablehook is recording


def test_failing_gl_context_is_a_clear_error(short_run, tmp_path, monkeypatch, capsys):
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

    from metarl.cli import main

    def no_context(self):
        raise RuntimeError("an OpenGL platform library has not been loaded")

    monkeypatch.setattr(MujocoEnv, "render", no_context)
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert main(["render", str(short_run), "--video", str(tmp_path / "v.mp4")]) == 2
    err = capsys.readouterr().err
    assert "MuJoCo could not render with MUJOCO_GL=osmesa" in err and "libosmesa6" in err
    assert not (tmp_path / "v.mp4").exists()


def test_resumed_cheetah_run_reaches_the_straight_run(tmp_path):
    """The reset noise comes from the checkpointed task generator: resume is exact."""
    from metarl.checkpoint import load_checkpoint
    from metarl.cli import main

    tiny = [*TINY_CHEETAH, "--set", "env.max_episode_steps=20", "--set",
            "run.checkpoint_every=1"]
    assert main(["train", "half-cheetah-dir", "--run-dir", str(tmp_path / "straight"),
                 *tiny, "--set", "training.iterations=2"]) == 0
    assert main(["train", "half-cheetah-dir", "--run-dir", str(tmp_path / "resumed"),
                 *tiny, "--set", "training.iterations=1"]) == 0
    config_file = tmp_path / "resumed" / "config.yaml"
    config_file.write_text(config_file.read_text().replace("iterations: 1 ",
                                                           "iterations: 2 "))
    assert main(["train", "--resume", str(tmp_path / "resumed")]) == 0
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["trainer"]["params"]
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["trainer"]["params"]
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_rollouts_keep_the_weights_of_every_step():
    from metarl.rl.maml_trpo import AdvantageSettings, rollouts_with_adaptation

    family = ENV_FAMILIES["half_cheetah_dir"]
    tasks = [{"direction": 1.0}, {"direction": -1.0}]
    params = init_policy_params(17, 6, [8], generator=torch.Generator().manual_seed(0))
    rollouts = rollouts_with_adaptation(
        family.make_batched(tasks, 2, np.random.default_rng(0)),
        functools.partial(policy_distribution, activation="tanh"), params,  # as the reference
        num_tasks=2, episodes_per_task=2, max_steps=10, learning_rates=[0.1, 0.05],
        advantages=AdvantageSettings(), generator=torch.Generator().manual_seed(0))
    assert len(rollouts.weights) == len(rollouts.episodes) == 3
    for name, value in params.items():
        assert torch.equal(rollouts.weights[0][name], value.detach().expand_as(
            rollouts.weights[0][name]))
        assert not torch.equal(rollouts.weights[1][name], rollouts.weights[2][name])
    assert rollouts.fast is rollouts.weights[-1]
    # Step s starts from the weights after s steps and uses the s-th rate: per task, by hand.
    for step, lr in enumerate([0.1, 0.05]):
        for task in range(2):
            start = {k: v[task].clone().requires_grad_(True)
                     for k, v in rollouts.weights[step].items()}
            expected = ref.adapt_one_task(start, task, [rollouts.support[step]], [lr],
                                          create_graph=False)
            for name, value in expected.items():
                torch.testing.assert_close(rollouts.weights[step + 1][name][task], value,
                                           rtol=1e-5, atol=1e-6)


class FakeRenderEnv:
    """A render environment of control step ``dt`` seconds, for tests that replace
    run_episode (only ``unwrapped.dt`` and ``close`` are used)."""

    def __init__(self, dt: float) -> None:
        self.unwrapped = type("Unwrapped", (), {"dt": dt})()

    def close(self) -> None:
        pass


def test_video_panels_use_the_weights_of_their_step(tmp_path, monkeypatch):
    import metarl.rl.video as video

    used, reset_seeds = [], []

    def fake_episode(env, policy, params, *, steps, seed, generator, action_scale,
                     on_frame=None):
        used.append(float(params["b0"][0, 0]))
        reset_seeds.append(seed)
        frame = np.full((video.PANEL_HEIGHT, video.PANEL_WIDTH, 3), 100, np.uint8)
        return [frame] * (steps + 1), np.ones(steps)

    monkeypatch.setattr(video, "make_render_env", lambda *a, **k: FakeRenderEnv(0.05))
    monkeypatch.setattr(video, "run_episode", fake_episode)
    weights = [{"b0": torch.tensor([[10.0 * s], [10.0 * s + 1]])} for s in range(3)]
    output = video.record_adaptation_video(
        "metarl/HalfCheetahDir-v0", {"direction": 1.0}, policy_distribution, weights,
        tmp_path / "v.gif", episode_steps=4, seed=7, task_index=1)
    assert used == [1.0, 11.0, 21.0]  # row task_index of each step's weights
    assert reset_seeds == [7, 7, 7]  # every panel starts from the same state
    from PIL import Image

    with Image.open(output) as gif:
        assert gif.n_frames == 5 and gif.size[0] == 3 * video.PANEL_WIDTH
        assert gif.info["duration"] == 50  # real time: 20 control steps per second


@pytest.mark.parametrize(("episode_steps", "shown"), [(10, [0, 2, 4, 6, 8, 10]),
                                                      (9, [0, 2, 4, 6, 8, 9])])
def test_video_at_100_steps_per_second_plays_in_real_time(tmp_path, monkeypatch,
                                                         episode_steps, shown):
    """At frame skip 1 (dt 0.01 s) every other step's frame is kept, and the last one, at
    50 frames per second."""
    import metarl.rl.video as video

    made_with = {}

    def fake_make(gym_id, task, *, episode_steps, gym_kwargs=None, mujoco=True):
        made_with.update(gym_kwargs or {})
        return FakeRenderEnv(0.01)

    def fake_episode(env, policy, params, *, steps, seed, generator, action_scale,
                     on_frame=None):
        frames = [np.full((video.PANEL_HEIGHT, video.PANEL_WIDTH, 3), 10 * i, np.uint8)
                  for i in range(steps + 1)]
        return frames, np.ones(steps)

    written = {}

    def fake_write(frames, output, *, fps):
        written.update(frames=frames, fps=fps)

    monkeypatch.setattr(video, "make_render_env", fake_make)
    monkeypatch.setattr(video, "run_episode", fake_episode)
    monkeypatch.setattr(video, "write_video", fake_write)
    video.record_adaptation_video(
        "metarl/HalfCheetahDir-v0", {"direction": 1.0}, policy_distribution,
        [{"b0": torch.zeros(1, 1)}], tmp_path / "v.gif", episode_steps=episode_steps, seed=0,
        gym_kwargs={"frame_skip": 1})
    assert made_with == {"frame_skip": 1}
    assert written["fps"] == pytest.approx(50.0)
    # Each frame's picture (below the text band) tells which step it shows.
    assert [int(f[-1, -1, 0]) // 10 for f in written["frames"]] == shown


def test_a_failure_to_make_a_navigation_render_env_is_not_blamed_on_opengl(monkeypatch):
    """Navigation draws its frames itself: an error making it is raised as it is, not
    reported as a MuJoCo backend failure."""
    import metarl.rl.video as video

    def broken_make(*args, **kwargs):
        raise RuntimeError("the environment's own failure")

    monkeypatch.setattr(video.gym, "make", broken_make)
    with pytest.raises(RuntimeError, match="the environment's own failure") as raised:
        video.make_render_env("metarl/Navigation2D-v0", {"goal": np.zeros(2)},
                              episode_steps=5, mujoco=False)
    assert not isinstance(raised.value, video.RenderBackendError)
    with pytest.raises(video.RenderBackendError, match="MuJoCo could not render"):
        video.make_render_env("metarl/HalfCheetahDir-v0", {"direction": 1.0},
                              episode_steps=5, mujoco=True)


def read_video_frames(path) -> list[np.ndarray]:
    """The decoded frames of a .gif (Pillow) or .mp4 (ffmpeg), each ``(H, W, 3)`` uint8.

    ffmpeg is run with plain subprocess.run (vfork): a fork of this process, as imageio-ffmpeg's
    reader does, needs memory for a copy of tens of GB reserved by the batched simulations.
    """
    import re
    import subprocess

    import imageio_ffmpeg
    from PIL import Image, ImageSequence

    if path.suffix == ".gif":
        with Image.open(path) as image:
            return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    probe = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True,
                           text=True)
    width, height = map(int, re.search(r"Video: .*?, (\d+)x(\d+)", probe.stderr).groups())
    raw = subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "pipe:1"], capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
    return list(frames)


def test_mp4_encoder_spawns_ffmpeg_without_a_fork(tmp_path, monkeypatch):
    """No preexec_fn, so subprocess can vfork; a session of its own, so Ctrl-C spares it."""
    import subprocess

    import imageio_ffmpeg

    import metarl.rl.video as video

    imageio_ffmpeg.get_ffmpeg_exe()  # its first call runs `ffmpeg -version`: not ours to count
    seen = []
    real_popen = subprocess.Popen

    def spy(command, *args, **kwargs):
        if "pipe:0" in command:
            seen.append(kwargs)
        return real_popen(command, *args, **kwargs)

    monkeypatch.setattr(video.subprocess, "Popen", spy)
    video.write_video([np.zeros((32, 48, 3), np.uint8)] * 3, tmp_path / "a.mp4", fps=10)
    assert len(seen) == 1
    assert seen[0].get("preexec_fn") is None and seen[0]["start_new_session"] is True
    assert len(read_video_frames(tmp_path / "a.mp4")) == 3
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i",
                            str(tmp_path / "a.mp4")], capture_output=True, text=True)
    assert ", 10 fps," in probe.stderr  # plays at the rate asked for: real time


def test_a_failing_ffmpeg_is_reported_and_leaves_no_file(tmp_path, monkeypatch):
    """An ffmpeg that stops without reading its input: its exit code and message, no file."""
    import imageio_ffmpeg

    import metarl.rl.video as video

    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nfor last; do :; done\n"  # the output file, ffmpeg's last argument
                    "echo \"Unknown encoder libx264 for $last\" >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(fake))
    frames = [np.zeros((480, 640, 3), np.uint8)] * 20  # more than a pipe's buffer
    with pytest.raises(video.VideoEncodingError,
                       match=r"exit code 3\): Unknown encoder libx264") as raised:
        video.write_video(frames, tmp_path / "out" / "a.mp4", fps=10)
    assert list((tmp_path / "out").iterdir()) == []
    # the message names the video asked for, not the temporary file written beside it
    assert f"failed to write {tmp_path / 'out' / 'a.mp4'} " in str(raised.value)
    assert str(raised.value).endswith(f"libx264 for {tmp_path / 'out' / 'a.mp4'}")
    assert ".tmp" not in str(raised.value)


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_write_video_is_atomic(tmp_path, suffix, monkeypatch):
    from metarl.rl.video import write_video

    frames = [np.full((50, 70, 3), i * 20, np.uint8) for i in range(6)]
    write_video(frames, tmp_path / f"ok{suffix}", fps=20)
    read = read_video_frames(tmp_path / f"ok{suffix}")
    assert len(read) == 6 and read[0].shape[:2] == ((50, 70) if suffix == ".gif" else (64, 80))
    broken = [*frames[:3], np.zeros((50, 70, 3))]  # float, not uint8
    with pytest.raises(ValueError, match="uint8"):
        write_video(broken, tmp_path / f"bad{suffix}", fps=20)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ok{suffix}"]


def test_a_frame_skip_1_run_evaluates_and_renders_at_its_rate(tmp_path, monkeypatch, capsys):
    """The config's frame skip reaches evaluation.json, the velocity plot and the video."""
    import json

    import metarl.rl.render as render
    import metarl.rl.video as video
    from metarl.cli import main

    run = tmp_path / "dt01"
    assert main(["train", "half-cheetah-dir-dt01", "--run-dir", str(run), *TINY_CHEETAH,
                 "--set", "env.max_episode_steps=20"]) == 0
    assert main(["evaluate", str(run), "--steps", "1"]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    assert result["frame_skip"] == 1 and result["control_dt"] == pytest.approx(0.01)
    seen = {}
    monkeypatch.setattr(render, "plot_cheetah_velocities",
                        lambda *a, control_dt, title, **k: seen.update(dt=control_dt,
                                                                       title=title) or a[2])
    monkeypatch.setattr(video, "check_rendering",
                        lambda gym_id, task, gym_kwargs=None, mujoco=True: seen.update(
                            check=gym_kwargs, mujoco=mujoco))
    monkeypatch.setattr(video, "record_adaptation_video",
                        lambda *a, gym_kwargs=None, **k: seen.update(video=gym_kwargs) or a[4])
    assert main(["render", str(run), "--tasks", "2", "--steps", "1"]) == 0
    assert main(["render", str(run), "--video", str(tmp_path / "v.gif"), "--steps", "1"]) == 0
    assert seen["dt"] == pytest.approx(0.01) and "(20-step episodes, dt 0.01 s)" in seen["title"]
    assert dict(seen["check"]) == dict(seen["video"]) == {"frame_skip": 1}
    assert seen["mujoco"] is True  # rendered by MuJoCo, its GL failures explained


def test_the_velocity_plot_of_a_run_observing_x_reads_the_velocity(tmp_path, monkeypatch):
    """With the torso's x observed, qvel[0] moves from observation index 8 to 9."""
    import metarl.rl.render as render
    from metarl.cli import main

    run = tmp_path / "xobs"
    assert main(["train", "half-cheetah-vel", "--run-dir", str(run), *TINY_CHEETAH,
                 "--set", "env.max_episode_steps=10", "--set", "env.observe_x_position=true"]) == 0
    seen = {}
    monkeypatch.setattr(render, "plot_cheetah_velocities",
                        lambda *a, velocity_index, **k: seen.update(index=velocity_index) or a[2])
    assert main(["render", str(run), "--tasks", "1", "--steps", "1"]) == 0
    assert seen["index"] == 9 == forward_velocity_index(True)


@pytest.mark.parametrize("baseline", ["pretrained", "oracle"])
def test_a_baseline_cache_key_names_each_environment_option_that_differs_from_the_default(
        tmp_path, monkeypatch, baseline):
    """Caches written before the environment options existed keep matching the default
    config (the key holds none of them), and a run with any option set gets a key of its
    own: a baseline trained on another cheetah is never reused for it."""
    import metarl.rl.baseline_policies as baseline_policies
    from metarl.experiment import config_from_data

    keys = []
    monkeypatch.setattr(baseline_policies, "load_or_compute",
                        lambda path, key, compute, **kwargs: keys.append(key) or {
                            "params": {}, "training_returns": []})
    options = {"frame_skip": 1, "observe_x_position": True, "observe_centre_of_mass": True,
               "reward_velocity": "centre_of_mass", "reset_noise": "rllab"}
    compute = getattr(baseline_policies, f"{baseline}_params")
    for changed in [{}, *({name: value} for name, value in options.items())]:
        _, config = config_from_data({"experiment": "meta_rl", "env": {
            "name": "half_cheetah_vel", **changed}})
        compute(config, tmp_path)
        assert keys[-1]["env"] == {"name": "half_cheetah_vel", "max_episode_steps": None,
                                   **changed}


def _returns_by_task_script():
    return load_script("cheetah_returns_by_task")


def test_returns_by_task_groups():
    script = _returns_by_task_script()
    dirs = script.task_groups("half_cheetah_dir", [{"direction": d} for d in (1, -1, -1)])
    assert {k: v.tolist() for k, v in dirs.items()} == {
        "all": [True] * 3, "forward (+1)": [True, False, False],
        "backward (-1)": [False, True, True]}
    targets = [0.0, 0.49, 0.5, 1.2, 1.5, 2.0]
    vels = script.task_groups("half_cheetah_vel", [{"velocity": v} for v in targets])
    assert {k: v.nonzero().flatten().tolist() for k, v in vels.items()} == {
        "all": [0, 1, 2, 3, 4, 5], "target 0.00-0.50": [0, 1], "target 0.50-1.00": [2],
        "target 1.00-1.50": [3], "target 1.50-2.00": [4, 5]}
    assert list(script.task_groups("half_cheetah_vel", [{"velocity": 1.0}], bins=1)) == [
        "all", "target 0.00-2.00"]
    with pytest.raises(ValueError, match="navigation"):
        script.task_groups("navigation", [])
    table = script.format_table(torch.tensor([[1.0, 3.0], [3.0, 5.0]]),
                                {"all": torch.tensor([True, True]),
                                 "none": torch.tensor([False, False]),
                                 "first": torch.tensor([True, False])},
                                torch.tensor([0.25, 0.75]), "error")
    assert table.splitlines()[1].split() == ["all", "2", "2.00", "4.00", "0.500"]
    assert "(no test task)" in table.splitlines()[2]
    assert table.splitlines()[3].split() == ["first", "1", "1.00", "3.00", "0.250"]


def test_returns_by_task_speed_errors_are_the_environments():
    from metarl.rl.episodes import Episodes

    script = _returns_by_task_script()
    rng = np.random.default_rng(3)
    targets, lengths, horizon = (0.3, 1.6), (12, 8), 12
    actions = torch.zeros(2, 1, horizon, 6)
    rewards = torch.full((2, 1, horizon), -50.0)  # padding: must not count
    mask = torch.zeros(2, 1, horizon)
    expected = []
    for t, (target, length) in enumerate(zip(targets, lengths, strict=True)):
        env = gym.make("metarl/HalfCheetahVel-v0")
        env.unwrapped.reset_task({"velocity": target})
        env.reset(seed=t)
        errors = []
        for h in range(length):
            action = 1.7 * rng.standard_normal(6)  # mostly outside [-1, 1]: cost is clipped
            _, reward, *_, info = env.step(action)
            actions[t, 0, h] = torch.as_tensor(action)
            rewards[t, 0, h], mask[t, 0, h] = reward, 1.0
            errors.append(abs(info["x_velocity"] - target))
        expected.append(np.mean(errors))
    episodes = Episodes(observations=torch.zeros(2, 1, horizon, 17), actions=actions,
                        rewards=rewards, mask=mask, log_probs=torch.zeros(2, 1, horizon),
                        times=torch.arange(horizon).expand(2, 1, horizon))
    assert script.mean_speed_errors(episodes).tolist() == pytest.approx(expected, abs=1e-5)


def test_returns_by_task_script_on_a_run(cheetah_run, tmp_path, capsys, monkeypatch):
    import json
    import shutil

    from metarl.cli import main

    run = tmp_path / "vel"
    shutil.copytree(cheetah_run, run)
    assert main(["evaluate", str(run)]) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    script = _returns_by_task_script()
    monkeypatch.setattr("sys.argv", ["cheetah_returns_by_task.py", str(run), "--bins", "2"])
    sampled, scored = [], []
    real_rollouts, real_errors = script.evaluation_rollouts, script.mean_speed_errors
    monkeypatch.setattr(script, "evaluation_rollouts", lambda *args, **kwargs: (
        sampled.append(real_rollouts(*args, **kwargs)) or sampled[-1]))
    monkeypatch.setattr(script, "mean_speed_errors", lambda episodes, *args: (
        scored.append(episodes) or real_errors(episodes, *args)))
    capsys.readouterr()
    script.main()
    (_, rollouts), = sampled
    assert scored == [rollouts.episodes[-1]]  # the speed error after the last step
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["tasks", "all", "target", "target"]
    steps = len(evaluation["steps"])
    all_row = lines[2].split()
    # the script samples exactly what evaluate sampled
    assert [float(x) for x in all_row[2:2 + steps]] == pytest.approx(evaluation["mean"],
                                                                      abs=0.006)
    assert 0 < float(all_row[-1]) < 10  # mean |v_x - v_goal| in m/s
    group_sizes = [int(line.split()[2]) for line in lines[3:]]
    assert sum(group_sizes) == evaluation["tasks"]

    # --recorded: the per-task returns recorded in evaluation.json, split the same way
    monkeypatch.setattr("sys.argv", ["cheetah_returns_by_task.py", str(run), "--recorded"])
    script.main()
    out = capsys.readouterr().out
    assert f"first-step lr {evaluation['inner_lr'][0]};" in out
    assert evaluation["inner_lr"][0] != evaluation["inner_lr"][-1]
    maml = out[out.index("maml:"):].splitlines()
    assert [float(x) for x in maml[2].split()[2:]] == pytest.approx(evaluation["mean"],
                                                                    abs=0.006)
    evaluation["baselines"] = {"oracle": {"task_returns": [[10.0], [30.0], [50.0]]}}
    evaluation["test_tasks"] = [{"velocity": v} for v in (0.2, 0.4, 1.9)]
    evaluation["task_returns"] = [[0.0] * steps] * 3
    (run / "evaluation.json").write_text(json.dumps(evaluation))
    script.main()
    out = capsys.readouterr().out
    oracle = out[out.index("oracle:"):].splitlines()
    assert oracle[2].split() == ["all", "3", "30.00"]
    assert oracle[3].split() == ["target", "0.00-0.50", "2", "20.00"]
    assert "(no test task)" in oracle[4] and "(no test task)" in oracle[5]
    assert oracle[6].split() == ["target", "1.50-2.00", "1", "50.00"]
    monkeypatch.setattr("sys.argv", ["cheetah_returns_by_task.py", str(run), "--recorded",
                                     "--bins", "2"])
    script.main()
    out = capsys.readouterr().out
    oracle = out[out.index("oracle:"):].splitlines()
    assert [line.split()[:3] for line in oracle[3:]] == [["target", "0.00-1.00", "2"],
                                                        ["target", "1.00-2.00", "1"]]
    del evaluation["test_tasks"]  # as evaluations written before they were recorded
    (run / "evaluation.json").write_text(json.dumps(evaluation))
    with pytest.raises(SystemExit, match="written before evaluations recorded their test"):
        script.main()
    (run / "evaluation.json").unlink()
    with pytest.raises(SystemExit, match="does not exist"):
        script.main()


def test_velocity_definitions_script_scores_what_the_environments_reward():
    """scripts/cheetah_velocity_definitions.py: its torso returns are the environment's, its
    centre-of-mass returns those of env.reward_velocity=centre_of_mass on the same trajectory,
    and its control-cost row is the cost part of both."""
    module = load_script("cheetah_velocity_definitions")
    targets = np.repeat([0.4, 1.6], 2)  # 2 tasks x 2 episodes
    rng = np.random.default_rng(8)
    qpos = rng.uniform(-0.1, 0.1, size=(4, 9))
    qvel = 0.1 * rng.standard_normal((4, 9))
    recorder = module.CentreOfMassRecorder(
        BatchedHalfCheetah("velocity", targets, np.random.default_rng(0), threads=1))
    centre = BatchedHalfCheetah("velocity", targets, np.random.default_rng(0), threads=1,
                                reward_velocity="centre_of_mass")
    recorder.reset(qpos, qvel)
    centre.reset(qpos, qvel)
    totals = {"torso": np.zeros(4), "com": np.zeros(4), "cost": np.zeros(4)}
    model, data = recorder.env.model, mujoco.MjData(recorder.env.model)
    jacobian = np.zeros((3, model.nv))
    com_velocities = []  # each step's centre-of-mass x velocity, as J_com(q) q'
    for actions in rng.uniform(-1.3, 1.3, size=(25, 4, 6)):
        observations, rewards, _ = recorder.step(torch.from_numpy(actions))
        row = []
        for q, v in zip(recorder.env._qpos, recorder.env._qvel, strict=True):
            data.qpos[:] = q
            mujoco.mj_kinematics(model, data)
            mujoco.mj_comPos(model, data)
            mujoco.mj_jacSubtreeCom(model, data, jacobian, 0)
            row.append(float(jacobian[0] @ np.asarray(v)))
        com_velocities.append(row)
        centre_observations, centre_rewards, _ = centre.step(torch.from_numpy(actions))
        np.testing.assert_array_equal(observations.numpy(), centre_observations.numpy())
        totals["torso"] += rewards.numpy()
        totals["com"] += centre_rewards.numpy()
        totals["cost"] -= 0.05 * (np.clip(actions, -1, 1) ** 2).sum(-1)
    returns = module.segment_returns(recorder.segments[0], targets, recorder.dt, 2)
    np.testing.assert_allclose(returns["torso"], totals["torso"].reshape(2, 2).mean(1),
                               rtol=1e-9)
    np.testing.assert_allclose(returns["com"], totals["com"].reshape(2, 2).mean(1), rtol=1e-9)
    np.testing.assert_allclose(returns["control cost"], totals["cost"].reshape(2, 2).mean(1),
                               rtol=1e-9)
    assert np.abs(returns["com"] - returns["torso"]).max() > 0.01
    np.testing.assert_allclose(np.stack(recorder.segments[0]["com_v"])[1:], com_velocities,
                               rtol=1e-9, atol=1e-12)
    instant = (-np.abs(np.array(com_velocities) - targets)).sum(0) + totals["cost"]
    np.testing.assert_allclose(returns["com-instant"], instant.reshape(2, 2).mean(1),
                               rtol=1e-9)
    with pytest.raises(RuntimeError, match="never end early"):
        recorder.restart(torch.ones(4, dtype=torch.bool))


@pytest.mark.parametrize("seed", [None, 0, 11])
def test_velocity_definitions_script_reproduces_evaluate(cheetah_run, tmp_path, capsys,
                                                         monkeypatch, seed):
    """The script's own-reward row is what `metarl evaluate [--seed]` reports, for the run's
    test tasks and for another seed's (validation tasks)."""
    import json
    import shutil

    from metarl.cli import main

    run = tmp_path / "vel"
    shutil.copytree(cheetah_run, run)
    seed_args = [] if seed is None else ["--seed", str(seed)]
    assert main(["evaluate", str(run), *seed_args]) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    if seed is not None:
        assert evaluation["seed"] == seed
    evaluated = evaluation["mean"]
    monkeypatch.setattr("sys.argv", ["cheetah_velocity_definitions.py", str(run), *seed_args])
    capsys.readouterr()
    load_script("cheetah_velocity_definitions").main()
    lines = capsys.readouterr().out.splitlines()
    if seed is not None:
        assert f"tasks of seed {seed}" in lines[0]
    torso = lines[2].split()
    assert torso[0] == "torso"
    assert [float(m) for m in torso[1::3]] == pytest.approx(evaluated, abs=0.006)
    assert [float(c) for c in torso[3::3]] == pytest.approx(evaluation["ci95"], abs=0.051)
    monkeypatch.setattr("sys.argv", ["cheetah_velocity_definitions.py", str(run), "--seed", "-1"])
    with pytest.raises(SystemExit):
        load_script("cheetah_velocity_definitions").main()
    assert "non-negative" in capsys.readouterr().err


def test_velocity_definitions_script_on_a_run_trained_on_the_centre_of_mass(tmp_path, capsys,
                                                                           monkeypatch):
    """A run rewarded on the centre-of-mass velocity: its own row (com) is what evaluate
    reports, and the heading says the adaptation used that reward."""
    import json

    from metarl.cli import main

    run = tmp_path / "com"
    assert main(["train", "half-cheetah-vel", "--run-dir", str(run), *TINY_CHEETAH,
                 "--set", "env.reward_velocity=centre_of_mass"]) == 0
    assert main(["evaluate", str(run)]) == 0
    evaluated = json.loads((run / "evaluation.json").read_text())["mean"]
    monkeypatch.setattr("sys.argv", ["cheetah_velocity_definitions.py", str(run)])
    capsys.readouterr()
    load_script("cheetah_velocity_definitions").main()
    lines = capsys.readouterr().out.splitlines()
    assert "(adapted on the com reward)" in lines[0]
    (com,) = [line.split() for line in lines[2:] if line.split()[0] == "com"]
    assert [float(m) for m in com[1::3]] == pytest.approx(evaluated, abs=0.006)


@pytest.mark.parametrize(("env_id", "env_class"), [("metarl/HalfCheetahVel-v0", HalfCheetahVelEnv),
                                                   ("metarl/HalfCheetahDir-v0", HalfCheetahDirEnv)])
def test_each_id_makes_its_own_task_kind(env_id, env_class):
    env = gym.make(env_id).unwrapped
    assert type(env) is env_class
    key = "velocity" if env_class is HalfCheetahVelEnv else "direction"
    assert env.reset(options={"task": {key: -1.0}})[1]["task"] == {key: -1.0}


def test_batched_reset_takes_the_given_positions_or_velocities_and_draws_the_rest():
    batched = BatchedHalfCheetah("velocity", np.ones(2), np.random.default_rng(0), threads=1)
    qpos = np.zeros((2, 9))
    qpos[:, 1] = [0.25, -0.5]
    obs = batched.reset(qpos=qpos).numpy()
    np.testing.assert_array_equal(obs[:, :8], qpos[:, 1:].astype(np.float32))
    assert (obs[:, 8:] != 0).all()  # velocities: drawn reset noise
    qvel = np.full((2, 9), 0.5)
    obs = batched.reset(qvel=qvel).numpy()
    np.testing.assert_array_equal(obs[:, 8:], qvel.astype(np.float32))
    assert (obs[:, :8] != batched.init_qpos[1:].astype(np.float32)).all()  # positions: drawn
    with pytest.raises(ValueError, match=r"targets must have shape \(N,\), got \(2, 1\)"):
        BatchedHalfCheetah("velocity", np.ones((2, 1)), np.random.default_rng(0))


def test_velocity_plot_averages_each_time_step_over_the_episodes_that_reach_it(
        tmp_path, saved_figures):
    """2 episodes of 10 and 5 steps, the torso's velocity at observation index 9 (x observed):
    t in the first, t + 2 in the second. Their mean, t + 1 up to t = 4 and t after, is
    smoothed over 10 // 5 = 2 steps and drawn at the last step of each window."""
    from metarl.rl.episodes import Episodes
    from metarl.rl.render import plot_cheetah_velocities

    times = torch.arange(10).repeat(1, 2, 1)
    mask = torch.ones(1, 2, 10)
    mask[0, 1, 5:] = 0
    times = times * mask.long()
    observations = torch.zeros(1, 2, 10, 18)
    observations[0, 0, :, 9] = torch.arange(10.0)
    observations[0, 1, :5, 9] = torch.arange(5.0) + 2
    observations[0, 1, 5:, 9] = 100.0  # padding: not a step
    episodes = Episodes(observations=observations, actions=torch.zeros(1, 2, 10, 6),
                        rewards=torch.zeros(1, 2, 10), mask=mask,
                        log_probs=torch.zeros(1, 2, 10), times=times)
    plot_cheetah_velocities([{"velocity": 1.5}], [episodes], tmp_path / "v.png",
                            velocity_index=9, control_dt=0.01)
    (ax,) = saved_figures[-1].axes
    (curve,) = [line for line in ax.get_lines() if "step(s)" in line.get_label()]
    mean = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    assert list(curve.get_xdata()) == list(range(1, 10))
    np.testing.assert_allclose(curve.get_ydata(), (mean[:-1] + mean[1:]) / 2)
    (target,) = [line for line in ax.get_lines() if line.get_label() == "target"]
    assert list(target.get_ydata()) == [1.5, 1.5]
    assert ax.get_title() == "target 1.50 m/s"
    assert ax.get_xlabel() == "time step (0.01 s); moving mean over 2 steps"


def test_velocity_plot_labels_colours_and_titles_each_task_and_step(tmp_path, saved_figures):
    """Two direction tasks (backward, forward) rewarded differently, drawn after steps 0, 1
    and 40: each panel's title names its direction, each line its own step (in colours
    C0-C2) and its own task's return."""
    from metarl.rl.episodes import Episodes
    from metarl.rl.render import plot_cheetah_velocities

    def episodes_rewarded(per_task):
        ones = torch.ones(2, 1, 10)
        return Episodes(observations=torch.zeros(2, 1, 10, 17),
                        actions=torch.zeros(2, 1, 10, 6),
                        rewards=ones * torch.tensor(per_task).view(2, 1, 1), mask=ones,
                        log_probs=0 * ones, times=torch.arange(10).expand(2, 1, 10))

    plot_cheetah_velocities([{"direction": -1.0}, {"direction": 1.0}],
                            [episodes_rewarded([1.0, 2.0]), episodes_rewarded([3.0, 4.0]),
                             episodes_rewarded([5.0, 6.0])], tmp_path / "v.png",
                            velocity_index=8, step_numbers=[0, 1, 40])
    backward, forward = saved_figures[-1].axes
    assert (backward.get_title(), forward.get_title()) == ("run backward", "run forward")
    for ax, returns in ((backward, (10, 30, 50)), (forward, (20, 40, 60))):
        lines = [line for line in ax.get_lines() if "step(s)" in line.get_label()]
        assert [line.get_label() for line in lines] == [
            f"{step} step(s): return {value:.1f}"
            for step, value in zip((0, 1, 40), returns, strict=True)]
        assert [line.get_color() for line in lines] == ["C0", "C1", "C2"]  # not C40


class _CountingEnv:
    """A stand-in Gymnasium env: frame k is filled with k, each step is rewarded 1.5 and the
    episode terminates after ``length`` steps (or renders nothing with ``frames=False``)."""

    def __init__(self, length: int = 3, frames: bool = True):
        self.length, self.frames, self.actions = length, frames, []

    def reset(self, seed=None):
        self.actions.clear()
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.actions.append(np.asarray(action))
        return (np.zeros(2, np.float32), 1.5, len(self.actions) == self.length, False, {})

    def render(self):
        return np.full((4, 6, 3), len(self.actions), np.uint8) if self.frames else None


def test_run_episode_samples_scaled_actions_until_the_episode_ends():
    from metarl.rl.video import RenderBackendError, run_episode

    params = expand_params(init_policy_params(2, 2, [4], init_std=0.5,
                                              generator=torch.Generator().manual_seed(0)), 1)
    env = _CountingEnv(length=3)
    rendered = []
    frames, rewards = run_episode(env, policy_distribution, params, steps=10, seed=0,
                                  generator=torch.Generator().manual_seed(4), action_scale=0.1,
                                  on_frame=lambda: rendered.append(len(env.actions)))
    assert [int(f[0, 0, 0]) for f in frames] == [0, 1, 2, 3] and rewards.tolist() == [1.5] * 3
    assert rendered == [0, 1, 2, 3]  # once per frame, after it is rendered
    dist = policy_distribution(params, torch.zeros(1, 1, 2))
    noise = torch.randn((3, *dist.mean.shape), generator=torch.Generator().manual_seed(4))
    expected = (dist.mean + dist.stddev * noise).view(3, 2) * 0.1  # same observation each step
    np.testing.assert_allclose(np.stack(env.actions), expected.detach().numpy(), rtol=1e-6)
    mujoco_like = _CountingEnv(frames=False)
    mujoco_like.mujoco_renderer = None  # what marks a MuJoCo env: its failures name the fix
    with pytest.raises(RenderBackendError, match="could not render"):
        run_episode(mujoco_like, policy_distribution, params, steps=2, seed=0,
                    generator=torch.Generator())
    with pytest.raises(RuntimeError, match="rendered no frame") as error:  # a drawn env's bug
        run_episode(_CountingEnv(frames=False), policy_distribution, params, steps=2, seed=0,
                    generator=torch.Generator())
    assert not isinstance(error.value, RenderBackendError)


@pytest.mark.parametrize("progress", [True, False])
def test_a_videos_progress_bar_counts_every_frame_of_every_episode(monkeypatch, tmp_path,
                                                                  capsys, progress):
    """The bar ends at its total, episodes that end early included (their frames are not
    rendered but counted done), and shows only with ``progress``."""
    import metarl.rl.video as video

    class RenderEnv(_CountingEnv):
        unwrapped = type("Unwrapped", (), {"dt": 0.05})()

        def close(self):
            pass

    bars, updates = [], []

    import metarl.logging

    class RecordingBar(metarl.logging.tqdm):
        def __init__(self, *args, **kwargs):
            bars.append((kwargs["total"], kwargs["desc"]))
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    monkeypatch.setattr(metarl.logging, "tqdm", RecordingBar)
    monkeypatch.setattr(video, "make_render_env", lambda *a, **k: RenderEnv(length=3))
    monkeypatch.setattr(video, "write_video", lambda frames, output, *, fps: None)
    params = expand_params(init_policy_params(2, 2, [4], init_std=0.5,
                                              generator=torch.Generator().manual_seed(0)), 1)
    video.record_adaptation_video("metarl/HalfCheetahDir-v0", {"direction": 1.0},
                                  policy_distribution, [params, params], tmp_path / "v.gif",
                                  episode_steps=5, seed=0, progress=progress)
    # two episodes of 5 steps: 12 frames, 4 of each rendered (each ends after 3 steps)
    assert bars == [(12, "rendering 2 episodes")] and sum(updates) == 12
    assert ("rendering 2 episodes" in capsys.readouterr().err) == progress


def test_choose_gl_backend_keeps_a_set_backend_and_picks_egl_without_a_display(monkeypatch):
    import os

    from metarl.envs.gl_backend import choose_gl_backend

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert choose_gl_backend() == "osmesa"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa")  # MuJoCo refuses any other backend
    assert choose_gl_backend() == "osmesa" and os.environ["MUJOCO_GL"] == "osmesa"
    monkeypatch.setenv("MUJOCO_GL", "egl")  # one set is kept: the error then names both
    assert choose_gl_backend() == "egl"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setenv("DISPLAY", ":0")  # even with a display: MuJoCo needs the same
    monkeypatch.setenv("PYOPENGL_PLATFORM", "OSMESA")  # read in any case
    assert choose_gl_backend() == "osmesa"
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setenv("PYOPENGL_PLATFORM", "glx")  # not a headless one: as if unset
    assert choose_gl_backend() == "egl" and os.environ["MUJOCO_GL"] == "egl"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setenv("DISPLAY", ":0")
    assert choose_gl_backend() == "glfw" and "MUJOCO_GL" not in os.environ


def test_describe_task_names_each_kind_of_task():
    from metarl.rl.video import describe_task

    assert describe_task({"velocity": 1.5}) == "target velocity 1.50 m/s"
    assert describe_task({"direction": -1.0}) == "run backward"
    assert describe_task({"direction": 1.0}) == "run forward"
    assert describe_task({"goal": np.array([0.304, -0.2])}) == "goal [0.3, -0.2]"


def test_video_frames_say_the_task_step_time_and_return_so_far(tmp_path, monkeypatch):
    import metarl.rl.video as video

    seeds, texts = [], []

    def fake_episode(env, policy, params, *, steps, seed, generator, action_scale,
                     on_frame=None):
        seeds.append(generator.initial_seed())
        frame = np.zeros((video.PANEL_HEIGHT, video.PANEL_WIDTH, 3), np.uint8)
        return [frame] * 3, np.array([1.0, 2.5])

    monkeypatch.setattr(video, "make_render_env", lambda *a, **k: FakeRenderEnv(0.05))
    monkeypatch.setattr(video, "run_episode", fake_episode)
    monkeypatch.setattr(video, "annotate", lambda frame, lines: texts.append(list(lines))
                        or frame)
    monkeypatch.setattr(video, "write_video", lambda frames, output, *, fps: None)
    weights = [{"b0": torch.zeros(1, 1)}] * 3
    video.record_adaptation_video("metarl/HalfCheetahDir-v0", {"direction": -1.0},
                                  policy_distribution, weights, tmp_path / "v.gif",
                                  episode_steps=2, seed=7, title="maml, iteration 9")
    assert seeds == [7, 8, 9]  # each step's episode its own actions
    assert texts[:9] == [
        ["run backward, before adaptation", "t =   0   return      0.0"],
        ["run backward, before adaptation", "t =   1   return      1.0"],
        ["run backward, before adaptation", "t =   2   return      3.5"],
        ["run backward, after 1 step", "t =   0   return      0.0"],
        ["run backward, after 1 step", "t =   1   return      1.0"],
        ["run backward, after 1 step", "t =   2   return      3.5"],
        ["run backward, after 2 steps", "t =   0   return      0.0"],
        ["run backward, after 2 steps", "t =   1   return      1.0"],
        ["run backward, after 2 steps", "t =   2   return      3.5"]]
    assert texts[9:] == [["maml, iteration 9"]] * 3  # the title band of each video frame


def test_titles_name_a_narrower_test_velocity_range_or_the_authors_tasks():
    from metarl.experiment import config_from_data
    from metarl.rl.build import target_range_note

    def note(evaluation):
        _, config = config_from_data({"experiment": "meta_rl", "env": {
            "name": "half_cheetah_vel"}, "evaluation": evaluation})
        return target_range_note(config)

    assert note({}) == ""
    assert note({"test_velocities": [0.1, 0.8]}) == ", targets U[0.1, 0.8] m/s"
    assert note({"task_draw": "maml_authors"}) == ", the MAML authors' tasks"


def test_write_video_refuses_other_file_types(tmp_path):
    from metarl.config import ConfigError
    from metarl.rl.video import write_video

    with pytest.raises(ConfigError, match=r"out\.avi: the file name must end in \.mp4 or \.gif"):
        write_video([np.zeros((8, 8, 3), np.uint8)], tmp_path / "out.avi", fps=10)
    assert list(tmp_path.iterdir()) == []


def test_video_panels_show_their_own_frames_side_by_side(tmp_path, monkeypatch):
    import metarl.rl.video as video
    from metarl.rl.policy import policy_distribution

    calls = []

    def fake_episode(env, policy, params, *, steps, seed, generator, action_scale,
                     on_frame=None):
        calls.append(None)
        step = len(calls) - 1  # panel s: frames of value 10 s + t, 2 + s frames (ends early)
        frames = [np.full((video.PANEL_HEIGHT, video.PANEL_WIDTH, 3), 10 * step + t, np.uint8)
                  for t in range(2 + step)]
        return frames, np.zeros(len(frames) - 1)

    written = []
    monkeypatch.setattr(video, "make_render_env", lambda *a, **k: FakeRenderEnv(0.05))
    monkeypatch.setattr(video, "run_episode", fake_episode)
    monkeypatch.setattr(video, "annotate", lambda frame, lines: frame)
    monkeypatch.setattr(video, "write_video", lambda frames, output, *, fps: written.extend(frames))
    video.record_adaptation_video("metarl/HalfCheetahDir-v0", {"direction": 1.0},
                                  policy_distribution, [{"b0": torch.zeros(1, 1)}] * 3,
                                  tmp_path / "v.gif", episode_steps=3, seed=0)
    w = video.PANEL_WIDTH
    assert [[int(frame[0, s * w, 0]) for s in range(3)] for frame in written] == [
        [0, 10, 20], [1, 11, 21], [1, 12, 22], [1, 12, 23]]  # a finished panel holds its last


@pytest.mark.parametrize(("name", "steps", "title"), [
    ("half_cheetah_vel", None, "half_cheetah_vel"),
    ("half_cheetah_vel", 200, "half_cheetah_vel"),  # the family's own length, written out
    ("half_cheetah_vel", 100, "half_cheetah_vel (100-step episodes)"),
    ("navigation2d", 100, "navigation2d"),
    ("navigation2d", 50, "navigation2d (50-step episodes)"),
])
def test_titles_name_an_episode_length_other_than_the_familys(name, steps, title):
    """Returns of shorter episodes are on another scale: the pictures' titles say so."""
    from metarl.experiment import config_from_data
    from metarl.rl.build import env_title

    _, config = config_from_data({"experiment": "meta_rl",
                                  "env": {"name": name, "max_episode_steps": steps}})
    assert env_title(config) == title


@pytest.mark.parametrize(("platform", "display", "refused"), [
    ("linux", {}, True), ("linux", {"DISPLAY": ":0"}, False),
    ("linux", {"WAYLAND_DISPLAY": "wayland-0"}, False), ("darwin", {}, False)])
def test_glfw_without_a_display_is_refused_before_glfw_starts(monkeypatch, platform, display,
                                                               refused):
    import sys

    import metarl.rl.video as video

    for name in ("DISPLAY", "WAYLAND_DISPLAY", "PYOPENGL_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in display.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MUJOCO_GL", "GLFW")
    monkeypatch.setattr(sys, "platform", platform)
    made = []
    monkeypatch.setattr(video.gym, "make", lambda *args, **kwargs: made.append(args) or "env")
    if refused:
        with pytest.raises(video.RenderBackendError,
                           match=re.escape("MUJOCO_GL=GLFW: GLFW opens a window, and neither "
                                           "DISPLAY nor WAYLAND_DISPLAY is set. Unset "
                                           "MUJOCO_GL")):
            video.make_render_env("metarl/HalfCheetahDir-v0", {"direction": 1},
                                  episode_steps=1)
        assert made == []
    else:
        assert video.make_render_env("metarl/HalfCheetahDir-v0", {"direction": 1},
                                     episode_steps=1) == "env"
    # environments that draw themselves need no OpenGL at all
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert video.make_render_env("metarl/Navigation2D-v0", {"goal": [0.1, 0.2]},
                                 episode_steps=1, mujoco=False) == "env"


def test_a_rendering_cheetah_picks_a_headless_backend_and_refuses_a_window(monkeypatch):
    import os

    from metarl.envs.half_cheetah import MujocoUnavailableError

    for name in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY", "PYOPENGL_PLATFORM"):
        monkeypatch.setenv(name, "recorded")  # so that monkeypatch restores what the env sets
        monkeypatch.delenv(name)
    monkeypatch.setattr("sys.platform", "linux")
    HalfCheetahVelEnv().close()
    assert "MUJOCO_GL" not in os.environ  # no rendering asked: nothing chosen
    HalfCheetahVelEnv(render_mode="rgb_array").close()
    assert os.environ["MUJOCO_GL"] == "egl"  # before the first frame, where GLFW would fail
    with pytest.raises(MujocoUnavailableError,
                       match=re.escape("render_mode='human' opens a window, and neither "
                                       "DISPLAY nor WAYLAND_DISPLAY is set")):
        HalfCheetahDirEnv(render_mode="human")
    monkeypatch.setenv("MUJOCO_GL", "glfw")  # asked for, without a display: said before GLFW
    with pytest.raises(MujocoUnavailableError,
                       match=re.escape("render_mode='rgb_array' with MUJOCO_GL=glfw: GLFW "
                                       "opens a window, and neither DISPLAY nor")):
        HalfCheetahVelEnv(render_mode="rgb_array")
    monkeypatch.setenv("DISPLAY", ":0")
    HalfCheetahDirEnv(render_mode="human").close()  # the window opens at the first render
    # outside Linux MuJoCo's default stays, whatever PyOpenGL is told
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("PYOPENGL_PLATFORM", "egl")
    monkeypatch.setattr("sys.platform", "darwin")
    HalfCheetahVelEnv(render_mode="rgb_array").close()
    assert "MUJOCO_GL" not in os.environ
