"""Seconds per meta-iteration of tristandeleu/pytorch-maml-rl's MAML-TRPO on 2D navigation.

    python scripts/time_pytorch_maml_rl.py PEER_DIR [--workers 2] [--first-order]
        [--iterations 10] [--warmup 2] [--peer-network] [--seed 0] [--json OUT]

PEER_DIR is a checkout of pytorch-maml-rl (its ``maml_rl`` package and
``configs/maml/2d-navigation.yaml``). This script runs in that project's own environment
(gym 0.17, ``numpy<2``, torch) and imports nothing of metarl, so that the peer runs as its
users run it. It repeats the loop of the peer's ``train.py`` (``sample_tasks``,
``sample_async``, ``MAMLTRPO.step``, ``sample_wait``) and times each meta-iteration; the
figure to set beside it is ``metarl benchmark navigation``'s, on the same machine.

The network is metarl's ``navigation2d`` one (2 x 100 ReLU) unless ``--peer-network`` keeps
the config's (64 x 64 tanh); every other setting of the peer's config already matches the
MAML paper's protocol. Two things are set around the peer, neither in what it computes:

- torch 2 has removed ``torch.lstsq`` (calling it raises), which the peer's linear baseline
  calls on its regularized normal equations; where it is gone, it is provided through
  ``torch.linalg.lstsq`` (the same solution for these full-rank systems). It is set in this
  process before the peer's sampler forks its workers, which inherit it.
- The peer's sampler forks its workers after the parent has started OpenMP threads, and the
  workers can then hang in their first matrix product (torch's fork-after-OpenMP deadlock;
  it does with 2 x 100 ReLU on 2 cores). One thread is set until the workers are forked, and
  the default is restored in the parent, so the meta-update runs with torch's default threads
  and the workers sample with one.

Prints one line per meta-iteration and a summary; ``--json`` also writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

CONFIG = Path("configs") / "maml" / "2d-navigation.yaml"
METARL_NETWORK = {"hidden-sizes": [100, 100], "nonlinearity": "relu"}


def summarize(seconds: list[float], warmup: int) -> dict[str, float | int]:
    """Mean, standard deviation (n - 1), minimum and maximum of ``seconds`` after the first
    ``warmup`` meta-iterations (s)."""
    steady = seconds[warmup:]
    if not steady:
        raise ValueError(f"{len(seconds)} iteration(s) timed, {warmup} left out as warm-up: "
                         "nothing to summarize")
    return {"iterations": len(steady), "mean_s": statistics.fmean(steady),
            "std_s": statistics.stdev(steady) if len(steady) > 1 else 0.0,
            "min_s": min(steady), "max_s": max(steady)}


def provide_torch_lstsq(torch: Any) -> bool:
    """Give torch 2 the ``torch.lstsq(B, A)`` of torch 1 (the solution of A X = B first)
    where it is gone (torch 2 keeps the name, which raises); whether it was."""
    try:
        torch.lstsq(torch.eye(2), torch.eye(2))
        return False
    except (AttributeError, RuntimeError):
        pass

    def lstsq(rhs: Any, matrix: Any) -> tuple[Any, None]:
        return torch.linalg.lstsq(matrix, rhs).solution, None

    torch.lstsq = lstsq
    return True


def time_peer(peer_dir: Path, config: dict[str, Any], workers: int, iterations: int,
              seed: int) -> list[dict[str, Any]]:
    """Run ``iterations`` meta-iterations of the peer; one record per iteration: wall
    seconds, env steps sampled (before and after adaptation) and mean episode length."""
    sys.path.insert(0, str(peer_dir))
    import gym
    import maml_rl.envs  # noqa: F401  (registers 2DNavigation-v0 with gym)
    import torch
    from maml_rl.baseline import LinearFeatureBaseline
    from maml_rl.metalearners import MAMLTRPO
    from maml_rl.samplers import MultiTaskSampler
    from maml_rl.utils.helpers import get_input_size, get_policy_for_env

    provide_torch_lstsq(torch)
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # until the workers are forked: see the module's docstring
    torch.manual_seed(seed)
    env_kwargs = config.get("env-kwargs", {})
    env = gym.make(config["env-name"], **env_kwargs)
    env.close()
    policy = get_policy_for_env(env, hidden_sizes=config["hidden-sizes"],
                                nonlinearity=config["nonlinearity"])
    policy.share_memory()
    baseline = LinearFeatureBaseline(get_input_size(env))
    sampler = MultiTaskSampler(config["env-name"], env_kwargs=env_kwargs,
                               batch_size=config["fast-batch-size"], policy=policy,
                               baseline=baseline, env=env, seed=seed, num_workers=workers)
    torch.set_num_threads(default_threads)
    metalearner = MAMLTRPO(policy, fast_lr=config["fast-lr"],
                           first_order=config["first-order"], device="cpu")
    records = []
    try:
        for iteration in range(1, iterations + 1):
            start = time.perf_counter()
            tasks = sampler.sample_tasks(num_tasks=config["meta-batch-size"])
            futures = sampler.sample_async(tasks, num_steps=config["num-steps"],
                                           fast_lr=config["fast-lr"], gamma=config["gamma"],
                                           gae_lambda=config["gae-lambda"], device="cpu")
            metalearner.step(*futures, max_kl=config["max-kl"], cg_iters=config["cg-iters"],
                             cg_damping=config["cg-damping"],
                             ls_max_steps=config["ls-max-steps"],
                             ls_backtrack_ratio=config["ls-backtrack-ratio"])
            train_episodes, valid_episodes = sampler.sample_wait(futures)
            seconds = time.perf_counter() - start
            lengths = [int(length) for episodes in (*train_episodes[0], *valid_episodes)
                       for length in episodes.lengths]
            records.append({"iteration": iteration, "seconds": seconds,
                            "env_steps": sum(lengths),
                            "mean_episode_length": statistics.fmean(lengths)})
            print(json.dumps(records[-1]), flush=True)
    finally:
        for worker in getattr(sampler, "workers", ()):
            worker.terminate()
    return records


def load_config(peer_dir: Path, peer_network: bool) -> dict[str, Any]:
    import yaml

    config = yaml.safe_load((peer_dir / CONFIG).read_text())
    return config if peer_network else {**config, **METARL_NETWORK}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("peer_dir", type=Path, help="a checkout of pytorch-maml-rl")
    parser.add_argument("--workers", type=int, default=1,
                        help="the peer's sampler worker processes (its --num-workers)")
    parser.add_argument("--first-order", action="store_true",
                        help="first-order MAML (the config's first-order: true)")
    parser.add_argument("--iterations", type=int, default=10, help="meta-iterations to run")
    parser.add_argument("--warmup", type=int, default=2,
                        help="first meta-iterations left out of the summary")
    parser.add_argument("--peer-network", action="store_true",
                        help="keep the config's network instead of metarl's 2 x 100 ReLU")
    parser.add_argument("--seed", type=int, default=0, help="seed of torch and the peer's "
                        "sampler (non-negative, as gym's seeding requires)")
    parser.add_argument("--json", type=Path, help="also write the records and summary here")
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.iterations:
        parser.error(f"--warmup must be at least 0 and below --iterations ({args.iterations})")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.seed < 0:
        parser.error("--seed must be non-negative (gym's seeding refuses negative seeds)")
    if args.json is not None and not args.json.parent.is_dir():
        parser.error(f"--json {args.json}: folder {args.json.parent} does not exist")
    if not (args.peer_dir / CONFIG).is_file() or not (args.peer_dir / "maml_rl").is_dir():
        parser.error(f"{args.peer_dir} is not a checkout of pytorch-maml-rl (no maml_rl/ "
                     f"or {CONFIG})")
    config = load_config(args.peer_dir, args.peer_network)
    if args.first_order:
        config["first-order"] = True
    records = time_peer(args.peer_dir, config, args.workers, args.iterations, args.seed)
    summary = summarize([record["seconds"] for record in records], args.warmup)
    import torch

    result = {"workers": args.workers, "first_order": bool(config["first-order"]),
              "hidden_sizes": config["hidden-sizes"], "nonlinearity": config["nonlinearity"],
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "summary": summary, "records": records}
    print(f"pytorch-maml-rl, {'first-order' if result['first_order'] else 'second-order'} "
          f"MAML-TRPO, {args.workers} worker(s), {config['hidden-sizes']} "
          f"{config['nonlinearity']}: {summary['mean_s']:.3f} ± {summary['std_s']:.3f} s per "
          f"meta-iteration (min {summary['min_s']:.3f}, max {summary['max_s']:.3f}; "
          f"iterations {args.warmup + 1}-{args.iterations})", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    os._exit(exit_code)  # the peer's daemon workers and queues would otherwise hold the exit
