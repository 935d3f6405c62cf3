"""Meta-RL with MAML-TRPO on task-parameterized environments: config, evaluation, pictures."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from metarl.adaptation import Params, test_time_learning_rates
from metarl.checkpoint import load_checkpoint, load_or_compute, save_checkpoint
from metarl.config import ConfigError, RunConfig, param, section, to_dict, yaml_scalar
from metarl.envs import ENV_FAMILIES, EnvFamily, env_family
from metarl.evaluation import format_table, summarize, write_evaluation
from metarl.experiment import EvaluateOptions, Experiment, RenderOptions, baseline_section
from metarl.plots import plot_adaptation_curves
from metarl.rl.authors_tasks import maml_authors_test_tasks
from metarl.rl.maml_trpo import (
    MAMLTRPO,
    AdvantageSettings,
    Rollouts,
    TRPOSettings,
    rollouts_with_adaptation,
)
from metarl.rl.oracle import oracle_family
from metarl.rl.policy import init_policy_params, policy_distribution
from metarl.seeding import numpy_generator, torch_generator

PUBLISHED_RETURNS = {
    # MAML paper, Figure 5 / Table 4 (returns after 0, 1, 2, 3 gradient steps).
    # The oracle is told the task and does not adapt: one number.
    "navigation2d": {"MAML paper": {0: -40.41, 1: -11.68, 2: -3.33, 3: -3.23},
                     "paper: pretrained": {0: -40.81, 1: -19.73, 2: -11.72, 3: -8.47},
                     "paper: random init": {0: -82.66, 1: -57.96, 2: -53.84, 3: -46.81},
                     "paper: oracle": {0: -2.29}},
    # Figure 5 / Table 5, 200-step episodes.
    "half_cheetah_vel": {"MAML paper": {0: -129.53, 1: -78.57, 2: -66.62, 3: -60.78},
                         "paper: pretrained": {0: -158.00, 1: -135.39, 2: -128.47,
                                               3: -133.61},
                         "paper: oracle": {0: -54.47}},
    "half_cheetah_dir": {"MAML paper": {0: -50.69, 1: 293.19, 2: 313.48, 3: 315.65},
                         "paper: pretrained": {0: -43.03, 1: -24.75, 2: -12.85, 3: 19.57},
                         "paper: oracle": {0: 442.69}},
}


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
    activation: Literal["relu", "tanh"] = param("relu", "hidden activation")
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


def family_of(config: MetaRLConfig, reset_noise: str | None = None) -> EnvFamily:
    """The environments of meta-training (episodes started with ``reset_noise`` where given)."""
    return env_family(config.env.name, frame_skip=config.env.frame_skip,
                      observe_x_position=config.env.observe_x_position,
                      observe_centre_of_mass=config.env.observe_centre_of_mass,
                      reward_velocity=config.env.reward_velocity,
                      reset_noise=reset_noise or config.env.reset_noise)


def evaluation_reset_noise(config: MetaRLConfig) -> str:
    """The reset noise of the test episodes: ``evaluation.reset_noise``, else the training's."""
    return config.evaluation.reset_noise or config.env.reset_noise


def evaluation_family(config: MetaRLConfig) -> EnvFamily:
    """The environments of evaluation and rendering: meta-training's, started with
    ``evaluation.reset_noise`` where it is set."""
    return family_of(config, evaluation_reset_noise(config))


def env_title(config: MetaRLConfig) -> str:
    """The family's name, with its control step when the config changes the frame skip, and
    with the observed x position and centre of mass, the centre-of-mass reward velocity and
    rllab's reset noise (in training or only in evaluation) when asked."""
    family = family_of(config)
    notes = []
    if config.env.frame_skip is not None and family.control_dt is not None:
        notes.append(f"dt {family.control_dt:g} s")
    if config.env.observe_x_position:
        notes.append("x observed")
    if config.env.observe_centre_of_mass:
        notes.append("centre of mass observed")
    if config.env.reward_velocity != "torso":
        notes.append("centre-of-mass velocity")
    if config.env.reset_noise != "v5":
        notes.append(f"{config.env.reset_noise} reset noise")
    if evaluation_reset_noise(config) != config.env.reset_noise:
        notes.append(f"evaluated with {evaluation_reset_noise(config)} reset noise")
    return config.env.name + (f" ({', '.join(notes)})" if notes else "")


def episode_length(config: MetaRLConfig) -> int:
    return config.env.max_episode_steps or family_of(config).max_episode_steps


