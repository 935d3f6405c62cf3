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


@pytest.mark.parametrize("value", ["gpu", "CUDA", "cuda:", "cuda:-1", "cuda:0 ", "cuda:01", "mps",
                                   "cpu:0", ""])
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
    assert not run.exists()


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
    # a benchmark that times CPU work says so first, GPU or not
    assert main(["benchmark", "cheetah", "--device", "cuda"]) == 2
    assert "--device cuda: only the omniglot benchmark runs off the CPU" in (
        capsys.readouterr().err)
    assert main(["benchmark", "omniglot", "--device", "gpu"]) == 2
    assert "--device = 'gpu': allowed are cpu, cuda" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name in ("cheetah", "all"):
        assert main(["benchmark", name, "--device", "cuda:0"]) == 2
        assert "--device cuda:0: only the omniglot benchmark runs off the CPU" in (
            capsys.readouterr().err)
    assert ran == []
    assert main(["benchmark", "omniglot", "--device", "cpu"]) == 0
    assert ran == [torch.device("cpu")]
    # auto: the GPU for omniglot, the CPU for the benchmarks that time CPU work
    import metarl.rl.benchmarks as rl_benchmarks

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "a stand-in GPU")
    monkeypatch.setattr(rl_benchmarks, "benchmark_cheetah",
                        lambda *, repeats: ran.append("cheetah on the CPU"))
    assert main(["benchmark", "cheetah", "--device", "auto"]) == 0
    assert main(["benchmark", "omniglot", "--device", "auto"]) == 0
    assert ran[1:] == ["cheetah on the CPU", torch.device("cuda")]
    assert "device: cuda, a stand-in GPU" in capsys.readouterr().out


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


class _Seen(Exception):
    """Stops a patched computation once it has recorded what it was given."""


def _devices(*tensor_dicts) -> set[str]:
    return {t.device.type for d in tensor_dicts for t in d.values()}


def test_the_trainer_computes_on_its_device_and_saves_to_the_cpu(monkeypatch):
    import metarl.supervised.trainer as trainer_module

    seen = {}

    def recording_meta_gradient(model, params, batch, loss_fn, *, lr, **kwargs):
        seen.update(params=_devices(params), lr=_devices(lr), batch={
            t.device.type for t in (batch.support_x, batch.support_y, batch.query_x,
                                    batch.query_y)})
        raise _Seen

    monkeypatch.setattr(trainer_module, "meta_gradient", recording_meta_gradient)
    images = torch.rand(2, 6, 1, 8, 8)
    labels = torch.arange(3).repeat(2).expand(2, 6)
    architecture = Conv4(3, filters=4, image_size=8)
    trainer = SupervisedMetaTrainer(
        architecture, lambda gen: TaskBatch(images, labels, images, labels),
        cross_entropy, adaptation=AdaptationConfig(inner_lr=0.4, learn_inner_lr=True),
        vectorize=True, outer_optimizer="adam", outer_lr=1e-3,
        task_generator=torch.Generator(), device=torch.device("meta"))
    with pytest.raises(_Seen):
        trainer.train_iteration(1)
    assert seen == {"params": {"meta"}, "lr": {"meta"}, "batch": {"meta"}}
    assert {p.device.type for p in architecture.parameters()} == {"cpu"}  # the caller's stays
    # state_dict copies every tensor to the CPU: from the meta device, which holds no
    # data, that copy is refused (a copy kept on the device would pass silently)
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta tensor"):
        trainer.state_dict()


@pytest.mark.parametrize("learned_rates", [False, True])
def test_omniglot_evaluate_and_render_compute_on_the_configured_device(
        tmp_path, monkeypatch, learned_rates):
    import metarl.supervised.omniglot_experiment as omniglot_experiment
    from metarl.config import from_dict
    from metarl.experiment import EvaluateOptions, RenderOptions

    config = from_dict(omniglot_experiment.OmniglotConfig, {
        "device": "cuda", "model": {"filters": 4}, "data": {"image_size": 8},
        "evaluation": {"chunk_tasks": 3}})
    asked = []

    def pretend_gpu(value, *args, **kwargs):
        asked.append(value)
        return torch.device("meta")

    monkeypatch.setattr(omniglot_experiment, "resolve_device", pretend_gpu)
    pool = (torch.rand(10, 4, 20, 8, 8) * 255).to(torch.uint8)
    monkeypatch.setattr(omniglot_experiment.OmniglotExperiment, "test_pool",
                        lambda self, *args: (pool, None))
    seen = []

    def recording_curve(model, params, batch, loss_fn, metric_fn, *, steps, lr, vectorize,
                        moments, minibatches, on_steps, transductive):
        assert moments is None and minibatches is None, "full-batch gradient steps"
        seen.append((_devices(params, dict(model.named_parameters()),
                              lr if isinstance(lr, dict) else {}),
                     {batch.support_x.device.type, batch.query_y.device.type}))
        return torch.zeros(batch.num_tasks, steps + 1)  # as from the device, copied back

    def recording_predictions(model, params, batch, loss_fn, *, steps, lr, moments,
                              minibatches, transductive):
        assert moments is None and minibatches is None
        seen.append((_devices(params, lr if isinstance(lr, dict) else {}),
                     {batch.support_x.device.type}))
        raise _Seen  # the CPU copy of the outputs, which a meta tensor cannot give, is next

    monkeypatch.setattr(omniglot_experiment, "adaptation_curve", recording_curve)
    monkeypatch.setattr(omniglot_experiment, "query_predictions", recording_predictions)
    params = params_of(omniglot_experiment.make_model(config))
    state = {"iteration": 1, "trainer": {
        "params": OrderedDict((k, v.detach()) for k, v in params.items()),
        "inner_lr": (OrderedDict((k, torch.full_like(v, 0.4)) for k, v in params.items())
                     if learned_rates else None)}}
    result = omniglot_experiment.OmniglotExperiment().evaluate(
        config, state, tmp_path, EvaluateOptions(steps=1, tasks=7))
    assert seen == [({"meta"}, {"meta"})] * 3  # 7 tasks in chunks of 3
    assert result["device"] == "meta" and result["mean"] == [0.0, 0.0]
    seen.clear()
    with pytest.raises(_Seen):
        omniglot_experiment.OmniglotExperiment().render(config, state, tmp_path,
                                                       RenderOptions(tasks=2, steps=1))
    assert seen == [({"meta"}, {"meta"})]
    assert asked == ["cuda", "cuda"]
