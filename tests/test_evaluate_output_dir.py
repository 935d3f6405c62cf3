"""``metarl evaluate --output-dir``: the evaluation goes elsewhere and the run's own stays."""

from __future__ import annotations

import json

import pytest

from metarl.cli import main
from metarl.config import ConfigError
from metarl.experiment import EvaluateOptions

FAST = ["--set", "training.iterations=2", "--set", "training.meta_batch_size=2",
        "--set", "run.progress=false", "--set", "run.tensorboard=false"]


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("sine") / "run"
    assert main(["train", "sine-quick", "--run-dir", str(run), *FAST]) == 0
    assert main(["evaluate", str(run), "--steps", "2", "--tasks", "20"]) == 0
    return run


def test_output_dir_gets_the_evaluation_and_the_run_keeps_its_own(sine_run, tmp_path, capsys):
    own = (sine_run / "evaluation.json").read_bytes()
    own_picture = (sine_run / "adaptation.png").read_bytes()
    other = tmp_path / "made" / "here"
    capsys.readouterr()
    assert main(["evaluate", str(sine_run), "--steps", "1", "--tasks", "10",
                 "--output-dir", str(other), "--set", "evaluation.later_lr_scale=0.5"]) == 0
    assert f"wrote {other / 'evaluation.json'} and {other / 'adaptation.png'}" in (
        capsys.readouterr().err)
    assert (sine_run / "evaluation.json").read_bytes() == own
    assert (sine_run / "adaptation.png").read_bytes() == own_picture
    written = json.loads((other / "evaluation.json").read_text())
    assert (written["steps"], written["tasks"]) == ([0, 1], 10)
    assert written["evaluation_config"]["later_lr_scale"] == 0.5
    assert written["run_dir"] == str(sine_run.resolve())
    assert written["checkpoint_sha256"] == json.loads(own)["checkpoint_sha256"]
    assert (other / "adaptation.png").stat().st_size > 0
    # the run's evaluation is still current for the run: --snapshots-style reuse is unaffected
    assert "run_dir" not in json.loads(own)


def test_output_dir_that_is_the_run_writes_into_the_run(sine_run, capsys):
    assert main(["evaluate", str(sine_run), "--steps", "1", "--tasks", "10",
                 "--output-dir", str(sine_run / ".")]) == 0
    written = json.loads((sine_run / "evaluation.json").read_text())
    assert written["tasks"] == 10 and "run_dir" not in written
    # the run spelled another way (a symbolic link, or as here through ..) is the run too
    assert main(["evaluate", str(sine_run), "--steps", "1", "--tasks", "12",
                 "--output-dir", str(sine_run / ".." / sine_run.name)]) == 0
    assert json.loads((sine_run / "evaluation.json").read_text())["tasks"] == 12
    assert main(["evaluate", str(sine_run), "--steps", "2", "--tasks", "20"]) == 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--output-dir", "{file}"], "not a directory"),
    (["--output-dir", "{other_run}"], "holds a run of its own (checkpoint.pt)"),
    (["--output-dir", "{file}/sub"], "/sub: can't make it (Not a directory)"),
])
def test_bad_output_dirs_exit_2_before_any_work(sine_run, tmp_path, capsys, extra, message):
    file = tmp_path / "a-file"
    file.write_text("x")
    other_run = tmp_path / "other"
    other_run.mkdir()
    (other_run / "checkpoint.pt").write_text("not ours")
    (other_run / "evaluation.json").write_text("{}")
    args = [a.format(file=file, other_run=other_run) for a in extra]
    if "--output-dir" not in args:
        args += ["--output-dir", str(tmp_path / "out")]
    capsys.readouterr()
    assert main(["evaluate", str(sine_run), "--tasks", "3", *args]) == 2
    assert message in capsys.readouterr().err
    assert (other_run / "evaluation.json").read_text() == "{}"
    assert not (tmp_path / "out").exists()


