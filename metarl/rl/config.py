"""The typed config of a meta-RL run (``experiment: meta_rl``), validated when it is built."""

from __future__ import annotations

import dataclasses
from typing import Literal

from metarl.config import ConfigError, RunConfig, param, section, yaml_scalar
from metarl.envs import ENV_FAMILIES
from metarl.rl.policy import DEFAULT_ACTIVATION, Activation


@dataclasses.dataclass
class EnvConfig:
    """The task-parameterized environment."""

    name: Literal["navigation2d", "half_cheetah_vel", "half_cheetah_dir"] = param(
        "navigation2d", "environment family")
    max_episode_steps: int | None = param(
        None, "episode length H (null: the family's: 100 for navigation2d, 200 for the "
        "half-cheetahs)", ge=1)
    frame_skip: int | None = param(
        None, "half-cheetahs: MuJoCo steps of 0.01 s per control step (null: 5, dt 0.05 s, "
        "as HalfCheetah-v5; 1: dt 0.01 s, the rate of the paper's rllab half-cheetah)", ge=1)
    observe_x_position: bool = param(
        False, "half-cheetahs: observe the torso's x position too, 18 numbers instead of "
        "REFERENCE.md's 17 (v5's exclude_current_positions_from_observation=False; the paper's "
        "rllab half-cheetah observed its centre of mass)")
    reward_velocity: Literal["torso", "centre_of_mass"] = param(
        "torso", "half-cheetahs: the x velocity the reward uses: torso (REFERENCE.md: the torso's "
        "x displacement over the control step / dt) or centre_of_mass (the whole cheetah's, "
        "close to the paper's rllab half-cheetah, which used the mass-weighted velocity of all "
        "bodies)")
    observe_centre_of_mass: bool = param(
        False, "half-cheetahs: append the cheetah's centre of mass (x, y, z; m) to the "
        "observation, 3 more numbers (with REFERENCE.md's 17: the paper's rllab half-cheetah's "
        "20-number observation)")
    reset_noise: Literal["v5", "rllab"] = param(
        "v5", "half-cheetahs: noise on each episode's initial state: v5 (REFERENCE.md, "
        "HalfCheetah-v5's: positions + U(±0.1), velocities 0.1·N(0, 1)) or rllab (the paper's "
        "rllab half-cheetah: positions + 0.01·N(0, 1), the same velocities)")


@dataclasses.dataclass
class PolicyConfig:
    """Gaussian MLP policy with a learned state-independent log standard deviation."""

    hidden_sizes: list[int] = param([100, 100], "hidden layer widths", ge=1)
    activation: Activation = param(DEFAULT_ACTIVATION, "hidden activation")
    init_std: float = param(1.0, "initial action standard deviation (policy units)", gt=0)
    init: Literal["xavier", "torch"] = param(
        "xavier", "weight initialization: xavier (Glorot-uniform weights, zero biases, as rllab "
        "and the MAML authors) or torch (PyTorch's Linear default)")
    normalized_actions: bool = param(
        False, "the policy acts in units of the environment's action bound (±1 is ±0.1 for "
        "navigation), as the MAML authors' rllab normalize wrapper does")


@dataclasses.dataclass
class RLAdaptationConfig:
    """The inner loop: vanilla policy gradient with the linear feature baseline."""

    method: Literal["maml", "fomaml"] = param(
        "maml", "meta-gradient through the inner step: maml (second order) or fomaml")
    inner_steps: int = param(1, "policy-gradient steps per task during meta-training", ge=1)
    inner_lr: float = param(0.1, "inner-loop learning rate", gt=0)


@dataclasses.dataclass
class RLTrainingConfig:
    """The outer loop: tasks, episodes, returns."""

    iterations: int = param(500, "meta-iterations", ge=1)
    meta_batch_size: int = param(20, "tasks per meta-iteration", ge=1)
    episodes_per_task: int = param(20, "episodes per task for each inner step and for the "
                                   "post-adaptation batch", ge=1)
    sampling: Literal["episodes", "steps"] = param(
        "episodes", "episodes: exactly episodes_per_task episodes per task and step; steps: a "
        "budget of episodes_per_task x H steps per task, restarting episodes that end early "
        "(at the goal), as the MAML authors' samplers. Applies to evaluation too")
    discount: float = param(0.99, "discount factor γ", gt=0, le=1)
    gae_lambda: float = param(1.0, "GAE λ (1: returns minus baseline)", ge=0, le=1)
    normalize_advantages: bool = param(True, "standardize advantages per task")


@dataclasses.dataclass
class TRPOConfig:
    """The outer TRPO step."""

    max_kl: float = param(0.01, "mean KL bound δ of a step", gt=0)
    cg_iterations: int = param(10, "conjugate-gradient iterations", ge=1)
    cg_damping: float = param(1e-5, "damping added to the Fisher-vector product", ge=0)
    backtrack_ratio: float = param(0.8, "line-search step shrink factor", gt=0, lt=1)
    max_backtracks: int = param(15, "line-search attempts before the step is rejected", ge=1)
    curvature_stride: int = param(
        1, "estimate the KL curvature of conjugate gradient from every k-th step (1: all, as "
        "the paper; 5: as OpenAI Baselines' TRPO, several times cheaper); the gradient and the "
        "line search's KL check always use every step", ge=1)


