"""Half-cheetah velocity and direction tasks of the MAML paper (section 5.3), on MuJoCo.

The model, frame skip (5 MuJoCo steps of 0.01 s: dt = 0.05 s), reset noise and the 17-number
observation (joint positions without the torso's x, then all velocities) are those of
Gymnasium's HalfCheetah-v5. With ``reset_noise="rllab"`` episodes start as the MAML authors'
rllab half-cheetah's did: positions plus N(0, 0.01²) instead of v5's U(±0.1), velocities
N(0, 0.1²) in both. The torso's x position can be observed too (18 numbers, x first),
as v5 does with ``exclude_current_positions_from_observation=False``, and the cheetah's centre
of mass (x, y, z; m) can be appended with ``observe_centre_of_mass=True``: v5's 17 numbers
and these 3 are the MAML authors' rllab half-cheetah's 20-number observation.
The frame skip is a parameter: 1 gives the control rate of the rllab half-cheetah the MAML
authors trained on (dt = 0.01 s, so 200 steps are 2 s of simulated time, against 10 s at
v5's rate). The reward follows the task:

- velocity: ``-|v_x - v_goal| - 0.05 ‖a‖²`` with ``v_goal ~ U[0, 2]`` (m/s);
- direction: ``direction · v_x - 0.05 ‖a‖²`` with ``direction = ±1``, each with p = 1/2;

where ``v_x`` is the torso's x displacement over the control step divided by dt (REFERENCE.md),
or, with ``reward_velocity="centre_of_mass"``, the whole cheetah's centre-of-mass x
displacement over the control step divided by dt: close to the MAML authors' rllab
half-cheetah, whose reward used the mass-weighted velocity of all bodies. Actions are
the 6 joint torques, clipped to [-1, 1] before they are applied and costed (as the MAML
authors' action normalization does). Episodes last 200 steps (a parameter; peers use 100);
nothing terminates them earlier.

Two forms share these dynamics:

- :class:`HalfCheetahVelEnv` / :class:`HalfCheetahDirEnv`, Gymnasium environments
  (``metarl/HalfCheetahVel-v0``, ``metarl/HalfCheetahDir-v0``);
- :class:`BatchedHalfCheetah`, all (task, episode) simulations stepped together on threads
  with ``mujoco.batch``, for the sampler.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from metarl.config import ConfigError
from metarl.envs.gl_backend import has_display, windowless_glfw

GL_HELP = ("Headless MuJoCo rendering needs an OpenGL backend: MUJOCO_GL=egl with Mesa's EGL "
           "(Debian: apt install libegl1 libgl1-mesa-dri), or MUJOCO_GL=osmesa after "
           "apt install libosmesa6; with a display, MUJOCO_GL=glfw.")


class MujocoUnavailableError(ConfigError):
    """MuJoCo (or its OpenGL backend) could not be loaded."""


try:
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
except (ImportError, RuntimeError, AttributeError, gym.error.DependencyNotInstalled) as _error:
    # MuJoCo reads MUJOCO_GL on import and fails there on a value it does not know
    # (RuntimeError), or in PyOpenGL when the backend's library is missing (AttributeError:
    # MUJOCO_GL=osmesa without libosmesa6).
    raise MujocoUnavailableError(
        f"MuJoCo could not be loaded (MUJOCO_GL={os.environ.get('MUJOCO_GL', 'unset')}): "
        f"{type(_error).__name__}: {_error}. "
        + (GL_HELP + " Unset MUJOCO_GL to train and evaluate without rendering."
           if isinstance(_error, (RuntimeError, AttributeError)) else
           "Install it with pip install 'mujoco>=4' 'gymnasium[mujoco]'.")) from _error

from gymnasium import utils  # noqa: E402  (after the guarded MuJoCo import)

TaskKind = Literal["velocity", "direction"]
RewardVelocity = Literal["torso", "centre_of_mass"]
REWARD_VELOCITIES: tuple[RewardVelocity, ...] = ("torso", "centre_of_mass")
VELOCITY_LOW, VELOCITY_HIGH = 0.0, 2.0
CONTROL_COST_WEIGHT = 0.05
ACTION_BOUND = 1.0
FRAME_SKIP = 5
RESET_NOISE_SCALE = 0.1
RLLAB_POSITION_NOISE_STD = 0.01  # rllab's MujocoEnv.reset_mujoco: init_qpos + 0.01·N(0, 1)
ResetNoise = Literal["v5", "rllab"]
RESET_NOISES: tuple[ResetNoise, ...] = ("v5", "rllab")
MAX_EPISODE_STEPS = 200
OBSERVATION_DIM = 17
CENTRE_OF_MASS_DIM = 3
TORSO_BODY = 1  # body 0 is the world; the torso's subtree is the whole cheetah
ACTION_DIM = 6
QPOS_DIM = 9


def forward_velocity_index(observe_x_position: bool) -> int:
    """Where the torso's forward velocity qvel[0] (m/s) sits in an observation: after qpos
    without its x (8 numbers), or with it (9)."""
    return QPOS_DIM - (0 if observe_x_position else 1)


def model_path() -> Path:
    """Gymnasium's half-cheetah MJCF file (the model of HalfCheetah-v5)."""
    import gymnasium.envs.mujoco as gym_mujoco

    return Path(gym_mujoco.__file__).parent / "assets" / "half_cheetah.xml"


