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
     "override 'experiment=omniglot': a config's experiment can't be changed with --set"),
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
    (["evaluate", "/nonexistent/run", "--seed", "-1"], "--seed = -1: must be >= 0"),
    (["render", "/nonexistent/run", "--tasks", "0"], "--tasks = 0: must be >= 1"),
    (["render", "/nonexistent/run", "--steps", "-1"], "--steps = -1: must be >= 0"),
    # the smallest values allowed pass the checks: the run directory is looked at next
    (["evaluate", "/nonexistent/run", "--steps", "0", "--tasks", "2", "--seed", "0"],
     "run directory /nonexistent/run does not exist"),
    (["render", "/nonexistent/run", "--tasks", "1", "--steps", "0", "--seed", "0"],
     "run directory /nonexistent/run does not exist"),
    (["train", "--resume", "/nonexistent/run", "--seed", "3"],
     "--resume RUN_DIR continues a run with its saved config; give no CONFIG, --seed or "
     "--run-dir with it"),
    (["train", "--resume", "/nonexistent/run", "--run-dir", "elsewhere"], "give no CONFIG"),
    (["train", "sine", "--resume", "/nonexistent/run"], "give no CONFIG"),
    (["config", "/nonexistent/dir/my.yaml"], "config file /nonexistent/dir/my.yaml does not exist"),
    (["train", "my-config.yaml"], "config file my-config.yaml does not exist"),
    (["render", "/nonexistent/run", "--video", "a.mp4", "--output", "b.png"],
     "--video names the video file; give no --output with it"),
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
    assert main(["render", str(run), "--task", "1"]) == 2
    assert "runs of experiment sine draw pictures only" in capsys.readouterr().err


