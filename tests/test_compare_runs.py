"""scripts/compare_runs.py: runs side by side, from their files, without sampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from script_modules import load_script

from metarl.plots import moving_average


def _script():
    return load_script("compare_runs")


def _evaluation(iteration: int, means: list[float]) -> dict:
    return {"steps": list(range(len(means))), "checkpoint_iteration": iteration, "mean": means,
            "ci95": [1.0] * len(means), "published": {"MAML paper": {"0": -50.0, "1": 293.0}}}


def _run(root: Path, name: str, returns: list[float]) -> Path:
    run = root / name
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"iteration": i + 1, "return_after": r, "kl": 0.01}) + "\n"
        for i, r in enumerate(returns)))
    return run


def test_moving_average_by_hand():
    np.testing.assert_allclose(moving_average([1.0, 3.0, 5.0, 7.0], 2), [1.0, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(moving_average([2.0, 4.0, 9.0], 5), [2.0, 3.0, 5.0])


def test_compare_runs_reads_training_and_evaluations(tmp_path, capsys):
    plain = _run(tmp_path, "plain", [float(i) for i in range(1, 7)])  # 1..6
    (plain / "evaluation.json").write_text(json.dumps(_evaluation(6, [-40.0, 120.0])))
    snapshot = plain / "snapshots" / "iteration-3"
    snapshot.mkdir(parents=True)
    (snapshot / "evaluation.json").write_text(json.dumps(_evaluation(3, [-45.0, 80.0])))
    summarized = _run(tmp_path, "summarized", [10.0] * 6)
    (summarized / "evaluation-over-training.json").write_text(json.dumps({
        "steps": [0, 1, 2], "iterations": [2, 4], "mean": [[0, 50, 60], [0, 70, 80]],
        "ci95": [[1, 5, 6], [1, 7, 8]]}))
    output = tmp_path / "runs.png"
    _script().main([f"a={plain}", str(summarized), "--window", "3", "--output", str(output),
                    "--until", "5"])
    out = capsys.readouterr().out.splitlines()
    assert output.stat().st_size > 0
    # iterations 1-5 only (--until); means over 3 printed every 3 iterations: at 3, (1+2+3)/3
    assert out[0] == "a: return_after, mean over 3 iterations: 3: 2.0"
    assert out[1] == "  evaluated after 1 step(s): 3: 80.0 ± 1"  # iteration 6 is after 5
    assert out[2].startswith("summarized: return_after, mean over 3 iterations: 3: 10.0")
    assert out[3] == "  evaluated after 1 step(s): 2: 50.0 ± 5, 4: 70.0 ± 7"
    rows, published = _script().evaluated_returns(plain, 1)
    assert rows == [(3, 80.0, 1.0), (6, 120.0, 1.0)] and published["MAML paper"]["1"] == 293.0
    assert _script().evaluated_returns(summarized, 3) == ([], {})


def test_compare_runs_refuses_bad_input(tmp_path, capsys):
    run = _run(tmp_path, "run", [1.0, 2.0])
    script = _script()
    with pytest.raises(SystemExit) as exit_info:
        script.main([str(tmp_path / "missing"), "--output", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main([str(run), "--metric", "loss", "--output", str(tmp_path / "x.png")])
    assert "has no 'loss' (metrics: iteration, return_after, kl)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main([f"x={run}", f"x={run}", "--output", str(tmp_path / "x.png")])
    assert "labels must differ" in capsys.readouterr().err


def test_until_keeps_its_own_iteration_and_the_reference_is_of_the_step_asked(tmp_path,
                                                                              monkeypatch,
                                                                              capsys):
    """`--until 3` keeps iteration 3 (training and evaluations); the dotted reference is the
    first published curve that has the step asked for, at that step; an evaluation summary
    without that step still passes on the published values; --window 0 is refused."""
    script = _script()
    run = _run(tmp_path, "run", [float(i) for i in range(1, 7)])
    evaluation = _evaluation(6, [-40.0, 120.0])
    evaluation["published"] = {"MAML paper": {"0": -50.0, "1": 293.0},
                               "oracle": {"0": 442.0, "1": 400.0}, "late": {"2": 1.0}}
    (run / "evaluation.json").write_text(json.dumps(evaluation))
    snapshot = run / "snapshots" / "iteration-3"
    snapshot.mkdir(parents=True)
    (snapshot / "evaluation.json").write_text(json.dumps(_evaluation(3, [-45.0, 80.0])))
    drawn = []
    monkeypatch.setattr(script, "plot_runs_compared", lambda training, evaluations, output,
                        **kwargs: drawn.append((training, evaluations, kwargs["reference"])))
    for step, reference in ((0, ("MAML paper, 0 steps", -50.0)),
                            (1, ("MAML paper, 1 step", 293.0)), (2, ("late, 2 steps", 1.0))):
        script.main([f"a={run}", "--until", "3", "--step", str(step), "--window", "1",
                     "--output", str(tmp_path / "x.png")])
        training, evaluations, drawn_reference = drawn[-1]
        assert [i for i, _ in training["a"]] == [1, 2, 3]
        assert [row[0] for row in evaluations["a"]] == ([3] if step < 2 else [])
        assert drawn_reference == reference
    capsys.readouterr()
    (run / "evaluation-over-training.json").write_text(json.dumps({
        "steps": [0, 1], "iterations": [3, 6], "mean": [[0, 1], [0, 2]],
        "ci95": [[1, 1], [1, 1]]}))
    assert script.evaluated_returns(run, 2) == ([], evaluation["published"])
    with pytest.raises(SystemExit) as exit_info:
        script.main([str(run), "--window", "0", "--output", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    assert "--window must be at least 1, got 0" in capsys.readouterr().err


def test_compare_runs_takes_omniglot_runs_and_their_published_accuracies(tmp_path,
                                                                         monkeypatch,
                                                                         capsys):
    """An Omniglot run: the training metric asked for, the evaluated accuracy by iteration,
    and a published accuracy (one number, after the paper's own test steps) drawn at the
    last step the evaluation scored."""
    script = _script()
    run = tmp_path / "reptile"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"iteration": i + 1, "query_loss": 1.0, "query_accuracy": 80.0 + i}) + "\n"
        for i in range(4)))
    (run / "evaluation.json").write_text(json.dumps({
        "metric": "accuracy (%)", "steps": [0, 1, 2, 3], "checkpoint_iteration": 4,
        "mean": [20.0, 90.0, 91.0, 92.0], "ci95": [1.0] * 4,
        "published": {"MAML": 98.7, "Reptile": 97.68}}))
    drawn = []
    monkeypatch.setattr(script, "plot_runs_compared", lambda training, evaluations, output,
                        **kwargs: drawn.append((evaluations, kwargs)))
    script.main([f"r={run}", "--metric", "query_accuracy", "--step", "3", "--window", "1",
                 "--output", str(tmp_path / "x.png")])
    evaluations, kwargs = drawn[-1]
    assert evaluations == {"r": [(4, 92.0, 1.0)]}
    assert kwargs["reference"] == ("MAML, 3 steps", 98.7)
    assert kwargs["evaluated"] == "accuracy (%) after 3 steps"
    script.main([f"r={run}", "--metric", "query_accuracy", "--step", "1", "--window", "1",
                 "--output", str(tmp_path / "x.png")])
    assert drawn[-1][1]["reference"] is None, "the papers' accuracies are not after 1 step"
    assert "r: query_accuracy, mean over 1 iterations: 1: 80.0" in capsys.readouterr().out