def compile_model(path: str | Path | None = None) -> Any:
    """The ``mujoco.MjModel`` of an MJCF file (default: :func:`model_path`), as MuJoCo compiles it.

    Gymnasium's half-cheetah file asks the compiler to scale the masses to 14 kg with
    ``settotalmass``, which MuJoCo 4 deprecates (with a warning on every compile) and will
    drop. Here the scaling is applied to the compiled model instead, with ``mj_setTotalmass``
    and ``mj_setConst``, and the two statistics that those leave unscaled are recomputed as the
    compiler does, so the model equals the compiler's to the bit (tested array by array).
    """
    import mujoco

    spec = mujoco.MjSpec.from_file(str(path or model_path()))
    total_mass = getattr(spec.compiler, "settotalmass", -1.0)  # gone from future MuJoCos
    if total_mass > 0:
        spec.compiler.settotalmass = -1.0  # MuJoCo's "unset"
    model = spec.compile()
    if total_mass > 0:
        mujoco.mj_setTotalmass(model, total_mass)
        mujoco.mj_setConst(model, mujoco.MjData(model))
        # Sequential sums, in the compiler's order.
        model.stat.meaninertia = sum(model.dof_M0.tolist()) / model.nv
        model.stat.meanmass = sum(model.body_mass[1:].tolist()) / (model.nbody - 1)
    return model


def sample_targets(kind: TaskKind, num_tasks: int, rng: np.random.Generator) -> np.ndarray:
    """Target velocities ~ U[0, 2] or directions ±1 (p = 1/2 each), shape ``(num_tasks,)``."""
    if kind == "velocity":
        return rng.uniform(VELOCITY_LOW, VELOCITY_HIGH, size=num_tasks)
    return np.where(rng.random(num_tasks) < 0.5, -1.0, 1.0)


def control_costs(actions):
    """0.05‖a‖² of clipped actions ``(..., 6)``, ``(...)``: NumPy arrays or torch tensors."""
    return CONTROL_COST_WEIGHT * (actions**2).sum(-1)


def task_rewards(kind: TaskKind, targets: np.ndarray, x_velocity: np.ndarray,
                 actions: np.ndarray) -> np.ndarray:
    """Rewards ``(N,)`` for targets and velocities ``(N,)`` (m/s) and clipped actions ``(N, 6)``."""
    control_cost = control_costs(actions)
    if kind == "velocity":
        return -np.abs(x_velocity - targets) - control_cost
    return targets * x_velocity - control_cost


