"""Omniglot tasks and Conv4: the MAML protocol's split and sampler, batch norm with batch
statistics, meta-gradients (vmap path = per-task loop; MAML against finite differences), and
an end-to-end train / evaluate / render through the CLI on the offline copy."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metarl.adaptation import params_of
from metarl.cli import main
from metarl.supervised.meta import adaptation_curve, meta_gradient, query_predictions
from metarl.supervised.omniglot import (
    BatchStatNorm,
    Conv4,
    accuracy,
    class_pool,
    cross_entropy,
    draw_omniglot_tasks,
    reset_conv4,
    sample_omniglot_batch,
    split_characters,
)
from metarl.supervised.omniglot_data import OmniglotImages

from omniglot_fixtures import OMNIGLOT_ROOT, needs_omniglot
from param_vectors import flatten


def test_character_split_is_fixed_by_its_seed_and_disjoint():
    names = [f"c{i}" for i in range(1623)]
    split = split_characters(names, 1200, seed=0)
    assert len(split.train) == 1200 and len(split.test) == 423
    assert set(split.train).isdisjoint(split.test)
    assert sorted(split.train + split.test) == list(range(1623))
    assert split == split_characters(names, 1200, seed=0)
    assert split != split_characters(names, 1200, seed=1)


def _labelled_images(characters: int = 30, size: int = 6) -> OmniglotImages:
    """Image (c, d) holds c in pixel (0, 0), d in pixel (0, 1), and an asymmetric mark."""
    images = np.zeros((characters, 20, size, size), dtype=np.uint8)
    for c in range(characters):
        for d in range(20):
            images[c, d, 0, 0], images[c, d, 0, 1], images[c, d, size - 1, 2] = c, d, 255
    return OmniglotImages(images, tuple(f"c{i}" for i in range(characters)))


def test_rotations_are_new_classes_of_the_same_drawings():
    data = _labelled_images()
    pool = class_pool(data, [3, 5], rotations=True)
    assert pool.shape == (2, 4, 20, 6, 6) and pool.dtype == torch.uint8
    original = torch.from_numpy(data.images[5, 7])
    torch.testing.assert_close(pool[1, 0, 7], original)
    torch.testing.assert_close(pool[1, 1, 7], torch.rot90(original, 1))
    torch.testing.assert_close(pool[1, 3, 7], torch.rot90(original, 3))
    assert class_pool(data, [3, 5], rotations=False).shape == (2, 1, 20, 6, 6)


def test_tasks_have_distinct_classes_and_disjoint_support_and_query():
    data = _labelled_images()
    pool = class_pool(data, range(30), rotations=False)
    ways, shots, queries = 5, 3, 4
    batch = sample_omniglot_batch(pool, 50, ways, shots, queries, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (50, ways * shots, 1, 6, 6)
    assert batch.query_x.shape == (50, ways * queries, 1, 6, 6)
    assert batch.support_y.dtype == torch.int64
    assert batch.support_x.min() >= 0 and batch.support_x.max() == 1.0
    character = (batch.support_x[:, :, 0, 0, 0] * 255).round().long().view(50, ways, shots)
    query_character = (batch.query_x[:, :, 0, 0, 0] * 255).round().long().view(50, ways, queries)
    drawer_s = (batch.support_x[:, :, 0, 0, 1] * 255).round().long().view(50, ways, shots)
    drawer_q = (batch.query_x[:, :, 0, 0, 1] * 255).round().long().view(50, ways, queries)
    for t in range(50):
        classes = character[t, :, 0]
        assert len(set(classes.tolist())) == ways  # N distinct characters
        assert (character[t] == classes[:, None]).all()  # one character per label
        assert (query_character[t] == classes[:, None]).all()
        for c in range(ways):
            drawers = drawer_s[t, c].tolist() + drawer_q[t, c].tolist()
            assert len(set(drawers)) == shots + queries  # no drawing used twice
        # each class draws its own drawings (the same 7 of 20 for all 5 by chance: ~1e-34)
        assert len({tuple(drawer_s[t, c].tolist() + drawer_q[t, c].tolist())
                    for c in range(ways)}) > 1
    assert (batch.support_y.view(50, ways, shots) == torch.arange(ways).view(1, ways, 1)).all()
    assert (batch.query_y.view(50, ways, queries) == torch.arange(ways).view(1, ways, 1)).all()
    # every character turns up: the draw covers the pool
    assert set(character.flatten().tolist()) == set(range(30))


def test_task_sampling_is_reproducible_from_a_seed():
    pool = class_pool(_labelled_images(), range(30), rotations=True)
    a, b, c = (sample_omniglot_batch(pool, 4, 5, 1, 2, torch.Generator().manual_seed(s))
               for s in (7, 7, 8))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert not torch.equal(a.support_x, c.support_x)


def test_a_draw_gathered_a_chunk_at_a_time_gives_the_tasks_drawn_at_once():
    pool = class_pool(_labelled_images(), range(30), rotations=True)
    whole = sample_omniglot_batch(pool, 10, 5, 2, 3, torch.Generator().manual_seed(3))
    draw = draw_omniglot_tasks(pool, 10, 5, 2, 3, torch.Generator().manual_seed(3))
    assert draw.num_tasks == 10 and draw.drawers.shape == (10, 5, 5)
    chunks = [draw.gather(pool, start, start + 4) for start in range(0, 10, 4)]
    assert [chunk.num_tasks for chunk in chunks] == [4, 4, 2]
    for field in ("support_x", "support_y", "query_x", "query_y"):
        assert torch.equal(torch.cat([getattr(chunk, field) for chunk in chunks]),
                           getattr(whole, field))


def test_batch_stat_norm_equals_builtin_batch_norm_in_training_mode():
    x = torch.randn(6, 3, 5, 5, dtype=torch.float64)
    norm = BatchStatNorm(3).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
        norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    expected = F.batch_norm(x, None, None, norm.weight, norm.bias, training=True, eps=norm.eps)
    torch.testing.assert_close(norm(x), expected)


def _plain_ops_batch_stat_norm(norm: BatchStatNorm, x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True)
    normalized = (x - mean) * torch.rsqrt(var + norm.eps)
    return normalized * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)


def test_batch_stat_norm_on_plain_tensors_is_the_fused_kernel_exact_to_second_order(
        monkeypatch):
    """Outside torch.func transforms the norm runs F.batch_norm (faster); its value, gradient
    and Hessian-vector product equal the plain-operations form's."""
    generator = torch.Generator().manual_seed(4)
    norm = BatchStatNorm(3).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
        norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    probe = torch.randn(6, 3, 4, 4, dtype=torch.float64, generator=generator)
    tangents = [torch.randn(t.shape, dtype=torch.float64, generator=generator)
                for t in (x, norm.weight, norm.bias)]

    def derivatives(forward):
        inputs = (x, norm.weight, norm.bias)
        loss = (forward(x).tanh() * probe).sum()  # tanh: a loss with curvature in the output
        grads = torch.autograd.grad(loss, inputs, create_graph=True)
        curvature = sum((g * v).sum() for g, v in zip(grads, tangents, strict=True))
        hvp = torch.autograd.grad(curvature, inputs)
        return loss.detach(), [g.detach() for g in grads], list(hvp)

    calls = []
    fused = F.batch_norm
    monkeypatch.setattr(F, "batch_norm", lambda *a, **k: calls.append(1) or fused(*a, **k))
    ours = derivatives(norm)
    assert calls, "the module should take the fused kernel on plain tensors"
    reference = derivatives(lambda inputs: _plain_ops_batch_stat_norm(norm, inputs))
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)

    calls.clear()  # under vmap it must not: the fused kernel's batching is wrong to 2nd order
    torch.func.vmap(norm)(x.detach().unsqueeze(0).expand(2, -1, -1, -1, -1))
    assert not calls
    # one value per channel (one image, 1 x 1 maps), which F.batch_norm refuses: the bias
    single = torch.randn(1, 3, 1, 1, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(norm(single), norm.bias.detach().view(1, 3, 1, 1))
    assert not calls
    model = Conv4(5, filters=4, image_size=14)  # stride 2 four times: 1 x 1 maps at the end
    assert model(torch.rand(1, 1, 14, 14)).shape == (1, 5)


@pytest.mark.parametrize(("downsample", "size"), [("stride", 28), ("maxpool", 28), ("stride", 12)])
def test_conv4_maps_images_to_logits(downsample, size):
    model = Conv4(5, filters=8, image_size=size, downsample=downsample)
    reset_conv4(model, torch.Generator().manual_seed(0))
    assert model(torch.rand(7, 1, size, size)).shape == (7, 5)
    assert not any(isinstance(m, torch.nn.Conv2d) and m.bias is not None for m in model.modules())


def _tiny_conv_problem(seed: int, num_tasks: int = 3):
    torch.manual_seed(seed)
    model = Conv4(3, filters=3, image_size=8).double()
    reset_conv4(model, torch.Generator().manual_seed(seed))
    params = OrderedDict((k, v.detach().clone().requires_grad_(True))
                         for k, v in params_of(model).items())
    images = OmniglotImages(
        (torch.rand(12, 20, 8, 8, generator=torch.Generator().manual_seed(seed)) * 255)
        .to(torch.uint8).numpy(), tuple(f"c{i}" for i in range(12)))
    batch = sample_omniglot_batch(class_pool(images, range(12), rotations=True), num_tasks, 3,
                                  2, 2, torch.Generator().manual_seed(seed))
    batch = type(batch)(batch.support_x.double(), batch.support_y, batch.query_x.double(),
                        batch.query_y)
    return model, params, batch


@pytest.mark.parametrize("method", ["maml", "fomaml", "reptile"])
def test_vmap_path_equals_per_task_loop_for_conv4_with_batch_norm(method):
    model, params, batch = _tiny_conv_problem(seed=1, num_tasks=4)
    loop = meta_gradient(model, params, batch, cross_entropy, method=method, steps=2,
                         lr=[0.4, 0.2], vectorize=False)
    vmapped = meta_gradient(model, params, batch, cross_entropy, method=method, steps=2,
                            lr=[0.4, 0.2], vectorize=True)
    torch.testing.assert_close(flatten(vmapped.params), flatten(loop.params),
                               rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(vmapped.query_losses, loop.query_losses)
    assert vmapped.query_metric is None and loop.query_metric is None
    with_metric = [meta_gradient(model, params, batch, cross_entropy, method=method, steps=1,
                                 lr=0.4, vectorize=v, metric_fn=accuracy).query_metric
                   for v in (False, True)]
    torch.testing.assert_close(with_metric[0], with_metric[1])
    assert with_metric[0].shape == (4,)


@pytest.mark.parametrize("vectorize", [False, True])
def test_maml_meta_gradient_through_batch_norm_matches_finite_differences(vectorize):
    model, params, batch = _tiny_conv_problem(seed=2, num_tasks=2)
    grads = meta_gradient(model, params, batch, cross_entropy, method="maml", steps=1, lr=0.4,
                          vectorize=vectorize).params
    first_order = meta_gradient(model, params, batch, cross_entropy, method="fomaml", steps=1,
                                lr=0.4, vectorize=vectorize).params

    def meta_loss(flat: torch.Tensor) -> torch.Tensor:
        offset, trial = 0, OrderedDict()
        for k, v in params.items():
            trial[k] = flat[offset: offset + v.numel()].view_as(v).requires_grad_(True)
            offset += v.numel()
        return meta_gradient(model, trial, batch, cross_entropy, method="maml", steps=1,
                             lr=0.4, vectorize=False).query_losses.mean()

    base = flatten(params).detach()
    # central differences along random directions (the full gradient has ~400 entries)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        direction = torch.randn(base.shape, dtype=torch.float64, generator=generator)
        eps = 1e-5
        numeric = (meta_loss(base + eps * direction)
                   - meta_loss(base - eps * direction)) / (2 * eps)
        torch.testing.assert_close(flatten(grads) @ direction, numeric, rtol=1e-5, atol=1e-9)
        # the check can tell: dropping the second-order term is far off
        assert abs(flatten(first_order) @ direction - numeric) > 1e-3 * abs(numeric)


@needs_omniglot
def test_train_evaluate_render_through_the_cli(tmp_path, omniglot_images, omniglot_cache, capsys,
                                               monkeypatch):
    run = tmp_path / "omni"
    common = ["--set", f"data.cache_dir={omniglot_cache}", "--set", "model.filters=8",
              "--set", "training.iterations=3", "--set", "training.meta_batch_size=2",
              "--set", "run.progress=false", "--set", "run.tensorboard=false"]
    assert main(["train", "omniglot-5w1s", "--run-dir", str(run), *common]) == 0
    assert f"metarl: omniglot run in {run}, on cpu" in capsys.readouterr().err
    # elsewhere first: the run directory stays as training left it, split file included
    trained = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert main(["evaluate", str(run), "--tasks", "20", "--steps", "2",
                 "--output-dir", str(tmp_path / "elsewhere")]) == 0
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == trained
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == [
        "adaptation.png", "evaluation.json", "omniglot_split.json"]
    assert main(["evaluate", str(run), "--tasks", "20", "--steps", "2"]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    assert result["steps"] == [0, 1, 2] and len(result["mean"]) == 3
    assert result["tasks"] == 20 and result["ways"] == 5 and result["queries_per_class"] == 1
    assert all(0 <= m <= 100 for m in result["mean"])
    assert (run / "adaptation.png").stat().st_size > 0
    # the test tasks' images are gathered a chunk at a time: the chunk size changes no number
    assert main(["evaluate", str(run), "--tasks", "20", "--steps", "2",
                 "--set", "evaluation.chunk_tasks=3"]) == 0
    assert json.loads((run / "evaluation.json").read_text())["mean"] == result["mean"]
    assert json.loads((tmp_path / "elsewhere" / "evaluation.json").read_text())[
        "mean"] == result["mean"]
    assert (tmp_path / "elsewhere" / "adaptation.png").stat().st_size > 0
    split = json.loads((run / "omniglot_split.json").read_text())
    assert json.loads((tmp_path / "elsewhere" / "omniglot_split.json").read_text()) == split
    assert len(split["train"]) == 1200 and len(split["test"]) == 423
    assert main(["render", str(run), "--tasks", "2"]) == 0
    assert (run / "omniglot_predictions.png").stat().st_size > 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2, 3]
    assert all(0 <= m["query_accuracy"] <= 100 for m in metrics)

    # where it computes may change after training (no GPU here: auto is the CPU)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["evaluate", str(run), "--tasks", "20", "--steps", "2", "--set",
                 "device=auto"]) == 0
    assert json.loads((run / "evaluation.json").read_text())["mean"] == result["mean"]
    capsys.readouterr()
    assert main(["render", str(run), "--tasks", "2", "--set", "device=cuda"]) == 2
    assert "device = 'cuda': this torch" in capsys.readouterr().err
    kept = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    for command in (["evaluate", str(run), "--snapshots", "--set", "device=cuda"],
                    ["train", "--resume", str(run), "--set", "device=cuda",
                     "--set", "training.iterations=5"]):
        assert main(command) == 2, command
        assert ("device = 'cuda': this torch" in (err := capsys.readouterr().err)
                and "give --set device=cpu instead of --set device=cuda" in err)
    # nothing written: config.yaml still says where the run can go on
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == kept
    # a hand edit to a device this machine lacks: even a finished run says so on resume
    config_text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config_text.replace("\ndevice: cpu ", "\ndevice: cuda "))
    for command in (["train", "--resume", str(run)], ["evaluate", str(run)],
                    ["render", str(run)]):
        assert main(command) == 2, command
        assert f"set device: cpu in {run / 'config.yaml'}, or --set device=cpu" in (
            capsys.readouterr().err)
    (run / "config.yaml").write_text(config_text)

    # where the data lives may change after training: --set, resume --set, config.yaml
    capsys.readouterr()
    nowhere = tmp_path / "moved"
    assert main(["evaluate", str(run), "--tasks", "4", "--set", f"data.root={nowhere}"]) == 2
    assert f"neither {nowhere / 'images_background.zip'}" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--tasks", "4", "--set",
                 f"data.root={OMNIGLOT_ROOT}"]) == 0
    assert main(["train", "--resume", str(run), "--set", f"data.root={OMNIGLOT_ROOT}",
                 "--set", "device=auto"]) == 0
    assert f"root: {OMNIGLOT_ROOT}" in (run / "config.yaml").read_text()
    assert "\ndevice: auto  #" in (run / "config.yaml").read_text()
    assert main(["evaluate", str(run), "--tasks", "4"]) == 0
    assert main(["evaluate", str(run), "--set", "data.rotations=false"]) == 2
    assert "and where it computes and its data lives: device, data.root" in capsys.readouterr().err


