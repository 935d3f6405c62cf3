"""Atomic checkpoints: a crash mid-write never leaves a truncated or half-new file behind."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from metarl.config import ConfigError

CHECKPOINT_NAME = "checkpoint.pt"


class UnreadableCheckpointError(ConfigError):
    """A checkpoint file exists but is not one :func:`save_checkpoint` wrote (truncated,
    emptied, or another file)."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        give_default_mode(fd)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def give_default_mode(fd: int) -> None:
    """Give the file open at ``fd``, made private (0600) by ``tempfile.mkstemp``, the mode
    ``open()`` would have given it (where the file system keeps modes: FAT refuses, and
    Windows lacks fchmod before Python 3.13)."""
    with contextlib.suppress(OSError, AttributeError):
        os.fchmod(fd, 0o666 & ~_umask())


def _umask() -> int:
    """The process's umask, read from Linux's /proc where it can be (setting it to read it
    would briefly change it for other threads)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def baseline_cache(run_dir: Path, output_dir: Path | None,
                   name: str) -> tuple[Path, tuple[Path, ...]]:
    """Where baseline ``name`` (e.g. ``"oracle"``) is cached: ``(path written, paths only
    read)``. Evaluations written elsewhere (``output_dir``) read the run's cache but write
    their own, so that the run directory is left as it was."""
    own = run_dir / "baselines" / f"{name}.pt"
    if output_dir is None:
        return own, ()
    return output_dir / "baselines" / f"{name}.pt", (own,)


def load_or_compute(path: str | Path, key: dict[str, Any], compute: Callable[[], Any], *,
                    matches: Callable[[Any], bool] | None = None,
                    also_read: Sequence[str | Path] = ()) -> Any:
    """The value cached at ``path`` for ``key``, or ``compute()`` saved there for next time.

    A cache written for another key (a changed config) is recomputed and replaced. With
    ``matches``, a cached key is accepted when ``matches(cached_key)`` is true instead of when
    it equals ``key`` (for keys written by earlier versions). ``also_read``: caches consulted
    (never written) before ``path``, e.g. a run's own when writing elsewhere.
    """
    for candidate in (*also_read, path):
        candidate = Path(candidate)
        if not candidate.is_file():
            continue
        try:
            cached = load_checkpoint(candidate)
        except UnreadableCheckpointError:
            cached = {}  # a damaged cache is computed again
        if (matches(cached.get("key")) if matches is not None else cached.get("key") == key):
            return cached["value"]
    path = Path(path)
    value = compute()
    save_checkpoint(path, {"key": key, "value": value})
    return value


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch.load raises many kinds for a damaged file
        raise UnreadableCheckpointError(
            f"{path} can't be read as a metarl checkpoint ({type(error).__name__}: {error}); "
            "the file is damaged or is another file") from None
    if not isinstance(state, dict):
        raise UnreadableCheckpointError(f"{path} holds a {type(state).__name__}, not a metarl "
                                        "checkpoint")
    return state
