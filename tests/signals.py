"""A signal arriving while a trainer runs a meta-iteration, for interrupt tests."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest


def signal_during_iteration(monkeypatch: pytest.MonkeyPatch, trainer_class: type,
                            iteration: int, signum: int = signal.SIGINT) -> Callable[..., Any]:
    """Make ``trainer_class.train_iteration`` raise ``signum`` in the process while it runs
    0-based ``iteration`` (as a Ctrl-C, or SIGTERM, arriving then). Returns the original
    method, to put back with ``monkeypatch.setattr`` where a test goes on."""
    original = trainer_class.train_iteration

    def signalled(self: Any, index: int) -> Any:
        metrics = original(self, index)
        if index == iteration:
            signal.raise_signal(signum)
        return metrics

    monkeypatch.setattr(trainer_class, "train_iteration", signalled)
    return original
