"""Every random draw of a run comes from a generator derived from the run's one seed."""

from __future__ import annotations

import zlib

import numpy as np
import torch


def derive_seed(seed: int, purpose: str) -> int:
    """A seed in [0, 2^63 + 2^31) for one purpose ("tasks", "init", ...), independent across
    purposes."""
    sequence = np.random.SeedSequence([seed, zlib.crc32(purpose.encode())])
    return int(sequence.generate_state(2, dtype=np.uint32).astype(np.uint64)
               .dot(np.array([1 << 31, 1], dtype=np.uint64)))


def torch_generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(seed, purpose)``."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose))


def numpy_generator(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, purpose))
