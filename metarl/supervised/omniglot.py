"""Omniglot N-way K-shot tasks (MAML protocol) and the Conv4 classifier.

Protocol (MAML paper, after Santoro et al. 2016): the 1623 characters of both archives are
shuffled with a fixed seed; the first 1200 are meta-training characters, the rest test
characters. Each character rotated by 0, 90, 180 or 270 degrees is a class of its own. A
task draws N distinct characters, a rotation for each, and K + Q of the 20 drawings of each;
labels 0..N-1 are assigned in the drawn (random) order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._C._functorch import is_functorch_wrapped_tensor

from metarl.supervised.omniglot_data import DRAWERS, OmniglotImages
from metarl.supervised.tasks import TaskBatch


@dataclass(frozen=True)
class CharacterSplit:
    """Meta-training and test characters (indices into :class:`OmniglotImages` rows)."""

    train: tuple[int, ...]
    test: tuple[int, ...]

    def to_json(self, characters: Sequence[str]) -> dict[str, list[str]]:
        return {"train": [characters[i] for i in self.train],
                "test": [characters[i] for i in self.test]}


def split_characters(characters: Sequence[str], train_characters: int,
                     seed: int) -> CharacterSplit:
    """Shuffle all characters with ``seed``; the first ``train_characters`` are for training."""
    if not 0 < train_characters < len(characters):
        raise ValueError(f"train_characters must be in 1..{len(characters) - 1}, "
                         f"got {train_characters}")
    order = np.random.default_rng(seed).permutation(len(characters))
    return CharacterSplit(tuple(sorted(int(i) for i in order[:train_characters])),
                          tuple(sorted(int(i) for i in order[train_characters:])))


def class_pool(data: OmniglotImages, characters: Sequence[int], rotations: bool) -> Tensor:
    """The images of ``characters``: ``uint8 (C, R, 20, S, S)``, R = 4 rotations (or 1)."""
    images = torch.from_numpy(np.ascontiguousarray(data.images[list(characters)]))
    if not rotations:
        return images.unsqueeze(1)
    return torch.stack([torch.rot90(images, k, dims=(-2, -1)) for k in range(4)], dim=1)


@dataclass(frozen=True)
class OmniglotTaskDraw:
    """Which images make up T N-way tasks, without the images: a few bytes a task.

    ``characters (T, N)`` index the pool's characters, ``rotations (T, N)`` its rotations,
    ``drawers (T, N, K+Q)`` the drawings of each class, the first ``shots`` for the support.
    """

    characters: Tensor
    rotations: Tensor
    drawers: Tensor
    shots: int

    @property
    def num_tasks(self) -> int:
        return self.characters.shape[0]

    def gather(self, pool: Tensor, start: int = 0, stop: int | None = None) -> TaskBatch:
        """Tasks ``start`` to ``stop - 1`` with their images taken from ``pool``.

        Returns a :class:`TaskBatch` with images ``(T, N*K, 1, S, S)`` / ``(T, N*Q, 1, S, S)``
        in [0, 1] (ink = 1) and integer labels ``(T, N*K)`` / ``(T, N*Q)`` grouped by class.
        """
        s = slice(start, stop)
        characters, rotations, drawers = self.characters[s], self.rotations[s], self.drawers[s]
        num_tasks, ways, per_class = drawers.shape
        queries = per_class - self.shots
        images = pool[characters.unsqueeze(-1), rotations.unsqueeze(-1), drawers]
        images = images.to(torch.float32).div_(255.0).unsqueeze(-3)  # (T, N, K+Q, 1, S, S)
        labels = torch.arange(ways).view(1, ways, 1)

        def flat(x: Tensor) -> Tensor:
            return x.reshape(num_tasks, -1, *x.shape[3:])

        return TaskBatch(
            support_x=flat(images[:, :, :self.shots]),
            support_y=flat(labels.expand(num_tasks, ways, self.shots)),
            query_x=flat(images[:, :, self.shots:]),
            query_y=flat(labels.expand(num_tasks, ways, queries)),
        )


def draw_omniglot_tasks(pool: Tensor, num_tasks: int, ways: int, shots: int, queries: int,
                        generator: torch.Generator) -> OmniglotTaskDraw:
    """Draw ``num_tasks`` N-way K-shot tasks from ``pool`` (see :func:`class_pool`).

    Each task takes ``ways`` distinct characters, a random rotation of each, and
    ``shots + queries`` distinct drawings of each class.
    """
    num_characters, num_rotations = pool.shape[:2]
    if ways > num_characters:
        raise ValueError(f"{ways}-way tasks need {ways} characters, the pool has "
                         f"{num_characters}")
    if shots + queries > DRAWERS:
        raise ValueError(f"shots + queries = {shots + queries} exceeds the {DRAWERS} drawings "
                         f"of a character")
    characters = torch.rand(num_tasks, num_characters, generator=generator).argsort(1)[:, :ways]
    rotations = torch.randint(num_rotations, (num_tasks, ways), generator=generator)
    drawers = torch.rand(num_tasks, ways, DRAWERS, generator=generator).argsort(-1)
    return OmniglotTaskDraw(characters, rotations, drawers[..., : shots + queries], shots)


def sample_omniglot_batch(pool: Tensor, num_tasks: int, ways: int, shots: int, queries: int,
                          generator: torch.Generator) -> TaskBatch:
    """``num_tasks`` N-way K-shot tasks drawn from ``pool`` with their images.

    The draw of :func:`draw_omniglot_tasks` gathered at once; see
    :meth:`OmniglotTaskDraw.gather` for the shapes.
    """
    return draw_omniglot_tasks(pool, num_tasks, ways, shots, queries, generator).gather(pool)


# --------------------------------------------------------------------------- model

class BatchStatNorm(nn.Module):
    """Batch norm that always normalizes with the statistics of the batch it is given.

    Under ``torch.func`` transforms (``vmap``, ``grad``) it is written with plain tensor
    operations, which are exact to second order there, where PyTorch's built-in batch norm is
    not. On plain tensors (the per-task loop, in training, evaluation and render) it calls
    ``F.batch_norm``, the same function to rounding and about 1.5x faster per inner step on a
    CPU, except on a single value per channel, which ``F.batch_norm`` refuses. No running
    statistics: as in MAML, test batches are normalized with their own statistics.
    Input and output ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if (x.shape[0] * x.shape[2] * x.shape[3] > 1
                and not any(is_functorch_wrapped_tensor(t) for t in (x, self.weight, self.bias))):
            return F.batch_norm(x, None, None, self.weight, self.bias, training=True,
                                eps=self.eps)
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True)
        normalized = (x - mean) * torch.rsqrt(var + self.eps)
        return normalized * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


