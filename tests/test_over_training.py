"""`metarl evaluate RUN_DIR --snapshots`: one adaptation curve per snapshot, reused when
already computed, summarized by meta-iteration."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from metarl.checkpoint import load_checkpoint, save_checkpoint
from metarl.cli import main
from metarl.config import from_dict
from metarl.experiment import EvaluateOptions
from metarl.over_training import evaluate_over_training, run_snapshots
from metarl.runner import train_run
from metarl.supervised.sine_experiment import SineConfig, SineExperiment


@pytest.fixture
def run_with_snapshots(tmp_path):
    config = from_dict(SineConfig, {
        "training": {"iterations": 10, "meta_batch_size": 3},
        "evaluation": {"tasks": 20, "steps": 2},
        "run": {"checkpoint_every": 5, "snapshot_every": 4, "progress": False,
                "tensorboard": False}})
    train_run(SineExperiment(), config, tmp_path / "run")
    return tmp_path / "run"


def test_each_row_is_the_evaluation_of_that_checkpoint(run_with_snapshots, tmp_path):
    run = run_with_snapshots
    assert [n for n, _ in run_snapshots(run)] == [4, 8]
    summary = evaluate_over_training(run, EvaluateOptions())
    assert summary["iterations"] == [4, 8, 10]
    assert summary["steps"] == [0, 1, 2] and summary["tasks"] == 20
    written = json.loads((run / "evaluation-over-training.json").read_text())
    assert written["mean"] == summary["mean"] and len(written["ci95"]) == 3
    assert (run / "evaluation-over-training.png").stat().st_size > 0
    # row k equals `metarl evaluate` on a copy of the checkpoint of that iteration
    for row, source in enumerate([run / "snapshots" / "iteration-4",
                                  run / "snapshots" / "iteration-8", run]):
        copy = tmp_path / f"copy-{row}"
        copy.mkdir()
        for name in ("config.yaml", "checkpoint.pt"):
            shutil.copy(source / name, copy / name)
        assert main(["evaluate", str(copy)]) == 0
        direct = json.loads((copy / "evaluation.json").read_text())
        assert summary["mean"][row] == direct["mean"]
        assert summary["ci95"][row] == direct["ci95"]
    assert summary["mean"][0] != summary["mean"][2], "the checkpoints differ"


def test_evaluations_are_reused_only_when_they_match(run_with_snapshots, monkeypatch):
    run = run_with_snapshots
    first = evaluate_over_training(run, EvaluateOptions())

    def fail(*args, **kwargs):
        raise AssertionError("evaluated again")

    monkeypatch.setattr(SineExperiment, "evaluate", fail)
    assert evaluate_over_training(run, EvaluateOptions())["mean"] == first["mean"]
    with pytest.raises(AssertionError, match="evaluated again"):
        evaluate_over_training(run, EvaluateOptions(tasks=10))
    # other evaluation settings (metarl evaluate --set evaluation.KEY=VALUE)
    with pytest.raises(AssertionError, match="evaluated again"):
        evaluate_over_training(run, EvaluateOptions(), ["evaluation.query_points=50"])
    # another checkpoint file at the same iteration (a crashed snapshot written again)
    snapshot = run / "snapshots" / "iteration-4"
    state = load_checkpoint(snapshot / "checkpoint.pt")
    state["trainer"]["params"] = {k: v + 1e-3 for k, v in state["trainer"]["params"].items()}
    save_checkpoint(snapshot / "checkpoint.pt", state)
    with pytest.raises(AssertionError, match="evaluated again"):
        evaluate_over_training(run, EvaluateOptions())
    monkeypatch.undo()
    fewer = evaluate_over_training(run, EvaluateOptions(tasks=10, steps=1))
    assert fewer["tasks"] == 10 and fewer["steps"] == [0, 1]
    assert json.loads((run / "snapshots" / "iteration-4" / "evaluation.json").read_text())[
        "tasks"] == 10


def test_cli_prints_the_table_and_refuses_a_run_without_snapshots(run_with_snapshots, tmp_path,
                                                                  capsys):
    run = run_with_snapshots
    assert main(["evaluate", str(run), "--snapshots", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "iteration 4" in out and "iteration 8" in out and "iteration 10" in out
    # a snapshot whose checkpoint was replaced by a later one is no longer the run at its
    # iteration (`train --resume` refuses to train a snapshot in place; a copy by hand can)
    shutil.copyfile(run / "checkpoint.pt", run / "snapshots" / "iteration-4" / "checkpoint.pt")
    assert main(["evaluate", str(run), "--snapshots", "--steps", "1"]) == 0
    captured = capsys.readouterr()
    assert "skipping" in captured.err and "holds iteration 10" in captured.err
    summary = json.loads((run / "evaluation-over-training.json").read_text())
    assert summary["iterations"] == [8, 10]
    assert summary["directories"] == [os.path.join("snapshots", "iteration-8"), "."]
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("snapshots"))
    assert main(["evaluate", str(bare), "--snapshots"]) == 2
    assert "has no snapshots" in capsys.readouterr().err


@pytest.mark.parametrize("reference", [
    {"name": "MAML paper", "values": {"0": -40.0, "1": -11.7}}, None])
def test_plot_draws_with_and_without_a_reference(tmp_path, reference, saved_figures):
    """One line per step count through its means, and the reference of each step as a dotted
    line in that step's colour."""
    from matplotlib.colors import same_color

    from metarl.plots import plot_over_training

    summary = {"metric": "return", "steps": [0, 1], "iterations": [50, 100],
               "mean": [[-45.0, -20.0], [-44.0, -12.0]], "ci95": [[2.0, 3.0], [2.0, 2.5]],
               "reference": reference}
    output = plot_over_training(summary, tmp_path / "curve.png", shown=[0, 1])
    assert output.read_bytes().startswith(b"\x89PNG")
    (ax,) = saved_figures[-1].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    for column, label in enumerate(["0 steps", "1 step"]):
        assert list(lines[label].get_xdata()) == [50, 100]
        assert list(lines[label].get_ydata()) == [row[column] for row in summary["mean"]]
    dotted = [line for line in ax.get_lines()
              if line.get_linestyle() == ":" and len(line.get_ydata()) == 2]
    if reference is None:
        assert dotted == []
        return
    assert sorted(line.get_ydata()[0] for line in dotted) == [-40.0, -11.7]
    for line in dotted:
        label = "0 steps" if line.get_ydata()[0] == -40.0 else "1 step"
        assert same_color(line.get_color(), lines[label].get_color())
    assert "MAML paper (dotted)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_reference_is_the_published_curve_of_the_runs_shots_or_method():
    from metarl.over_training import _reference

    sine = {"shots": 10, "published": {"MAML paper, K=5": {"1": 0.67},
                                       "MAML paper, K=10": {"1": 0.42, "10": 0.13}}}
    assert _reference(sine, None, 10) == {"name": "MAML paper, K=10",
                                          "values": {"1": 0.42, "10": 0.13}}
    omniglot = {"method": "fomaml", "published": {"MAML": 98.7, "first-order MAML": 98.3}}
    config = from_dict(SineConfig, {"evaluation": {"steps": 3}})
    assert _reference(omniglot, config, 3) == {"name": "first-order MAML (paper)",
                                               "values": {"3": 98.3}}
    assert _reference(omniglot, config, 2) is None  # not evaluated that far
    assert _reference({"published": {}}, config, 3) is None


