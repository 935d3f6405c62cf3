"""Runs on disk: resume gives the uninterrupted numbers, divergence keeps the last good state."""

from __future__ import annotations

import json
import math
import os
import re
import signal
from pathlib import Path

import pytest
import torch

import metarl.runner as runner
from metarl.checkpoint import load_checkpoint, save_checkpoint
from metarl.config import ConfigError, from_dict, to_dict
from metarl.runner import (
    TrainingStopped,
    _deferred_interrupts,
    load_run,
    snapshot_dir,
    train_run,
)
from metarl.supervised.sine_experiment import SineConfig, SineExperiment
from metarl.supervised.trainer import SupervisedMetaTrainer

from signals import signal_during_iteration


def small_config(**training):
    return from_dict(SineConfig, {
        "training": {"iterations": 24, "meta_batch_size": 5, **training},
        "run": {"checkpoint_every": 5, "progress": False, "tensorboard": False},
    })


def metric_values(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["iteration"], r["query_loss"]) for r in map(json.loads, lines)]


def final_params(run_dir):
    return load_checkpoint(run_dir / "checkpoint.pt")["trainer"]["params"]


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_runs_with_one_seed_give_identical_numbers(tmp_path):
    experiment = SineExperiment()
    train_run(experiment, small_config(), tmp_path / "a")
    train_run(experiment, small_config(), tmp_path / "b")
    assert metric_values(tmp_path / "a") == metric_values(tmp_path / "b")
    assert_same_params(final_params(tmp_path / "a"), final_params(tmp_path / "b"))
    other = from_dict(SineConfig, {**{"seed": 1}, "training": {"iterations": 24,
                                                               "meta_batch_size": 5},
                                   "run": {"progress": False, "tensorboard": False}})
    train_run(experiment, other, tmp_path / "c")
    assert metric_values(tmp_path / "c") != metric_values(tmp_path / "a")


def test_run_directory_holds_config_checkpoint_logs_and_curve(tmp_path, monkeypatch):
    config = from_dict(SineConfig, {"training": {"iterations": 6, "meta_batch_size": 3},
                                    "run": {"checkpoint_every": 2, "progress": False}})
    train_run(SineExperiment(), config, tmp_path / "run")
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.yaml", "checkpoint.pt", "metrics.jsonl", "tensorboard",
            "learning_curve.png"} <= names
    drawn = []
    monkeypatch.setattr("metarl.plots.plot_learning_curve",
                        lambda *args, **kwargs: drawn.append(kwargs))
    train_run(SineExperiment(), config, tmp_path / "again")
    assert drawn == [dict(zip(("title", "panels"),
                              SineExperiment().learning_curve(config), strict=True))]
    assert any(p.name.startswith("events.out.tfevents")
               for p in (tmp_path / "run" / "tensorboard").iterdir())
    _, loaded, state = load_run(tmp_path / "run")
    assert loaded == config and state["iteration"] == 6
    with pytest.raises(ConfigError, match="already holds a run"):
        train_run(SineExperiment(), config, tmp_path / "run")


def test_interrupt_then_resume_reaches_the_uninterrupted_numbers(tmp_path, monkeypatch,
                                                                  capfd):
    experiment = SineExperiment()
    train_run(experiment, small_config(), tmp_path / "straight")

    # Ctrl-C arrives during meta-iteration 13
    original = signal_during_iteration(monkeypatch, SupervisedMetaTrainer, 12)
    with pytest.raises(TrainingStopped, match="interrupted after meta-iteration 13") as stop:
        train_run(experiment, small_config(), tmp_path / "resumed")
    assert stop.value.exit_code == 130
    assert "a second Ctrl-C (or SIGTERM) stops at once" in capfd.readouterr().err
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["iteration"] == 13
    assert (tmp_path / "resumed" / "learning_curve.png").stat().st_size > 0  # so far
    monkeypatch.setattr(SupervisedMetaTrainer, "train_iteration", original)

    experiment, config, _ = load_run(tmp_path / "resumed")
    train_run(experiment, config, tmp_path / "resumed", resume=True)
    assert metric_values(tmp_path / "resumed") == metric_values(tmp_path / "straight")
    assert_same_params(final_params(tmp_path / "resumed"), final_params(tmp_path / "straight"))


def snapshot_config(*, checkpoint_every: int):
    """10 iterations with a snapshot every 4."""
    return from_dict(SineConfig, {
        "training": {"iterations": 10, "meta_batch_size": 3},
        "run": {"checkpoint_every": checkpoint_every, "snapshot_every": 4, "progress": False,
                "tensorboard": False}})