def action_scale(config: MetaRLConfig) -> float:
    return family_of(config).action_bound if config.policy.normalized_actions else 1.0


def make_policy(config: MetaRLConfig):
    return functools.partial(policy_distribution, activation=config.policy.activation)


def new_policy_params(config: MetaRLConfig, purpose: str, family: EnvFamily | None = None
                      ) -> Params:
    """Initial θ for ``family``'s observations (default: the config's family)."""
    family = family or family_of(config)
    return init_policy_params(family.observation_dim, family.action_dim,
                              config.policy.hidden_sizes,
                              init_std=config.policy.init_std, scheme=config.policy.init,
                              generator=torch_generator(config.seed, purpose))


def make_trainer(config: MetaRLConfig, *, inner_steps: int | None = None,
                 purpose: str = "", family: EnvFamily | None = None) -> MAMLTRPO:
    """MAML-TRPO for ``config`` (``inner_steps=0``: multi-task TRPO, the pretrained baseline;
    ``family``: other environments than the config's, as the oracle's)."""
    family = family or family_of(config)
    return MAMLTRPO(
        policy=make_policy(config), params=new_policy_params(config, purpose + "init", family),
        sample_tasks=family.sample_tasks, make_env=family.make_batched,
        num_tasks=config.training.meta_batch_size,
        episodes_per_task=config.training.episodes_per_task, max_steps=episode_length(config),
        inner_steps=config.adaptation.inner_steps if inner_steps is None else inner_steps,
        inner_lr=config.adaptation.inner_lr, method=config.adaptation.method,
        advantages=advantage_settings(config),
        trpo=TRPOSettings(**to_dict(config.trpo)),
        task_rng=numpy_generator(config.seed, purpose + "tasks"),
        action_generator=torch_generator(config.seed, purpose + "actions"),
        action_scale=action_scale(config), step_budget=step_budget(config))


def step_budget(config: MetaRLConfig) -> bool:
    return config.training.sampling == "steps"


def advantage_settings(config: MetaRLConfig) -> AdvantageSettings:
    return AdvantageSettings(config.training.discount, config.training.gae_lambda,
                             config.training.normalize_advantages)


def evaluation_learning_rates(config: MetaRLConfig, steps: int) -> list[float]:
    ev = config.evaluation
    first = ev.inner_lr if ev.inner_lr is not None else config.adaptation.inner_lr
    return test_time_learning_rates(first, ev.later_lr_scale, steps)[:steps]


def sample_test_tasks(config: MetaRLConfig, num_tasks: int, seed: int) -> list[dict[str, Any]]:
    """The first ``num_tasks`` test tasks of ``seed``: from the family's task distribution, or
    target velocities ~ U[low, high] where ``evaluation.test_velocities`` gives the range; with
    ``evaluation.task_draw: maml_authors`` the MAML authors' first ``num_tasks`` (any seed)."""
    if config.evaluation.task_draw == "maml_authors":
        return maml_authors_test_tasks(config.env.name, num_tasks)
    rng = numpy_generator(seed, "evaluate-tasks")
    velocities = config.evaluation.test_velocities
    if velocities is None:
        return family_of(config).sample_tasks(num_tasks, rng)
    low, high = velocities
    return [{"velocity": float(v)} for v in rng.uniform(low, high, size=num_tasks)]


def target_range_note(config: MetaRLConfig) -> str:
    """``", targets U[0.1, 0.8] m/s"`` where ``evaluation.test_velocities`` is set,
    ``", the MAML authors' tasks"`` with their draw, else ``""``."""
    if config.evaluation.task_draw == "maml_authors":
        return ", the MAML authors' tasks"
    velocities = config.evaluation.test_velocities
    return "" if velocities is None else (
        f", targets U[{velocities[0]:g}, {velocities[1]:g}] m/s")


def evaluation_rollouts(config: MetaRLConfig, params: Params, *, tasks: int, steps: int,
                        seed: int, episodes_per_task: int | None = None,
                        family: EnvFamily | None = None,
                        ) -> tuple[list[dict[str, Any]], Rollouts]:
    """Test tasks from ``seed``, sampled before adaptation and after each of ``steps`` steps
    (in ``family``'s environments, by default the config's evaluation environments)."""
    family = family or evaluation_family(config)
    test_tasks = sample_test_tasks(config, tasks, seed)
    episodes = episodes_per_task or config.evaluation.episodes_per_task
    rollouts = rollouts_with_adaptation(
        family.make_batched(test_tasks, episodes, numpy_generator(seed, "evaluate-resets")),
        make_policy(config), params,
        num_tasks=tasks, episodes_per_task=episodes, max_steps=episode_length(config),
        learning_rates=evaluation_learning_rates(config, steps),
        advantages=advantage_settings(config),
        generator=torch_generator(seed, "evaluate-actions"), action_scale=action_scale(config),
        step_budget=step_budget(config))
    return test_tasks, rollouts


