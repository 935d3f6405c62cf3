"""Regenerate configs/ from the dataclasses: ``python scripts/write_configs.py`` (``--check``:
only compare).

Each preset is the dataclass defaults plus a few overrides, written as commented YAML, so
the files always mirror every field with its meaning. tests/test_config.py checks they do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from metarl.config import dump_config
from metarl.experiment import config_from_data

ROOT = Path(__file__).resolve().parent.parent / "configs"

# The navigation settings of the MAML authors' code: normalized actions, lr 0.5, step budget.
NAVIGATION_AUTHORS: dict[str, dict[str, Any]] = {
    "policy": {"normalized_actions": True}, "adaptation": {"inner_lr": 0.5},
    "training": {"sampling": "steps"}}

PRESETS: dict[str, tuple[str, dict]] = {
    "sine/sine.yaml": (
        "Sine-wave regression, the MAML paper protocol (section 5.1, Table 2, Figure 3).\n"
        "K = 10 support and query points, one inner step with lr 0.01, meta-batch 25,\n"
        "Adam 1e-3, 70,000 meta-iterations (about 6 minutes on 2 CPU cores).\n"
        "Run: metarl train sine --run-dir runs/sine && metarl evaluate runs/sine --baselines",
        {"experiment": "sine"}),
    "sine/sine-quick.yaml": (
        "Sine-wave regression, a quick default: the paper protocol with 3,000\n"
        "meta-iterations instead of 70,000 and 200 test tasks; under a minute on 2 cores.",
        {"experiment": "sine", "training": {"iterations": 3000}, "evaluation": {"tasks": 200},
         "baseline": {"iterations": 2000}, "run": {"checkpoint_every": 500}}),
    "navigation/navigation2d.yaml": (
        "2D navigation with MAML-TRPO, the MAML paper protocol (section 5.3, Figure 5) as the\n"
        "authors ran it (cbfinn/maml_rl: maml_trpo_point.py and the policy test_maml_point.py\n"
        "evaluates): policy 2 x 100 ReLU acting in units of the action bound (rllab's normalize\n"
        "wrapper: +-1 is +-0.1), one policy-gradient step with lr 0.5, 20 tasks x 20 episodes'\n"
        "worth of steps (2,000 per task; an episode that reaches the goal restarts, as in the\n"
        "authors' sampler), TRPO with mean KL 0.01, 100 meta-iterations as in the authors'\n"
        "script (about 7 min on 2 cores; the returns after 2-3 steps fall with longer\n"
        "training, docs/BENCHMARKS.md). Evaluation: 40 test tasks, 40 episodes' worth of steps\n"
        "per step, lr 0.5 then 0.25. Run: metarl train navigation2d --run-dir runs/nav &&\n"
        "metarl evaluate runs/nav --baselines && metarl render runs/nav",
        {"experiment": "meta_rl", **NAVIGATION_AUTHORS,
         "training": {**NAVIGATION_AUTHORS["training"], "iterations": 100},
         "baselines": {"pretrained_iterations": 100, "oracle_iterations": 100},
         "run": {"checkpoint_every": 25}}),
    "navigation/navigation2d-paper-text.yaml": (
        "2D navigation with the MAML paper's text read literally: inner lr 0.1 on raw actions\n"
        "(bound 0.1), exactly 20 episodes per task, 20 tasks, TRPO with mean KL 0.01, 500\n"
        "meta-iterations. It adapts less than navigation2d (docs/BENCHMARKS.md).",
        {"experiment": "meta_rl", "run": {"checkpoint_every": 25, "snapshot_every": 50}}),
    "navigation/navigation2d-quick.yaml": (
        "2D navigation, a quick default (the `metarl demo` run): navigation2d with 10 tasks x\n"
        "10 episodes' worth of steps per meta-iteration and 100 meta-iterations; a few\n"
        "minutes on 2 cores, enough to see adaptation help.",
        {"experiment": "meta_rl", **NAVIGATION_AUTHORS,
         "training": {**NAVIGATION_AUTHORS["training"], "iterations": 100,
                      "meta_batch_size": 10, "episodes_per_task": 10},
         "evaluation": {"episodes_per_task": 20},
         "baselines": {"pretrained_iterations": 50, "oracle_iterations": 50},
         "run": {"checkpoint_every": 25}}),
}


def _cheetah(kind: str, header: str, steps: int | None = None, frame_skip: int | None = None,
             **sections: dict) -> tuple:
    env = {"name": f"half_cheetah_{kind}", "max_episode_steps": steps,
           "frame_skip": frame_skip}
    return header, {"experiment": "meta_rl", "env": env,
                    "training": {"meta_batch_size": 40, **sections.pop("training", {})},
                    "evaluation": {"episodes_per_task": 20},
                    "run": {"checkpoint_every": 10, "snapshot_every": 50},
                    **sections}


CHEETAH_PAPER = (
    "Policy 2 x 100 ReLU, one policy-gradient step with lr 0.1, 40 tasks x 20 episodes,\n"
    "TRPO with mean KL 0.01, 500 meta-iterations. Evaluation: 40 test tasks, 20 episodes\n"
    "per step, lr then lr/2.")
PRESETS.update({
    "half_cheetah/half-cheetah-vel.yaml": _cheetah("vel", (
        "Half-cheetah velocity with MAML-TRPO, the MAML paper protocol (section 5.3,\n"
        "Figure 5): target velocity ~ U[0, 2] m/s, 200-step episodes.\n" + CHEETAH_PAPER
        + "\nRun: metarl train half-cheetah-vel --run-dir runs/vel && metarl evaluate runs/vel"
        "\n&& metarl render runs/vel --video runs/vel/adaptation.mp4")),
    "half_cheetah/half-cheetah-dir.yaml": _cheetah("dir", (
        "Half-cheetah direction with MAML-TRPO, the MAML paper protocol (section 5.3,\n"
        "Figure 5): run forward or backward, 200-step episodes.\n" + CHEETAH_PAPER
        + "\nRun: metarl train half-cheetah-dir --run-dir runs/dir && metarl evaluate runs/dir"
        "\n&& metarl render runs/dir --video runs/dir/adaptation.mp4")),
    "half_cheetah/half-cheetah-vel-dt01.yaml": _cheetah("vel", (
        "Half-cheetah velocity, the MAML paper protocol at the paper's control rate: one\n"
        "MuJoCo step of 0.01 s per action (frame_skip 1), as the rllab half-cheetah the\n"
        "authors trained on, so 200 steps are 2 s of simulated time (HalfCheetah-v5's rate,\n"
        "in half-cheetah-vel: 0.05 s, 10 s). Model, observation and reward as half-cheetah-vel.\n"
        + CHEETAH_PAPER + "\nRun: metarl train half-cheetah-vel-dt01 --run-dir runs/vel-dt01 &&"
        "\nmetarl evaluate runs/vel-dt01 --snapshots"), frame_skip=1),
    "half_cheetah/half-cheetah-dir-dt01.yaml": _cheetah("dir", (
        "Half-cheetah direction, the MAML paper protocol at the paper's control rate: one\n"
        "MuJoCo step of 0.01 s per action (frame_skip 1), as the rllab half-cheetah the\n"
        "authors trained on, so 200 steps are 2 s of simulated time (HalfCheetah-v5's rate,\n"
        "in half-cheetah-dir: 0.05 s, 10 s). Model, observation and reward as half-cheetah-dir.\n"
        + CHEETAH_PAPER + "\nRun: metarl train half-cheetah-dir-dt01 --run-dir runs/dir-dt01 &&"
        "\nmetarl evaluate runs/dir-dt01 --snapshots"), frame_skip=1),
    "half_cheetah/half-cheetah-vel-100.yaml": _cheetah("vel", (
        "Half-cheetah velocity with 100-step episodes, the length most reimplementations use\n"
        "(returns on about half the paper's scale); otherwise the paper protocol."), steps=100),
    "half_cheetah/half-cheetah-dir-100.yaml": _cheetah("dir", (
        "Half-cheetah direction with 100-step episodes, the length most reimplementations\n"
        "use (returns on about half the paper's scale); otherwise the paper protocol."),
        steps=100),
})

OMNIGLOT_20_WAY: dict[str, dict[str, Any]] = {
    "task": {"ways": 20}, "adaptation": {"inner_lr": 0.1, "inner_steps": 5},
    "training": {"meta_batch_size": 16}, "evaluation": {"steps": 5}}


# The Reptile paper's transductive 5-way 1-shot Omniglot settings (its Appendix A, and
# openai/supervised-reptile's README since October 2018: --shots 1 --inner-batch 10
# --inner-iters 5 --meta-step 1 --meta-batch 5 --meta-iters 100000 --eval-batch 5
# --eval-iters 50 --learning-rate 0.001 --meta-step-final 0 --train-shots 10 --transductive).
REPTILE_PAPER_5W1S: dict[str, dict[str, Any]] = {
    "task": {"train_shots": 10},
    "adaptation": {"method": "reptile", "inner_optimizer": "adam", "inner_lr": 0.001,
                   "inner_steps": 5, "inner_batch_size": 10},
    "training": {"iterations": 100_000, "meta_batch_size": 5, "outer_optimizer": "sgd",
                 "outer_lr": 1.0, "outer_lr_final": 0.0},
    "evaluation": {"steps": 50}}


# Its other Omniglot settings (Appendix A; the README's commands, which carry no
# --transductive there, where Table 1's "Reptile + Transduction" row is the one metarl's
# evaluation compares with: Conv4 always normalizes a batch with its own statistics):
# 5-way 5-shot as 5-way 1-shot but --eval-batch 5 of the 25 support images; 20-way 1- and
# 5-shot --classes 20 --inner-batch 20 --inner-iters 10 --learning-rate 0.0005
# --meta-iters 200000 --eval-batch 10, the rest as 5-way. One query per class at test (they
# draw shots + 1 images per class).
REPTILE_PAPER_5W5S: dict[str, dict[str, Any]] = {
    **REPTILE_PAPER_5W1S, "task": {"shots": 5, "train_shots": 10},
    "evaluation": {"steps": 50, "inner_batch_size": 5}}
REPTILE_PAPER_20_WAY: dict[str, dict[str, Any]] = {
    "task": {"ways": 20, "train_shots": 10},
    "adaptation": {**REPTILE_PAPER_5W1S["adaptation"], "inner_lr": 0.0005, "inner_steps": 10,
                   "inner_batch_size": 20},
    "training": {**REPTILE_PAPER_5W1S["training"], "iterations": 200_000},
    "evaluation": {"steps": 50, "inner_batch_size": 10}}


def _omniglot(header: str, **sections: dict) -> tuple[str, dict]:
    return header, {"experiment": "omniglot", **sections}


PRESETS.update({
    "omniglot/omniglot-5w1s.yaml": _omniglot(
        "Omniglot 5-way 1-shot with MAML, the MAML paper protocol (section 5.2, Table 1):\n"
        "Conv4 with stride-2 convolutions, one inner step with lr 0.4 in training and three\n"
        "at test, meta-batch 32, Adam 1e-3, 60,000 meta-iterations; 600 test tasks.\n"
        "About 4 hours on 2 CPU cores (omniglot-5w1s-cpu: 12,000 iterations, 1 hour).\n"
        "Run: metarl train omniglot-5w1s --run-dir runs/omni && metarl evaluate runs/omni",
        run={"checkpoint_every": 1000, "snapshot_every": 10_000}),
    "omniglot/omniglot-5w1s-cpu.yaml": _omniglot(
        "Omniglot 5-way 1-shot with MAML on a CPU budget: the paper protocol (one step with\n"
        "lr 0.4, meta-batch 32, three steps at test, 600 test tasks) with 12,000 instead of\n"
        "60,000 meta-iterations; about 1 hour on 2 CPU cores (vmap over tasks, 0.24 s per\n"
        "iteration). Run: metarl train omniglot-5w1s-cpu --run-dir runs/omni-cpu &&\n"
        "metarl evaluate runs/omni-cpu && metarl render runs/omni-cpu",
        training={"iterations": 12_000}, run={"checkpoint_every": 500, "snapshot_every": 3000}),
    "omniglot/omniglot-5w5s.yaml": _omniglot(
        "Omniglot 5-way 5-shot with MAML, the MAML paper protocol (Table 1).",
        task={"shots": 5, "queries": 5}, run={"checkpoint_every": 1000, "snapshot_every": 10_000}),
    "omniglot/omniglot-20w1s.yaml": _omniglot(
        "Omniglot 20-way 1-shot with MAML, the MAML paper protocol (Table 1): five inner\n"
        "steps with lr 0.1 in training and at test, meta-batch 16.",
        **OMNIGLOT_20_WAY, run={"checkpoint_every": 1000, "snapshot_every": 10_000}),
    "omniglot/omniglot-20w5s.yaml": _omniglot(
        "Omniglot 20-way 5-shot with MAML, the MAML paper protocol (Table 1).",
        **{**OMNIGLOT_20_WAY, "task": {"ways": 20, "shots": 5, "queries": 5}},
        run={"checkpoint_every": 1000, "snapshot_every": 10_000}),
    "omniglot/omniglot-5w1s-fomaml.yaml": _omniglot(
        "Omniglot 5-way 1-shot with first-order MAML (Reptile paper, Table 1: 98.3%):\n"
        "the MAML protocol with the second-order term dropped.",
        adaptation={"method": "fomaml"}, run={"checkpoint_every": 1000, "snapshot_every": 10_000}),
    "omniglot/omniglot-5w1s-reptile.yaml": _omniglot(
        "Omniglot 5-way 1-shot with Reptile, the Reptile paper's transductive protocol\n"
        "(Table 1: 97.68%; Appendix A, and openai/supervised-reptile's README command):\n"
        "training tasks of 10 images per class, five inner steps of Adam (beta1 = 0, step\n"
        "size 0.001) on batches of 10 of them, meta-batch 5, outer step 1 falling linearly\n"
        "to 0 over 100,000 iterations; at test 50 Adam steps on the support set, from the\n"
        "state training left. Run: metarl train omniglot-5w1s-reptile --run-dir\n"
        "runs/reptile && metarl evaluate runs/reptile",
        **REPTILE_PAPER_5W1S, run={"checkpoint_every": 1000, "snapshot_every": 10_000}),
    "omniglot/omniglot-5w5s-reptile.yaml": _omniglot(
        "Omniglot 5-way 5-shot with Reptile, the Reptile paper's settings (Appendix A and\n"
        "openai/supervised-reptile's README command), tested transductively as Conv4's\n"
        "batch norm always is (Table 1, Reptile + Transduction: 99.48%):\n"
        "training as omniglot-5w1s-reptile (tasks of 10 images per class, five inner Adam\n"
        "steps of 0.001 on batches of 10, meta-batch 5, outer step 1 falling to 0 over\n"
        "100,000 iterations); at test 50 Adam steps on batches of 5 of the 25 support\n"
        "images. Run: metarl train omniglot-5w5s-reptile --run-dir runs/reptile-5w5s &&\n"
        "metarl evaluate runs/reptile-5w5s",
        **REPTILE_PAPER_5W5S, run={"checkpoint_every": 1000, "snapshot_every": 10_000}),
    "omniglot/omniglot-20w1s-reptile.yaml": _omniglot(
        "Omniglot 20-way 1-shot with Reptile, the Reptile paper's settings (Appendix A and\n"
        "openai/supervised-reptile's README command), tested transductively as Conv4's\n"
        "batch norm always is (Table 1, Reptile + Transduction: 89.43%):\n"
        "training tasks of 10 images per class, ten inner Adam steps (beta1 = 0, step size\n"
        "0.0005) on batches of 20 of them, meta-batch 5, outer step 1 falling linearly to 0\n"
        "over 200,000 iterations; at test 50 Adam steps on batches of 10 of the 20 support\n"
        "images, from the state training left. Run: metarl train omniglot-20w1s-reptile\n"
        "--run-dir runs/reptile-20w1s && metarl evaluate runs/reptile-20w1s",
        **REPTILE_PAPER_20_WAY, run={"checkpoint_every": 1000, "snapshot_every": 10_000}),
    "omniglot/omniglot-20w5s-reptile.yaml": _omniglot(
        "Omniglot 20-way 5-shot with Reptile, the Reptile paper's settings (Appendix A and\n"
        "openai/supervised-reptile's README command), tested transductively as Conv4's\n"
        "batch norm always is (Table 1, Reptile + Transduction: 97.12%):\n"
        "training as omniglot-20w1s-reptile; at test 50 Adam steps on batches of 10 of the\n"
        "100 support images. Run: metarl train omniglot-20w5s-reptile --run-dir\n"
        "runs/reptile-20w5s && metarl evaluate runs/reptile-20w5s",
        **{**REPTILE_PAPER_20_WAY, "task": {"ways": 20, "shots": 5, "train_shots": 10}},
        run={"checkpoint_every": 1000, "snapshot_every": 10_000}),
})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write configs/ from the config dataclasses.")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; list the files that differ, exit 1 if any do")
    args = parser.parse_args(argv)
    stale = []
    for relative, (header, data) in PRESETS.items():
        _, config = config_from_data(data)
        path = ROOT / relative
        text = dump_config(config, header=header)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
                print(f"differs: {path}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
