"""The command line as a user runs it: exit codes, messages, the files a run leaves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metarl.cli import main

FAST = ["--set", "training.iterations=12", "--set", "training.meta_batch_size=4",
        "--set", "run.progress=false", "--set", "baseline.iterations=10"]


@pytest.mark.parametrize(("args", "message"), [
    (["train", "sine", "--set", "training.outer_lr=-1"], "training.outer_lr = -1.0: must be > 0"),
    (["train", "sine", "--set", "training.colour=red"], "unknown key training.colour"),
    (["train", "no-such-config"], "neither a file nor a shipped config"),
    (["train"], "give a CONFIG to train, or --resume RUN_DIR"),
    (["evaluate", "/nonexistent/run"], "run directory /nonexistent/run does not exist"),
    (["render", "/nonexistent/run", "--seed", "-1"], "--seed = -1: must be >= 0"),
    (["config", "sine", "--set", "evaluation.shots=[]"], "evaluation.shots = []: give at least"),
    (["evaluate", "/nonexistent/run", "--tasks", "0"], "--tasks = 0: must be >= 2"),
    (["benchmark", "chess"], "known benchmarks are"),
    (["config", "sine", "--set", "experiment=omniglot"],
     "unknown key baseline; allowed keys: experiment, seed, data"),
    (["config", "sine", "--set", "experiment=omniglot"], "(of experiment omniglot)"),
    (["config", "omniglot-5w1s-cpu", "--set", "task.ways=25", "--set",
      "data.train_characters=20"], "task.ways = 25 exceeds data.train_characters = 20"),
    (["config", "sine", "--set", "evaluation.shots=[5, 10, 5]"],
     "evaluation.shots = [5, 10, 5]: give each K once"),
    (["render", "/nonexistent/run", "--output", "fits.txt"],
     "--output fits.txt: name the picture's file type by its suffix, one of "),
    (["render", "/nonexistent/run", "--output", "fits"], "(e.g. fits.png)"),
    (["train", "navigation2d", "--set", "env.frame_skip=1"],
     "env.frame_skip = 1: navigation2d has no frame skip; it applies to the MuJoCo families "
     "(half_cheetah_vel, half_cheetah_dir); leave it null"),
    (["train", "half-cheetah-dir", "--set", "env.frame_skip=0"],
     "env.frame_skip = 0: must be >= 1"),
    (["train", "navigation2d", "--set", "env.observe_x_position=true"],
     "env.observe_x_position = true: navigation2d has no torso"),
    (["train", "navigation2d", "--set", "env.observe_centre_of_mass=true"],
     "env.observe_centre_of_mass = true: navigation2d has no cheetah"),
    (["train", "navigation2d", "--set", "env.reward_velocity=centre_of_mass"],
     "env.reward_velocity = centre_of_mass: navigation2d has no torso"),
    (["train", "half-cheetah-vel", "--set", "env.reward_velocity=hips"],
     "env.reward_velocity = 'hips'"),
])
def test_bad_input_exits_2_with_the_reason(args, message, capsys, tmp_path):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_console_script_reports_config_errors_without_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("experiment: sine\ntraining:\n  meta_batch_size: 0\n")
    done = subprocess.run([sys.executable, "-m", "metarl", "train", str(config),
                           "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "training.meta_batch_size = 0: must be >= 1" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists(), "nothing is written before the config is valid"


def test_train_evaluate_render_resume(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "sine-quick", "--run-dir", str(run), "--seed", "3", *FAST]) == 0
    assert main(["train", "--resume", str(run)]) == 0  # already complete: nothing to do
    assert main(["evaluate", str(run), "--steps", "2", "--tasks", "20", "--baselines"]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    assert result["metric"] == "mse" and result["steps"] == [0, 1, 2]
    assert result["tasks"] == 20 and len(result["mean"]) == len(result["ci95"]) == 3
    assert set(result["by_shots"]) == {"5", "10", "20"}
    assert set(result["baselines"]["pretrained"]["by_shots"]) == {"5", "10", "20"}
    assert result["baseline_names"] == ["pretrained"]
    assert (run / "adaptation.png").stat().st_size > 0
    assert main(["render", str(run), "--tasks", "2"]) == 0
    assert (run / "sine_fits.png").stat().st_size > 0
    assert main(["render", str(run), "--tasks", "2", "--output",
                 str(tmp_path / "new" / "folder" / "fits.svg")]) == 0
    assert (tmp_path / "new" / "folder" / "fits.svg").read_text().lstrip().startswith("<?xml")
    assert "seed: 3" in (run / "config.yaml").read_text()
    out = capsys.readouterr().out
    assert "maml, K=10" in out and "pretrained, K=10" in out
    assert main(["render", str(run), "--set", "evaluation.shots=[2]"]) == 2
    assert ("--set evaluation.shots=[2]: metarl render draws no evaluation.shots; it changes "
            "only metarl evaluate" in capsys.readouterr().err)
    assert main(["render", str(run), "--video", str(tmp_path / "a.mp4")]) == 2
    assert "runs of experiment sine draw pictures only" in capsys.readouterr().err
    assert not (tmp_path / "a.mp4").exists()


def test_run_dir_problems_are_reported_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main(["train", "sine-quick", "--run-dir", str(a_file), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"--run-dir {a_file} is a file" in err and "sine run in" not in err
    run = tmp_path / "run"
    assert main(["train", "sine-quick", "--run-dir", str(run), *FAST]) == 0
    capsys.readouterr()
    assert main(["train", "sine-quick", "--run-dir", str(run), *FAST]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "sine run in" not in err
    assert main(["train", "--resume", str(run)]) == 0
    assert ("holds 12 meta-iterations, all that its config asks for (training.iterations = 12)"
            in capsys.readouterr().err)
    (run / "checkpoint.pt").write_bytes(b"garbage")
    for args in (["evaluate", str(run)], ["render", str(run)], ["train", "--resume", str(run)]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "can't be read as a metarl checkpoint" in err and "Traceback" not in err


def test_resume_with_more_iterations_extends_a_finished_run_exactly(tmp_path, capsys):
    base = ["--set", "training.meta_batch_size=4", "--set", "run.progress=false",
            "--set", "run.tensorboard=false", "--set", "baseline.iterations=10"]
    longer, extended = tmp_path / "longer", tmp_path / "extended"
    assert main(["train", "sine-quick", "--run-dir", str(longer), *base,
                 "--set", "training.iterations=12"]) == 0
    assert main(["train", "sine-quick", "--run-dir", str(extended), *base,
                 "--set", "training.iterations=8"]) == 0
    assert main(["train", "--resume", str(extended), "--set", "training.iterations=12",
                 "--set", "run.snapshot_every=6"]) == 0
    records = [(longer / "metrics.jsonl").read_text(), (extended / "metrics.jsonl").read_text()]
    strip = [[{k: v for k, v in json.loads(line).items() if k != "wall_time"}
              for line in text.splitlines()] for text in records]
    assert len(strip[1]) == 12 and strip[0] == strip[1]
    assert (extended / "snapshots" / "iteration-12" / "checkpoint.pt").is_file()
    saved = (extended / "config.yaml").read_text()
    assert "  iterations: 12  #" in saved and "  snapshot_every: 6  #" in saved
    assert saved.startswith("# Resolved config of this run")
    assert ("# Changed on resume: training.iterations=12, run.snapshot_every=6"
            in saved.splitlines()[:4])
    assert main(["train", "--resume", str(extended), "--set", "adaptation.inner_lr=0.5"]) == 2
    assert "only training.iterations and run.* may change" in capsys.readouterr().err
    assert main(["train", "--resume", str(extended), "--set", "training.iterations=0"]) == 2
    assert "training.iterations = 0: must be >= 1" in capsys.readouterr().err
    assert main(["train", "--resume", str(extended), "--set", "training.iterations=10"]) == 2
    assert "already holds 12 iterations; give at least 12" in capsys.readouterr().err
    assert "iterations: 12  #" in (extended / "config.yaml").read_text()


def test_config_command_lists_and_resolves(capsys):
    assert main(["config"]) == 0
    assert "sine-quick" in capsys.readouterr().out
    assert main(["config", "sine", "--set", "adaptation.inner_steps=5"]) == 0
    assert "inner_steps: 5  #" in capsys.readouterr().out


def test_version_names_metarl_and_what_it_runs_on(capsys):
    import torch

    import metarl

    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"metarl {metarl.__version__} (torch {torch.__version__}, gymnasium ")
    assert "mujoco " in out and "not installed" not in out


TINY_RL = ["--set", "policy.hidden_sizes=[16, 16]", "--set", "training.iterations=3",
           "--set", "training.meta_batch_size=3", "--set", "training.episodes_per_task=4",
           "--set", "evaluation.tasks=3", "--set", "evaluation.episodes_per_task=4",
           "--set", "baselines.pretrained_iterations=2", "--set", "baselines.oracle_iterations=2",
           "--set", "run.progress=false"]


def test_navigation_train_evaluate_render(tmp_path, capsys):
    run = tmp_path / "nav"
    assert main(["train", "navigation2d", "--run-dir", str(run), *TINY_RL]) == 0
    assert main(["evaluate", str(run), "--steps", "3", "--baselines"]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    assert result["metric"] == "return" and result["steps"] == [0, 1, 2, 3]
    assert result["tasks"] == 3 and len(result["sem"]) == 4
    assert result["inner_lr"] == [0.5, 0.25, 0.25]  # navigation2d: the authors' lr 0.5
    # a step budget of 4 episodes' worth per task: at least 4 whole episodes
    assert result["sampling"] == "steps" and len(result["episodes_sampled"]) == 4
    assert all(count >= 4 for count in result["episodes_sampled"])
    assert set(result["baselines"]) == {"random init", "pretrained", "oracle"}
    assert result["baseline_names"] == ["random", "pretrained", "oracle"]
    assert (run / "baselines" / "pretrained.pt").is_file()
    assert (run / "baselines" / "oracle.pt").is_file()
    assert len(result["oracle_training_returns"]) == 2  # baselines.oracle_iterations
    # the same 3 test tasks for every policy, each task's returns after 0-3 steps (the
    # oracle, told the task, is not adapted: step 0 only)
    assert [len(task["goal"]) for task in result["test_tasks"]] == [2, 2, 2]
    for name, curve in [("maml", result), *result["baselines"].items()]:
        columns = 1 if name == "oracle" else 4
        assert len(curve["task_returns"]) == 3
        assert {len(r) for r in curve["task_returns"]} == {columns}
        column_means = [sum(column) / 3 for column in zip(*curve["task_returns"], strict=True)]
        assert column_means == pytest.approx(curve["mean"])
    assert main(["render", str(run), "--tasks", "2", "--steps", "1"]) == 0
    assert (run / "trajectories.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "random init" in out and "pretrained" in out and "oracle" in out

    # some baselines by name; a cached one is not trained again
    oracle_written = (run / "baselines" / "oracle.pt").stat().st_mtime_ns
    assert main(["evaluate", str(run), "--steps", "0", "--baselines", "oracle"]) == 0
    assert (run / "baselines" / "oracle.pt").stat().st_mtime_ns == oracle_written
    result = json.loads((run / "evaluation.json").read_text())
    assert set(result["baselines"]) == {"oracle"} and result["steps"] == [0]
    assert len(result["mean"]) == 1 and result["inner_lr"] == []
    assert main(["evaluate", str(run), "--baselines", "random,oracle,typo"]) == 2
    assert "meta_rl baselines are random, pretrained, oracle" in capsys.readouterr().err


def test_meta_rl_config_rejects_reptile(tmp_path, capsys):
    run = tmp_path / "nav"
    assert main(["train", "navigation2d", "--run-dir", str(run), "--set",
                 "adaptation.method=reptile"]) == 2
    assert ("adaptation.method = 'reptile': allowed values are 'maml', 'fomaml'"
            in capsys.readouterr().err)
    assert not run.exists()


def test_a_nan_reward_stops_meta_rl_training_and_keeps_the_last_good_checkpoint(
        tmp_path, monkeypatch, capsys):
    """A NaN reward in meta-iteration 4: exit 1 with a message that names it, the checkpoint
    of iteration 2 (checkpoint_every=2) kept, its parameters finite."""
    import torch

    from metarl.checkpoint import load_checkpoint
    from metarl.envs.navigation import BatchedNavigation2D
    from metarl.rl.maml_trpo import MAMLTRPO

    poisoned = []
    train_iteration, step = MAMLTRPO.train_iteration, BatchedNavigation2D.step

    def tracking(self, iteration):
        poisoned[:] = [iteration == 3]
        return train_iteration(self, iteration)

    def nan_reward(self, actions):
        observations, rewards, terminated = step(self, actions)
        if poisoned and poisoned[0]:
            rewards = rewards.clone()
            rewards[0] = float("nan")
        return observations, rewards, terminated

    monkeypatch.setattr(MAMLTRPO, "train_iteration", tracking)
    monkeypatch.setattr(BatchedNavigation2D, "step", nan_reward)
    run = tmp_path / "nav"
    assert main(["train", "navigation2d", "--run-dir", str(run), *TINY_RL,
                 "--set", "training.iterations=6", "--set", "run.checkpoint_every=2"]) == 1
    err = capsys.readouterr().err
    assert ("stopped at meta-iteration 4: a sampled reward is nan: the environment returned "
            "a non-finite value") in err
    assert "last good checkpoint (iteration 2)" in err
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["trainer"]["params"].values())
    poisoned[:] = [True]  # evaluation meets the NaN too: the same message, no traceback
    assert main(["evaluate", str(run)]) == 1
    assert "stopped: a sampled reward is nan" in capsys.readouterr().err


def test_demo_trains_evaluates_with_baselines_and_renders(tmp_path, capsys):
    """`metarl demo CONFIG` (README's quick start) on a tiny navigation config."""
    assert main(["config", "navigation2d-quick", *TINY_RL]) == 0
    config = tmp_path / "tiny.yaml"
    config.write_text(capsys.readouterr().out)
    run = tmp_path / "demo"
    assert main(["demo", str(config), "--run-dir", str(run), "--seed", "4"]) == 0
    captured = capsys.readouterr()
    assert "metarl demo: done" in captured.err
    result = json.loads((run / "evaluation.json").read_text())
    assert result["baseline_names"] == ["random", "pretrained", "oracle"]
    assert result["tasks"] == 3 and result["steps"] == [0, 1, 2, 3]
    for name in ("adaptation.png", "learning_curve.png", "trajectories.png"):
        assert (run / name).read_bytes().startswith(b"\x89PNG"), name
    assert "seed: 4" in (run / "config.yaml").read_text()
    assert "oracle" in captured.out and "maml" in captured.out  # the table


def test_default_run_dirs_of_runs_started_in_one_second_differ(tmp_path, monkeypatch):
    import metarl.cli as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.time, "strftime", lambda fmt: "20261205-120000")
    made = [cli._default_run_dir(Path("configs/sine-quick.yaml")) for _ in range(3)]
    assert [str(p) for p in made] == ["runs/sine-quick-20261205-120000",
                                      "runs/sine-quick-20261205-120000-2",
                                      "runs/sine-quick-20261205-120000-3"]
    assert all(p.is_dir() for p in made)


