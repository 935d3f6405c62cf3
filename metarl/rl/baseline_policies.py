"""The paper's comparison policies for ``metarl evaluate --baselines``: the pretrained policy
(multi-task TRPO without adaptation) and the oracle (told the task), trained once per run and
cached in ``RUN_DIR/baselines/``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarl.adaptation import Params
from metarl.checkpoint import (
    UnreadableCheckpointError,
    baseline_cache,
    load_checkpoint,
    load_or_compute,
    save_checkpoint,
)
from metarl.config import to_dict
from metarl.envs import EnvFamily
from metarl.rl.build import family_of, make_trainer
from metarl.rl.config import MetaRLConfig
from metarl.rl.oracle import oracle_family
from metarl.runner import TrainingStopped


def _multitask_trpo(config: MetaRLConfig, iterations: int, purpose: str, description: str,
                    progress_path: Path, key: dict[str, Any],
                    family: EnvFamily | None = None,
                    read_only_progress: Sequence[Path] = ()) -> tuple[Params, list[float]]:
    """θ after ``iterations`` of TRPO on the task distribution, without adaptation, and the
    mean episode return of each iteration's batch.

    The trainer's state (θ and its random generators) is written atomically to
    ``progress_path`` after every iteration, so an interrupted training (Ctrl-C) continues
    where it stopped when asked again for the same ``key``, to the same result; the file is
    removed when training ends. An interrupt raises :class:`TrainingStopped` saying so; a
    damaged file is reported and passed over. ``read_only_progress``: progress files
    of other folders (a run's own, when its evaluation is written elsewhere) that training
    may continue from, never written or removed; the one that holds the most iterations for
    ``key`` is taken.
    """
    from tqdm import trange

    trainer = make_trainer(config, inner_steps=0, purpose=purpose, family=family)
    returns: list[float] = []
    kept_in = progress_path  # the progress file that holds the iterations kept
    found = _furthest_progress((progress_path, *read_only_progress), key, description)
    if found is not None:
        kept_in, saved = found
        trainer.load_state_dict(saved["trainer"])
        returns = list(saved["returns"])
    kept = len(returns)  # iterations kept_in holds for this key
    bar = trange(len(returns), iterations, initial=len(returns), total=iterations,
                 desc=description, disable=not config.run.progress, mininterval=0.5)
    try:
        for i in bar:
            returns.append(float(trainer.train_iteration(i)["return_before"]))
            save_checkpoint(progress_path, {"key": key, "trainer": trainer.state_dict(),
                                            "returns": returns})
            kept, kept_in = len(returns), progress_path
            bar.set_postfix(ret=f"{returns[-1]:.4g}", refresh=False)
    except KeyboardInterrupt:
        bar.close()
        if kept == 0:
            raise TrainingStopped(f"interrupted: the {description} stopped before finishing "
                                  "its first iteration; nothing to keep", exit_code=130) from None
        raise TrainingStopped(
            f"interrupted: the {description} stopped after {kept} of {iterations} "
            f"iterations, kept in {kept_in}; the same command continues it (to the "
            "numbers an uninterrupted one gives)", exit_code=130) from None
    params = trainer.state_dict()["params"]
    progress_path.unlink(missing_ok=True)
    return params, returns


def _furthest_progress(paths: Sequence[Path], key: dict[str, Any],
                       description: str) -> tuple[Path, dict[str, Any]] | None:
    """Of the progress files at ``paths`` saved for ``key``, the one with the most
    iterations (the first of equals) and what it holds, or None. A damaged file is reported
    and passed over."""
    furthest: tuple[Path, dict[str, Any]] | None = None
    for path in paths:
        if not path.is_file():
            continue
        try:
            saved = load_checkpoint(path)
        except UnreadableCheckpointError as error:
            print(f"metarl: {error}; the {description} does not continue from it",
                  file=sys.stderr)
            continue
        if _same_key(saved.get("key"), key) and (
                furthest is None or len(saved["returns"]) > len(furthest[1]["returns"])):
            furthest = path, saved
    return furthest


def _baseline_key(config: MetaRLConfig) -> dict[str, Any]:
    key: dict[str, Any] = {k: to_dict(getattr(config, k)) for k in
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
    # How long the meta-training runs doesn't change the baselines: a run trained longer
    # keeps its cached ones.
    del key["training"]["iterations"]
    return key


def _same_key(cached: Any, key: dict[str, Any]) -> bool:
    """Whether a cached baseline's key is ``key``; keys written before training.iterations
    was left out of them count as equal whatever iterations they hold."""
    if isinstance(cached, dict) and isinstance(cached.get("training"), dict):
        cached = cached | {"training": {k: v for k, v in cached["training"].items()
                                        if k != "iterations"}}
    return bool(cached == key)


def _progress_paths(caches: Sequence[Path]) -> tuple[Path, ...]:
    """The progress files of an interrupted training beside baseline ``caches``."""
    return tuple(cache.with_suffix(".partial.pt") for cache in caches)


def pretrained_params(config: MetaRLConfig, run_dir: Path,
                      output_dir: Path | None = None) -> Params:
    """The pretrained baseline: multi-task TRPO without adaptation, cached in baselines/
    (of ``output_dir`` where given, see :func:`metarl.checkpoint.baseline_cache`)."""
    key = _baseline_key(config)
    # keyed as before the oracle existed, so that cached pretrained policies stay valid
    del key["baselines"]["oracle_iterations"]
    path, also_read = baseline_cache(run_dir, output_dir, "pretrained")
    return load_or_compute(
        path, key,
        lambda: _multitask_trpo(config, config.baselines.pretrained_iterations,
                                "pretrained-", "pretrained baseline",
                                path.with_suffix(".partial.pt"), key,
                                read_only_progress=_progress_paths(also_read))[0],
        matches=lambda cached: _same_key(cached, key), also_read=also_read)


def oracle_params(config: MetaRLConfig, run_dir: Path,
                  output_dir: Path | None = None) -> tuple[Params, list[float]]:
    """The oracle baseline: multi-task TRPO on observations that end with the task
    (:func:`metarl.rl.oracle.oracle_family`), cached in baselines/oracle.pt (of
    ``output_dir`` where given, see :func:`metarl.checkpoint.baseline_cache`); with the mean
    training return of each of its iterations."""
    key = _baseline_key(config)
    key["baselines"] = {"oracle_iterations": config.baselines.oracle_iterations}
    path, also_read = baseline_cache(run_dir, output_dir, "oracle")

    def train() -> dict[str, Any]:
        params, returns = _multitask_trpo(config, config.baselines.oracle_iterations,
                                          "oracle-", "oracle baseline",
                                          path.with_suffix(".partial.pt"), key,
                                          oracle_family(family_of(config)),
                                          _progress_paths(also_read))
        return {"params": params, "training_returns": returns}

    trained = load_or_compute(path, key, train, matches=lambda cached: _same_key(cached, key),
                              also_read=also_read)
    return trained["params"], trained["training_returns"]
