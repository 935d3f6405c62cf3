"""The ``device`` setting: its spelling, what this machine has, the supervised math on
another device than the CPU (PyTorch's ``meta`` device, which refuses to mix with CPU
tensors as a GPU does), and checkpoints that hold CPU tensors whatever the device."""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch

from metarl.adaptation import params_of
from metarl.cli import main
from metarl.config import AdaptationConfig, ConfigError
from metarl.devices import check_device_setting, resolve_device
from metarl.supervised.meta import meta_gradient, query_predictions
from metarl.supervised.omniglot import Conv4, accuracy, cross_entropy
from metarl.supervised.tasks import TaskBatch
from metarl.supervised.trainer import SupervisedMetaTrainer


@pytest.mark.parametrize("value", ["cpu", "cuda", "cuda:0", "cuda:12", "auto"])
def test_device_spellings_allowed(value):
    check_device_setting(value)


@pytest.mark.parametrize("value", ["gpu", "CUDA", "cuda:", "cuda:-1", "cuda:0 ", "mps", ""])
def test_other_device_spellings_name_what_is_allowed(value):
    with pytest.raises(ConfigError, match=re.escape(f"device = {value!r}: allowed are cpu, "
                                                    "cuda, cuda:N")):
        check_device_setting(value)


def test_resolving_a_device_this_machine_has_or_lacks(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"device = 'cuda': this torch .* sees no CUDA GPU "
                                          r"\(.*\); set device: cpu in the config, or --set "
                                          r"device=cpu"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=re.escape("device = 'cuda:2': this machine shows 2 "
                                                    "CUDA GPU(s), indices 0-1")):
        resolve_device("cuda:2")


def _meta_problem(num_tasks: int = 3) -> tuple[Conv4, OrderedDict, TaskBatch]:
    model = Conv4(3, filters=4, image_size=8)
    params = OrderedDict((k, v.detach().to("meta").requires_grad_(True))
                         for k, v in params_of(model).items())
    images = torch.rand(num_tasks, 6, 1, 8, 8)
    labels = torch.arange(3).repeat(2).expand(num_tasks, 6)
    return model, params, TaskBatch(images, labels, images.flip(-1), labels).to(
        torch.device("meta"))


@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("method", ["maml", "fomaml", "reptile", "meta-sgd"])
def test_meta_gradients_stay_on_the_device_of_their_inputs(method, vectorize):
    """A tensor made on the CPU inside the math would meet the meta device's and fail."""
    model, params, batch = _meta_problem()
    lr: float | OrderedDict = 0.4
    if method == "meta-sgd":
        lr = OrderedDict((k, torch.full_like(v, 0.4).requires_grad_(True))
                         for k, v in params.items())
    result = meta_gradient(model, params, batch, cross_entropy,
                           method="maml" if method == "meta-sgd" else method, steps=2, lr=lr,
                           vectorize=vectorize, metric_fn=accuracy)
    tensors = [*result.params.values(), *(result.lr or {}).values(), result.query_losses,
               result.query_metric]
    assert all(t.device.type == "meta" for t in tensors)
    assert (result.lr is not None) == (method == "meta-sgd")
    outputs = query_predictions(model, params, batch, cross_entropy, steps=2, lr=[0.4, 0.2])
    assert outputs.device.type == "meta" and outputs.shape == (3, 3, 6, 3)


def test_a_task_batch_moves_whole():
    images, labels = torch.rand(2, 4, 1, 8, 8), torch.zeros(2, 4, dtype=torch.long)
    batch = TaskBatch(images, labels, images, labels)
    moved = batch.to(torch.device("meta"))
    assert all(t.device.type == "meta"
               for t in (moved.support_x, moved.support_y, moved.query_x, moved.query_y))
    assert moved.support_y.dtype == torch.long
    assert batch.to(torch.device("cpu")).support_x is images  # already there: not copied


def test_trainer_state_holds_cpu_copies_that_later_steps_leave_alone():
    generator = torch.Generator().manual_seed(0)

    def sample(gen: torch.Generator) -> TaskBatch:
        x = torch.rand(4, 6, 1, 8, 8, generator=gen)
        y = torch.arange(3).repeat(2).expand(4, 6)
        return TaskBatch(x, y, x.flip(-1), y)

    trainer = SupervisedMetaTrainer(
        Conv4(3, filters=4, image_size=8), sample, cross_entropy,
        adaptation=AdaptationConfig(inner_lr=0.4), vectorize=True, outer_optimizer="adam",
        outer_lr=1e-2, task_generator=generator, device=torch.device("cpu"))
    trainer.train_iteration(1)
    state = trainer.state_dict()
    saved = [t.clone() for t in state["params"].values()]
    saved_moment = state["optimizer"]["state"][0]["exp_avg"].clone()
    trainer.train_iteration(2)
    assert all(t.device.type == "cpu" for t in state["params"].values())
    assert all(torch.equal(a, b) for a, b in zip(saved, state["params"].values(), strict=True))
    assert torch.equal(saved_moment, state["optimizer"]["state"][0]["exp_avg"])
    assert not torch.equal(saved_moment, trainer.optimizer.state_dict()["state"][0]["exp_avg"])


def test_cli_refuses_a_device_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "run"
    assert main(["train", "omniglot-5w1s", "--run-dir", str(run), "--set", "device=gpu"]) == 2
    assert "device = 'gpu': allowed are cpu, cuda, cuda:N" in capsys.readouterr().err
    # data.root points nowhere: the device is checked first, before the images are looked for
    assert main(["train", "omniglot-5w1s", "--run-dir", str(run), "--set", "device=cuda",
                 "--set", f"data.root={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err
    assert "device = 'cuda': this torch" in err and "--set device=cpu" in err
    assert "images_background.zip" not in err
    assert not (run / "checkpoint.pt").exists()


@pytest.mark.parametrize("config", ["sine-quick", "navigation2d-quick"])
def test_cpu_only_experiments_say_so_for_a_device(tmp_path, capsys, config):
    assert main(["train", config, "--run-dir", str(tmp_path / "run"),
                 "--set", "device=cpu"]) == 2
    assert "computes on the CPU only; device is a setting of Omniglot runs" in (
        capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_benchmark_device_is_for_omniglot_and_this_machines_devices(monkeypatch, capsys):
    import metarl.supervised.benchmarks as benchmarks

    ran = []
    monkeypatch.setattr(benchmarks, "benchmark_omniglot",
                        lambda *, repeats, device: ran.append(device))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["benchmark", "omniglot", "--device", "cuda"]) == 2
    assert ("--device = 'cuda': this torch" in (err := capsys.readouterr().err)
            and "leave --device out to time the CPU" in err)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name in ("cheetah", "all"):
        assert main(["benchmark", name, "--device", "cuda:0"]) == 2
        assert "--device cuda:0: only the omniglot benchmark runs off the CPU" in (
            capsys.readouterr().err)
    assert ran == []
    assert main(["benchmark", "omniglot", "--device", "cpu"]) == 0
    assert ran == [torch.device("cpu")]


def test_timed_gpu_calls_wait_for_their_kernels(monkeypatch):
    from metarl.benchmark import synchronized

    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: events.append(("wait", device)))

    def work() -> None:
        events.append("work")

    gpu = torch.device("cuda", 1)
    synchronized(work, gpu)()
    assert events == ["work", ("wait", gpu)]
    assert synchronized(work, torch.device("cpu")) is work
