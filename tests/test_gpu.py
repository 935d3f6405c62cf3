"""Omniglot on a CUDA GPU against the same run on the CPU (skipped where torch sees no GPU,
as in CI): the same tasks and, to rounding, the same training; a GPU run resumed and
evaluated on the CPU."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch

from metarl.adaptation import params_of
from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from metarl.config import AdaptationConfig
from metarl.supervised.meta import adaptation_curve, meta_gradient
from metarl.supervised.omniglot import Conv4, accuracy, cross_entropy, reset_conv4
from metarl.supervised.tasks import TaskBatch

from omniglot_fixtures import needs_omniglot

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")


def _problem(device: torch.device) -> tuple[Conv4, OrderedDict, TaskBatch]:
    model = Conv4(5, filters=8)
    reset_conv4(model, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(4, 10, 1, 28, 28, generator=generator)
    labels = torch.arange(5).repeat(2).expand(4, 10)
    batch = TaskBatch(images[:, :5], labels[:, :5], images[:, 5:], labels[:, 5:])
    model = model.to(device)
    return model, params_of(model), batch.to(device)


@needs_gpu
@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("method", ["maml", "fomaml", "reptile"])
def test_meta_gradients_on_the_gpu_match_the_cpu(method, vectorize):
    results = []
    for device in (torch.device("cpu"), torch.device("cuda")):
        model, params, batch = _problem(device)
        results.append(meta_gradient(model, params, batch, cross_entropy, method=method,
                                     steps=2, lr=0.4, vectorize=vectorize, metric_fn=accuracy))
    cpu, gpu = results
    for name, value in cpu.params.items():
        torch.testing.assert_close(gpu.params[name].cpu(), value, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(gpu.query_losses.cpu(), cpu.query_losses, rtol=1e-4, atol=1e-5)
    model, params, batch = _problem(torch.device("cuda"))
    curve = adaptation_curve(model, params, batch, cross_entropy, accuracy, steps=2, lr=0.4)
    assert curve.device.type == "cuda" and curve.shape == (4, 3)


@needs_gpu
def test_a_gpu_trainer_saves_cpu_tensors_that_a_cpu_trainer_resumes_from():
    from metarl.supervised.trainer import SupervisedMetaTrainer

    _, _, batch = _problem(torch.device("cpu"))

    def trainer(device: torch.device) -> SupervisedMetaTrainer:
        model = Conv4(5, filters=8)
        reset_conv4(model, torch.Generator().manual_seed(0))
        return SupervisedMetaTrainer(
            model, lambda generator: batch, cross_entropy,
            adaptation=AdaptationConfig(inner_lr=0.4, learn_inner_lr=True), vectorize=True,
            outer_optimizer="adam", outer_lr=1e-3, task_generator=torch.Generator(),
            device=device)

    on_gpu, on_cpu = trainer(torch.device("cuda")), trainer(torch.device("cpu"))
    for iteration in (1, 2):
        on_gpu.train_iteration(iteration)
        on_cpu.train_iteration(iteration)
    state = on_gpu.state_dict()
    tensors = [*state["params"].values(), *state["inner_lr"].values(),
               *(t for s in state["optimizer"]["state"].values() for t in s.values()
                 if isinstance(t, torch.Tensor))]
    assert {t.device.type for t in tensors} == {"cpu"}
    for name, value in on_cpu.state_dict()["params"].items():
        torch.testing.assert_close(state["params"][name], value, rtol=1e-3, atol=1e-5)
    resumed = trainer(torch.device("cpu"))
    resumed.load_state_dict(state)
    resumed.train_iteration(3)  # Adam's moments moved to the CPU with the weights


@needs_gpu
@needs_omniglot
def test_a_run_trained_on_the_gpu_resumes_and_evaluates_on_the_cpu(tmp_path, omniglot_cache):
    common = ["--set", f"data.cache_dir={omniglot_cache}", "--set", "model.filters=8",
              "--set", "training.iterations=3", "--set", "training.meta_batch_size=4",
              "--set", "run.progress=false", "--set", "run.tensorboard=false"]
    runs = {device: tmp_path / device for device in ("cuda", "cpu")}
    for device, run in runs.items():
        assert main(["train", "omniglot-5w1s", "--run-dir", str(run), *common,
                     "--set", f"device={device}"]) == 0
    trained = {device: load_checkpoint(run / "checkpoint.pt")["trainer"]["params"]
               for device, run in runs.items()}
    for name, value in trained["cpu"].items():
        assert trained["cuda"][name].device.type == "cpu"
        torch.testing.assert_close(trained["cuda"][name], value, rtol=1e-3, atol=1e-5)
    gpu_run = runs["cuda"]
    assert main(["evaluate", str(gpu_run), "--tasks", "20", "--steps", "1"]) == 0
    on_gpu = json.loads((gpu_run / "evaluation.json").read_text())
    assert main(["evaluate", str(gpu_run), "--tasks", "20", "--steps", "1",
                 "--set", "device=cpu"]) == 0
    on_cpu = json.loads((gpu_run / "evaluation.json").read_text())
    assert (on_gpu["device"], on_cpu["device"]) == ("cuda", "cpu")
    # 20 tasks x 5 queries: a GPU's rounding may flip a query or two
    assert on_gpu["mean"] == pytest.approx(on_cpu["mean"], abs=2.0)
    assert main(["train", "--resume", str(gpu_run), "--set", "device=cpu",
                 "--set", "training.iterations=4"]) == 0
    assert load_checkpoint(gpu_run / "checkpoint.pt")["iteration"] == 4
    assert main(["render", str(gpu_run), "--tasks", "1", "--set", "device=cuda"]) == 0
