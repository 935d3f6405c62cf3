"""pyproject.toml's promises about where metarl installs agree with its dependencies and docs."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _minimum_python() -> str:
    """The X.Y of ``requires-python = ">=X.Y"``."""
    match = re.fullmatch(r">=\s*(\d+\.\d+)", PYPROJECT["project"]["requires-python"])
    assert match, "requires-python is expected as >=X.Y"
    return match.group(1)


def test_the_oldest_python_allowed_is_one_every_installed_dependency_takes():
    """Python 3.10 was allowed while mujoco 4 (and numpy, matplotlib) need 3.11: pip then
    failed on a dependency instead of saying which Python metarl needs."""
    oldest = _minimum_python()
    refusing = {}
    for line in PYPROJECT["project"]["dependencies"]:
        name = Requirement(line).name
        needs = metadata(name).get("Requires-Python")
        if needs and not SpecifierSet(needs).contains(oldest):
            refusing[name] = needs
    assert not refusing, f"requires-python allows {oldest}, which these refuse: {refusing}"


def test_the_linters_and_readme_name_the_oldest_python():
    oldest = _minimum_python()
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py" + oldest.replace(".", "")
    assert PYPROJECT["tool"]["mypy"]["python_version"] == oldest
    assert f"Python {oldest}+" in (ROOT / "README.md").read_text()
