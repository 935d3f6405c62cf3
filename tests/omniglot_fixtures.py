"""Where the tests find the offline Omniglot copy (never the network)."""

from __future__ import annotations

import os

import pytest

from metarl.config import ConfigError
from metarl.supervised.omniglot_experiment import resolve_root


def _offline_root():
    try:
        root = resolve_root(None)
    except ConfigError:
        return None
    return root if (root / "images_background.zip").exists() or (
        root / "images_background").is_dir() else None


OMNIGLOT_ROOT = _offline_root()
if OMNIGLOT_ROOT is None and os.environ.get("METARL_REQUIRE_OMNIGLOT"):
    raise RuntimeError("METARL_REQUIRE_OMNIGLOT is set but no Omniglot copy was found (set "
                       "METARL_OMNIGLOT to the folder with the two archives)")
needs_omniglot = pytest.mark.skipif(
    OMNIGLOT_ROOT is None, reason="offline Omniglot copy not found (set METARL_OMNIGLOT to the "
                                  "folder with images_background.zip and images_evaluation.zip)")