Downsample = Literal["stride", "maxpool"]


class Conv4(nn.Module):
    """Four blocks of [3x3 conv, batch norm (batch statistics), ReLU], then a linear layer.

    ``downsample="stride"`` uses stride-2 convolutions as MAML's Omniglot network (28 -> 14 ->
    7 -> 4 -> 2), ``"maxpool"`` stride-1 convolutions each followed by 2x2 max-pooling
    (28 -> 14 -> 7 -> 3 -> 1). The final feature map is flattened into the linear layer
    (MAML's code averages it over space instead; flattening keeps the spatial layout).
    Convolutions carry no bias: a per-channel constant before batch norm is removed by its
    mean subtraction, so the bias would have zero gradient.

    Input ``(B, 1, S, S)`` in [0, 1]; output logits ``(B, ways)``.
    """

    def __init__(self, ways: int, *, in_channels: int = 1, filters: int = 64,
                 image_size: int = 28, downsample: Downsample = "stride") -> None:
        super().__init__()
        if downsample not in ("stride", "maxpool"):
            raise ValueError(f"downsample must be stride or maxpool, got {downsample!r}")
        if downsample == "maxpool" and image_size < 16:
            raise ValueError(f"maxpool downsampling needs image_size >= 16, got {image_size}")
        self.downsample = downsample
        blocks: list[nn.Module] = []
        channels, size = in_channels, image_size
        for _ in range(4):
            stride = 2 if downsample == "stride" else 1
            blocks += [nn.Conv2d(channels, filters, 3, stride=stride, padding=1, bias=False),
                       BatchStatNorm(filters), nn.ReLU()]
            if downsample == "maxpool":
                blocks.append(nn.MaxPool2d(2))
                size //= 2
            else:
                size = math.ceil(size / 2)
            channels = filters
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(filters * size * size, ways)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


def reset_conv4(model: Conv4, generator: torch.Generator) -> None:
    """Glorot-uniform weights for every convolution and the output layer, zero biases, drawn
    from ``generator`` (MAML's code: Glorot for the convolutions, N(0, 1) for the output
    layer)."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Conv2d | nn.Linear):
                receptive = layer.weight[0, 0].numel() if layer.weight.dim() > 2 else 1
                fan_in = layer.weight.shape[1] * receptive
                fan_out = layer.weight.shape[0] * receptive
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                layer.weight.uniform_(-bound, bound, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of logits ``(B, N)`` against integer labels ``(B,)``."""
    return F.cross_entropy(logits, labels)


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of ``(B, N)`` logits whose arg-max is the label, as a 0-dim float tensor."""
    return (logits.argmax(dim=-1) == labels).to(torch.float32).mean()
