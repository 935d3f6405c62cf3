"""Plot helpers: long titles stay inside the figure."""

from __future__ import annotations

import matplotlib.pyplot as plt

from metarl.plots import wrapped_title

LONG = ("half_cheetah_vel (dt 0.01 s, x observed, centre-of-mass velocity, rllab reset noise): "
        "40 test tasks, the MAML authors' tasks")


def test_short_titles_stay_on_one_line():
    assert wrapped_title("navigation2d: 40 test tasks", 6.0) == "navigation2d: 40 test tasks"


def test_a_wrapped_title_fits_its_axes_when_drawn():
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    width = fig.get_figwidth() * ax.get_position().width
    title = ax.set_title(wrapped_title(LONG, width))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert title.get_text().count("\n") >= 1
    assert title.get_window_extent(renderer).width <= ax.get_window_extent(renderer).width
    unwrapped = ax.set_title(LONG)
    assert unwrapped.get_window_extent(renderer).width > fig.bbox.width, "the case it is for"
    plt.close(fig)
