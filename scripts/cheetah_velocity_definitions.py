"""Half-cheetah velocity: the evaluation's returns under three definitions of v_x.

    python scripts/cheetah_velocity_definitions.py RUN_DIR [--seed SEED]

Samples exactly what ``metarl evaluate RUN_DIR [--seed SEED]`` samples (the run's test tasks,
or another seed's such as validation tasks; the run's episodes and learning rates; the policy
adapts on the run's own reward, so the trajectories are the evaluation's) and scores the
same trajectories with ``-|v_x - v_goal| - 0.05‖a‖²`` for three velocities:

- ``torso``: the torso's x displacement over the control step / dt (REFERENCE.md, metarl's
  environments);
- ``com``: the whole cheetah's centre-of-mass x displacement over the control step / dt
  (``env.reward_velocity: centre_of_mass``);
- ``com-instant``: the centre of mass's x velocity at the end of the control step, close to
  the MAML authors' rllab half-cheetah, whose reward used the mass-weighted velocity of the
  torso's subtree (every body) at one instant.

The row of the run's own reward (``torso``, or ``com`` for a centre-of-mass run) must
reproduce the evaluation's returns (the script checks it); the others show how much of the
return depends on which velocity the reward tracks, on trajectories that were not trained
for them. A last row gives the return's control-cost part
(-0.05‖a‖² summed over the episode), the same under every definition.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import mujoco
import numpy as np
from torch import Tensor

from metarl.envs.half_cheetah import ACTION_BOUND, BatchedHalfCheetah, control_costs
from metarl.evaluation import summarize
from metarl.rl.build import evaluation_family, evaluation_rollouts
from metarl.runner import load_run

DEFINITIONS = ("torso", "com", "com-instant")
ROWS = (*DEFINITIONS, "control cost")


class CentreOfMassRecorder:
    """Wraps a :class:`BatchedHalfCheetah` and records, from each ``reset`` on, every control
    step's torso x, centre-of-mass x and centre-of-mass x velocity ``(N,)`` and clipped
    actions ``(N, 6)``; each reset starts a new segment (one sampling of the evaluation)."""

    def __init__(self, env: BatchedHalfCheetah) -> None:
        self.env = env
        self.data = mujoco.MjData(env.model)
        self.segments: list[dict[str, list[np.ndarray]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def _centre_of_mass(self) -> tuple[np.ndarray, np.ndarray]:
        """The cheetah's centre-of-mass x (m) and x velocity (m/s) in every simulation."""
        model, data = self.env.model, self.data
        qpos, qvel = np.asarray(self.env._qpos), np.asarray(self.env._qvel)
        positions, velocities = np.empty(len(qpos)), np.empty(len(qpos))
        for i in range(len(qpos)):
            data.qpos[:] = qpos[i]
            data.qvel[:] = qvel[i]
            mujoco.mj_kinematics(model, data)
            mujoco.mj_comPos(model, data)
            mujoco.mj_comVel(model, data)
            mujoco.mj_subtreeVel(model, data)
            positions[i] = data.subtree_com[0, 0]  # world's subtree: every body
            velocities[i] = data.subtree_linvel[0, 0]
        return positions, velocities

    def _record_state(self) -> None:
        com_x, com_v = self._centre_of_mass()
        segment = self.segments[-1]
        segment["torso_x"].append(np.asarray(self.env._qpos)[:, 0].copy())
        segment["com_x"].append(com_x)
        segment["com_v"].append(com_v)

    def reset(self, *args: Any, **kwargs: Any) -> Tensor:
        observations = self.env.reset(*args, **kwargs)
        self.segments.append({"torso_x": [], "com_x": [], "com_v": [], "actions": []})
        self._record_state()
        return observations

    def restart(self, where: Tensor) -> Tensor:
        raise RuntimeError("velocity episodes never end early: nothing should restart them")

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        result = self.env.step(actions)
        self.segments[-1]["actions"].append(
            np.clip(actions.detach().numpy().astype(np.float64), -ACTION_BOUND, ACTION_BOUND))
        self._record_state()
        return result