def test_missing_data_exits_2_naming_the_archives(tmp_path, capsys, monkeypatch):
    code = main(["train", "omniglot-5w1s", "--run-dir", str(tmp_path / "run"),
                 "--set", f"data.root={tmp_path / 'nowhere'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "images_background.zip" in err and "METARL_OMNIGLOT" not in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    monkeypatch.setenv("METARL_OMNIGLOT", str(tmp_path / "elsewhere"))
    assert main(["train", "omniglot-5w1s", "--run-dir", str(tmp_path / "run")]) == 2
    assert (f"(the folder {tmp_path / 'elsewhere'} came from $METARL_OMNIGLOT, as data.root "
            "is null)") in capsys.readouterr().err


def test_query_predictions_agree_with_the_adaptation_curve():
    model, params, batch = _tiny_conv_problem(seed=3, num_tasks=3)
    outputs = query_predictions(model, params, batch, cross_entropy, steps=2, lr=[0.4, 0.2])
    assert outputs.shape == (3, 3, batch.query_x.shape[1], 3)
    curve = adaptation_curve(model, params, batch, cross_entropy, cross_entropy, steps=2,
                             lr=[0.4, 0.2], vectorize=False)
    from_outputs = torch.stack([torch.stack([cross_entropy(outputs[t, s], batch.query_y[t])
                                             for s in range(3)]) for t in range(3)])
    torch.testing.assert_close(from_outputs, curve)
    assert not torch.allclose(curve[:, 0], curve[:, 2])  # the steps change the outputs


def test_data_root_search_order(tmp_path, monkeypatch):
    """data.root, then $METARL_OMNIGLOT, then data/omniglot and ../shared/data/omniglot from
    the working directory, then from the checkout; none: a ConfigError, or data/omniglot to
    download to."""
    import metarl.supervised.omniglot_experiment as omniglot_experiment
    from metarl.config import ConfigError

    resolve = omniglot_experiment.resolve_root
    monkeypatch.setattr(omniglot_experiment, "CHECKOUT", tmp_path / "checkout")
    monkeypatch.delenv("METARL_OMNIGLOT", raising=False)
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    with pytest.raises(ConfigError, match=r"no Omniglot folder found .*data.download: true"):
        resolve(None)
    assert str(resolve(None, download=True)) == "data/omniglot"
    (tmp_path / "checkout" / "data" / "omniglot").mkdir(parents=True)
    assert resolve(None) == tmp_path / "checkout" / "data" / "omniglot"
    (tmp_path / "work" / "shared" / "data" / "omniglot").mkdir(parents=True)
    assert str(resolve(None)) == "../shared/data/omniglot"
    (work / "data" / "omniglot").mkdir(parents=True)
    assert str(resolve(None)) == "data/omniglot"
    monkeypatch.setenv("METARL_OMNIGLOT", str(tmp_path / "from-env"))
    assert resolve(None) == tmp_path / "from-env"
    assert resolve("~/given") == Path("~/given").expanduser()


def test_a_checkpoint_of_another_character_split_is_refused():
    from metarl.config import ConfigError
    from metarl.supervised.omniglot_experiment import OmniglotTrainer

    trainer = OmniglotTrainer.__new__(OmniglotTrainer)  # only the split matters here
    trainer.split = {"train": ["a", "b"], "test": ["c"]}
    with pytest.raises(ConfigError, match=r"character split .* differs"):
        trainer.load_state_dict({"split": {"train": ["a", "c"], "test": ["b"]}})


def test_each_class_of_a_task_gets_its_own_random_rotation_applied_to_its_images():
    data = _labelled_images()
    pool = class_pool(data, range(30), rotations=True)
    draw = draw_omniglot_tasks(pool, 400, 5, 1, 1, torch.Generator().manual_seed(0))
    counts = torch.bincount(draw.rotations.flatten(), minlength=4)
    assert bool((counts > 400).all()), counts  # ~U{0, 1, 2, 3}: 500 each
    # drawn per class, not once per task: P(5 equal rotations) = 1/256
    assert (draw.rotations != draw.rotations[:, :1]).any(dim=1).float().mean() > 0.9
    batch = draw.gather(pool)
    for t in range(8):
        for c in range(5):
            character, drawer = int(draw.characters[t, c]), int(draw.drawers[t, c, 0])
            original = torch.from_numpy(data.images[character, drawer])
            expected = torch.rot90(original, int(draw.rotations[t, c])).float() / 255
            assert torch.equal(batch.support_x[t, c, 0], expected), (t, c)


def test_a_task_may_use_all_20_drawings_and_all_characters_of_the_pool():
    pool = class_pool(_labelled_images(characters=5), range(5), rotations=False)
    draw = draw_omniglot_tasks(pool, 3, 5, 1, 19, torch.Generator().manual_seed(0))
    assert sorted(draw.characters[0].tolist()) == [0, 1, 2, 3, 4]
    assert torch.equal(draw.drawers.sort(-1).values, torch.arange(20).expand(3, 5, 20))
    with pytest.raises(ValueError, match="exceeds the 20 drawings"):
        draw_omniglot_tasks(pool, 3, 5, 1, 20, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="6-way tasks need 6 characters"):
        draw_omniglot_tasks(pool, 3, 6, 1, 1, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("train", [0, 1623])
def test_a_split_keeps_characters_on_both_sides(train):
    with pytest.raises(ValueError, match=r"train_characters must be in 1..1622"):
        split_characters([f"c{i}" for i in range(1623)], train, seed=0)


@pytest.mark.parametrize(("downsample", "sizes", "flat"), [
    ("stride", [14, 7, 4, 2], 64 * 2 * 2),  # MAML: stride-2 convolutions, 28 -> 2
    ("maxpool", [14, 7, 3, 1], 64),  # stride-1 convolutions, each followed by 2x2 max-pool
])
def test_conv4_is_four_conv_batchnorm_relu_blocks(downsample, sizes, flat):
    model = Conv4(5, downsample=downsample)
    layers = list(model.features)
    per_block = 4 if downsample == "maxpool" else 3
    assert len(layers) == 4 * per_block
    seen = []
    x = torch.rand(2, 1, 28, 28)
    for block in range(4):
        conv, norm, relu, *pool = layers[block * per_block:(block + 1) * per_block]
        assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (3, 3)
        assert conv.padding == (1, 1) and conv.out_channels == 64 and conv.bias is None
        assert conv.stride == ((2, 2) if downsample == "stride" else (1, 1))
        assert isinstance(norm, BatchStatNorm) and isinstance(relu, torch.nn.ReLU)
        if downsample == "maxpool":
            assert isinstance(pool[0], torch.nn.MaxPool2d) and pool[0].kernel_size == 2
        for layer in layers[block * per_block:(block + 1) * per_block]:
            x = layer(x)
        seen.append(x.shape[-1])
        assert bool((x >= 0).all())  # after the ReLU
    assert seen == sizes and model.classifier.in_features == flat


def test_batch_stat_norm_is_pytorchs_batch_norm_with_its_default_epsilon():
    x = 1e-3 * torch.randn(8, 3, 4, 4, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(0))  # var ~1e-6: eps shows
    reference = torch.nn.BatchNorm2d(3).double().train()  # eps 1e-5
    torch.testing.assert_close(BatchStatNorm(3).double()(x), reference(x))


def test_reset_conv4_draws_glorot_uniform_weights():
    """U(±sqrt(6 / (fan_in + fan_out))), fans counting the 3x3 receptive field."""
    model = Conv4(5, filters=64)
    reset_conv4(model, torch.Generator().manual_seed(0))
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert len(layers) == 5
    for layer in layers:
        receptive = 9 if isinstance(layer, torch.nn.Conv2d) else 1
        fan_out, fan_in = layer.weight.shape[0] * receptive, layer.weight.shape[1] * receptive
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = layer.weight.abs()
        assert w.max() <= bound and w.max() > 0.95 * bound, (layer, bound)
    assert torch.equal(model.classifier.bias, torch.zeros(5))


def test_accuracy_is_the_fraction_of_argmax_hits():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 1.0, 5.0], [1.0, 0.0, 0.5]])
    assert accuracy(logits, torch.tensor([0, 2, 2, 1])).item() == pytest.approx(0.5)


