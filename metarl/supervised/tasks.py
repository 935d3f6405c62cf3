"""A batch of supervised few-shot tasks, stacked along a leading task dimension."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TaskBatch:
    """Support and query sets of T tasks.

    Shapes: ``support_x (T, N_s, *input)``, ``support_y (T, N_s, *target)``,
    ``query_x (T, N_q, *input)``, ``query_y (T, N_q, *target)``.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor

    @property
    def num_tasks(self) -> int:
        return self.support_x.shape[0]

    def to(self, device: torch.device) -> TaskBatch:
        """The same tasks with every tensor on ``device`` (tensors already there are kept)."""
        return TaskBatch(*(x.to(device) for x in (self.support_x, self.support_y,
                                                   self.query_x, self.query_y)))
