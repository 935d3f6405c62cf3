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

    def tasks(self, start: int, stop: int) -> TaskBatch:
        """Tasks ``start`` to ``stop - 1`` (fewer at the end), keeping the task dimension."""
        s = slice(start, stop)
        return TaskBatch(self.support_x[s], self.support_y[s], self.query_x[s], self.query_y[s])

    def task(self, index: int) -> TaskBatch:
        """Task ``index`` alone, keeping a leading task dimension of 1."""
        return self.tasks(index, index + 1)