@dataclasses.dataclass
class RLEvaluationConfig:
    """`metarl evaluate`: returns after 0..steps adaptation steps on new tasks."""

    tasks: int = param(40, "number of test tasks", ge=2)
    episodes_per_task: int = param(40, "episodes per task and step", ge=1)
    steps: int = param(3, "evaluate after 0..steps gradient steps", ge=0)
    inner_lr: float | None = param(None, "first-step learning rate (null: adaptation.inner_lr)",
                                   gt=0)
    later_lr_scale: float = param(0.5, "learning rate of later steps as a fraction of the "
                                  "first (0.5 in the MAML authors' protocol)", gt=0, le=1)
    seed: int = param(1_000_003, "seed of the test tasks and their episodes (independent of "
                      "training)", ge=0)
    task_draw: Literal["seeded", "maml_authors"] = param(
        "seeded", "which test tasks: seeded (drawn from the task distribution with the "
        "evaluation's seed) or maml_authors (the tasks of the MAML authors' test scripts, "
        "np.random.seed(1) then U[0, 2] velocities, directions backward below 1 or "
        "U[-0.5, 0.5]^2 goals; the seed then draws only the episodes)")
    test_velocities: list[float] | None = param(
        None, "half_cheetah_vel: test target velocities ~ U[low, high] m/s, given as [low, "
        "high] (null: the training distribution U[0, 2], as the paper; [0.1, 0.8]: the "
        "MAML authors' pre-ICML test targets)", ge=0)
    reset_noise: Literal["v5", "rllab"] | None = param(
        None, "half-cheetahs: initial-state noise of the test episodes (null: env.reset_noise, "
        "the training's; v5 or rllab as there)")


@dataclasses.dataclass
class RLBaselinesConfig:
    """`metarl evaluate --baselines`: the paper's random-init, pretrained and oracle policies."""

    pretrained_iterations: int = param(
        200, "multi-task TRPO iterations (no adaptation) for the pretrained policy", ge=1)
    oracle_iterations: int = param(
        200, "multi-task TRPO iterations for the oracle, a policy given the task (goal, "
        "velocity or direction) as input and evaluated without adaptation", ge=1)


@dataclasses.dataclass
class MetaRLConfig:
    """Meta-RL with MAML-TRPO (Finn et al. 2017, section 5.3)."""

    experiment: Literal["meta_rl"] = param("meta_rl", "which experiment this file configures")
    seed: int = param(0, "seed of every random generator of the run", ge=0)
    env: EnvConfig = section(EnvConfig, "environment")
    policy: PolicyConfig = section(PolicyConfig, "policy")
    adaptation: RLAdaptationConfig = section(RLAdaptationConfig, "inner loop")
    training: RLTrainingConfig = section(RLTrainingConfig, "outer loop")
    trpo: TRPOConfig = section(TRPOConfig, "TRPO")
    evaluation: RLEvaluationConfig = section(RLEvaluationConfig, "metarl evaluate")
    baselines: RLBaselinesConfig = section(RLBaselinesConfig, "metarl evaluate --baselines")
    run: RunConfig = section(RunConfig, "checkpoints and logs")

    def __post_init__(self) -> None:
        if self.env.name not in ENV_FAMILIES:
            raise ConfigError(f"env.name = {self.env.name!r}: known environments are "
                              + ", ".join(ENV_FAMILIES))
        if not ENV_FAMILIES[self.env.name].mujoco:
            self._check_no_mujoco_options()
        velocities = self.evaluation.test_velocities
        if velocities is not None:
            if self.env.name != "half_cheetah_vel":
                raise ConfigError(f"evaluation.test_velocities = {velocities}: only "
                                  f"half_cheetah_vel has target velocities, not "
                                  f"{self.env.name}; leave it null")
            if len(velocities) != 2 or not velocities[0] < velocities[1]:
                raise ConfigError(f"evaluation.test_velocities = {velocities}: give [low, "
                                  "high] with low < high (m/s), e.g. [0.1, 0.8]")
            if self.evaluation.task_draw != "seeded":
                raise ConfigError(f"evaluation.test_velocities = {velocities} draws seeded "
                                  "test targets from that range; the MAML authors' are fixed "
                                  "(evaluation.task_draw = maml_authors): set one of them")

    def _check_no_mujoco_options(self) -> None:
        """Refuse the options that only the MuJoCo families have, each left at its default."""
        allowed = "it applies to the MuJoCo families (" + ", ".join(
            k for k, f in ENV_FAMILIES.items() if f.mujoco) + ")"
        name = self.env.name
        for key, value, default, why in (
                ("env.frame_skip", self.env.frame_skip, None, "has no frame skip"),
                ("env.observe_x_position", self.env.observe_x_position, False, "has no torso"),
                ("env.observe_centre_of_mass", self.env.observe_centre_of_mass, False,
                 "has no cheetah"),
                ("env.reward_velocity", self.env.reward_velocity, "torso", "has no torso"),
                ("env.reset_noise", self.env.reset_noise, "v5",
                 "starts every episode at its origin"),
                ("evaluation.reset_noise", self.evaluation.reset_noise, None,
                 "starts every episode at its origin")):
            if value != default:
                raise ConfigError(f"{key} = {yaml_scalar(value)}: {name} {why}; {allowed}; "
                                  f"leave it {yaml_scalar(default)}")