def test_evaluation_overrides_are_recorded_and_reused(run_with_snapshots, monkeypatch):
    run = run_with_snapshots
    lower_lr = evaluate_over_training(run, EvaluateOptions(), ["evaluation.later_lr_scale=0.25"])
    for path in (run, run / "snapshots" / "iteration-4"):
        written = json.loads((path / "evaluation.json").read_text())
        assert written["evaluation_config"]["later_lr_scale"] == 0.25
    assert "later_lr_scale: 0.5" in (run / "config.yaml").read_text(), "config.yaml unchanged"
    summary = json.loads((run / "evaluation-over-training.json").read_text())
    assert summary["evaluation_config"]["later_lr_scale"] == 0.25
    assert summary["overrides"] == ["evaluation.later_lr_scale=0.25"]
    monkeypatch.setattr(SineExperiment, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    again = evaluate_over_training(run, EvaluateOptions(), ["evaluation.later_lr_scale=0.25"])
    assert again["mean"] == lower_lr["mean"]
    monkeypatch.undo()
    default = evaluate_over_training(run, EvaluateOptions())
    assert default["mean"][0][:2] == lower_lr["mean"][0][:2], "0 and 1 steps: same lr"
    assert default["mean"][0][2] != lower_lr["mean"][0][2], "the second step's lr differs"


def test_baseline_overrides_are_recorded_and_checked_before_reuse(run_with_snapshots,
                                                                   monkeypatch, capsys):
    """``--set baseline.KEY=VALUE`` trains the baseline with that setting; an evaluation that
    holds baselines is reused only for the baseline settings it records."""
    run = run_with_snapshots
    few = ["--set", "baseline.iterations=7"]
    assert main(["evaluate", str(run), "--baselines", *few]) == 0
    written = json.loads((run / "evaluation.json").read_text())
    assert written["baseline_config"]["iterations"] == 7
    assert load_checkpoint(run / "baselines" / "pretrained.pt")["key"]["baseline"][
        "iterations"] == 7
    assert "iterations: 10000" in (run / "config.yaml").read_text(), "config.yaml unchanged"
    pretrained = EvaluateOptions(baselines=("pretrained",))
    evaluate_over_training(run, pretrained, few[1:])  # the snapshots, without baselines
    snapshot_results = [json.loads(path.read_text())
                        for path in (run / "snapshots").glob("iteration-*/evaluation.json")]
    assert snapshot_results and all(not r["baselines"] for r in snapshot_results)
    assert set(json.loads((run / "evaluation.json").read_text())["baselines"]) == {"pretrained"}
    monkeypatch.setattr(SineExperiment, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    evaluate_over_training(run, pretrained, few[1:])
    evaluate_over_training(run, EvaluateOptions())  # no baselines asked: their settings aside
    with pytest.raises(pytest.fail.Exception):  # the run's own 10,000 iterations
        evaluate_over_training(run, pretrained)
    with pytest.raises(pytest.fail.Exception):
        evaluate_over_training(run, pretrained, ["baseline.iterations=8"])
    # recorded settings are read with the defaults of keys they lack
    written = json.loads((run / "evaluation.json").read_text())
    del written["baseline_config"]["lr"]
    (run / "evaluation.json").write_text(json.dumps(written))
    evaluate_over_training(run, pretrained, few[1:])
    # a file from before baseline_config was recorded counts as made with the run's config
    del written["baseline_config"]
    (run / "evaluation.json").write_text(json.dumps(written))
    evaluate_over_training(run, pretrained)
    with pytest.raises(pytest.fail.Exception):
        evaluate_over_training(run, pretrained, few[1:])
    monkeypatch.undo()
    assert main(["evaluate", str(run), "--set", "baseline.iterations=0"]) == 2
    assert "baseline.iterations = 0: must be >= 1" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--set", "baseline.seed=3"]) == 2
    assert "unknown key baseline.seed" in capsys.readouterr().err
    assert main(["render", str(run), "--set", "baseline.iterations=7"]) == 2
    assert "--set changes only evaluation.* keys" in capsys.readouterr().err


def _edit_evaluations(run, change):
    """Apply ``change`` to the evaluation.json of the run and of each snapshot, in place."""
    for path in (run, run / "snapshots" / "iteration-4", run / "snapshots" / "iteration-8"):
        written = json.loads((path / "evaluation.json").read_text())
        change(written)
        (path / "evaluation.json").write_text(json.dumps(written))


def test_evaluation_json_without_its_settings_counts_as_the_run_config(run_with_snapshots,
                                                                       monkeypatch):
    """Files written before evaluation.json recorded its section stay reusable."""
    run = run_with_snapshots
    evaluate_over_training(run, EvaluateOptions())
    _edit_evaluations(run, lambda written: written.pop("evaluation_config"))
    monkeypatch.setattr(SineExperiment, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    evaluate_over_training(run, EvaluateOptions())
    with pytest.raises(pytest.fail.Exception):
        evaluate_over_training(run, EvaluateOptions(), ["evaluation.query_points=50"])


def test_sine_evaluations_scored_the_earlier_way_are_not_reused(run_with_snapshots,
                                                                 monkeypatch):
    """Before scoring_version 2 each K had test tasks of its own: those files are evaluated
    again, the current ones reused."""
    run = run_with_snapshots
    evaluate_over_training(run, EvaluateOptions())
    assert json.loads((run / "evaluation.json").read_text())["scoring_version"] == 2
    monkeypatch.setattr(SineExperiment, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    evaluate_over_training(run, EvaluateOptions())
    _edit_evaluations(run, lambda written: written.pop("scoring_version"))
    with pytest.raises(pytest.fail.Exception):
        evaluate_over_training(run, EvaluateOptions())


def test_recorded_settings_are_read_with_the_defaults_of_later_keys(run_with_snapshots,
                                                                   monkeypatch):
    """An evaluation.json recorded before a key was added still matches that key's default."""
    run = run_with_snapshots
    evaluate_over_training(run, EvaluateOptions())
    assert "steps" not in json.loads((run / "evaluation.json").read_text())[
        "evaluation_config"], "steps is the result's own key"
    # as if written before later_lr_scale existed
    _edit_evaluations(run, lambda written: written["evaluation_config"].pop("later_lr_scale"))
    monkeypatch.setattr(SineExperiment, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    evaluate_over_training(run, EvaluateOptions())
    with pytest.raises(pytest.fail.Exception):
        evaluate_over_training(run, EvaluateOptions(), ["evaluation.later_lr_scale=0.25"])
    written = json.loads((run / "evaluation.json").read_text())
    written["evaluation_config"]["removed_key"] = 1  # a key this version does not know
    (run / "evaluation.json").write_text(json.dumps(written))
    with pytest.raises(pytest.fail.Exception):
        evaluate_over_training(run, EvaluateOptions())


def test_evaluate_set_accepts_only_evaluation_keys(run_with_snapshots, capsys):
    run = run_with_snapshots
    assert main(["evaluate", str(run), "--set", "training.iterations=50"]) == 2
    assert "changes only evaluation.* and baseline.* keys" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--snapshots", "--set", "evaluation.later_lr_scale=2"]) == 2
    assert "evaluation.later_lr_scale = 2.0: must be <= 1" in capsys.readouterr().err
    for key in ("steps", "tasks", "seed"):
        assert main(["evaluate", str(run), "--snapshots", "--set", f"evaluation.{key}=3"]) == 2
        assert f"give --{key} {key.upper()} instead" in capsys.readouterr().err
    assert not (run / "evaluation.json").exists(), "nothing evaluated before the check"


def test_only_complete_numbered_snapshots_count(tmp_path):
    """A snapshot's checkpoint is its last file: a folder without it (a crash while
    snapshotting) is incomplete and left out, as are folders not named iteration-N."""
    root = tmp_path / "snapshots"
    for name, complete in [("iteration-12", True), ("iteration-4", True),
                           ("iteration-8", False), ("iteration-x", True), ("other-3", True)]:
        (root / name).mkdir(parents=True)
        (root / name / "config.yaml").write_text("experiment: sine\n")
        if complete:
            (root / name / "checkpoint.pt").write_bytes(b"")
    assert run_snapshots(tmp_path) == [(4, root / "iteration-4"), (12, root / "iteration-12")]
    assert run_snapshots(tmp_path / "elsewhere") == []


def test_a_saved_evaluation_is_reused_only_for_the_same_checkpoint_settings_and_baselines(
        tmp_path):
    from metarl.checkpoint import save_checkpoint
    from metarl.config import to_dict
    from metarl.evaluation import write_evaluation
    from metarl.over_training import previous_evaluation
    from metarl.supervised.sine_experiment import PretrainedBaselineConfig, SineEvaluationConfig

    save_checkpoint(tmp_path / "checkpoint.pt", {"iteration": 4})
    evaluation, baseline = SineEvaluationConfig(), PretrainedBaselineConfig()
    write_evaluation(tmp_path, {
        "metric": "mse", "mean": [1.0, 0.5], "sem": [0.1, 0.1], "ci95": [0.2, 0.2],
        "checkpoint_iteration": 4, "steps": [0, 1], "tasks": 20, "seed": 3,
        "baseline_names": ["pretrained"]}, to_dict(evaluation), to_dict(baseline))

    def reuse(iteration=4, steps=1, tasks=20, seed=3, baselines=("pretrained",),
              evaluation_config=evaluation, baseline_config=baseline):
        return previous_evaluation(
            tmp_path, iteration, steps, tasks, seed, evaluation_config=evaluation_config,
            saved_evaluation_config=evaluation, baselines=baselines,
            baseline_config=baseline_config, saved_baseline_config=baseline)

    assert reuse()["mean"] == [1.0, 0.5]
    assert reuse(baselines=()) is not None  # fewer baselines than it holds: still good
    assert reuse(baselines=("pretrained", "oracle")) is None  # one it lacks
    assert reuse(seed=4) is None
    assert reuse(tasks=10) is None
    assert reuse(steps=0) is None and reuse(steps=2) is None
    assert reuse(iteration=5) is None
    assert reuse(evaluation_config=SineEvaluationConfig(query_points=50)) is None
    assert reuse(baseline_config=PretrainedBaselineConfig(iterations=5)) is None
    save_checkpoint(tmp_path / "checkpoint.pt", {"iteration": 4, "other": True})
    assert reuse() is None  # the checkpoint file changed


def test_a_snapshot_of_the_latest_iteration_is_one_row(tmp_path):
    from metarl.experiment import EvaluateOptions
    from metarl.over_training import evaluate_over_training
    from metarl.runner import train_run
    from metarl.supervised.sine_experiment import SineConfig, SineExperiment
    config = from_dict(SineConfig, {
        "training": {"iterations": 8, "meta_batch_size": 3},
        "evaluation": {"tasks": 5, "steps": 1, "shots": [5]},
        "run": {"checkpoint_every": 4, "snapshot_every": 4, "progress": False,
                "tensorboard": False}})
    train_run(SineExperiment(), config, tmp_path / "run")
    summary = evaluate_over_training(tmp_path / "run", EvaluateOptions())
    assert summary["iterations"] == [4, 8]
    assert summary["directories"] == ["snapshots/iteration-4", "."]


def test_every_snapshot_is_evaluated_with_the_runs_settings_as_edited(run_with_snapshots):
    """An evaluation section edited by hand in the run's config.yaml (allowed) applies to
    every point of the curve, not to the latest checkpoint alone."""
    run = run_with_snapshots
    config_file = run / "config.yaml"
    config_file.write_text(config_file.read_text().replace("later_lr_scale: 0.5",
                                                           "later_lr_scale: 0.25"))
    summary = evaluate_over_training(run, EvaluateOptions())
    assert summary["evaluation_config"]["later_lr_scale"] == 0.25
    for directory in summary["directories"]:
        written = json.loads((run / directory / "evaluation.json").read_text())
        assert written["evaluation_config"]["later_lr_scale"] == 0.25, directory
        assert written["inner_lr"][1] == pytest.approx(0.0025), directory
    assert "later_lr_scale: 0.5" in (run / "snapshots" / "iteration-4" / "config.yaml"
                                     ).read_text(), "the snapshot's own config stays"


def test_a_snapshot_is_evaluated_where_the_runs_data_now_lives():
    """Omniglot snapshots keep what they trained but read the data where the run's
    config.yaml says it lives now (a moved data folder), on the run's device now, with the
    run's evaluation."""
    from metarl.experiment import get_experiment
    from metarl.over_training import _evaluated_as
    from metarl.supervised.omniglot_experiment import OmniglotConfig

    omniglot = get_experiment("omniglot")
    snapshot = from_dict(OmniglotConfig, {
        "data": {"root": "/old/omniglot", "cache_dir": "/old/cache"},
        "training": {"meta_batch_size": 3}, "evaluation": {"tasks": 50}})
    run = from_dict(OmniglotConfig, {
        "device": "cuda:1",
        "data": {"root": "/new/omniglot", "cache_dir": "/new/cache", "download": True},
        "training": {"meta_batch_size": 7}, "evaluation": {"tasks": 80},
        "run": {"progress": False, "checkpoint_every": 9}})
    evaluated = _evaluated_as(omniglot, snapshot, run)
    assert evaluated.run.progress is False, "evaluate --set run.progress=false, for every point"
    assert evaluated.run.checkpoint_every == snapshot.run.checkpoint_every
    assert (evaluated.data.root, evaluated.data.cache_dir) == ("/new/omniglot", "/new/cache")
    assert evaluated.data.download is True and evaluated.evaluation.tasks == 80
    assert evaluated.device == "cuda:1" and snapshot.device == "cpu"
    assert evaluated.training.meta_batch_size == 3  # what the snapshot trained stays its own


def test_the_over_training_picture_names_what_was_evaluated():
    from metarl.over_training import describe_result

    assert describe_result({"experiment": "omniglot", "ways": 20, "shots": 5,
                            "method": "reptile"}) == "Omniglot 20-way 5-shot, reptile"
    assert describe_result({"experiment": "meta_rl", "env": "navigation2d",
                            "method": "maml"}) == "navigation2d, maml"
    assert describe_result({"experiment": "sine", "method": "fomaml"}) == "sine, fomaml"
    assert describe_result({}) == "run"