def segment_returns(segment: dict[str, list[np.ndarray]], targets: np.ndarray, dt: float,
                    episodes_per_task: int) -> dict[str, np.ndarray]:
    """Each task's mean episode return ``(T,)`` under each definition, and the control cost's
    share of it (the same in all three); ``targets`` ``(N,)``."""
    torso_x, com_x = np.stack(segment["torso_x"]), np.stack(segment["com_x"])  # (L + 1, N)
    velocities = {"torso": np.diff(torso_x, axis=0) / dt,
                  "com": np.diff(com_x, axis=0) / dt,
                  "com-instant": np.stack(segment["com_v"])[1:]}
    costs = control_costs(np.stack(segment["actions"]))  # (L, N)
    returns = {"control cost": -costs.sum(axis=0).reshape(-1, episodes_per_task).mean(axis=1)}
    for name, v in velocities.items():
        episode_returns = (-np.abs(v - targets) - costs).sum(axis=0)  # (N,)
        returns[name] = episode_returns.reshape(-1, episodes_per_task).mean(axis=1)
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a half-cheetah velocity run directory")
    parser.add_argument("--seed", type=int, default=None,
                        help="draw the tasks, resets and actions from this seed (as metarl "
                             "evaluate --seed); default: the run's evaluation.seed")
    args = parser.parse_args()
    if args.seed is not None and args.seed < 0:
        parser.error(f"--seed must be a non-negative integer, got {args.seed}")
    _, config, state = load_run(args.run_dir)
    if config.env.name != "half_cheetah_vel":
        parser.error(f"{args.run_dir} is a {config.env.name} run, not half_cheetah_vel")
    family = evaluation_family(config)
    recorders: list[CentreOfMassRecorder] = []

    def make_recording(tasks: list[dict[str, Any]], episodes_per_task: int,
                       rng: np.random.Generator) -> CentreOfMassRecorder:
        recorders.append(CentreOfMassRecorder(family.make_batched(tasks, episodes_per_task,
                                                                  rng)))
        return recorders[-1]

    ev = config.evaluation
    seed = ev.seed if args.seed is None else args.seed
    _, rollouts = evaluation_rollouts(
        config, state["trainer"]["params"], tasks=ev.tasks, steps=ev.steps, seed=seed,
        family=dataclasses.replace(family, make_batched=make_recording))
    (recorder,) = recorders
    segments = recorder.segments
    if len(segments) != len(rollouts.episodes):
        raise RuntimeError(f"{len(segments)} samplings recorded, {len(rollouts.episodes)} "
                           "expected")
    episodes = ev.episodes_per_task
    own = "torso" if config.env.reward_velocity == "torso" else "com"
    table: dict[str, list[np.ndarray]] = {name: [] for name in ROWS}
    for step, (segment, sampled) in enumerate(zip(segments, rollouts.episodes, strict=True)):
        returns = segment_returns(segment, recorder.env.targets, recorder.env.dt, episodes)
        recorded = sampled.task_returns().double().numpy()
        gap = float(np.abs(returns[own] - recorded).max())
        if gap > 1e-3:
            raise RuntimeError(f"step {step}: {own} returns differ from the sampled ones by "
                               f"{gap:.2g}: the recording does not match the evaluation")
        for name in ROWS:
            table[name].append(returns[name])
    print(f"{args.run_dir}: iteration {state['iteration']}; mean return over "
          f"{ev.tasks} tasks of seed {seed} ± 95% CI after 0..{ev.steps} steps, the same "
          f"trajectories (adapted on the {own} reward) scored with each velocity")
    print(f"{'velocity':13s} " + " ".join(f"{f'step {s}':>15s}" for s in range(ev.steps + 1)))
    for name in ROWS:
        summary = summarize(np.stack(table[name], axis=1))
        print(f"{name:13s} " + " ".join(f"{m:9.2f} ± {c:4.1f}" for m, c in
                                        zip(summary["mean"], summary["ci95"], strict=True)))


if __name__ == "__main__":
    main()