def _multitask_trpo(config: MetaRLConfig, iterations: int, purpose: str, description: str,
                    progress_path: Path, key: dict[str, Any],
                    family: EnvFamily | None = None) -> tuple[Params, list[float]]:
    """θ after ``iterations`` of TRPO on the task distribution, without adaptation, and the
    mean episode return of each iteration's batch.

    The trainer's state (θ and its random generators) is written atomically to
    ``progress_path`` after every iteration, so an interrupted training (Ctrl-C) continues
    where it stopped when asked again for the same ``key``, to the same result; the file is
    removed when training ends.
    """
    from tqdm import trange

    trainer = make_trainer(config, inner_steps=0, purpose=purpose, family=family)
    returns: list[float] = []
    if progress_path.is_file():
        saved = load_checkpoint(progress_path)
        if saved.get("key") == key:
            trainer.load_state_dict(saved["trainer"])
            returns = list(saved["returns"])
    bar = trange(len(returns), iterations, initial=len(returns), total=iterations,
                 desc=description, disable=not config.run.progress, mininterval=0.5)
    for i in bar:
        returns.append(float(trainer.train_iteration(i)["return_before"]))
        save_checkpoint(progress_path, {"key": key, "trainer": trainer.state_dict(),
                                        "returns": returns})
        bar.set_postfix(ret=f"{returns[-1]:.4g}", refresh=False)
    params = trainer.state_dict()["params"]
    progress_path.unlink(missing_ok=True)
    return params, returns


def _baseline_key(config: MetaRLConfig) -> dict[str, Any]:
    key = {k: to_dict(getattr(config, k)) for k in
           ("env", "policy", "training", "trpo", "baselines")} | {"seed": config.seed}
    # as keyed before these options, so that cached baselines stay valid
    if key["env"]["frame_skip"] is None:
        del key["env"]["frame_skip"]
    if not key["env"]["observe_x_position"]:
        del key["env"]["observe_x_position"]
    if not key["env"]["observe_centre_of_mass"]:
        del key["env"]["observe_centre_of_mass"]
    if key["env"]["reward_velocity"] == "torso":
        del key["env"]["reward_velocity"]
    if key["env"]["reset_noise"] == "v5":
        del key["env"]["reset_noise"]
    return key


def pretrained_params(config: MetaRLConfig, run_dir: Path) -> Params:
    """The pretrained baseline: multi-task TRPO without adaptation, cached in baselines/."""
    key = _baseline_key(config)
    # keyed as before the oracle existed, so that cached pretrained policies stay valid
    del key["baselines"]["oracle_iterations"]
    return load_or_compute(
        run_dir / "baselines" / "pretrained.pt", key,
        lambda: _multitask_trpo(config, config.baselines.pretrained_iterations,
                                "pretrained-", "pretrained baseline",
                                run_dir / "baselines" / "pretrained.partial.pt", key)[0])


def oracle_params(config: MetaRLConfig, run_dir: Path) -> tuple[Params, list[float]]:
    """The oracle baseline: multi-task TRPO on observations that end with the task
    (:func:`metarl.rl.oracle.oracle_family`), cached in baselines/oracle.pt; with the mean
    training return of each of its iterations."""
    key = _baseline_key(config)
    key["baselines"] = {"oracle_iterations": config.baselines.oracle_iterations}

    def train() -> dict[str, Any]:
        params, returns = _multitask_trpo(config, config.baselines.oracle_iterations,
                                          "oracle-", "oracle baseline",
                                          run_dir / "baselines" / "oracle.partial.pt", key,
                                          oracle_family(family_of(config)))
        return {"params": params, "training_returns": returns}

    trained = load_or_compute(run_dir / "baselines" / "oracle.pt", key, train)
    return trained["params"], trained["training_returns"]