def test_snapshots_hold_the_run_as_it_stood_and_act_as_run_directories(tmp_path):
    experiment = SineExperiment()
    config = snapshot_config(checkpoint_every=5)
    train_run(experiment, config, tmp_path / "run")
    snapshots = tmp_path / "run" / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["iteration-4", "iteration-8"]
    for n in (4, 8):
        snapshot = snapshot_dir(tmp_path / "run", n)
        assert sorted(p.name for p in snapshot.iterdir()) == [
            "checkpoint.pt", "config.yaml", "metrics.jsonl"]
        _, loaded, state = load_run(snapshot)
        assert loaded == config and state["iteration"] == n
        assert metric_values(snapshot) == metric_values(tmp_path / "run")[:n]
        # the same parameters as a run that stops after n iterations
        shorter = from_dict(SineConfig, {**to_dict(config), "training": {
            **to_dict(config)["training"], "iterations": n}})
        train_run(experiment, shorter, tmp_path / f"short-{n}")
        assert_same_params(final_params(snapshot), final_params(tmp_path / f"short-{n}"))
    # branching: resuming a snapshot continues it to the full run's numbers
    train_run(experiment, config, snapshot_dir(tmp_path / "run", 8), resume=True)
    assert metric_values(snapshot_dir(tmp_path / "run", 8)) == metric_values(tmp_path / "run")
    assert_same_params(final_params(snapshot_dir(tmp_path / "run", 8)),
                       final_params(tmp_path / "run"))
    assert [p.name for p in (tmp_path / "short-4" / "snapshots").iterdir()] == ["iteration-4"]


@pytest.mark.parametrize("crash_after", ["snapshot config", "snapshot checkpoint"])
def test_crash_while_snapshotting_then_resume_keeps_every_snapshot(tmp_path, monkeypatch,
                                                                    crash_after):
    import metarl.runner as runner

    experiment = SineExperiment()
    config = snapshot_config(checkpoint_every=3)
    train_run(experiment, config, tmp_path / "straight")
    original_write = runner.atomic_write_bytes
    original_save = runner.save_checkpoint
    snapshot_8 = snapshot_dir(tmp_path / "crashed", 8)

    def crash_in_config_copy(path, data):
        original_write(path, data)
        if Path(path) == snapshot_8 / "config.yaml":
            raise RuntimeError("power cut")

    def crash_after_snapshot_checkpoint(path, state):
        original_save(path, state)
        if Path(path) == snapshot_8 / "checkpoint.pt":
            raise RuntimeError("power cut")

    if crash_after == "snapshot config":
        monkeypatch.setattr(runner, "atomic_write_bytes", crash_in_config_copy)
    else:
        monkeypatch.setattr(runner, "save_checkpoint", crash_after_snapshot_checkpoint)
    with pytest.raises(RuntimeError, match="power cut"):
        train_run(experiment, config, tmp_path / "crashed")
    # the run's own checkpoint is still at the last one before the snapshot
    assert load_checkpoint(tmp_path / "crashed" / "checkpoint.pt")["iteration"] == 6
    monkeypatch.undo()
    train_run(experiment, config, tmp_path / "crashed", resume=True)
    assert metric_values(tmp_path / "crashed") == metric_values(tmp_path / "straight")
    for n in (4, 8):
        assert sorted(p.name for p in snapshot_dir(tmp_path / "crashed", n).iterdir()) == [
            "checkpoint.pt", "config.yaml", "metrics.jsonl"]
        assert_same_params(final_params(snapshot_dir(tmp_path / "crashed", n)),
                           final_params(snapshot_dir(tmp_path / "straight", n)))
        assert (metric_values(snapshot_dir(tmp_path / "crashed", n))
                == metric_values(tmp_path / "straight")[:n])


def test_no_snapshots_by_default(tmp_path):
    train_run(SineExperiment(), small_config(), tmp_path / "run")
    assert not (tmp_path / "run" / "snapshots").exists()


def _power_cut_at(monkeypatch: pytest.MonkeyPatch, crash_iteration: int) -> None:
    """Make supervised training raise RuntimeError("power cut") at ``crash_iteration``."""
    original = SupervisedMetaTrainer.train_iteration

    def crashing(self, iteration):
        if iteration == crash_iteration:
            raise RuntimeError("power cut")
        return original(self, iteration)

    monkeypatch.setattr(SupervisedMetaTrainer, "train_iteration", crashing)


def test_crash_then_resume_from_last_checkpoint_reaches_the_same_numbers(tmp_path, monkeypatch):
    experiment = SineExperiment()
    train_run(experiment, small_config(), tmp_path / "straight")
    original = SupervisedMetaTrainer.train_iteration
    _power_cut_at(monkeypatch, 17)
    with pytest.raises(RuntimeError, match="power cut"):
        train_run(experiment, small_config(), tmp_path / "crashed")
    assert load_checkpoint(tmp_path / "crashed" / "checkpoint.pt")["iteration"] == 15
    monkeypatch.setattr(SupervisedMetaTrainer, "train_iteration", original)
    train_run(experiment, small_config(), tmp_path / "crashed", resume=True)
    assert metric_values(tmp_path / "crashed") == metric_values(tmp_path / "straight")
    assert_same_params(final_params(tmp_path / "crashed"), final_params(tmp_path / "straight"))


