"""`metarl evaluate RUN_DIR --snapshots`: one adaptation curve per snapshot, reused when
already computed, summarized by meta-iteration."""

from __future__ import annotations

import json
import shutil

import pytest

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
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("snapshots"))
    assert main(["evaluate", str(bare), "--snapshots"]) == 2
    assert "has no snapshots" in capsys.readouterr().err


@pytest.mark.parametrize("published", [{"MAML paper": {"0": -40.0, "1": -11.7}},
                                       {"MAML": 98.7, "Reptile": 97.7}, {}])
def test_plot_takes_each_published_form(tmp_path, published):
    from metarl.plots import plot_over_training

    summary = {"metric": "return", "steps": [0, 1], "iterations": [50, 100],
               "mean": [[-45.0, -20.0], [-44.0, -12.0]], "ci95": [[2.0, 3.0], [2.0, 2.5]],
               "published": published}
    output = plot_over_training(summary, tmp_path / "curve.png", shown=[0, 1])
    assert output.read_bytes().startswith(b"\x89PNG")
