"""The published numbers metarl draws and records are those of ../shared/REFERENCE.md, the
team's specification beside the checkout (skipped where it is absent, as in CI)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "REFERENCE.md"
needs_reference = pytest.mark.skipif(not REFERENCE.is_file(),
                                     reason="needs ../shared/REFERENCE.md beside the checkout")


def _table_after(heading: str) -> list[list[str]]:
    """The cells of each body row of the first Markdown table after ``heading``."""
    text = REFERENCE.read_text()
    lines = text[text.index(heading):].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


@needs_reference
def test_the_published_returns_are_reference_mds():
    """Every number of REFERENCE.md's table of published returns is the one evaluate draws
    and records (PUBLISHED_RETURNS), and no other."""
    from metarl.rl.experiment import PUBLISHED_RETURNS

    envs = {"2D navigation": "navigation2d", "cheetah velocity": "half_cheetah_vel",
            "cheetah direction": "half_cheetah_dir"}
    curves = {"MAML": "MAML paper", "pretrained + fine-tune": "paper: pretrained",
              "pretrained": "paper: pretrained", "random init": "paper: random init"}
    found: dict = {}
    for env, method, *cells in _table_after("### Published returns"):
        name = "paper: oracle" if method.startswith("oracle") else curves[method]
        found.setdefault(envs[env], {})[name] = {
            step: float(cell.split("±")[0]) for step, cell in enumerate(cells) if cell}
    assert found == PUBLISHED_RETURNS


@needs_reference
def test_the_published_omniglot_accuracies_are_reference_mds():
    from metarl.supervised.omniglot_experiment import PUBLISHED_ACCURACY

    methods = {"MAML (MAML paper)": "MAML", "first-order MAML (Reptile paper)":
               "first-order MAML", "Reptile, transductive (Reptile paper)": "Reptile"}
    settings = [(5, 1), (5, 5), (20, 1), (20, 5)]
    found: dict = {}
    for method, *cells in _table_after("**Omniglot.**"):
        for setting, cell in zip(settings, cells, strict=True):
            found.setdefault(setting, {})[methods[method]] = float(cell.split("±")[0])
    assert found == PUBLISHED_ACCURACY


@needs_reference
def test_the_published_sine_mses_are_reference_mds():
    from metarl.supervised.sine_experiment import PUBLISHED_MSE

    text = " ".join(REFERENCE.read_text().split())
    k5 = re.search(r"tested with K = 5: ([\d.]+) / ([\d.]+) / ([\d.]+) after 1 / 5 / 10 steps",
                   text)
    k10 = re.search(r"K = 10: about ([\d.]+) after 1 step, ([\d.]+) after 10", text)
    stated = {
        "MAML paper, K=5": dict(zip((1, 5, 10), map(float, k5.groups()), strict=True)),
        "MAML paper, K=10": dict(zip((1, 10), map(float, k10.groups()), strict=True))}
    assert stated == PUBLISHED_MSE
