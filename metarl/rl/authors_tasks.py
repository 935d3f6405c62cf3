"""The test tasks of the MAML authors' evaluation scripts, to compare with the paper on its
own tasks.

cbfinn/maml_rl's ``maml_examples/test_maml_point.py``, ``test_maml_cheetah.py`` and
``test_maml_cheetah_direc.py`` each call ``np.random.seed(1)`` and draw 40 tasks from NumPy's
legacy global generator: goals ``uniform(-0.5, 0.5, size=(40, 2))`` for 2D navigation, target
velocities ``uniform(0, 2, size=(40,))`` (m/s) for half-cheetah velocity, and the same
velocity draw for half-cheetah direction, whose environment runs backward where the draw is
below 1 (18 forward and 22 backward tasks). A ``RandomState(1)`` of our own gives the same
numbers without touching NumPy's global generator. Its draws are sequential, so the first
``k`` of a longer draw are the draw of ``k``: up to 40 tasks are the authors' first ones, and
more continue the same generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

AUTHORS_SEED = 1
"""The seed the authors' test scripts give ``np.random.seed`` before drawing the tasks."""

AUTHORS_FAMILIES = ("navigation2d", "half_cheetah_vel", "half_cheetah_dir")
"""The environment families whose authors' test tasks are known."""


def maml_authors_test_tasks(env_name: str, num_tasks: int) -> list[dict[str, Any]]:
    """The first ``num_tasks`` test tasks of the MAML authors' test script for ``env_name``:
    ``{"goal": array (2,)}``, ``{"velocity": float}`` (m/s) or ``{"direction": ±1.0}``."""
    if env_name not in AUTHORS_FAMILIES:
        raise ValueError(f"the MAML authors' test tasks are known for "
                         f"{', '.join(AUTHORS_FAMILIES)}, not {env_name}")
    generator = np.random.RandomState(AUTHORS_SEED)  # the legacy generator of np.random.seed
    if env_name == "navigation2d":
        goals = generator.uniform(-0.5, 0.5, size=(num_tasks, 2))
        return [{"goal": goal} for goal in goals]
    draws = generator.uniform(0.0, 2.0, size=num_tasks)
    if env_name == "half_cheetah_vel":
        return [{"velocity": float(v)} for v in draws]
    return [{"direction": -1.0 if v < 1.0 else 1.0} for v in draws]
