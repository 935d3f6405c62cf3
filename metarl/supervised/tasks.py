"""A batch of supervised few-shot tasks, stacked along a leading task dimension."""

from __future__ import annotations

from dataclasses import dataclass

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
