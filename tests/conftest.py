from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the long reproductions marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="long reproduction: pass --runslow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def omniglot_cache(tmp_path_factory: pytest.TempPathFactory):
    """One decoded-image cache for the whole test session (decoding takes ~10 s)."""
    return tmp_path_factory.mktemp("omniglot-cache")


@pytest.fixture(scope="session")
def omniglot_images(omniglot_cache):
    from metarl.supervised.omniglot_data import load_omniglot

    from omniglot_fixtures import OMNIGLOT_ROOT

    if OMNIGLOT_ROOT is None:
        pytest.skip("offline Omniglot copy not found")
    return load_omniglot(OMNIGLOT_ROOT, cache_dir=omniglot_cache)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing downloads at test time: any urlopen fails the test."""
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def saved_figures(monkeypatch: pytest.MonkeyPatch):
    """The matplotlib figures metarl.plots and metarl.rl.render save during the test, for
    their artists."""
    import metarl.plots as plots
    import metarl.rl.render as render

    figures, real = [], plots.save_figure

    def keep(fig, output, **kwargs):
        figures.append(fig)
        return real(fig, output, **kwargs)

    monkeypatch.setattr(plots, "save_figure", keep)
    monkeypatch.setattr(render, "save_figure", keep)
    return figures