def reset_noise_draws(reset_noise: ResetNoise, rng: np.random.Generator,
                      position_shape: int | tuple[int, ...],
                      velocity_shape: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Noise added to the initial positions and velocities of an episode, of shapes
    ``position_shape`` and ``velocity_shape``, drawn from ``rng`` positions first.

    ``"v5"``: U(±0.1) (rad or m) and 0.1·N(0, 1) (rad/s or m/s), HalfCheetah-v5's draws in
    its order; ``"rllab"``: 0.01·N(0, 1) and 0.1·N(0, 1), the rllab half-cheetah's.
    """
    check_reset_noise(reset_noise)
    if reset_noise == "v5":
        position_noise = rng.uniform(-RESET_NOISE_SCALE, RESET_NOISE_SCALE, size=position_shape)
    else:
        position_noise = RLLAB_POSITION_NOISE_STD * rng.standard_normal(position_shape)
    return position_noise, RESET_NOISE_SCALE * rng.standard_normal(velocity_shape)


def check_reset_noise(reset_noise: str) -> None:
    """Refuse a reset noise that is not one of :data:`RESET_NOISES`."""
    if reset_noise not in RESET_NOISES:
        raise ValueError(f"reset_noise must be one of {', '.join(RESET_NOISES)}, got "
                         f"{reset_noise!r}")


def check_frame_skip(frame_skip: int) -> None:
    """Refuse a frame skip that is not a whole number of MuJoCo steps of at least 1."""
    if isinstance(frame_skip, bool) or not isinstance(frame_skip, int | np.integer) or (
            frame_skip < 1):
        raise ValueError(f"frame_skip must be an integer >= 1 (MuJoCo steps of 0.01 s per "
                         f"control step), got {frame_skip!r}")


def check_reward_velocity(reward_velocity: str) -> None:
    """Refuse a reward velocity that is not one of :data:`REWARD_VELOCITIES`."""
    if reward_velocity not in REWARD_VELOCITIES:
        raise ValueError(f"reward_velocity must be one of {', '.join(REWARD_VELOCITIES)}, got "
                         f"{reward_velocity!r}")


def _check_target(kind: TaskKind, task: dict[str, Any]) -> float:
    if kind not in task:  # tasks are {"velocity": v} or {"direction": ±1}
        raise ValueError(f"a half-cheetah {kind} task is {{'{kind}': float}}, got {task!r}")
    value = float(task[kind])
    if not math.isfinite(value):
        raise ValueError(f"task {kind} must be finite, got {value}")
    if kind == "direction" and value not in (-1.0, 1.0):
        raise ValueError(f"task direction must be +1 or -1, got {value}")
    return value


class _HalfCheetahTaskEnv(HalfCheetahEnv):
    """HalfCheetah-v5 with a task-dependent reward; see the module docstring.

    Task interface: :meth:`sample_tasks`, :meth:`reset_task`; a task can also be given to the
    constructor or as ``reset(options={"task": task})``.
    """

    kind: ClassVar[TaskKind]
    default_target: ClassVar[float] = 1.0  # the task until one is set

    def __init__(self, task: dict[str, Any] | None = None, render_mode: str | None = None,
                 width: int = 480, height: int = 480, frame_skip: int = FRAME_SKIP,
                 reward_velocity: RewardVelocity = "torso", reset_noise: ResetNoise = "v5",
                 observe_centre_of_mass: bool = False, **kwargs: Any) -> None:
        check_frame_skip(frame_skip)
        check_reward_velocity(reward_velocity)
        check_reset_noise(reset_noise)
        if render_mode == "human" and not has_display():
            # refused here: GLFW would fail with a C assertion that kills the process
            raise MujocoUnavailableError(
                "render_mode='human' opens a window, and neither DISPLAY nor WAYLAND_DISPLAY "
                "is set: render headless with render_mode='rgb_array' (check_env: "
                "skip_render_check=True)")
        # headless: EGL rather than GLFW's failing window
        if render_mode is not None and (problem := windowless_glfw()) is not None:
            raise MujocoUnavailableError(f"render_mode={render_mode!r} with {problem}. {GL_HELP}")
        self.reward_velocity = reward_velocity
        self.reset_noise = reset_noise
        self.observe_centre_of_mass = bool(observe_centre_of_mass)
        observation_dim = OBSERVATION_DIM + (
            0 if kwargs.get("exclude_current_positions_from_observation", True) else 1) + (
            CENTRE_OF_MASS_DIM * self.observe_centre_of_mass)
        if "camera_id" not in kwargs:  # follow the torso rather than a fixed view
            kwargs.setdefault("camera_name", "track")
        super().__init__(ctrl_cost_weight=CONTROL_COST_WEIGHT, frame_skip=frame_skip,
                         reset_noise_scale=RESET_NOISE_SCALE, render_mode=render_mode,
                         width=width, height=height, **kwargs)
        # Pickling and deep copies rebuild the env from these arguments (HalfCheetahEnv
        # recorded its own).
        utils.EzPickle.__init__(self, task, render_mode, width, height, frame_skip,
                                reward_velocity, reset_noise, observe_centre_of_mass, **kwargs)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(observation_dim,),
                                                dtype=np.float64)
        self._target = self.default_target
        if task is not None:
            self.reset_task(task)

    def _initialize_simulation(self) -> tuple[Any, Any]:
        # Gymnasium's, with the model compiled without the deprecated settotalmass.
        import mujoco

        model = compile_model(self.fullpath)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    def sample_tasks(self, num_tasks: int,
                     rng: np.random.Generator | None = None) -> list[dict[str, float]]:
        """``num_tasks`` tasks drawn from ``rng`` (default: the environment's generator,
        seeded by ``reset(seed=...)``)."""
        targets = sample_targets(self.kind, num_tasks, rng if rng is not None
                                 else self.np_random)
        return [{self.kind: float(t)} for t in targets]

    def reset_task(self, task: dict[str, Any]) -> None:
        self._target = _check_target(self.kind, task)

    @property
    def task(self) -> dict[str, float]:
        return {self.kind: self._target}

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if options and "task" in options:
            self.reset_task(options["task"])
        observation, info = super().reset(seed=seed)
        return observation, {**info, "task": self.task}

    def reset_model(self) -> np.ndarray:
        position_noise, velocity_noise = reset_noise_draws(self.reset_noise, self.np_random,
                                                           self.model.nq, self.model.nv)
        self.set_state(self.init_qpos + position_noise, self.init_qvel + velocity_noise)
        return self._get_obs()

    def _centre_of_mass(self) -> np.ndarray:
        """The cheetah's centre of mass ``(3,)`` (m) at the current state."""
        import mujoco

        # After mj_step the derived fields describe the state before the last substep.
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        return self.data.subtree_com[TORSO_BODY].copy()

    def _get_obs(self) -> np.ndarray:
        observation = super()._get_obs()
        if not self.observe_centre_of_mass:
            return observation
        return np.concatenate([observation, self._centre_of_mass()])

    def _tracked_x(self) -> float:
        """The x position (m) whose displacement gives the reward's velocity."""
        if self.reward_velocity == "torso":
            return float(self.data.qpos[0])
        return float(self._centre_of_mass()[0])

    # MujocoEnv annotates a float64 reward and float64 info values; a Gymnasium Env's step
    # returns a SupportsFloat reward and any info, as here.
    def step(  # type: ignore[override]
            self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.clip(np.asarray(action, dtype=np.float64), -ACTION_BOUND, ACTION_BOUND)
        x_before = self._tracked_x()
        self.do_simulation(action, self.frame_skip)
        x_velocity = (self._tracked_x() - x_before) / self.dt
        reward = float(task_rewards(self.kind, np.array([self._target]), np.array([x_velocity]),
                                    action[None])[0])
        info = {"x_position": self.data.qpos[0], "x_velocity": x_velocity, "task": self.task}
        return self._get_obs(), reward, False, False, info


class HalfCheetahVelEnv(_HalfCheetahTaskEnv):
    """Run at a target velocity ``{"velocity": v}``, v ~ U[0, 2] m/s."""

    kind = "velocity"


class HalfCheetahDirEnv(_HalfCheetahTaskEnv):
    """Run forward or backward, ``{"direction": +1 or -1}``."""

    kind = "direction"


class BatchedHalfCheetah:
    """N half-cheetah simulations stepped together with ``mujoco.batch`` (N = tasks x episodes).

    Args:
        kind: ``"velocity"`` or ``"direction"``.
        targets: the task of each simulation, ``(N,)``.
        rng: source of the reset noise.
        threads: MuJoCo threads (default: the CPUs this process may use).
        frame_skip: MuJoCo steps of 0.01 s per control step (5, HalfCheetah-v5's, by default).
        observe_x_position: observe the torso's x position too, as the first of 18 numbers
            (v5's ``exclude_current_positions_from_observation=False``).
        observe_centre_of_mass: append the cheetah's centre of mass (x, y, z; m) to the
            observation (with v5's 17 numbers, the rllab half-cheetah's 20).
        reward_velocity: ``"torso"`` (REFERENCE.md) or ``"centre_of_mass"``: whose x
            displacement over the control step gives the reward's velocity.
        reset_noise: ``"v5"`` (U(±0.1) on positions, 0.1·N(0, 1) on velocities) or
            ``"rllab"`` (0.01·N(0, 1) on positions): see :func:`reset_noise_draws`.

    The reset noise has the Gymnasium form's distribution but is drawn for all simulations at
    once (positions, then velocities), so with more than one simulation a seed does not
    reproduce the Gymnasium form's per-env resets (with one it does); :meth:`reset` also
    takes explicit states.
    """

    action_dim = ACTION_DIM

    def __init__(self, kind: TaskKind, targets: np.ndarray, rng: np.random.Generator, *,
                 threads: int | None = None, frame_skip: int = FRAME_SKIP,
                 observe_x_position: bool = False,
                 reward_velocity: RewardVelocity = "torso",
                 reset_noise: ResetNoise = "v5", observe_centre_of_mass: bool = False) -> None:
        import mujoco
        import mujoco.batch

        check_frame_skip(frame_skip)
        check_reward_velocity(reward_velocity)
        check_reset_noise(reset_noise)
        self.reward_velocity = reward_velocity
        self.reset_noise = reset_noise
        targets = np.asarray(targets, dtype=np.float64)
        if targets.ndim != 1:
            raise ValueError(f"targets must have shape (N,), got {targets.shape}")
        self.kind = kind
        self.targets = targets
        self.rng = rng
        self.model = _load_model()
        self.frame_skip = int(frame_skip)
        self._first_observed_position = 0 if observe_x_position else 1
        self.observe_centre_of_mass = bool(observe_centre_of_mass)
        self.observation_dim = (OBSERVATION_DIM + 1 - self._first_observed_position
                                + CENTRE_OF_MASS_DIM * self.observe_centre_of_mass)
        self.dt = self.model.opt.timestep * self.frame_skip
        threads = threads or available_cpus()
        self.batch = mujoco.batch.Batch(self.model, len(targets), nthread=threads,
                                        persistent=True)
        self._qpos = self.batch.bind("qpos")
        self._qvel = self.batch.bind("qvel")
        self._ctrl = self.batch.bind("ctrl")
        if reward_velocity == "centre_of_mass" or self.observe_centre_of_mass:
            self._subtree_com = self.batch.bind("subtree_com")  # (N, bodies, 3), read-only
            # Stepping then computes the position stage at the new state (subtree_com current);
            # a persistent batch starts its next step from it, at no extra cost.
            self._step_stage = int(mujoco.mjtStage.mjSTAGE_POS)
        else:
            self._step_stage = 0
        self.init_qpos = self.model.qpos0.copy()
        self.init_qvel = np.zeros(self.model.nv)

    @property
    def num_envs(self) -> int:
        return len(self.targets)

    def reset(self, qpos: np.ndarray | None = None, qvel: np.ndarray | None = None) -> Tensor:
        """Start every simulation from the default pose plus reset noise drawn from ``rng``
        (or from the given states ``(N, 9)``); returns observations ``(N, observation_dim)``
        float32 (17 numbers, 18 with the x position, 3 more with the centre of mass)."""
        n, nq, nv = self.num_envs, self.model.nq, self.model.nv
        if qpos is None or qvel is None:
            position_noise, velocity_noise = reset_noise_draws(self.reset_noise, self.rng,
                                                               (n, nq), (n, nv))
            qpos = self.init_qpos + position_noise if qpos is None else qpos
            qvel = self.init_qvel + velocity_noise if qvel is None else qvel
        self.batch.reset(stage=0)
        self._qpos[:] = qpos
        self._qvel[:] = qvel
        self.batch.forward()
        return self.observations()

    def observations(self) -> Tensor:
        """Current observations ``(N, observation_dim)`` float32: qpos without the torso's x
        (all of it with ``observe_x_position``), qvel, then the torso subtree's centre of mass
        (m) with ``observe_centre_of_mass``."""
        parts = [self._qpos[:, self._first_observed_position:], self._qvel]
        if self.observe_centre_of_mass:
            parts.append(self._subtree_com[:, TORSO_BODY])
        return torch.from_numpy(np.concatenate(parts, axis=1)).to(torch.float32)

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Apply torques ``(N, 6)`` (clipped to [-1, 1]) for one control step (``frame_skip``
        MuJoCo steps).

        Returns:
            observations ``(N, observation_dim)`` float32, rewards ``(N,)`` float64,
            terminated ``(N,)`` (always False).
        """
        clipped = np.clip(actions.detach().numpy().astype(np.float64), -ACTION_BOUND,
                          ACTION_BOUND)
        x_before = self._tracked_x()
        self._ctrl[:] = clipped
        self.batch.step(nstep=self.frame_skip, stage=self._step_stage)
        x_velocity = (self._tracked_x() - x_before) / self.dt
        rewards = task_rewards(self.kind, self.targets, x_velocity, clipped)
        return (self.observations(), torch.from_numpy(rewards),
                torch.zeros(self.num_envs, dtype=torch.bool))


    def _tracked_x(self) -> np.ndarray:
        """The x positions ``(N,)`` (m) whose displacements give the reward's velocity."""
        if self.reward_velocity == "torso":
            return self._qpos[:, 0].copy()
        return self._subtree_com[:, TORSO_BODY, 0].copy()


def available_cpus() -> int:
    """CPUs this process may run on (all CPUs where affinity is not supported)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_MODEL = None


def _load_model():
    """The half-cheetah MjModel, compiled once per process."""
    global _MODEL
    if _MODEL is None:
        _MODEL = compile_model()
    return _MODEL