class MetaRLExperiment(Experiment):
    name = "meta_rl"
    config_class = MetaRLConfig
    metric = "return"
    shown_metrics = ("return_before", "return_after")
    baseline_names = ("random", "pretrained", "oracle")
    baseline_section = "baselines"

    def make_trainer(self, config: MetaRLConfig) -> MAMLTRPO:
        return make_trainer(config)

    def evaluate(self, config: MetaRLConfig, state: dict[str, Any], run_dir: Path,
                 options: EvaluateOptions) -> dict[str, Any]:
        ev = config.evaluation
        steps = ev.steps if options.steps is None else options.steps
        tasks = ev.tasks if options.tasks is None else options.tasks
        seed = ev.seed if options.seed is None else options.seed
        family = evaluation_family(config)
        # name -> (θ, the environments it acts in, adaptation steps to evaluate)
        policies = {config.adaptation.method: (state["trainer"]["params"], family, steps)}
        if "random" in options.baselines:
            policies["random init"] = (new_policy_params(config, "random-baseline-init"),
                                       family, steps)
        if "pretrained" in options.baselines:
            policies["pretrained"] = (pretrained_params(config, run_dir), family, steps)
        oracle_training: list[float] = []
        if "oracle" in options.baselines:  # told the task, it has nothing to adapt to
            oracle, oracle_training = oracle_params(config, run_dir)
            policies["oracle"] = (oracle, oracle_family(family), 0)
        curves, episodes_sampled, test_tasks = {}, [], []
        for name, (params, policy_family, policy_steps) in policies.items():
            test_tasks, rollouts = evaluation_rollouts(config, params, tasks=tasks,
                                                       steps=policy_steps, seed=seed,
                                                       family=policy_family)
            # (tasks, steps + 1): each task's mean episode return before and after each step
            per_task = torch.stack([e.task_returns() for e in rollouts.episodes], dim=1)
            curves[name] = {**summarize(per_task.numpy()),
                            "task_returns": per_task.double().tolist()}
            if name == config.adaptation.method:
                episodes_sampled = [float(e.num_episodes().float().mean())
                                    for e in rollouts.episodes]
        main = curves[config.adaptation.method]
        # The paper's returns are sums over its episode length; other lengths are not comparable.
        # So are returns on other test targets than the paper's.
        published = (PUBLISHED_RETURNS.get(config.env.name, {})
                     if episode_length(config) == family.max_episode_steps
                     and config.evaluation.test_velocities is None else {})
        result: dict[str, Any] = {
            "experiment": self.name, "env": config.env.name, "metric": self.metric,
            **({"frame_skip": family.frame_skip, "control_dt": family.control_dt,
                "reward_velocity": config.env.reward_velocity,
                "reset_noise": evaluation_reset_noise(config)} if family.mujoco else {}),
            "steps": list(range(steps + 1)), **main, "tasks": tasks, "seed": seed,
            "test_tasks": [jsonable_task(task) for task in test_tasks],
            "episodes_per_task": ev.episodes_per_task, "sampling": config.training.sampling,
            "episodes_sampled": episodes_sampled,
            "inner_lr": evaluation_learning_rates(config, steps),
            "checkpoint_iteration": state["iteration"], "method": config.adaptation.method,
            "baselines": {k: v for k, v in curves.items() if k != config.adaptation.method},
            "baseline_names": list(options.baselines),
            **({"oracle_training_returns": oracle_training} if oracle_training else {}),
            "published": {name: {str(s): v for s, v in values.items()}
                          for name, values in published.items()},
        }
        plot_adaptation_curves(curves, result["steps"], run_dir / "adaptation.png",
                               ylabel="average return (mean ± 95% CI)",
                               title=f"{env_title(config)}: {tasks} test tasks"
                               + target_range_note(config),
                               reference=published)
        result["table"] = format_table(curves, result["steps"], "return")
        write_evaluation(run_dir, result, to_dict(config.evaluation),
                         to_dict(baseline_section(self, config)) if options.baselines
                         else None)
        return result

    def render(self, config: MetaRLConfig, state: dict[str, Any], run_dir: Path,
               options: RenderOptions) -> list[Path]:
        steps = config.evaluation.steps if options.steps is None else options.steps
        seed = config.evaluation.seed if options.seed is None else options.seed
        params = state["trainer"]["params"]
        title = f"{config.adaptation.method}, iteration {state['iteration']}"
        if options.video is not None:
            if options.output is not None:
                raise ConfigError("--video names the video file; give no --output with it")
            return [render_video(config, params, options.video, task=options.task, steps=steps,
                                 seed=seed, title=title)]
        if options.task is not None:
            raise ConfigError("--task picks the task of a --video; the pictures show "
                              "--tasks N test tasks")
        tasks, rollouts = evaluation_rollouts(config, params, tasks=options.tasks, steps=steps,
                                              seed=seed)
        if family_of(config).mujoco:
            from metarl.rl.render import plot_cheetah_velocities

            output = options.output or run_dir / "velocities.png"
            return [plot_cheetah_velocities(tasks, rollouts.episodes, output,
                                            control_dt=family_of(config).control_dt,
                                            title=f"{env_title(config)}: {title}")]
        from metarl.rl.render import plot_navigation_trajectories

        output = options.output or run_dir / "trajectories.png"
        plot_navigation_trajectories(tasks, rollouts.episodes, output,
                                     action_scale=action_scale(config), title=title)
        return [output]