def test_a_default_run_dir_is_removed_when_training_fails_before_writing(tmp_path, monkeypatch,
                                                                       capsys):
    import metarl.runner as runner
    from metarl.config import ConfigError

    def failing(*args, **kwargs):
        raise ConfigError("MuJoCo could not be loaded")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "train_run", failing)
    assert main(["train", "sine-quick", *FAST]) == 2
    assert "MuJoCo could not be loaded" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_train_given_a_run_directory_as_config_points_to_resume(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "sine-quick", "--run-dir", str(run), *FAST]) == 0
    capsys.readouterr()
    assert main(["train", str(run)]) == 2
    assert f"is a run directory: continue it with `metarl train --resume {run}`" in (
        capsys.readouterr().err)


def test_resuming_a_snapshot_in_place_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "sine-quick", "--run-dir", str(run), *FAST,
                 "--set", "run.snapshot_every=6"]) == 0
    snapshot = run / "snapshots" / "iteration-6"
    before = (snapshot / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(snapshot), "--set", "training.iterations=14"]) == 2
    err = capsys.readouterr().err
    assert f"{snapshot} is a snapshot of the run in {run}" in err
    assert f"cp -r {snapshot} runs/branch && metarl train --resume runs/branch" in err
    assert (snapshot / "checkpoint.pt").read_bytes() == before
    assert not (snapshot / "snapshots").exists()


