"""Which torch device a run computes on: the ``device`` setting, checked and resolved.

The setting is validated with the rest of a config (its spelling), and resolved when work
starts (whether this machine has that device), so that a run trained on a GPU can still be
evaluated elsewhere with ``--set device=cpu``.
"""

from __future__ import annotations

import re

import torch

from metarl.config import ConfigError

DEVICE_CHOICES = "cpu, cuda, cuda:N (the GPU of that index) or auto (cuda where a GPU is " \
                 "visible, else cpu)"
_SPELLING = re.compile(r"cpu|cuda|cuda:(0|[1-9]\d*)|auto")


def check_device_setting(value: str, key: str = "device") -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of :data:`DEVICE_CHOICES`."""
    if not _SPELLING.fullmatch(value):
        raise ConfigError(f"{key} = {value!r}: allowed are {DEVICE_CHOICES}")


def resolve_device(value: str, key: str = "device", fix: str | None = None) -> torch.device:
    """The device ``value`` of setting ``key`` names on this machine.

    Raises :class:`ConfigError` (naming ``key`` and ``fix``, by default how to set the
    config's ``key`` to cpu) for a GPU this machine's torch cannot see.
    """
    check_device_setting(value, key)
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(value)
    if device.type != "cuda":
        return device
    fix = fix or f"set {key}: cpu in the config, or --set {key}=cpu"
    if not torch.cuda.is_available():
        build = ("a CPU-only build" if torch.version.cuda is None
                 else f"built for CUDA {torch.version.cuda}, but no GPU or driver is visible")
        raise ConfigError(f"{key} = {value!r}: this torch {torch.__version__} sees no CUDA "
                          f"GPU ({build}); {fix}")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"{key} = {value!r}: this machine shows {count} CUDA GPU(s), "
                          f"indices 0-{count - 1}; {fix}")
    return device