def test_a_folder_made_for_a_failed_evaluation_is_removed(sine_run, tmp_path, monkeypatch,
                                                          capsys):
    from metarl.supervised.sine_experiment import SineExperiment

    def fail(self, config, state, run_dir, options):
        assert options.output_dir.is_relative_to(tmp_path)
        assert options.output_dir.is_dir()  # made before the experiment writes into it
        raise ConfigError("the evaluation failed")

    monkeypatch.setattr(SineExperiment, "evaluate", fail)
    assert main(["evaluate", str(sine_run), "--output-dir", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()
    assert main(["evaluate", str(sine_run), "--output-dir", str(tmp_path / "new" / "a" / "b")
                 ]) == 2
    assert not (tmp_path / "new").exists()  # nor the folders made above it
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["evaluate", str(sine_run), "--output-dir", str(kept)]) == 2
    assert kept.is_dir()  # the user's folder stays


def test_meta_rl_evaluation_goes_to_the_output_dir(tmp_path):
    from metarl.experiment import config_from_data
    from metarl.rl.build import new_policy_params
    from metarl.rl.experiment import MetaRLExperiment

    _, config = config_from_data({
        "experiment": "meta_rl", "policy": {"hidden_sizes": [4]},
        "env": {"max_episode_steps": 5}, "evaluation": {"episodes_per_task": 2, "tasks": 3}})
    state = {"trainer": {"params": new_policy_params(config, "init")}, "iteration": 0}
    run, out = tmp_path / "run", tmp_path / "out"
    run.mkdir()
    out.mkdir()
    MetaRLExperiment().evaluate(config, state, run,
                                EvaluateOptions(steps=1, tasks=2, seed=5, output_dir=out))
    assert sorted(p.name for p in out.iterdir()) == ["adaptation.png", "evaluation.json"]
    assert json.loads((out / "evaluation.json").read_text())["run_dir"] == str(run.resolve())
    assert not (run / "evaluation.json").exists() and not (run / "adaptation.png").exists()


def test_baselines_evaluated_elsewhere_leave_the_run_as_it_was(tmp_path, monkeypatch):
    """A baseline trained for an evaluation written elsewhere is cached there; one the run
    already caches is read from the run, not trained again."""
    import metarl.supervised.sine_experiment as sine

    run = tmp_path / "run"
    assert main(["train", "sine-quick", "--run-dir", str(run), *FAST,
                 "--set", "baseline.iterations=5"]) == 0
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert main(["evaluate", str(run), "--steps", "1", "--tasks", "5", "--baselines",
                 "--output-dir", str(tmp_path / "a")]) == 0
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert (tmp_path / "a" / "baselines" / "pretrained.pt").is_file()
    with_baseline = json.loads((tmp_path / "a" / "evaluation.json").read_text())

    assert main(["evaluate", str(run), "--steps", "1", "--tasks", "5", "--baselines"]) == 0
    assert (run / "baselines" / "pretrained.pt").is_file()  # the run's own cache

    def no_training(config):
        raise AssertionError("trained again")

    monkeypatch.setattr(sine, "pretrain", no_training)
    assert main(["evaluate", str(run), "--steps", "1", "--tasks", "5", "--baselines",
                 "--output-dir", str(tmp_path / "b")]) == 0
    assert not (tmp_path / "b" / "baselines").exists()
    assert json.loads((tmp_path / "b" / "evaluation.json").read_text())["baselines"] == (
        with_baseline["baselines"])


def test_a_folder_made_for_an_interrupted_evaluation_is_removed(sine_run, tmp_path,
                                                                monkeypatch):
    from metarl.supervised.sine_experiment import SineExperiment

    def interrupted(self, config, state, run_dir, options):
        raise KeyboardInterrupt

    monkeypatch.setattr(SineExperiment, "evaluate", interrupted)
    assert main(["evaluate", str(sine_run), "--output-dir", str(tmp_path / "new")]) == 130
    assert not (tmp_path / "new").exists()


def test_a_relative_run_dir_is_recorded_absolute(sine_run, tmp_path, monkeypatch):
    monkeypatch.chdir(sine_run.parent)
    assert main(["evaluate", sine_run.name, "--steps", "1", "--tasks", "3",
                 "--output-dir", str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert written["run_dir"] == str(sine_run.resolve())


def test_a_baseline_cached_in_the_output_dir_is_reused_there(tmp_path, monkeypatch):
    import metarl.supervised.sine_experiment as sine

    run = tmp_path / "run"
    assert main(["train", "sine-quick", "--run-dir", str(run), *FAST,
                 "--set", "baseline.iterations=5"]) == 0
    out = ["--steps", "1", "--tasks", "5", "--baselines", "--output-dir", str(tmp_path / "a")]
    assert main(["evaluate", str(run), *out]) == 0
    monkeypatch.setattr(sine, "pretrain", lambda config: pytest.fail("trained again"))
    assert main(["evaluate", str(run), *out]) == 0
    assert not (run / "baselines").exists()


def test_meta_rl_baselines_evaluated_elsewhere_leave_the_run_as_it_was(tmp_path):
    from metarl.experiment import config_from_data
    from metarl.rl.build import new_policy_params
    from metarl.rl.experiment import MetaRLExperiment

    _, config = config_from_data({
        "experiment": "meta_rl", "policy": {"hidden_sizes": [4]},
        "env": {"max_episode_steps": 5},
        "training": {"meta_batch_size": 2, "episodes_per_task": 2},
        "baselines": {"pretrained_iterations": 1, "oracle_iterations": 1},
        "evaluation": {"episodes_per_task": 2, "tasks": 3},
        "run": {"progress": False, "tensorboard": False}})
    state = {"trainer": {"params": new_policy_params(config, "init")}, "iteration": 0}
    run, out = tmp_path / "run", tmp_path / "out"
    run.mkdir()
    out.mkdir()
    result = MetaRLExperiment().evaluate(config, state, run, EvaluateOptions(
        steps=1, tasks=2, seed=5, baselines=("random", "pretrained", "oracle"),
        output_dir=out))
    assert set(result["baselines"]) == {"random", "pretrained", "oracle"}
    assert list(run.iterdir()) == []
    assert sorted(p.name for p in (out / "baselines").iterdir()) == ["oracle.pt",
                                                                      "pretrained.pt"]


def test_snapshots_evaluated_into_an_output_dir_leave_the_run_as_it_was(tmp_path, capsys,
                                                                        monkeypatch):
    """--snapshots --output-dir: every checkpoint's evaluation.json (the snapshots' under
    OUT/snapshots/iteration-N/) and the over-training summary go to OUT; the run's files stay
    byte for byte; a second call reuses what OUT holds."""
    run, out = tmp_path / "run", tmp_path / "out"
    assert main(["train", "sine-quick", "--run-dir", str(run), *FAST,
                 "--set", "run.snapshot_every=1"]) == 0
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["evaluate", str(run), "--snapshots", "--steps", "1", "--tasks", "10",
                 "--output-dir", str(out), "--set", "evaluation.later_lr_scale=0.5"]) == 0
    err = capsys.readouterr().err
    assert f"wrote {out / 'evaluation-over-training.json'}" in err and "the run is as it was" in err
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.json")) == [
        "evaluation-over-training.json", "evaluation.json",
        "snapshots/iteration-1/evaluation.json"]
    assert (out / "evaluation-over-training.png").stat().st_size > 0
    summary = json.loads((out / "evaluation-over-training.json").read_text())
    assert summary["iterations"] == [1, 2] and summary["evaluation_config"]["later_lr_scale"] == 0.5
    snapshot = json.loads((out / "snapshots" / "iteration-1" / "evaluation.json").read_text())
    assert snapshot["checkpoint_iteration"] == 1
    import metarl.plots

    titles = []
    monkeypatch.setattr(metarl.plots, "plot_over_training",
                        lambda summary, output, **kwargs: titles.append(kwargs["title"]))
    assert main(["evaluate", str(run), "--snapshots", "--steps", "1", "--tasks", "10",
                 "--output-dir", str(out), "--set", "evaluation.later_lr_scale=0.5",
                 "--set", "run.progress=false"]) == 0
    assert capsys.readouterr().err.count("metarl: reusing the evaluation of") == 2
    # the title names what changes the numbers, not a display setting
    assert titles == ["run (sine, maml): 10 test tasks, evaluation.later_lr_scale=0.5"]