def jsonable_task(task: dict[str, Any]) -> dict[str, Any]:
    """A task with its arrays as lists and NumPy scalars as Python numbers, for JSON."""
    return {key: np.asarray(value).tolist() for key, value in task.items()}


def parse_task(config: MetaRLConfig, text: str | None, seed: int) -> dict[str, Any]:
    """``--task``: an index into the test tasks of ``seed`` (default 0), or ``key=value``
    (``velocity=1.5``, ``direction=-1``, ``goal=0.3,-0.2``)."""
    family = family_of(config)
    if text is None or "=" not in text:
        try:
            index = int(text) if text is not None else 0
        except ValueError:
            raise ConfigError(f"--task {text!r}: give a test-task index or key=value, e.g. "
                              f"velocity=1.5, direction=-1, goal=0.3,-0.2") from None
        if not 0 <= index < config.evaluation.tasks:
            raise ConfigError(f"--task {index}: a test-task index must be >= 0 and < "
                              f"{config.evaluation.tasks} (evaluation.tasks)")
        return sample_test_tasks(config, index + 1, seed)[index]
    key, _, value = text.partition("=")
    example = family.sample_tasks(1, numpy_generator(0, "example"))[0]
    if key not in example:
        raise ConfigError(f"--task {text!r}: {config.env.name} tasks have the key "
                          f"{', '.join(example)}")
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError:
        raise ConfigError(f"--task {text!r}: {value!r} is not a number") from None
    task = {key: numbers[0] if len(numbers) == 1 else np.array(numbers)}
    shape = np.shape(example[key])
    if np.shape(task[key]) != shape:
        raise ConfigError(f"--task {text!r}: {key} takes {max(1, int(np.prod(shape)))} "
                          "number(s)")
    if key == "direction" and task[key] not in (-1.0, 1.0):
        raise ConfigError(f"--task {text!r}: direction is +1 or -1")
    return task


def render_video(config: MetaRLConfig, params: Params, output: Path, *, task: str | None,
                 steps: int, seed: int, title: str) -> Path:
    """A video of one task's episode before adaptation and after each step, side by side."""
    from metarl.rl.video import VIDEO_SUFFIXES, check_rendering, record_adaptation_video

    family = evaluation_family(config)
    if not family.mujoco:
        raise ConfigError(f"--video renders the MuJoCo environments; {config.env.name} draws "
                          f"its trajectories: metarl render RUN_DIR")
    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(f"--video {output}: the file name must end in "
                          + " or ".join(VIDEO_SUFFIXES))
    chosen = parse_task(config, task, seed)
    check_rendering(family.gym_id, chosen, family.gym_kwargs)
    # Adapt on the chosen task as `metarl evaluate` does, keeping the weights of every step.
    rollouts = rollouts_with_adaptation(
        family.make_batched([chosen], config.evaluation.episodes_per_task,
                            numpy_generator(seed, "video-resets")),
        make_policy(config), params, num_tasks=1,
        episodes_per_task=config.evaluation.episodes_per_task,
        max_steps=episode_length(config), learning_rates=evaluation_learning_rates(config, steps),
        advantages=advantage_settings(config), generator=torch_generator(seed, "video-actions"),
        action_scale=action_scale(config), step_budget=step_budget(config))
    return record_adaptation_video(
        family.gym_id, chosen, make_policy(config), rollouts.weights, output,
        episode_steps=episode_length(config), seed=seed, title=f"{env_title(config)}, {title}",
        action_scale=action_scale(config), gym_kwargs=family.gym_kwargs)