def test_evaluate_explains_a_run_dir_taken_by_baselines(tmp_path, capsys):
    assert main(["evaluate", "--baselines", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--baselines took {str(tmp_path)!r} for its NAMES; give RUN_DIR first" in err
    assert main(["evaluate"]) == 2
    assert "give the RUN_DIR to evaluate" in capsys.readouterr().err


def test_an_empty_run_dir_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "sine-quick", "--run-dir", ""])
    assert exit_.value.code == 2
    assert "give a directory name" in capsys.readouterr().err


def test_a_diverging_inner_step_stops_meta_rl_training_with_a_message(tmp_path, capsys):
    run = tmp_path / "nav"
    assert main(["train", "navigation2d", "--run-dir", str(run), *TINY_RL,
                 "--set", "adaptation.inner_lr=1e4"]) == 1
    err = capsys.readouterr().err
    assert "stopped at meta-iteration 1: inner step 1 (lr 10000) diverged" in err
    assert "lower the inner learning rate" in err
    assert "No checkpoint had been written yet" in err and "Traceback" not in err


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                 "memory: you tried to allocate 54000000000 bytes"),
    MemoryError(),
])
def test_running_out_of_memory_is_a_message_not_a_traceback(error, monkeypatch, capsys):
    import metarl.cli as cli

    def allocate(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "config", allocate)
    assert main(["config"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("metarl: out of memory") and "training.meta_batch_size" in err


def test_other_runtime_errors_are_not_reported_as_memory(monkeypatch):
    import metarl.cli as cli

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "config", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["config"])