def _nan_query_from_batch(monkeypatch, first: int) -> None:
    """Sine trainers whose sampled meta-batches, from the ``first``-th on, hold a NaN target."""
    make_trainer = SineExperiment.make_trainer

    def poisoned(self, config):
        trainer = make_trainer(self, config)
        sample, calls = trainer.sample_batch, []

        def sample_with_nan(generator):
            batch = sample(generator)
            calls.append(1)
            if len(calls) >= first:
                batch.query_y[0, 0, 0] = float("nan")
            return batch

        trainer.sample_batch = sample_with_nan
        return trainer

    monkeypatch.setattr(SineExperiment, "make_trainer", poisoned)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    experiment = SineExperiment()
    _nan_query_from_batch(monkeypatch, 8)
    with pytest.raises(TrainingStopped, match="meta-iteration 8: query loss nan") as stop:
        train_run(experiment, small_config(), tmp_path / "run")
    assert stop.value.exit_code == 1
    assert "last good checkpoint (iteration 5)" in str(stop.value)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["iteration"] == 5
    assert all(torch.isfinite(v).all() for v in state["trainer"]["params"].values())


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"iteration": 1})

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"iteration": 2})
    monkeypatch.undo()
    assert load_checkpoint(path) == {"iteration": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_load_or_compute_reuses_the_cache_only_for_the_same_key(tmp_path):
    from metarl.checkpoint import load_or_compute

    calls = []

    def compute():
        calls.append(1)
        return {"w": torch.tensor([float(len(calls))])}

    path = tmp_path / "baselines" / "pretrained.pt"
    first = load_or_compute(path, {"seed": 0}, compute)
    again = load_or_compute(path, {"seed": 0}, compute)
    assert len(calls) == 1 and torch.equal(first["w"], again["w"])
    changed = load_or_compute(path, {"seed": 1}, compute)
    assert len(calls) == 2 and float(changed["w"]) == 2.0

    path.write_bytes(b"")  # a damaged cache is computed again
    assert float(load_or_compute(path, {"seed": 1}, compute)["w"]) == 3.0


def test_load_or_compute_reads_the_read_only_caches_before_its_own(tmp_path):
    """An evaluation written elsewhere uses the run's cached baseline (``also_read``) first,
    as the docstring promises, even where its own folder holds one for the same key."""
    from metarl.checkpoint import load_or_compute, save_checkpoint

    own, runs = tmp_path / "out" / "oracle.pt", tmp_path / "run" / "oracle.pt"
    save_checkpoint(own, {"key": {"seed": 0}, "value": "written here"})
    save_checkpoint(runs, {"key": {"seed": 0}, "value": "the run's"})

    def compute():
        raise AssertionError("a matching cache exists")

    assert load_or_compute(own, {"seed": 0}, compute, also_read=[runs]) == "the run's"
    assert load_or_compute(own, {"seed": 0}, compute) == "written here"


@pytest.mark.parametrize("content", [b"", b"garbage\n", b"PK\x03\x04 not a zip"])
def test_a_damaged_checkpoint_is_a_clear_error(tmp_path, content):
    from metarl.checkpoint import UnreadableCheckpointError

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(UnreadableCheckpointError, match="can't be read as a metarl checkpoint"):
        load_checkpoint(path)


def test_config_file_must_match_what_the_checkpoint_trained(tmp_path):
    run = tmp_path / "run"
    train_run(SineExperiment(), small_config(iterations=3), run)
    text = (run / "config.yaml").read_text()
    # how long it trains, its bookkeeping and its evaluation may change after the start
    # and so may the baselines it is compared with
    assert "  iterations: 10000  # joint-training" in text
    (run / "config.yaml").write_text(text.replace("iterations: 3 ", "iterations: 9 ")
                                     .replace("progress: false", "progress: true")
                                     .replace("tasks: 600", "tasks: 50")
                                     .replace("iterations: 10000 ", "iterations: 20 "))
    _, config, _ = load_run(run)
    assert config.training.iterations == 9 and config.evaluation.tasks == 50
    assert config.baseline.iterations == 20
    (run / "config.yaml").write_text(text.replace("outer_lr: 0.001", "outer_lr: 0.5"))
    with pytest.raises(ConfigError, match=r"says training.outer_lr = 0.5, but .*checkpoint.pt "
                                          r"was trained with training.outer_lr = 0.001"):
        load_run(run)
    (run / "config.yaml").write_text("experiment: meta_rl\n")
    with pytest.raises(ConfigError, match=r"configures experiment meta_rl but .* holds a "
                                          r"run of experiment sine;"):
        load_run(run)


def test_sigterm_stops_after_the_iteration_with_exit_code_143(tmp_path, monkeypatch):
    signal_during_iteration(monkeypatch, SupervisedMetaTrainer, 2, signal.SIGTERM)
    with pytest.raises(TrainingStopped, match="interrupted after meta-iteration 3") as stop:
        train_run(SineExperiment(), small_config(), tmp_path / "run")
    assert stop.value.exit_code == 128 + signal.SIGTERM
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 3


def test_divergence_before_the_first_checkpoint_says_there_is_none(tmp_path, monkeypatch):
    config = small_config()
    _nan_query_from_batch(monkeypatch, 1)
    with pytest.raises(TrainingStopped, match="meta-iteration 1: query loss nan") as stop:
        train_run(SineExperiment(), config, tmp_path / "run")
    assert "No checkpoint had been written yet (one is written every 5 meta-iterations" in (
        str(stop.value))
    assert "last good checkpoint" not in str(stop.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def _first_weight(state):
    return next(iter(state["trainer"]["params"].values()))


@pytest.mark.parametrize(("change", "message"), [
    (lambda state: state.pop("trainer"), "'trainer' is missing"),
    (lambda state: state.pop("config"), "'config' is missing"),
    (lambda state: state.update(iteration="12"), "'iteration' is of type str, not int"),
    (lambda state: state["trainer"].pop("params"), "its trainer holds no parameter tensors"),
    (lambda state: _first_weight(state).view(-1).__setitem__(3, float("inf")),
     "holds non-finite weights in "),
])
def test_a_readable_checkpoint_without_a_runs_contents_or_with_broken_weights_is_refused(
        tmp_path, change, message):
    from metarl.checkpoint import UnreadableCheckpointError

    config = from_dict(SineConfig, {"training": {"iterations": 2, "meta_batch_size": 2},
                                    "run": {"progress": False, "tensorboard": False}})
    train_run(SineExperiment(), config, tmp_path / "run")
    path = tmp_path / "run" / "checkpoint.pt"
    state = load_checkpoint(path)
    change(state)
    save_checkpoint(path, state)
    with pytest.raises(UnreadableCheckpointError, match=message):
        load_run(tmp_path / "run")


def test_a_damaged_run_checkpoint_points_to_the_snapshots_the_run_keeps(tmp_path,
                                                                         monkeypatch):
    from metarl.checkpoint import UnreadableCheckpointError

    def trained(name, snapshot_every):
        config = from_dict(SineConfig, {"training": {"iterations": 6, "meta_batch_size": 2},
                                        "run": {"checkpoint_every": 2, "progress": False,
                                                "tensorboard": False,
                                                "snapshot_every": snapshot_every}})
        train_run(SineExperiment(), config, tmp_path / name)
        return tmp_path / name

    plain = trained("plain", 0)
    (plain / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(UnreadableCheckpointError,
                       match=r"damaged.*keeps no snapshots to go back to") as error:
        load_run(plain)
    assert "cp -r" not in str(error.value)

    kept = trained("kept", 2)
    (kept / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(UnreadableCheckpointError,
                       match="snapshots keep 3 earlier state") as error:
        load_run(kept)
    assert f"the latest in {snapshot_dir(kept, 6)};" in str(error.value)
    assert (f"cp -r {snapshot_dir(kept, 6)} NEW_RUN && metarl train --resume NEW_RUN"
            in str(error.value))

    # a damaged snapshot: the run's checkpoint and other snapshots are other files
    (snapshot_dir(kept, 4) / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(UnreadableCheckpointError) as error:
        load_run(snapshot_dir(kept, 4))
    assert f"{snapshot_dir(kept, 4)} is a snapshot of the run in {kept};" in str(error.value)
    assert "Move this snapshot aside" in str(error.value) and "afresh" not in str(error.value)
    monkeypatch.chdir(snapshot_dir(kept, 4))  # spelled from inside it
    with pytest.raises(UnreadableCheckpointError,
                       match=re.escape(f". is a snapshot of the run in {kept.resolve()};")):
        load_run(".")


def test_a_non_finite_metric_stops_training_even_when_the_trainer_raises_nothing(
        tmp_path, monkeypatch):
    original = SupervisedMetaTrainer.train_iteration

    def reporting_nan(self, iteration):
        metrics = original(self, iteration)
        return {**metrics, "query_loss": float("nan")} if iteration == 2 else metrics

    monkeypatch.setattr(SupervisedMetaTrainer, "train_iteration", reporting_nan)
    monkeypatch.setattr(runner, "_plot_learning_curve", lambda *args: None)  # no matplotlib
    config = from_dict(SineConfig, {"model": {"hidden_sizes": [8]},
                                    "training": {"iterations": 6, "meta_batch_size": 1},
                                    "run": {"checkpoint_every": 2, "progress": False,
                                            "tensorboard": False}})
    with pytest.raises(TrainingStopped, match="stopped at meta-iteration 3: query_loss is nan"
                       ) as stop:
        train_run(SineExperiment(), config, tmp_path / "run")
    assert stop.value.exit_code == 1
    assert "last checkpoint (iteration 2) is kept" in str(stop.value)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 2


def test_a_second_interrupt_stops_at_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), _deferred_interrupts() as received:
        signal.raise_signal(signal.SIGINT)  # the first: only noted
        assert received == [signal.SIGINT]
        signal.raise_signal(signal.SIGINT)  # the second: at once
        pytest.fail("the second SIGINT did not interrupt")
    assert signal.getsignal(signal.SIGINT) is before


def test_checkpoints_are_synced_in_a_temporary_file_of_their_folder_then_renamed(
        tmp_path, monkeypatch):
    """Atomic only if the temporary file is on the same file system as the checkpoint (its
    folder) and its bytes are on disk before the rename."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", fd))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(src), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, {"iteration": 1})
    (renamed,) = [e for e in events if e[0] == "replace"]
    assert renamed[1].parent == path.parent and renamed[2] == path
    assert events[0][0] == "fsync", "the file's bytes are synced before the rename"
    assert load_checkpoint(path) == {"iteration": 1}


def test_a_file_holding_something_else_than_a_dict_is_not_a_checkpoint(tmp_path):
    from metarl.checkpoint import UnreadableCheckpointError

    torch.save([1, 2, 3], tmp_path / "checkpoint.pt")
    with pytest.raises(UnreadableCheckpointError, match="holds a list, not a metarl checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_each_purpose_gets_its_own_random_stream():
    from metarl.seeding import derive_seed, numpy_generator, torch_generator

    # the purposes metarl uses, several of one length (a seed from the length would repeat)
    purposes = ["init", "tasks", "actions", "evaluate", "evaluate-tasks", "evaluate-resets",
                "evaluate-actions", "evaluate-support", "render", "render-queries",
                "pretrained-init", "pretrained-tasks", "pretrained-actions", "oracle-init",
                "oracle-tasks", "oracle-actions", "video-resets", "video-actions", "example",
                "bench-images"]
    seeds = {(s, p): derive_seed(s, p) for s in range(5) for p in purposes}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= v < 2 ** 63 + 2 ** 31 for v in seeds.values())
    assert (torch.rand(3, generator=torch_generator(0, "init")).tolist()
            != torch.rand(3, generator=torch_generator(0, "tasks")).tolist())
    assert (numpy_generator(0, "evaluate-tasks").random(3).tolist()
            != numpy_generator(0, "evaluate-resets").random(3).tolist())
    assert (numpy_generator(0, "evaluate-tasks").random(3).tolist()
            == numpy_generator(0, "evaluate-tasks").random(3).tolist())


def test_a_snapshot_also_writes_the_runs_checkpoint(tmp_path, monkeypatch):
    """The run's checkpoint is never older than its latest snapshot: a crash after a
    snapshot resumes from that snapshot's iteration, not from an older checkpoint."""
    _power_cut_at(monkeypatch, 5)
    monkeypatch.setattr(runner, "_plot_learning_curve", lambda *args: None)  # no matplotlib
    config = from_dict(SineConfig, {"model": {"hidden_sizes": [8]},
                                    "training": {"iterations": 8, "meta_batch_size": 1},
                                    "run": {"checkpoint_every": 100, "snapshot_every": 4,
                                            "progress": False, "tensorboard": False}})
    with pytest.raises(RuntimeError, match="power cut"):
        train_run(SineExperiment(), config, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 4
    assert load_checkpoint(runner.snapshot_dir(tmp_path / "run", 4) / "checkpoint.pt")[
        "iteration"] == 4


def test_a_finished_run_may_be_resumed_with_its_own_length_to_change_its_bookkeeping(
        tmp_path):
    from metarl.config import ConfigError, dump_config

    config = from_dict(SineConfig, {"training": {"iterations": 3}})
    (tmp_path / "config.yaml").write_text(dump_config(config, header="a run"))
    changed = runner.extend_run_config(tmp_path, SineExperiment(), ["run.progress=false"],
                                       done=3)
    assert changed.training.iterations == 3 and changed.run.progress is False
    with pytest.raises(ConfigError, match="already holds 3 iterations; give at least 3"):
        runner.extend_run_config(tmp_path, SineExperiment(), ["training.iterations=2"], done=3)


def test_run_logger_writes_each_record_at_once_and_drops_work_lost_since_the_checkpoint(
        tmp_path):
    from metarl.logging import RunLogger, read_metrics

    def iterations() -> list[int]:
        return [r["iteration"] for r in read_metrics(tmp_path / "metrics.jsonl")]

    logger = RunLogger(tmp_path, 4, progress=False, tensorboard=False)
    for i in (1, 2, 3, 4):
        logger.log(i, {"loss": 0.5 * i})
        assert iterations() == list(range(1, i + 1)), "on disk before the run ends"
    logger.close()
    RunLogger(tmp_path, 4, start=2, progress=False, tensorboard=False).close()  # resumed at 2
    assert iterations() == [1, 2]
    RunLogger(tmp_path, 4, progress=False, tensorboard=False).close()  # a new run
    assert iterations() == []
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1}\n{"iteration": 2}\n{"itera')
    assert iterations() == [1, 2]  # a torn last line is skipped


def test_a_resume_killed_while_dropping_lost_records_keeps_the_whole_log(tmp_path,
                                                                       monkeypatch):
    import metarl.checkpoint
    from metarl.logging import RunLogger

    metrics = tmp_path / "metrics.jsonl"
    logged = '{"iteration": 1}\n{"iteration": 2}\n{"iteration": 3}\n'
    metrics.write_text(logged)

    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(metarl.checkpoint.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        RunLogger(tmp_path, 4, start=2, progress=False, tensorboard=False)
    assert metrics.read_text() == logged
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"], "no temporary file left"


def test_run_logger_keeps_tensorboard_and_the_progress_bar_at_the_runs_iteration(
        tmp_path, capsys):
    """TensorBoard steps are the meta-iterations; a resumed run replaces the events of work
    lost since its checkpoint and keeps the earlier ones; a non-finite metric stays in
    metrics.jsonl (TensorBoard leaves it out); the bar counts on from the checkpoint."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from metarl.logging import RunLogger, read_metrics

    def scalars(tag: str) -> list[tuple[int, float]]:
        events = EventAccumulator(str(tmp_path / "tensorboard"))
        events.Reload()
        return [(event.step, event.value) for event in events.Scalars(tag)]

    logger = RunLogger(tmp_path, 10, progress=False, tensorboard=True)
    for i in (1, 2, 3):
        logger.log(i, {"loss": float(i), "kl": float("nan") if i == 3 else 0.5})
    logger.close()
    assert capsys.readouterr().err == ""  # progress: false shows no bar
    assert scalars("loss") == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert scalars("kl") == [(1, 0.5), (2, 0.5)]
    assert math.isnan(read_metrics(tmp_path / "metrics.jsonl")[2]["kl"])

    resumed = RunLogger(tmp_path, 10, start=1, progress=True, tensorboard=True)
    resumed.log(2, {"loss": 20.0, "kl": 0.25})
    resumed.close()
    assert [r["iteration"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    assert scalars("loss") == [(1, 1.0), (2, 20.0)]
    assert "2/10" in capsys.readouterr().err  # from the checkpoint's 1, one iteration on


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_a_plain_open_would_give(tmp_path, umask, mode):
    """Checkpoints and configs are readable by whoever may read the run's pictures (mkstemp
    alone would make them 0600); the umask is left as it was."""
    from metarl.checkpoint import atomic_write_text

    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "config.yaml", "seed: 0\n")
        save_checkpoint(tmp_path / "checkpoint.pt", {"iteration": 1})
        assert os.umask(umask) == umask
    finally:
        os.umask(previous)
    for name in ("config.yaml", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: setattr(c.training, "meta_batch_size", 0), "training.meta_batch_size = 0"),
    (lambda c: setattr(c.adaptation, "method", "sgd"),
     "adaptation.method = 'sgd': allowed values are 'maml', 'fomaml', 'reptile'"),
    (lambda c: setattr(c, "seed", 1.5), "seed = 1.5: expected an integer"),
])
def test_a_config_changed_in_code_is_refused_before_any_work(tmp_path, change, message):
    config = small_config()
    change(config)
    with pytest.raises(ConfigError, match=re.escape(message)):
        train_run(SineExperiment(), config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_config_of_another_experiment_is_refused(tmp_path):
    from metarl.rl.config import MetaRLConfig

    with pytest.raises(TypeError, match="sine experiment takes a SineConfig, got MetaRLConfig"):
        train_run(SineExperiment(), MetaRLConfig(), tmp_path / "run")


def test_a_checkpoint_written_just_before_the_failing_iteration_is_named_as_such(
        tmp_path, monkeypatch):
    _nan_query_from_batch(monkeypatch, 6)  # iteration 6 fails; a checkpoint followed 5
    with pytest.raises(TrainingStopped, match="meta-iteration 6: query loss nan") as stop:
        train_run(SineExperiment(), small_config(), tmp_path / "run")
    message = str(stop.value)
    assert "lower adaptation.inner_lr or training.outer_lr" in message
    assert ("The last checkpoint (iteration 5) is kept in " in message
            and "it holds the weights that the failing iteration started from" in message)
    assert "last good" not in message
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 5


def test_a_full_disk_stops_with_the_kept_checkpoint_and_resumes_to_the_same_numbers(
        tmp_path, monkeypatch):
    import errno

    experiment = SineExperiment()
    train_run(experiment, small_config(), tmp_path / "straight")
    original = runner.save_checkpoint

    def full_from_iteration_10(path, state):
        if state["iteration"] >= 10:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(path, state)

    monkeypatch.setattr(runner, "save_checkpoint", full_from_iteration_10)
    run_dir = tmp_path / "full"
    with pytest.raises(TrainingStopped) as stop:
        train_run(experiment, small_config(), run_dir)
    assert stop.value.exit_code == 1
    assert str(stop.value) == (
        f"stopped at meta-iteration 10: can't write the run in {run_dir} ([Errno 28] No space "
        f"left on device). The last good checkpoint (iteration 5) is kept in "
        f"{run_dir / 'checkpoint.pt'}. Once it can be written, continue with: metarl train "
        f"--resume {run_dir}")
    monkeypatch.setattr(runner, "save_checkpoint", original)
    experiment, config, _ = load_run(run_dir)
    train_run(experiment, config, run_dir, resume=True)
    assert metric_values(run_dir) == metric_values(tmp_path / "straight")
    assert_same_params(final_params(run_dir), final_params(tmp_path / "straight"))


def test_numpy_numbers_and_paths_set_in_code_are_taken_as_plain_values(tmp_path):
    import numpy as np

    from metarl.config import validate_config
    from metarl.supervised.omniglot_experiment import OmniglotConfig

    config = small_config()
    config.training.iterations = np.int64(3)
    config.training.outer_lr = np.float32(0.002)
    train_run(SineExperiment(), config, tmp_path / "run")
    _, saved, state = load_run(tmp_path / "run")
    assert saved.training.iterations == 3 and type(saved.training.iterations) is int
    assert saved.training.outer_lr == pytest.approx(0.002) and state["iteration"] == 3
    assert type(config.training.iterations) is np.int64  # the caller's config is unchanged
    omniglot = OmniglotConfig()
    omniglot.data.root = tmp_path / "omniglot"
    assert validate_config(omniglot).data.root == str(tmp_path / "omniglot")
    omniglot.data.image_size = np.int64(200)
    with pytest.raises(ConfigError, match=r"data.image_size = 200: must be <= 105"):
        validate_config(omniglot)


def test_an_outer_update_to_non_finite_weights_stops_before_they_are_saved(tmp_path,
                                                                           monkeypatch):
    make_trainer = SineExperiment.make_trainer

    def overflowing(self, config):  # the 7th outer update overflows a weight
        trainer = make_trainer(self, config)
        step, calls = trainer.optimizer.step, []

        def step_to_inf(*args, **kwargs):
            result = step(*args, **kwargs)
            calls.append(1)
            if len(calls) == 7:
                with torch.no_grad():
                    next(iter(trainer.params.values()))[0] = float("inf")
            return result

        trainer.optimizer.step = step_to_inf
        return trainer

    monkeypatch.setattr(SineExperiment, "make_trainer", overflowing)
    with pytest.raises(TrainingStopped, match=re.escape(
            "meta-iteration 7: the outer update made the weights (or learned rates) "
            "non-finite: meta-training diverged; lower training.outer_lr")) as stop:
        train_run(SineExperiment(), small_config(), tmp_path / "run")
    assert "The last good checkpoint (iteration 5)" in str(stop.value)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["iteration"] == 5
    assert all(torch.isfinite(v).all() for v in state["trainer"]["params"].values())
    with pytest.raises(ConfigError, match=re.escape("training.outer_lr = 1e+300: must be <= "
                                                    "1e+38")):
        small_config(outer_lr=1e300)


def test_a_write_failing_before_any_checkpoint_or_on_the_terminal(tmp_path, monkeypatch):
    import errno

    def full(path, state):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runner, "save_checkpoint", full)
    with pytest.raises(TrainingStopped) as stop:
        train_run(SineExperiment(), small_config(), tmp_path / "full")
    assert str(stop.value).endswith(
        "([Errno 28] No space left on device). No checkpoint had been written yet (one is "
        "written every 5 meta-iterations, run.checkpoint_every)")

    def closed_terminal(path, state):
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    monkeypatch.setattr(runner, "save_checkpoint", closed_terminal)
    with pytest.raises(BrokenPipeError):  # the CLI's own handling (exit 141) applies
        train_run(SineExperiment(), small_config(), tmp_path / "pipe")


def test_logs_that_fail_to_close_after_the_last_checkpoint_are_a_note(tmp_path, monkeypatch,
                                                                        capsys):
    import errno

    from metarl.logging import RunLogger

    def failing_close(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(RunLogger, "close", failing_close)
    path = train_run(SineExperiment(), small_config(), tmp_path / "run")
    assert load_checkpoint(path)["iteration"] == 24
    assert (f"note: trained; {path} is complete, but closing the logs failed ([Errno 28] No "
            f"space left on device)") in capsys.readouterr().err
    assert (tmp_path / "run" / "learning_curve.png").is_file()


def test_a_restart_in_place_unlinks_a_linked_log_folder_and_keeps_what_it_points_to(tmp_path):
    """The logs of a run stopped before its first checkpoint are replaced; a tensorboard/
    that is a link to a folder elsewhere loses the link, not that folder's files."""
    config = small_config(iterations=3)
    run = tmp_path / "run"
    train_run(SineExperiment(), config, run)
    (run / "checkpoint.pt").unlink()
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])  # stopped after 1
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    (run / "tensorboard").symlink_to(elsewhere, target_is_directory=True)
    train_run(SineExperiment(), config, run)
    assert (elsewhere / "keep.txt").read_text() == "mine"
    assert not (run / "tensorboard").exists()  # this run logs no TensorBoard events
    assert len(metric_values(run)) == 3


def test_resume_of_a_partial_config_without_a_checkpoint_uses_its_defaults(tmp_path):
    """A config.yaml that leaves sections out is read with their defaults: no checkpoint and
    fewer iterations logged than the default checkpoint interval is a run yet to write one."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("experiment: sine\n")
    (run / "metrics.jsonl").write_text('{"iteration": 1}\n')
    with pytest.raises(ConfigError, match=r"has no checkpoint\.pt yet: it is written every"):
        load_run(run)
    every = SineConfig().run.checkpoint_every
    (run / "metrics.jsonl").write_text("".join(f'{{"iteration": {i}}}\n'
                                               for i in range(1, every + 1)))
    with pytest.raises(ConfigError, match=f"holds the logs of {every} meta-iterations"):
        load_run(run)


@pytest.mark.parametrize(("logged", "last"), [(2300, 2000), (999, None), (4000, 4000),
                                              (1000, 1000)])
def test_a_lost_checkpoint_is_named_by_the_iteration_it_was_last_written_after(tmp_path, logged,
                                                                                last):
    """A run of 4000 iterations checkpointing every 1000 with 2300 logged last wrote its
    checkpoint after 2000 (not after the first 1000); before the first one, none was lost."""
    from types import SimpleNamespace

    from metarl.config import ConfigError
    from metarl.runner import _check_no_checkpoint_was_written

    (tmp_path / "metrics.jsonl").write_text("".join(f'{{"iteration": {i}}}\n'
                                                    for i in range(1, logged + 1)))
    config = SimpleNamespace(run=SimpleNamespace(checkpoint_every=1000),
                             training=SimpleNamespace(iterations=4000))
    if last is None:
        _check_no_checkpoint_was_written(tmp_path, config)
        return
    with pytest.raises(ConfigError, match=f"holds the logs of {logged} meta-iterations "
                       f"\\(metrics.jsonl\\) but no checkpoint.pt, which that run last wrote "
                       f"after iteration {last}: it was lost"):
        _check_no_checkpoint_was_written(tmp_path, config)


def test_a_longer_annealed_schedule_on_resume_is_noted(capsys):
    """Raising training.iterations of a run whose outer step anneals says the run follows the
    longer schedule from where it is (at 4 of 4 → 8: 0.5 next, not 0.0), not a fresh run's."""
    from metarl.experiment import config_from_data
    from metarl.runner import _note_annealing_change

    def omniglot(iterations, final=0.0):
        return config_from_data({"experiment": "omniglot", "adaptation": {"method": "reptile"},
                                 "training": {"iterations": iterations, "outer_lr": 1.0,
                                              "outer_lr_final": final,
                                              "outer_optimizer": "sgd"}})[1]

    _note_annealing_change(omniglot(4), omniglot(8), done=4)
    err = capsys.readouterr().err
    assert err.startswith("metarl: note: the outer step anneals over training.iterations")
    assert ("from iteration 5 it follows the 8-iteration schedule (0.5, where the "
            "4-iteration one is at 0)") in err and "started with 8 iterations" in err
    for before, after in ((omniglot(4), omniglot(4)), (omniglot(4, None), omniglot(8, None))):
        _note_annealing_change(before, after, done=2)
        assert capsys.readouterr().err == ""
    sine = config_from_data({"experiment": "sine", "training": {"iterations": 4}})[1]
    _note_annealing_change(sine, sine, done=2)
    assert capsys.readouterr().err == ""