def test_run_dir_problems_are_reported_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main(["train", "sine-quick", "--run-dir", str(a_file), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"--run-dir {a_file} is a file" in err and "sine run in" not in err
    for command in (["train", "sine-quick", *FAST], ["demo", "sine-quick"]):
        assert main([*command, "--run-dir", str(a_file / "run")]) == 2
        err = capsys.readouterr().err
        assert f"--run-dir {a_file / 'run'}: can't create it (" in err
        assert "run in" not in err and " in " + str(a_file) not in err
    run = tmp_path / "run"
    assert main(["train", "sine-quick", "--run-dir", str(run), *FAST]) == 0
    capsys.readouterr()
    assert main(["train", "sine-quick", "--run-dir", str(run), *FAST]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "sine run in" not in err
    assert main(["train", "--resume", str(run)]) == 0
    assert ("holds 12 meta-iterations, all that its config asks for (training.iterations = 12)"
            in capsys.readouterr().err)
    config_text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config_text.replace("  iterations: 12", "  iterations: 9"))
    assert main(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert ("holds 12 meta-iterations, more than its config.yaml asks for (training.iterations "
            f"= 9); nothing to do. Set training.iterations in {run / 'config.yaml'} back to at "
            "least 12") in err
    assert "trained;" not in err and "checkpoint" not in err.split("nothing to do")[1]
    (run / "config.yaml").write_text(config_text)
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
    capsys.readouterr()
    assert main(["train", "--resume", str(extended), "--set", "training.iterations=12",
                 "--set", "run.snapshot_every=6"]) == 0
    assert (f"metarl: sine run in {extended}, resuming after meta-iteration 8 of 12\n"
            in capsys.readouterr().err)
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
    # a --set that changes nothing leaves the file, comments and all, as it was
    kept = (extended / "config.yaml").read_bytes()
    for _ in range(2):
        assert main(["train", "--resume", str(extended), "--set", "training.iterations=12",
                     "--set", "run.snapshot_every=6"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert (extended / "config.yaml").read_bytes() == kept


def test_config_command_lists_and_resolves(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "\nsine-quick                 Sine-wave regression, a quick default\n" in out
    assert ("\nomniglot-5w1s-cpu          Omniglot 5-way 1-shot with MAML on a CPU budget\n"
            in out)
    assert out.rstrip().endswith("`metarl config NAME` prints one with every key explained")
    assert main(["config", "sine", "--set", "adaptation.inner_steps=5"]) == 0
    assert "inner_steps: 5  #" in capsys.readouterr().out


def test_config_summary_is_the_header_up_to_its_first_clause(tmp_path):
    from metarl.cli import config_summary

    path = tmp_path / "c.yaml"
    path.write_text("# Sine, quick (3,000 its): a\n# second line.\nexperiment: sine\n")
    assert config_summary(path) == "Sine, quick"
    path.write_text("# One sentence without a break.\nexperiment: sine\n")
    assert config_summary(path) == "One sentence without a break"
    path.write_text("# " + "word " * 30 + "\nexperiment: sine\n")
    assert config_summary(path, width=22) == "word word word word…"
    path.write_text("experiment: sine\n")
    assert config_summary(path) == ""


def test_version_names_metarl_and_what_it_runs_on(capsys):
    import torch

    import metarl

    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    # the installed distribution's version, read without importing torch: "2.13.0+cpu" for
    # the CPU wheel, "2.14.1" for a CUDA one whose torch.__version__ is "2.14.1+cu130"
    torch_version = out.split("(torch ")[1].split(",")[0]
    assert out.startswith(f"metarl {metarl.__version__} (torch {torch_version}, gymnasium ")
    assert torch.__version__.startswith(torch_version.split("+")[0])
    assert "mujoco " in out and "not installed" not in out


TINY_RL = ["--set", "policy.hidden_sizes=[16, 16]", "--set", "training.iterations=3",
           "--set", "training.meta_batch_size=3", "--set", "training.episodes_per_task=4",
           "--set", "evaluation.tasks=3", "--set", "evaluation.episodes_per_task=4",
           "--set", "baselines.pretrained_iterations=2", "--set", "baselines.oracle_iterations=2",
           "--set", "run.progress=false"]


def test_navigation_train_evaluate_render(tmp_path, capsys, monkeypatch):
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
    # keyed by the names --baselines takes, as baseline_names lists them
    assert set(result["baselines"]) == {"random", "pretrained", "oracle"}
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

    # --video: its file is checked before any episode is run or drawn
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for video, message in [(a_file / "x.mp4", f"--video {a_file / 'x.mp4'}: can't create its "
                            "folder"),
                           (tmp_path / "x.avi", "the file name must end in .mp4 or .gif"),
                           (tmp_path, f"--video {tmp_path} is a directory")]:
        assert main(["render", str(run), "--video", str(video)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    if Path("/proc/self").is_dir():  # a folder no one can write in, not even root
        assert main(["render", str(run), "--video", "/proc/x.mp4"]) == 2
        assert "--video /proc/x.mp4: can't write in /proc" in capsys.readouterr().err
    assert main(["render", str(run), "--video", str(tmp_path / "v.mp4"), "--tasks", "2"]) == 2
    assert "a --video shows one task, chosen with --task" in capsys.readouterr().err
    assert main(["render", str(run), "--video", str(tmp_path / "new" / "v.mp4"),
                 "--steps", "11"]) == 2
    assert "for at most 10 steps; give --steps 0 to 10" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # refused before the video's folder is made
    config_text = (run / "config.yaml").read_text()
    assert "\n  steps: 3  #" in config_text
    (run / "config.yaml").write_text(config_text.replace("\n  steps: 3  #", "\n  steps: 12  #"))
    assert main(["render", str(run), "--video", str(tmp_path / "new" / "v.mp4")]) == 2
    assert "evaluation.steps = 12: a video shows" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    (run / "config.yaml").write_text(config_text)
    # refused once its folders are made (a task of another family): they are removed again
    for option, name in [("--video", "v.gif"), ("--output", "p.png")]:
        task = ["--task", "velocity=1"] if option == "--video" else ["--set", "seed=x"]
        assert main(["render", str(run), option, str(tmp_path / "new" / "sub" / name),
                     *task]) == 2
        capsys.readouterr()
        assert not (tmp_path / "new").exists(), option
    import metarl.rl.experiment as rl_experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # Ctrl-C while drawing: the folders go too
        patch.setattr(rl_experiment.MetaRLExperiment, "render", interrupted)
        assert main(["render", str(run), "--output", str(tmp_path / "new" / "p.png")]) == 130
        assert not (tmp_path / "new").exists()
    capsys.readouterr()
    assert main(["render", str(run), "--video", str(tmp_path / "v.gif"),
                 "--task", "goal=0.3,b"]) == 2
    assert "--task 'goal=0.3,b': 'b' is not a number" in capsys.readouterr().err
    # the pictures draw six of seven steps, each line labelled with its step
    import metarl.rl.render as render

    figures, real = [], render.save_figure
    monkeypatch.setattr(render, "save_figure",
                        lambda fig, output, **kw: figures.append(fig) or real(fig, output, **kw))
    assert main(["render", str(run), "--steps", "7", "--tasks", "1"]) == 0
    labels = [line.get_label() for line in figures[-1].axes[0].get_lines()
              if not line.get_label().startswith("_")]
    assert [label.split(" step")[0] for label in labels] == ["0", "1", "2", "4", "5", "7"]
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob(".metarl-write-check*"))


def test_meta_rl_evaluate_shows_its_progress_per_policy_and_sampling(tmp_path, capsys):
    run = tmp_path / "nav"
    assert main(["train", "navigation2d", "--run-dir", str(run), *TINY_RL,
                 "--set", "training.iterations=1"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--steps", "2", "--baselines", "random,oracle",
                 "--set", "run.progress=true"]) == 0
    frames = capsys.readouterr().err.split("\r")
    # 3 samplings for maml and for random init (before and after 2 steps), 1 for the oracle:
    # each policy's name shows with the samplings done before it
    for name, done in [("maml", 0), ("random init", 3), ("oracle", 6)]:
        assert any(frame.startswith(f"evaluating {name} on 3 test tasks: ")
                   and f" {done}/7 [" in frame for frame in frames), (name, frames)
    assert main(["evaluate", str(run), "--steps", "1"]) == 0  # run.progress: false
    assert "evaluating" not in capsys.readouterr().err


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
    assert (run / "adaptation.gif").read_bytes().startswith(b"GIF8")  # the video
    assert "trajectories.png, adaptation.gif;" in captured.err
    assert "seed: 4" in (run / "config.yaml").read_text()
    assert "oracle" in captured.out and "maml" in captured.out  # the table


def test_demo_of_a_config_evaluating_more_steps_than_a_video_shows(tmp_path, capsys,
                                                                    monkeypatch):
    """The pictures and evaluation take all 12 steps; the video the first 10, with a note."""
    import metarl.rl.experiment as rl_experiment

    videos = []
    monkeypatch.setattr(rl_experiment, "render_video",
                        lambda config, params, output, **kw: videos.append(kw["steps"]) or output)
    assert main(["config", "navigation2d-quick", *TINY_RL, "--set", "evaluation.steps=12",
                 "--set", "training.iterations=1"]) == 0
    config = tmp_path / "tiny.yaml"
    config.write_text(capsys.readouterr().out)
    run = tmp_path / "demo"
    assert main(["demo", str(config), "--run-dir", str(run)]) == 0
    err = capsys.readouterr().err
    assert "metarl demo: the video shows the first 10 of the 12 steps" in err
    assert "metarl demo: done" in err and videos == [10]
    assert json.loads((run / "evaluation.json").read_text())["steps"] == list(range(13))


def test_demo_takes_set_overrides_for_a_new_demo_only(tmp_path, capsys):
    """`metarl demo sine-quick --set ...` trains, evaluates and renders the altered config;
    `--set` with `--resume` is refused (exit 2) and names `train --resume` instead."""
    run = tmp_path / "demo"
    tiny = ["--set", "training.iterations=3", "--set", "training.meta_batch_size=2",
            "--set", "run.progress=false", "--set", "run.tensorboard=false",
            "--set", "baseline.iterations=4", "--set", "evaluation.tasks=7"]
    assert main(["demo", "sine-quick", "--run-dir", str(run), *tiny]) == 0
    assert "metarl demo: done" in capsys.readouterr().err
    saved = (run / "config.yaml").read_text()
    assert "iterations: 3" in saved and "meta_batch_size: 2" in saved
    assert json.loads((run / "evaluation.json").read_text())["tasks"] == 7
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3

    assert main(["demo", "--resume", str(run), "--set", "training.iterations=5"]) == 2
    err = capsys.readouterr().err
    assert "give no --set with it" in err
    assert f"metarl train --resume {run} --set training.iterations=N" in err
    assert main(["demo", "sine-quick", "--run-dir", str(tmp_path / "bad"),
                 "--set", "training.iterationz=3"]) == 2
    assert "training.iterationz" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


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
    message = (f"is a run directory: its config is {run / 'config.yaml'} (give that file), "
               f"and `metarl train --resume {run}` continues the run")
    assert message in capsys.readouterr().err
    assert main(["config", str(run)]) == 2
    assert message in capsys.readouterr().err
    assert main(["config", str(run / "config.yaml")]) == 0


def test_a_run_dir_holding_other_files_is_refused_and_left_as_it_was(tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert main(["train", "sine-quick", "--run-dir", str(folder), *FAST]) == 2
    assert (f"--run-dir {folder} holds files that are not a new run's (notes.txt); give a new "
            "or empty folder") in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "sine-quick", "--run-dir", str(empty), *FAST]) == 0


def test_a_run_dir_is_refused_for_files_that_are_not_a_runs(tmp_path, capsys):
    """A run's own files (a run stopped before its first checkpoint) and hidden files are
    fine; a config.yaml among other files is not a run."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("experiment: sine\n")
    (mine / "notes.txt").write_text("mine")
    assert main(["train", str(mine / "config.yaml"), "--run-dir", str(mine), *FAST]) == 2
    assert "holds files that are not a new run's (config.yaml, notes.txt)" in (
        capsys.readouterr().err)
    (mine / "notes.txt").unlink()
    assert main(["train", str(mine / "config.yaml"), "--run-dir", str(mine), *FAST]) == 2
    assert "holds a config.yaml that metarl did not write for a run; keep your config outside" in (
        capsys.readouterr().err)
    assert (mine / "config.yaml").read_text() == "experiment: sine\n"
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".DS_Store").write_bytes(b"")
    assert main(["train", "sine-quick", "--run-dir", str(hidden), *FAST]) == 0


def test_a_folder_named_like_a_shipped_config_does_not_hide_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "sine-quick", "--run-dir", "sine-quick", *FAST]) == 0
    capsys.readouterr()
    assert main(["config", "sine-quick", "--set", "seed=3"]) == 0
    assert "experiment: sine" in capsys.readouterr().out


def test_resuming_a_snapshot_in_place_is_refused(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "sine-quick", "--run-dir", str(run), *FAST,
                 "--set", "run.snapshot_every=6"]) == 0
    snapshot = run / "snapshots" / "iteration-6"
    before = (snapshot / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(snapshot), "--set", "training.iterations=14"]) == 2
    err = capsys.readouterr().err
    assert f"{snapshot} is a snapshot of the run in {run}" in err
    assert f"cp -r {snapshot} NEW_RUN && metarl train --resume NEW_RUN" in err
    # however it is spelled: from inside it, or through a link
    monkeypatch.chdir(snapshot)
    assert main(["train", "--resume", ".", "--set", "training.iterations=14"]) == 2
    assert f". is a snapshot of the run in {run.resolve()}" in capsys.readouterr().err
    (tmp_path / "link").symlink_to(snapshot)
    assert main(["train", "--resume", str(tmp_path / "link")]) == 2
    assert "is a snapshot of the run in" in capsys.readouterr().err
    assert (snapshot / "checkpoint.pt").read_bytes() == before
    assert not (snapshot / "snapshots").exists()


def test_evaluate_explains_a_run_dir_taken_by_baselines(tmp_path, capsys):
    assert main(["evaluate", "--baselines", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--baselines took {str(tmp_path)!r} for its NAMES; give RUN_DIR first" in err
    assert main(["evaluate"]) == 2
    assert "give the RUN_DIR to evaluate" in capsys.readouterr().err


@pytest.mark.parametrize("run_dir", ["", "  "])
def test_an_empty_run_dir_is_refused(run_dir, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a blank name would put the run
    with pytest.raises(SystemExit) as exit_:
        main(["train", "sine-quick", "--run-dir", run_dir, *FAST])
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


@pytest.mark.parametrize(("error", "code", "message"), [
    (KeyboardInterrupt(), 130, "metarl: interrupted"),
    ("stopped", 143, "metarl: stopped by SIGTERM"),
    (FileNotFoundError("no such file: x.yaml"), 2, "metarl: error: no such file: x.yaml"),
    (PermissionError(13, "Permission denied", "x.pt"), 1,
     "metarl: error: [Errno 13] Permission denied: 'x.pt'"),
    (IsADirectoryError(21, "Is a directory", "out"), 1, "metarl: error: [Errno 21]"),
    ("video", 1, "metarl: error: ffmpeg failed to write a.mp4 (exit code 3): no encoder"),
    (BrokenPipeError(32, "Broken pipe"), 141, ""),  # `metarl config | head`: quietly
    (RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"), 1,
     "metarl: out of memory: CUDA out of memory. Tried to allocate 20.00 MiB. Smaller "
     "batches need less"),
])
def test_each_way_a_command_stops_has_its_exit_code(error, code, message, monkeypatch, capsys):
    import metarl.cli as cli
    from metarl.rl.video import VideoEncodingError
    from metarl.runner import TrainingStopped

    def stop(args):
        if error == "video":
            raise VideoEncodingError("ffmpeg failed to write a.mp4 (exit code 3): no encoder")
        raise TrainingStopped("stopped by SIGTERM", 143) if error == "stopped" else error

    monkeypatch.setitem(cli.COMMANDS, "config", stop)
    assert main(["config"]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_given_run_dir_is_kept_when_training_fails_before_writing(tmp_path, monkeypatch,
                                                                    capsys):
    import metarl.runner as runner
    from metarl.config import ConfigError

    def failing(*args, **kwargs):
        raise ConfigError("MuJoCo could not be loaded")

    monkeypatch.setattr(runner, "train_run", failing)
    mine = tmp_path / "parent" / "mine"
    mine.mkdir(parents=True)
    assert main(["train", "sine-quick", "--run-dir", str(mine), *FAST]) == 2
    assert mine.is_dir(), "the user's own (empty) directory stays"
    new = tmp_path / "parent" / "new"
    assert main(["train", "sine-quick", "--run-dir", str(new), *FAST]) == 2
    assert not new.exists() and mine.is_dir(), "a directory made for the run goes, alone"


def test_a_meta_sgd_run_notes_the_test_time_rates_it_ignores(capsys):
    from metarl.cli import _note_learned_rates
    from metarl.experiment import config_from_data

    overrides = ["evaluation.inner_lr=0.1", "evaluation.tasks=5",
                 "evaluation.later_lr_scale=0.5"]
    _, plain = config_from_data({"experiment": "sine"})
    _note_learned_rates(plain, overrides)
    assert capsys.readouterr().err == ""
    _, meta_sgd = config_from_data({"experiment": "sine",
                                    "adaptation": {"learn_inner_lr": True}})
    _note_learned_rates(meta_sgd, overrides)
    err = capsys.readouterr().err
    assert "adapts with its learned per-parameter rates" in err
    assert "evaluation.inner_lr=0.1, evaluation.later_lr_scale=0.5 has no effect" in err
    assert "evaluation.tasks" not in err


def test_baseline_settings_without_baselines_are_noted(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "sine-quick", "--run-dir", str(run), *FAST,
                 "--set", "baseline.iterations=3"]) == 0
    capsys.readouterr()
    evaluate = ["evaluate", str(run), "--steps", "1", "--tasks", "4",
                "--set", "baseline.iterations=2", "--set", "evaluation.later_lr_scale=1"]
    assert main(evaluate) == 0
    err = capsys.readouterr().err
    assert ("note: no baselines are evaluated (add --baselines); baseline.iterations=2 has "
            "no effect") in err
    assert "later_lr_scale" not in err
    assert json.loads((run / "evaluation.json").read_text())["baselines"] == {}
    assert main([*evaluate, "--baselines"]) == 0
    assert "no baselines are evaluated" not in capsys.readouterr().err
    # a setting refused is only refused, not also noted as without effect
    assert main(["evaluate", str(run), "--set", "baseline.no_such_key=1"]) == 2
    err = capsys.readouterr().err
    assert "no_such_key" in err and "has no effect" not in err


def test_the_baseline_note_names_each_experiments_own_section(capsys):
    from metarl.cli import _note_unused_baseline_settings
    from metarl.experiment import get_experiment

    meta_rl, omniglot = get_experiment("meta_rl"), get_experiment("omniglot")
    _note_unused_baseline_settings(meta_rl, (), ["baselines.oracle_iterations=5",
                                                 "evaluation.tasks=3"])
    err = capsys.readouterr().err
    assert "baselines.oracle_iterations=5 has no effect" in err and "tasks" not in err
    _note_unused_baseline_settings(meta_rl, (), ["baselines.oracle_iterations=5",
                                                 "baselines.pretrained_iterations=2"])
    assert capsys.readouterr().err.endswith(
        "baselines.oracle_iterations=5, baselines.pretrained_iterations=2 have no effect\n")
    # a setting of a baseline that is not asked for
    _note_unused_baseline_settings(meta_rl, ("random", "pretrained"), [
        "baselines.oracle_iterations=5", "baselines.pretrained_iterations=2"])
    assert capsys.readouterr().err == (
        "metarl: note: only random, pretrained are evaluated; baselines.oracle_iterations=5 "
        "has no effect\n")
    _note_unused_baseline_settings(meta_rl, ("oracle",), ["baselines.oracle_iterations=5"])
    _note_unused_baseline_settings(omniglot, (), ["evaluation.tasks=3"])  # no baselines
    # a key of the section that belongs to no one baseline serves whichever is asked for
    _note_unused_baseline_settings(get_experiment("sine"), ("pretrained",),
                                   ["baseline.iterations=2"])
    assert capsys.readouterr().err == ""


def test_a_runs_own_config_and_checkpoint_problems_say_what_to_do(tmp_path, capsys):
    """Errors in a run's config.yaml name the file; a run stopped before its first checkpoint
    says how to start it again, and that command works; a resumed run says its evaluation is
    of an earlier checkpoint."""
    run = tmp_path / "run"
    assert main(["train", "sine-quick", "--run-dir", str(run), *FAST]) == 0
    assert main(["evaluate", str(run), "--steps", "1", "--tasks", "4"]) == 0
    assert "adaptation.png" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--set", "training.iterations=13"]) == 0
    err = capsys.readouterr().err
    assert (f"note: {run / 'evaluation.json'} (and adaptation.png) are of meta-iteration 12, "
            f"before this training; evaluate again: metarl evaluate {run}\n" in err)
    assert "render again" not in err  # nothing rendered yet
    assert main(["render", str(run), "--tasks", "1"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", "training.iterations=14"]) == 0
    assert capsys.readouterr().err.endswith(
        f"metarl: note: {run / 'evaluation.json'} (and adaptation.png) are of meta-iteration "
        f"12, before this training; evaluate again: metarl evaluate {run}\n"
        f"metarl: note: sine_fits.png in {run} is of a checkpoint before this training; "
        f"render again: metarl render {run}\n")

    config = run / "config.yaml"
    good = config.read_text()
    config.write_text(good.replace("  meta_batch_size: 4", "  meta_batch_size: abc"))
    assert main(["evaluate", str(run)]) == 2
    assert f"{config}: training.meta_batch_size = 'abc'" in capsys.readouterr().err
    config.write_text(good)

    (run / "checkpoint.pt").unlink()
    # 14 iterations logged, the checkpoint written after them gone: lost, not yet to come
    lost = (f"{run} holds the logs of 14 meta-iterations (metrics.jsonl) but no checkpoint.pt, "
            f"which that run last wrote after iteration 14: it was lost or moved. Put it back and "
            f"continue with metarl train --resume {run}, or train a new run in another "
            "--run-dir")
    assert main(["train", "--resume", str(run)]) == 2
    assert lost in capsys.readouterr().err
    evaluation = {name: (run / name).read_bytes() for name in ("evaluation.json",
                                                               "adaptation.png", "sine_fits.png")}
    for name in evaluation:
        (run / name).unlink()
    assert main(["train", str(config), "--run-dir", str(run)]) == 2  # nor started over
    assert lost in capsys.readouterr().err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 14
    for name, content in evaluation.items():
        (run / name).write_bytes(content)
    # a run stopped (SIGKILL) before its first checkpoint: 5 iterations logged
    metrics = run / "metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:5]))
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    restart = f"metarl train {config} --run-dir {run}"
    assert f"{run} has no checkpoint.pt yet" in err and restart in err
    # what a run stopped before its first checkpoint holds is restarted in place; the
    # evaluation of the lost checkpoint would be mixed with the new run's
    assert main(restart.split()[1:]) == 2
    assert ("holds files that are not a new run's (adaptation.png, evaluation.json, "
            "sine_fits.png)" in capsys.readouterr().err)
    for name in evaluation:
        (run / name).unlink()
    old_events = set((run / "tensorboard").iterdir())
    assert old_events
    assert main(restart.split()[1:]) == 0
    new_events = set((run / "tensorboard").iterdir())
    assert new_events and not new_events & old_events  # the lost run's events are gone
    note = (f"note: {run} holds a run stopped before its first checkpoint; a new run starts "
            f"there in its place (config.yaml, learning_curve.png, metrics.jsonl, tensorboard)")
    assert capsys.readouterr().err.count(note) == 1
    assert (run / "checkpoint.pt").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == list(range(1, 15))

    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\x80\x02\x8a\x0a")
    assert main(["config", str(binary)]) == 2
    assert f"{binary}: not a YAML config (not UTF-8 text)" in capsys.readouterr().err


def test_config_file_errors_name_the_file_and_override_errors_do_not(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("experiment: sine\ntraining:\n  meta_batch_size: 0\n")
    assert main(["config", str(config)]) == 2
    assert f"{config}: training.meta_batch_size = 0: must be >= 1" in capsys.readouterr().err
    config.write_text("experiment: sine\n")
    assert main(["config", str(config), "--set", "training.meta_batch_size=0"]) == 2
    err = capsys.readouterr().err
    assert "training.meta_batch_size = 0: must be >= 1" in err and str(config) not in err
    # a file whose experiment is empty is completed by --set experiment=...
    config.write_text("experiment:\ntraining:\n  meta_batch_size: 3\n")
    assert main(["config", str(config), "--set", "experiment=sine"]) == 0
    assert "meta_batch_size: 3" in capsys.readouterr().out
    # unknown keys are named as keys of the file's experiment
    config.write_text("experiment: omniglot\nbaseline:\n  iterations: 5\n")
    assert main(["config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown key baseline; allowed keys: experiment, seed, device, data" in err
    assert "(of experiment omniglot)" in err
    # a file completed by its overrides (or --seed) is fine
    config.write_text("training:\n  meta_batch_size: 0\n")
    assert main(["config", str(config), "--set", "experiment=sine", "--set",
                 "training.meta_batch_size=3"]) == 0
    assert "meta_batch_size: 3" in capsys.readouterr().out
    config.write_text("experiment: sine\nseed: -1\n")
    assert main(["train", str(config), "--seed", "2", "--run-dir", str(tmp_path / "r"),
                 *FAST]) == 0


def test_a_copied_run_resumed_longer_names_itself_in_its_config_header(tmp_path, capsys):
    import shutil

    source, copy = tmp_path / "source", tmp_path / "copy"
    assert main(["train", "sine-quick", "--run-dir", str(source), *FAST]) == 0
    shutil.copytree(source, copy)
    assert main(["train", "--resume", str(copy), "--set", "training.iterations=14"]) == 0
    header = [line for line in (copy / "config.yaml").read_text().splitlines()
              if line.startswith("#")]
    assert f"# Continue it with: metarl train --resume {copy}" in header
    assert not any(str(source) in line for line in header)
    assert "# Changed on resume: training.iterations=14" in header
    # a --set that changes nothing still makes a copy's config.yaml name the copy
    second = tmp_path / "second"
    shutil.copytree(source, second)
    assert main(["train", "--resume", str(second), "--set", "run.progress=false"]) == 0
    header = [line for line in (second / "config.yaml").read_text().splitlines()
              if line.startswith("#")]
    assert f"# Continue it with: metarl train --resume {second}" in header
    assert not any(str(source) in line or "Changed on resume" in line for line in header)


def test_a_background_writers_os_error_is_one_line_not_a_traceback(monkeypatch, capsys):
    import threading

    import metarl.cli as cli

    class WriterThread(threading.Thread):  # as TensorBoard's event writer
        __module__ = "tensorboard.summary.writer.event_file_writer"

    def run_failing(thread_class, error):
        def command(args):
            def write():
                raise error

            thread = thread_class(target=write)
            thread.start()
            thread.join()
            return 0
        monkeypatch.setitem(cli.COMMANDS, "config", command)
        return main(["config"])

    before = threading.excepthook
    assert run_failing(WriterThread, OSError(28, "No space left on device")) == 0
    assert threading.excepthook is before
    assert capsys.readouterr().err == ("metarl: error in a background writer: [Errno 28] No "
                                       "space left on device\n")
    # any other thread's error keeps its traceback
    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda hook_args: seen.append(hook_args))
    assert run_failing(threading.Thread, OSError(28, "No space left on device")) == 0
    assert run_failing(WriterThread, ValueError("a bug")) == 0
    assert [type(a.exc_value) for a in seen] == [OSError, ValueError]
    assert capsys.readouterr().err == ""


def test_an_interrupted_demo_is_finished_by_demo_resume(tmp_path, capsys, monkeypatch):
    """Ctrl-C in training or in evaluation: the message names `metarl demo --resume RUN`,
    which continues the training where it stopped, then evaluates and renders."""
    from metarl.supervised.sine_experiment import SineExperiment
    from metarl.supervised.trainer import SupervisedMetaTrainer

    from signals import signal_during_iteration

    assert main(["config", "sine-quick", "--set", "training.iterations=4",
                 "--set", "training.meta_batch_size=2", "--set", "run.progress=false",
                 "--set", "run.tensorboard=false", "--set", "baseline.iterations=5",
                 "--set", "evaluation.tasks=10"]) == 0
    config = tmp_path / "tiny.yaml"
    config.write_text(capsys.readouterr().out)
    run = tmp_path / "demo"
    original = signal_during_iteration(monkeypatch, SupervisedMetaTrainer, 1)
    assert main(["demo", str(config), "--run-dir", str(run)]) == 130
    err = capsys.readouterr().err
    assert f"interrupted after meta-iteration 2; checkpoint saved. Continue with: metarl demo " \
           f"--resume {run}" in err
    assert not (run / "evaluation.json").exists()
    monkeypatch.setattr(SupervisedMetaTrainer, "train_iteration", original)

    real_evaluate = SineExperiment.evaluate

    def interrupted_evaluation(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(SineExperiment, "evaluate", interrupted_evaluation)
    assert main(["demo", "--resume", str(run)]) == 130
    assert (f"interrupted; the run is trained. Finish the demo with: metarl demo --resume "
            f"{run}") in capsys.readouterr().err
    assert [json.loads(line)["iteration"]
            for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]

    def interrupted_baseline(self, *args):  # as a meta-RL baseline's training stops
        from metarl.runner import TrainingStopped

        raise TrainingStopped("interrupted: the oracle baseline stopped after 3 of 9 "
                              "iterations, kept in X; the same command continues it", 130)

    monkeypatch.setattr(SineExperiment, "evaluate", interrupted_baseline)
    assert main(["demo", "--resume", str(run)]) == 130
    assert f"kept in X; metarl demo --resume {run} continues it" in capsys.readouterr().err

    monkeypatch.setattr(SineExperiment, "evaluate", real_evaluate)
    assert main(["demo", "--resume", str(run)]) == 0
    assert "metarl demo: done" in capsys.readouterr().err
    assert json.loads((run / "evaluation.json").read_text())["checkpoint_iteration"] == 4
    assert (run / "sine_fits.png").read_bytes().startswith(b"\x89PNG")
    # again (as after a Ctrl-C while rendering): the current evaluation is kept, not redone
    evaluated = (run / "evaluation.json").read_bytes()
    monkeypatch.setattr(SineExperiment, "evaluate", interrupted_evaluation)
    assert main(["demo", "--resume", str(run)]) == 0
    assert "evaluation.json is of this checkpoint, with these settings: kept" in (
        capsys.readouterr().err)
    assert (run / "evaluation.json").read_bytes() == evaluated

    # an evaluation of the checkpoint without the demo's baselines is made again
    monkeypatch.setattr(SineExperiment, "evaluate", real_evaluate)
    assert main(["evaluate", str(run)]) == 0
    monkeypatch.setattr(SineExperiment, "evaluate", interrupted_evaluation)
    assert main(["demo", "--resume", str(run)]) == 130
    capsys.readouterr()

    for extra in (["sine-quick"], ["--seed", "3"], ["--run-dir", str(tmp_path / "x")]):
        assert main(["demo", *extra, "--resume", str(run)]) == 2
        assert "give no CONFIG, --seed or --run-dir with it" in capsys.readouterr().err
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "config.yaml").write_text(config.read_text())
    assert main(["demo", "--resume", str(tmp_path / "early")]) == 2
    early = tmp_path / "early"
    assert (f"{early} has no checkpoint.pt yet" in (err := capsys.readouterr().err)
            and f"start it afresh with: metarl demo {early / 'config.yaml'} --run-dir {early}"
            in err)
    # a demo whose checkpoint went missing after it was written is not started afresh
    (run / "checkpoint.pt").unlink()
    assert main(["demo", "--resume", str(run)]) == 2
    assert (f"but no checkpoint.pt, which that run last wrote after iteration 4: it was lost or "
            f"moved. Put it back and continue with metarl demo --resume {run}"
            ) in capsys.readouterr().err


def test_a_demo_into_a_folder_that_holds_a_run_points_to_demo_resume(tmp_path, capsys):
    held = tmp_path / "demo"
    held.mkdir()
    (held / "checkpoint.pt").write_bytes(b"")
    assert main(["demo", "--run-dir", str(held)]) == 2
    err = capsys.readouterr().err
    assert f"{held} already holds a run; continue it with `metarl demo --resume {held}`" in err
    assert "metarl train" not in err


def test_a_broken_yaml_file_or_a_folder_as_config_gets_one_line_naming_where(tmp_path,
                                                                             capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("experiment: sine\ntraining:\n  iterations: [10\n")
    assert main(["config", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err == (f"metarl: error: {broken}, line 4, column 1: not valid YAML: while parsing "
                   "a flow sequence expected ',' or ']', but got '<stream end>'\n")
    assert main(["config", str(tmp_path)]) == 2
    assert (f"config {tmp_path} is a directory, not a config file; give a YAML file"
            in capsys.readouterr().err)
