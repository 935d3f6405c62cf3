"""metarl.evaluation's summaries, console tables and
evaluation.json, checked by hand."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from metarl.checkpoint import save_checkpoint
from metarl.evaluation import (
    first_step_worse_than_start,
    format_table,
    shown_steps,
    summarize,
    write_evaluation,
)


def test_one_task_has_zero_standard_error_and_no_tasks_are_refused():
    out = summarize(np.array([[1.0, 2.5]]))  # T = 1: std(ddof=1) is undefined, SEM is 0
    assert out == {"mean": [1.0, 2.5], "sem": [0.0, 0.0], "ci95": [0.0, 0.0]}
    with pytest.raises(ValueError, match="expected values of shape"):
        summarize(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="expected values of shape"):
        summarize(np.zeros(3))


@pytest.mark.parametrize(("steps", "shown"), [
    ([0], [0]),
    ([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]),  # up to 6: all
    ([0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 5, 6]),  # more: 0-3, 5 and the last
    (list(range(11)), [0, 1, 2, 3, 5, 10]),
])
def test_console_tables_show_steps_0_to_3_5_and_the_last(steps, shown):
    assert shown_steps(steps) == shown


def test_each_table_cell_is_that_steps_mean_and_ci95():
    curves = {"maml": {"mean": [1.0, 2.0, 3.0], "ci95": [0.1, 0.2, 0.3]}}
    header, row, legend = format_table(curves, [0, 1, 2], "mse").splitlines()
    assert header.split() == ["mse", "step", "0", "step", "1", "step", "2"]
    assert re.findall(r"(\S+) ± (\S+)", row) == [("1", "0.1"), ("2", "0.2"), ("3", "0.3")]
    assert "95% confidence interval" in legend, "papers' ± is often one standard error"


def test_table_cells_keep_whole_numbers_out_of_exponent_notation():
    """Four significant digits for the mean and two for the CI, but a CI of 240 is 240 (not
    2.4e+02) and a return of -12345 stays whole; small numbers keep their digits."""
    curves = {"maml": {"mean": [-216.4, -12345.0, 0.000123], "ci95": [240.0, 1234.0, 1e-5]}}
    _, row, _ = format_table(curves, [0, 1, 2], "return").splitlines()
    assert re.findall(r"(\S+) ± (\S+)", row) == [("-216.4", "240"), ("-12345", "1234"),
                                                   ("0.000123", "1e-05")]


def test_evaluation_json_records_the_checkpoint_hash_and_the_settings(tmp_path,
                                                                        monkeypatch):
    save_checkpoint(tmp_path / "checkpoint.pt", {"iteration": 3})
    evaluation = {"tasks": 40, "steps": 3, "seed": 7, "inner_lr": None, "later_lr_scale": 0.5}
    path = write_evaluation(tmp_path, {"mean": [1.0]}, evaluation)
    written = json.loads(path.read_text())
    assert written["mean"] == [1.0]
    assert written["checkpoint_sha256"] == hashlib.sha256(
        (tmp_path / "checkpoint.pt").read_bytes()).hexdigest()
    # steps, tasks and seed are the result's own keys, the rest of the section is recorded
    assert written["evaluation_config"] == {"inner_lr": None, "later_lr_scale": 0.5}
    assert "baseline_config" not in written
    with_baselines = json.loads(write_evaluation(tmp_path, {}, evaluation,
                                                 {"oracle_iterations": 2}).read_text())
    assert with_baselines["baseline_config"] == {"oracle_iterations": 2}
    save_checkpoint(tmp_path / "checkpoint.pt", {"iteration": 4})  # another checkpoint
    again = json.loads(write_evaluation(tmp_path, {}, evaluation).read_text())
    assert again["checkpoint_sha256"] != written["checkpoint_sha256"]
    # the run itself, named another way (relative, or through ..): no run_dir written
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(tmp_path)
    for same in (Path("run"), run / ".." / "run"):
        assert "run_dir" not in json.loads(write_evaluation(run, {}, evaluation,
                                                            output_dir=same).read_text())
    elsewhere = json.loads(write_evaluation(run, {}, evaluation,
                                            output_dir=tmp_path).read_text())
    assert elsewhere["run_dir"] == str(run.resolve())
    (tmp_path / "checkpoint.pt").unlink()
    assert json.loads(write_evaluation(tmp_path, {}, evaluation).read_text())[
        "checkpoint_sha256"] is None


def test_the_first_step_worse_than_the_start_is_where_adapting_diverges():
    assert first_step_worse_than_start([3.0, 0.5, 0.4, 2.9]) is None  # below the start
    assert first_step_worse_than_start([3.0, 0.5, 3.5, 9.0]) == 2
    assert first_step_worse_than_start([3.0, 3.0001]) == 1
    assert first_step_worse_than_start([3.0, 3.0, 1.0]) is None  # level is not above
    assert first_step_worse_than_start([3.0]) is None  # not adapted