@pytest.mark.parametrize(("evaluation_queries", "expected"), [(None, 2), (3, 3)])
def test_render_pictures_the_query_sets_that_evaluate_scores(
        tmp_path, monkeypatch, evaluation_queries, expected):
    """Conv4 normalizes with the statistics of the query images it is given, so render draws
    as many queries per class as evaluate (evaluation.queries, else task.queries)."""
    import metarl.supervised.omniglot_experiment as omniglot_experiment
    from metarl.config import from_dict
    from metarl.experiment import RenderOptions

    config = from_dict(omniglot_experiment.OmniglotConfig, {
        "data": {"image_size": 8, "rotations": False}, "model": {"filters": 2,
                                                              "downsample": "stride"},
        "task": {"ways": 3, "shots": 1, "queries": 2},
        "evaluation": {"queries": evaluation_queries, "steps": 1}})
    experiment = omniglot_experiment.OmniglotExperiment()
    images = _labelled_images(size=8)
    monkeypatch.setattr(experiment, "test_pool", lambda *args: (
        class_pool(images, list(range(10)), rotations=False), images))
    drawn = []
    real = omniglot_experiment.sample_omniglot_batch

    def spy(*args, **kwargs):
        drawn.append(real(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(omniglot_experiment, "sample_omniglot_batch", spy)
    model = omniglot_experiment.make_model(config, torch.Generator().manual_seed(0))
    state = {"trainer": {"params": params_of(model)}, "iteration": 0}
    experiment.render(config, state, tmp_path, RenderOptions(tasks=1))
    assert drawn[0].query_x.shape[:2] == (1, 3 * expected)
    assert (tmp_path / "omniglot_predictions.png").stat().st_size > 0


def test_labels_are_not_tied_to_character_order():
    from metarl.supervised.omniglot import class_pool, draw_omniglot_tasks
    from metarl.supervised.omniglot_data import OmniglotImages
    data = OmniglotImages(np.zeros((30, 20, 4, 4), dtype=np.uint8),
                          tuple(f"c{i}" for i in range(30)))
    pool = class_pool(data, range(30), rotations=False)
    draw = draw_omniglot_tasks(pool, 2000, 5, 1, 1, torch.Generator().manual_seed(0))
    ascending = (draw.characters.diff(dim=1) > 0).all(dim=1).float().mean().item()
    assert ascending < 0.05  # 1/120 for a random order
    counts = torch.bincount(draw.characters.argmin(dim=1), minlength=5)
    assert bool((counts > 300).all()), counts  # ~400 each


def test_images_are_not_resized_beyond_the_drawings_own_size():
    from metarl.config import ConfigError, from_dict
    from metarl.supervised.omniglot_experiment import OmniglotConfig

    with pytest.raises(ConfigError, match=r"data.image_size = 100000: must be <= 105"):
        from_dict(OmniglotConfig, {"data": {"image_size": 100000}})
    assert from_dict(OmniglotConfig, {"data": {"image_size": 105}}).data.image_size == 105


@pytest.mark.parametrize(("steps", "expected"), [
    (5, {"MAML (paper): 98.7%": {5: 98.7}, "first-order MAML (paper): 98.3%": {5: 98.3},
         "Reptile (paper): 97.68%": {5: 97.68}}),
    (0, None),  # no adaptation curve to set them beside
])
def test_the_papers_accuracies_are_named_without_a_step_count_of_ours(
        tmp_path, monkeypatch, steps, expected):
    """The published accuracies come after each paper's own test steps: drawn across the
    steps evaluated (one value each), never labelled with the run's step count."""
    import metarl.supervised.omniglot_experiment as omniglot_experiment
    from metarl.config import from_dict
    from metarl.experiment import EvaluateOptions

    config = from_dict(omniglot_experiment.OmniglotConfig, {
        "data": {"image_size": 8, "rotations": False},
        "model": {"filters": 2, "downsample": "stride"},
        "task": {"ways": 5, "shots": 1, "queries": 1},
        "evaluation": {"steps": 3, "tasks": 4}})
    experiment = omniglot_experiment.OmniglotExperiment()
    images = _labelled_images(size=8)
    monkeypatch.setattr(experiment, "test_pool", lambda *args: (
        class_pool(images, list(range(10)), rotations=False), images))
    drawn = {}
    monkeypatch.setattr(omniglot_experiment, "plot_adaptation_curves",
                        lambda curves, steps, output, **kwargs: drawn.update(kwargs))
    model = omniglot_experiment.make_model(config, torch.Generator().manual_seed(0))
    state = {"trainer": {"params": params_of(model)}, "iteration": 0}
    experiment.evaluate(config, state, tmp_path, EvaluateOptions(steps=steps, tasks=4))
    assert drawn["reference"] == expected


def test_the_split_written_to_an_output_dir_replaces_another_runs(tmp_path, monkeypatch):
    """A folder of evaluations may hold another run's split; the run's own is written
    once and kept."""
    import metarl.supervised.omniglot_experiment as omniglot_experiment
    from metarl.config import from_dict

    images = _labelled_images(characters=30)
    monkeypatch.setattr(omniglot_experiment, "load_images", lambda config: images)
    config = from_dict(omniglot_experiment.OmniglotConfig, {
        "data": {"image_size": 8, "rotations": False, "train_characters": 20}})
    experiment = omniglot_experiment.OmniglotExperiment()
    state = {"trainer": {}}
    run, out = tmp_path / "run", tmp_path / "out"
    run.mkdir()
    out.mkdir()
    (out / "omniglot_split.json").write_text('{"train": ["another run"], "test": []}\n')
    experiment.test_pool(config, state, run, out)
    written = json.loads((out / "omniglot_split.json").read_text())
    assert len(written["train"]) == 20 and len(written["test"]) == 10
    assert not (run / "omniglot_split.json").exists()
    experiment.test_pool(config, state, run)
    assert json.loads((run / "omniglot_split.json").read_text()) == written


def test_evaluation_takes_its_own_learning_rates_and_queries():
    """Later test-time steps adapt at inner_lr · later_lr_scale, and the test tasks hold
    evaluation.queries query images per class (task.queries when null)."""
    from metarl.config import from_dict
    from metarl.supervised.omniglot_experiment import (
        OmniglotConfig,
        OmniglotExperiment,
        evaluation_lr,
    )

    cpu = torch.device("cpu")
    own = from_dict(OmniglotConfig, {"adaptation": {"inner_lr": 0.4},
                                     "evaluation": {"later_lr_scale": 0.25, "queries": 3}})
    assert evaluation_lr(own, None, 3, cpu) == [0.4, 0.1, 0.1]
    learned = OrderedDict(w=torch.ones(2))
    assert torch.equal(evaluation_lr(own, learned, 3, cpu)["w"], learned["w"])
    pool = torch.zeros(12, 4, 20, 4, 4, dtype=torch.uint8)
    experiment = OmniglotExperiment()
    draw = experiment.test_tasks(own, pool, 2, seed=0)
    assert draw.drawers.shape == (2, own.task.ways, own.task.shots + 3)
    default = from_dict(OmniglotConfig, {"task": {"queries": 2}})
    draw = experiment.test_tasks(default, pool, 2, seed=0)
    assert draw.drawers.shape == (2, default.task.ways, default.task.shots + 2)


def _tiny_omniglot(monkeypatch, **sections):
    """A 30-character stand-in for the data (20 for training) and a tiny Conv4 config."""
    import metarl.supervised.omniglot_experiment as omniglot_experiment
    from metarl.config import from_dict

    images = _labelled_images(characters=30, size=8)
    monkeypatch.setattr(omniglot_experiment, "load_images", lambda config: images)
    data = {"image_size": 8, "rotations": False, "train_characters": 20,
            **sections.pop("data", {})}
    config = from_dict(omniglot_experiment.OmniglotConfig, {
        "data": data, "model": {"filters": 2, "downsample": "stride"},
        "task": {"ways": 3, "shots": 1, "queries": 2}, **sections})
    return config, images


def test_training_and_testing_draw_from_their_own_side_of_the_split(tmp_path, monkeypatch):
    """Training classes are the split's training characters (rotated as data.rotations
    says), evaluation's the test characters; a checkpoint of another split is refused."""
    import metarl.supervised.omniglot_experiment as omniglot_experiment
    from metarl.config import ConfigError

    config, images = _tiny_omniglot(monkeypatch)
    split = omniglot_experiment.character_split(config, images)
    pools = []
    real = omniglot_experiment.class_pool
    monkeypatch.setattr(omniglot_experiment, "class_pool", lambda data, indices, rotations: (
        pools.append((sorted(indices), rotations)) or real(data, indices, rotations)))
    experiment = omniglot_experiment.OmniglotExperiment()
    trainer = experiment.make_trainer(config)
    assert pools == [(sorted(split.train), False)]
    pool, _ = experiment.test_pool(config, {"trainer": trainer.state_dict()}, tmp_path)
    assert sorted(int(c) for c in pool[:, 0, 0, 0, 0]) == sorted(split.test)  # pixel (0, 0)
    with pytest.raises(ConfigError, match="differs from the one computed now"):
        experiment.test_pool(config, {"trainer": {"split": {"train": ["x"], "test": []}}},
                             tmp_path)
    rotated, _ = _tiny_omniglot(monkeypatch, data={"rotations": True})
    experiment.make_trainer(rotated)
    assert pools[-1] == (sorted(split.train), True)


def test_omniglot_evaluation_follows_its_seed_and_learning_rates(tmp_path, monkeypatch):
    """`evaluate --seed 5` draws seed 5's test tasks (another seed, others) and says so;
    evaluation.inner_lr sets the first step's rate; accuracies are in %."""
    import metarl.supervised.omniglot_experiment as omniglot_experiment
    from metarl.experiment import EvaluateOptions

    config, _ = _tiny_omniglot(monkeypatch, evaluation={"inner_lr": 0.2, "steps": 1,
                                                        "later_lr_scale": 0.5})
    experiment = omniglot_experiment.OmniglotExperiment()
    pool, _ = experiment.test_pool(config, {"trainer": {}}, tmp_path)
    drawers = [experiment.test_tasks(config, pool, 4, seed).drawers for seed in (0, 0, 1)]
    assert torch.equal(drawers[0], drawers[1]) and not torch.equal(drawers[0], drawers[2])
    seeds = []
    real = experiment.test_tasks
    monkeypatch.setattr(experiment, "test_tasks", lambda c, p, tasks, seed: (
        seeds.append(seed) or real(c, p, tasks, seed)))
    model = omniglot_experiment.make_model(config, torch.Generator().manual_seed(0))
    result = experiment.evaluate(config, {"trainer": {"params": params_of(model)},
                                          "iteration": 0}, tmp_path,
                                 EvaluateOptions(tasks=4, seed=5, steps=2))
    assert seeds == [5] and result["seed"] == 5
    assert result["inner_lr"] == [0.2, 0.1]
    logits = torch.tensor([[2.0, 1.0], [2.0, 1.0]])
    assert float(omniglot_experiment.percent_accuracy(logits, torch.tensor([0, 1]))) == 50.0
    # three of twenty right is 15.0 exactly (100 x the float32 mean 0.15 is 15.000001)
    twenty = torch.eye(20)
    labels = torch.tensor([0, 1, 2] + [0] * 17)  # rows 0-2 right, the others wrong
    assert float(omniglot_experiment.percent_accuracy(twenty, labels)) == 15.0


def test_omniglot_render_shows_the_last_steps_predictions_of_the_seeds_tasks(
        tmp_path, monkeypatch):
    """The "after" row is the prediction after the last step (here 2, which differs from
    step 1's), support images sit under their own class with 2 shots, `--seed` picks the
    tasks, and a Meta-SGD run adapts with its learned rates."""
    import matplotlib.figure

    import metarl.supervised.omniglot_experiment as omniglot_experiment
    from metarl.experiment import RenderOptions

    config, _ = _tiny_omniglot(monkeypatch, task={"ways": 3, "shots": 2, "queries": 1})
    experiment = omniglot_experiment.OmniglotExperiment()
    figures, batches, rates = [], [], []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, *args, **kwargs: figures.append(self))
    real_sample = omniglot_experiment.sample_omniglot_batch
    monkeypatch.setattr(omniglot_experiment, "sample_omniglot_batch", lambda *args: (
        batches.append(real_sample(*args)) or batches[-1]))

    def predictions(model, params, batch, loss, *, steps, lr, moments, minibatches,
                    transductive):
        """(T, steps + 1, Q, ways) outputs."""
        assert moments is None and minibatches is None, "full-batch gradient steps"
        rates.append(lr)
        outputs = torch.zeros(batch.query_x.shape[0], steps + 1, batch.query_x.shape[1], 3)
        outputs[:, 1, :, 1] = 1.0  # step 1 predicts class 1
        outputs[:, 2, :, 2] = 1.0  # step 2 predicts class 2
        return outputs

    monkeypatch.setattr(omniglot_experiment, "query_predictions", predictions)
    model = omniglot_experiment.make_model(config, torch.Generator().manual_seed(0))
    learned = {name: torch.full_like(value, 0.3) for name, value in params_of(model).items()}
    state = {"trainer": {"params": params_of(model), "inner_lr": learned}, "iteration": 0}
    for seed in (4, 4, 5):
        experiment.render(config, state, tmp_path, RenderOptions(tasks=1, steps=2, seed=seed))
    assert torch.equal(batches[0].query_x, batches[1].query_x)
    assert not torch.equal(batches[0].query_x, batches[2].query_x)
    assert all(isinstance(lr, dict) for lr in rates)
    axes = np.asarray(figures[-1].axes).reshape(3, 3)  # support, before, after x 3 columns
    assert [ax.get_title() for ax in axes[2]] == ["predicted 2"] * 3  # step 2 says class 2
    assert [ax.title.get_color() for ax in axes[2]] == ["red", "red", "green"]
    batch = batches[-1]
    for c, ax in enumerate(axes[0]):
        (shown,) = ax.get_images()
        np.testing.assert_array_equal(shown.get_array(), batch.support_x[0, 2 * c, 0].numpy())
        assert int(batch.support_y[0, 2 * c]) == c
        assert ax.get_title() == f"class {c} (1 of 2)"
    for c in range(3):  # under each class's support image, a query of that class
        (shown,) = axes[1, c].get_images()
        (q,) = [q for q in range(batch.query_x.shape[1])
                if np.array_equal(batch.query_x[0, q, 0].numpy(), shown.get_array())]
        assert int(batch.query_y[0, q]) == c


def _reptile_paper_config(monkeypatch, **overrides):
    sections = {"task": {"ways": 3, "shots": 1, "queries": 1, "train_shots": 3},
                "adaptation": {"method": "reptile", "inner_optimizer": "adam",
                               "inner_batch_size": 4, "inner_steps": 2, "inner_lr": 0.01},
                "training": {"iterations": 4, "meta_batch_size": 2, "outer_optimizer": "sgd",
                             "outer_lr": 1.0, "outer_lr_final": 0.0}}
    for name, values in overrides.items():
        sections[name] = {**sections.get(name, {}), **values}
    return _tiny_omniglot(monkeypatch, **sections)[0]


def test_reptile_paper_training_anneals_its_step_and_resumes_with_the_inner_adams_state(
        tmp_path, monkeypatch):
    """The Reptile paper's protocol: training tasks of train_shots images per class, the outer
    step falling linearly to outer_lr_final, and the inner Adam's state carried from batch to
    batch and through a checkpoint, so that a resumed run continues exactly."""
    import metarl.supervised.omniglot_experiment as omniglot_experiment

    config = _reptile_paper_config(monkeypatch)
    experiment = omniglot_experiment.OmniglotExperiment()
    straight = experiment.make_trainer(config)
    batch = straight.sample_batch(torch.Generator().manual_seed(0))
    assert batch.support_x.shape[1] == 3 * 3, "ways x train_shots support images"
    logged, applied = [], []
    for i in range(4):
        logged.append(straight.train_iteration(i))
        applied.append(straight.optimizer.param_groups[0]["lr"])
    assert [m["outer_lr"] for m in logged] == applied == [1.0, 0.75, 0.5, 0.25]
    state = straight.state_dict()
    assert state["inner_moments"]["steps"] == 4 * 2 * 2, "iterations x tasks x inner steps"

    first = experiment.make_trainer(config)
    for i in range(2):
        first.train_iteration(i)
    torch.save(first.state_dict(), tmp_path / "half.pt")
    resumed = experiment.make_trainer(config)
    resumed.load_state_dict(torch.load(tmp_path / "half.pt"))
    for i in range(2, 4):
        resumed.train_iteration(i)
    again = resumed.state_dict()
    assert all(torch.equal(again["params"][k], state["params"][k]) for k in state["params"])
    moments = state["inner_moments"]["second_moment"]
    assert all(torch.equal(again["inner_moments"]["second_moment"][k], moments[k])
               for k in moments)
    assert all(bool((v > 0).any()) for v in moments.values())


def _trained_once(config):
    """The experiment and the state of a run of ``config`` one meta-iteration in."""
    import metarl.supervised.omniglot_experiment as omniglot_experiment

    experiment = omniglot_experiment.OmniglotExperiment()
    trainer = experiment.make_trainer(config)
    trainer.train_iteration(0)
    return experiment, {"trainer": trainer.state_dict(), "iteration": 1}


def _record_adaptation_calls(monkeypatch, record):
    """Call ``record(args, kwargs)`` on each call evaluate and render make to
    adaptation_curve and query_predictions, which still run."""
    import metarl.supervised.omniglot_experiment as omniglot_experiment

    for name in ("adaptation_curve", "query_predictions"):
        real = getattr(omniglot_experiment, name)

        def recording(*args, real=real, **kwargs):
            record(args, kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(omniglot_experiment, name, recording)


def test_a_reptile_run_adapts_at_test_time_from_its_inner_adams_state(tmp_path, monkeypatch):
    """evaluate and render adapt with the run's inner Adam, from the state it trained to (the
    Reptile authors evaluate that way); a run of gradient steps passes none."""
    from metarl.experiment import EvaluateOptions, RenderOptions

    config = _reptile_paper_config(monkeypatch)
    experiment, state = _trained_once(config)
    given = []
    _record_adaptation_calls(monkeypatch, lambda args, kwargs: given.append(kwargs["moments"]))
    result = experiment.evaluate(config, state, tmp_path, EvaluateOptions(tasks=2, steps=2))
    experiment.render(config, state, tmp_path, RenderOptions(tasks=1, steps=2,
                                                             output=tmp_path / "r.png"))
    assert result["inner_optimizer"] == "adam" and len(given) == 2
    stored = state["trainer"]["inner_moments"]
    for moments in given:
        assert moments.steps == stored["steps"] == 4
        assert all(torch.equal(moments.second_moment[k], stored["second_moment"][k])
                   for k in stored["second_moment"])
    plain = _reptile_paper_config(monkeypatch, adaptation={"inner_optimizer": "sgd"})
    given.clear()
    experiment.evaluate(plain, state, tmp_path, EvaluateOptions(tasks=2, steps=1))
    assert given == [None]


def test_evaluation_inner_batch_size_adapts_test_tasks_on_minibatches(tmp_path, monkeypatch):
    """evaluation.inner_batch_size: evaluate and render adapt each test task on shuffled
    minibatches of its support set, drawn from the evaluation seed for all tasks at once, so
    that the result does not depend on evaluation.chunk_tasks; without it, the whole set."""
    from metarl.experiment import EvaluateOptions, RenderOptions

    config = _reptile_paper_config(monkeypatch, task={"shots": 2},
                                   evaluation={"inner_batch_size": 4})
    experiment, state = _trained_once(config)
    given = []
    _record_adaptation_calls(monkeypatch,
                             lambda args, kwargs: given.append(kwargs["minibatches"]))

    def evaluated(cfg):
        return experiment.evaluate(cfg, state, tmp_path, EvaluateOptions(tasks=5, steps=3))

    whole_chunk = evaluated(config)
    ((indices,),) = [given]
    assert indices.shape == (5, 3, 4) and int(indices.min()) >= 0 and int(indices.max()) < 6
    for t in range(5):  # 12 draws go through two shuffles of the 6 support images
        assert sorted(indices[t].flatten()[:6].tolist()) == list(range(6))
    given.clear()
    chunked = evaluated(dataclasses.replace(
        config, evaluation=dataclasses.replace(config.evaluation, chunk_tasks=2)))
    assert [tuple(m.shape) for m in given] == [(2, 3, 4), (2, 3, 4), (1, 3, 4)]
    assert torch.equal(torch.cat(given), indices)
    assert chunked["mean"] == whole_chunk["mean"]
    written = json.loads((tmp_path / "evaluation.json").read_text())
    assert written["evaluation_config"]["inner_batch_size"] == 4
    given.clear()
    experiment.render(config, state, tmp_path, RenderOptions(tasks=2, steps=3,
                                                             output=tmp_path / "r.png"))
    assert tuple(given[0].shape) == (2, 3, 4)
    given.clear()
    unadapted = experiment.evaluate(config, state, tmp_path, EvaluateOptions(tasks=5, steps=0))
    assert tuple(given[0].shape) == (5, 0, 4) and unadapted["mean"] == whole_chunk["mean"][:1]
    given.clear()
    full = evaluated(dataclasses.replace(
        config, evaluation=dataclasses.replace(config.evaluation, inner_batch_size=None)))
    assert given == [None] and full["mean"][0] == whole_chunk["mean"][0]


def test_evaluation_shots_tests_a_run_on_another_k(tmp_path, monkeypatch, capsys):
    """evaluation.shots: evaluate and render draw test tasks of that many support images per
    class (a run trained with train_shots trains the same for any K); evaluation.json and the
    picture say which K, and the published figures are those of that K."""
    import metarl.supervised.omniglot_experiment as omniglot_experiment
    from metarl.experiment import EvaluateOptions, RenderOptions

    config = _reptile_paper_config(monkeypatch, evaluation={"shots": 3})
    experiment, state = _trained_once(config)
    support_sizes = []
    _record_adaptation_calls(monkeypatch, lambda args, kwargs: support_sizes.append(
        (args[2].support_x.shape[1], args[2].query_x.shape[1])))
    result = experiment.evaluate(config, state, tmp_path, EvaluateOptions(tasks=4, steps=1))
    experiment.render(config, state, tmp_path, RenderOptions(tasks=1, steps=1,
                                                             output=tmp_path / "r.png"))
    assert support_sizes == [(3 * 3, 3 * 1)] * 2, "3-way 3-shot tasks, one query per class"
    assert result["shots"] == 3 and "3-way 3-shot (trained 3-shot)" in result["table"]
    written = json.loads((tmp_path / "evaluation.json").read_text())
    assert written["evaluation_config"]["shots"] == 3
    maml, _ = _tiny_omniglot(monkeypatch, evaluation={"shots": 2})
    maml_state = {"trainer": experiment.make_trainer(maml).state_dict(), "iteration": 0}
    capsys.readouterr()
    result = experiment.evaluate(maml, maml_state, tmp_path, EvaluateOptions(tasks=2, steps=1))
    assert "maml, 3-way 2-shot (trained 1-shot)" in result["table"]
    assert ("this run trained on 1-shot tasks and is tested at 2 shots"
            in capsys.readouterr().err)
    five = _reptile_paper_config(monkeypatch, evaluation={"shots": 5}, task={"ways": 5})
    assert omniglot_experiment.test_shots(five) == 5
    assert experiment.test_tasks(five, torch.zeros(10, 20, 2, 2, dtype=torch.uint8), 2,
                                 0).drawers.shape == (2, 5, 5 + 1)


def test_non_transductive_scoring_runs_each_query_beside_the_support_set_alone():
    """query_outputs without transduction: query q's output is the last row of the model run
    on [support; query q], so batch norm sees no other query; adaptation curves scored so
    agree between vmap and loop and differ from transductive ones."""
    from metarl.supervised.meta import query_outputs

    model, params, batch = _tiny_conv_problem(seed=3, num_tasks=2)
    sx, qx = batch.support_x[0], batch.query_x[0]
    alone = query_outputs(model, params, sx, qx, transductive=False)
    for q in range(qx.shape[0]):
        expected = functional_call_rows(model, params, torch.cat([sx, qx[q:q + 1]]))[-1]
        torch.testing.assert_close(alone[q], expected)
    together = query_outputs(model, params, sx, qx)
    torch.testing.assert_close(together, functional_call_rows(model, params, qx))
    assert not torch.allclose(alone, together)
    curves = [adaptation_curve(model, params, batch, cross_entropy, accuracy, steps=2,
                               lr=0.3, vectorize=vectorize, transductive=False)
              for vectorize in (False, True)]
    torch.testing.assert_close(curves[0], curves[1])
    outputs = query_predictions(model, params, batch, cross_entropy, steps=2, lr=0.3,
                                transductive=False)
    for t in range(2):
        for step in range(3):
            torch.testing.assert_close(curves[0][t, step],
                                       accuracy(outputs[t, step], batch.query_y[t]))


def functional_call_rows(model, params, inputs):
    from torch.func import functional_call

    return functional_call(model, params, (inputs,)).detach()


def test_a_non_transductive_evaluation_is_labelled_and_has_no_published_figures(
        tmp_path, monkeypatch):
    import metarl.supervised.omniglot_experiment as omniglot_experiment
    from metarl.experiment import EvaluateOptions, RenderOptions

    config, _ = _tiny_omniglot(monkeypatch, task={"ways": 5, "shots": 1, "queries": 1},
                               evaluation={"transductive": False})
    experiment = omniglot_experiment.OmniglotExperiment()
    state = {"trainer": experiment.make_trainer(config).state_dict(), "iteration": 0}
    given = []
    real = omniglot_experiment.adaptation_curve
    monkeypatch.setattr(omniglot_experiment, "adaptation_curve", lambda *args, **kwargs: (
        given.append(kwargs["transductive"]) or real(*args, **kwargs)))
    result = experiment.evaluate(config, state, tmp_path, EvaluateOptions(tasks=3, steps=1))
    assert given == [False] and result["transductive"] is False
    real_predictions = omniglot_experiment.query_predictions
    monkeypatch.setattr(omniglot_experiment, "query_predictions", lambda *args, **kwargs: (
        given.append(kwargs["transductive"]) or real_predictions(*args, **kwargs)))
    experiment.render(config, state, tmp_path, RenderOptions(tasks=1, steps=1,
                                                             output=tmp_path / "r.png"))
    assert given == [False, False]
    assert result["published"] == {} and "maml, 5-way 1-shot, non-transductive" in result["table"]
    transductive = dataclasses.replace(
        config, evaluation=dataclasses.replace(config.evaluation, transductive=True))
    result = experiment.evaluate(transductive, state, tmp_path, EvaluateOptions(tasks=3, steps=1))
    assert given[-1] is True and result["published"]["MAML"] == 98.7


@pytest.mark.parametrize(("overrides", "message"), [
    ({"adaptation": {"method": "maml"}},
     "adaptation.inner_optimizer = adam needs adaptation.method = reptile"),
    ({"adaptation": {"method": "fomaml", "inner_optimizer": "sgd"}},
     "adaptation.inner_batch_size = 4 needs adaptation.method = reptile"),
    ({"adaptation": {"inner_batch_size": 10}},
     "adaptation.inner_batch_size = 10 exceeds the 9 support images"),
    ({"task": {"train_shots": 19, "queries": 2}},
     "task.train_shots \\+ task.queries = 21: a character has only 20 drawings"),
    ({"evaluation": {"inner_batch_size": 4}},
     "evaluation.inner_batch_size = 4 exceeds the 3 support images of a test task"),
])
def test_reptile_paper_settings_are_checked_before_any_work(monkeypatch, overrides, message):
    from metarl.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        _reptile_paper_config(monkeypatch, **overrides)
