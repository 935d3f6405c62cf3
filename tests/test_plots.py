"""Plot helpers: long titles stay inside the figure; published points only at the evaluated
steps; intervals clipped to what a metric can take; whole meta-iterations on the x axis."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from metarl.plots import plot_adaptation_curves, plot_learning_curve, wrapped_title

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


def test_published_points_are_drawn_at_the_evaluated_steps_only(tmp_path, saved_figures):
    """Sine's paper numbers are after 1, 5 and 10 steps: an evaluation of 0-3 steps shows the
    one after 1 step, and a reference with no evaluated step is left out."""
    curves = {"maml": {"mean": [3.0, 0.4, 0.3, 0.25], "ci95": [0.2, 0.03, 0.02, 0.02]}}
    plot_adaptation_curves(curves, [0, 1, 2, 3], tmp_path / "a.png", ylabel="MSE",
                           reference={"paper": {1: 0.42, 5: 0.2, 10: 0.13},
                                      "paper, later": {5: 0.38, 10: 0.35}})
    (ax,) = saved_figures[-1].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["paper"].get_xdata()) == [1] and list(lines["paper"].get_ydata()) == [0.42]
    assert "paper, later" not in lines
    assert ax.get_xlim()[1] < 4


def test_value_range_clips_the_drawn_intervals(tmp_path, saved_figures):
    """An accuracy of 10 % ± 15 is drawn from 0 % to 25 %, one of 95 % ± 8 up to 100 %."""
    curves = {"maml": {"mean": [10.0, 95.0], "ci95": [15.0, 8.0]},
              "oracle": {"mean": [2.0], "ci95": [5.0]}}
    plot_adaptation_curves(curves, [0, 1], tmp_path / "a.png", ylabel="accuracy %",
                           value_range=(0.0, 100.0))
    (ax,) = saved_figures[-1].axes
    (container,) = ax.containers
    (bars,) = container.lines[2]  # the vertical error bars: one segment per step
    ends = [tuple(segment[:, 1]) for segment in bars.get_segments()]
    assert ends == [pytest.approx((0.0, 25.0)), pytest.approx((87.0, 100.0))]
    band = ax.transData.inverted().transform(ax.patches[0].get_verts())[:, 1]
    assert (band.min(), band.max()) == pytest.approx((0.0, 7.0))


def test_meta_iteration_ticks_are_whole_numbers(tmp_path, saved_figures):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"iteration": i, "loss": 1.0 / i}) + "\n"
                               for i in (1, 2, 3)))
    plot_learning_curve(metrics, tmp_path / "curve.png")
    (ax,) = saved_figures[-1].axes
    (line,) = ax.get_lines()  # too few iterations to average: the values themselves, plain
    assert line.get_color() == "C0" and line.get_marker() == "o"
    ticks = ax.get_xticks()
    assert len(ticks) >= 2 and np.all(ticks == np.round(ticks))


def test_panel_grid_puts_at_most_four_panels_a_row_and_hides_the_unused():
    from metarl.plots import panel_grid

    fig, axes = panel_grid(2, width=3.0, height=2.0)
    assert len(axes) == 2 and len(fig.axes) == 2
    assert tuple(fig.get_size_inches()) == (6.0, 2.0)
    plt.close(fig)
    fig, axes = panel_grid(5, width=3.0, height=2.0)
    assert len(axes) == 5 and len(fig.axes) == 8  # two rows of four
    assert tuple(fig.get_size_inches()) == (12.0, 4.0)
    assert [ax.axison for ax in fig.axes] == [True] * 5 + [False] * 3
    plt.close(fig)


def _metrics(path, records: int):
    import json

    path.write_text("".join(json.dumps({"iteration": i + 1, "loss": float(i % 3),
                                        "kl": 0.01, "wall_time": 1e9 + i}) + "\n"
                            for i in range(records)))
    return path


def test_learning_curve_has_a_panel_per_metric_smoothed_over_a_fiftieth(tmp_path,
                                                                         saved_figures):
    import numpy as np

    from metarl.plots import plot_learning_curve

    assert plot_learning_curve(tmp_path / "missing.jsonl", tmp_path / "a.png") is None
    metrics = _metrics(tmp_path / "metrics.jsonl", 150)
    output = plot_learning_curve(metrics, tmp_path / "curve.png", title="sine")
    assert output.read_bytes().startswith(b"\x89PNG")
    fig = saved_figures[-1]
    # the metrics only: no iteration or wall_time panel
    assert [ax.get_title() for ax in fig.axes] == ["loss", "kl"]
    assert fig._suptitle.get_text() == "sine"
    raw, smooth = fig.axes[0].get_lines()
    assert list(raw.get_xdata()) == list(range(1, 151))
    # a window of 150 // 50 = 3 iterations: the mean of loss 0, 1, 2 is 1, drawn from 3 on
    assert list(smooth.get_xdata()) == list(range(3, 151))
    np.testing.assert_allclose(smooth.get_ydata(), 1.0)


def test_learning_curve_panels_order_title_hide_and_mark_metrics(tmp_path, saved_figures):
    """Named panels come first in their order, with their titles, limits and reference line;
    a metric mapped to None is not drawn; one not named is drawn last under its own name."""
    import json

    from metarl.experiment import Panel
    from metarl.plots import plot_learning_curve

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"iteration": i + 1, "loss": 1.0, "kl": 0.005,
                                           "zero": 0.0, "extra": 2.0}) + "\n"
                               for i in range(10)))
    plot_learning_curve(metrics, tmp_path / "curve.png", title="run", panels={
        "kl": Panel("mean KL", limits=(0.0, None), line=(0.01, "bound 0.01")),
        "zero": None, "loss": Panel("query loss"), "absent": Panel("never logged")})
    fig = saved_figures[-1]
    assert [ax.get_title() for ax in fig.axes if ax.axison] == ["mean KL", "query loss",
                                                               "extra"]
    kl_axes = fig.axes[0]
    (bound,) = [line for line in kl_axes.get_lines() if line.get_label() == "bound 0.01"]
    assert list(bound.get_ydata()) == [0.01, 0.01] and kl_axes.get_ylim()[0] == 0.0
    assert kl_axes.get_ylim()[1] > 0.01, "the free end leaves the line in view"


def test_each_experiment_describes_its_learning_curve():
    from metarl.experiment import config_from_data
    from metarl.rl.experiment import MetaRLExperiment
    from metarl.supervised.omniglot_experiment import OmniglotExperiment
    from metarl.supervised.sine_experiment import SineExperiment

    def described(experiment, data):
        return experiment.learning_curve(config_from_data(data)[1])

    title, panels = described(MetaRLExperiment(), {
        "experiment": "meta_rl", "env": {"name": "half_cheetah_dir"},
        "trpo": {"max_kl": 0.02}, "adaptation": {"inner_steps": 2}})
    assert title.endswith("MAML-TRPO: meta-training")
    assert panels["kl"].line == (0.02, "bound 0.02")
    assert panels["return_after"].title == "return after 2 steps (training tasks)"
    # standardized advantages make the surrogate before the step 0; episodes are counted
    assert panels["surrogate_before"] is None and panels["episodes_after"] is None
    _, panels = described(MetaRLExperiment(), {
        "experiment": "meta_rl", "adaptation": {"method": "fomaml"},
        "training": {"normalize_advantages": False, "sampling": "steps"}})
    assert panels["surrogate_before"] is not None and panels["episodes_after"] is not None
    assert panels["step_accepted"].limits == (-0.05, 1.05)
    title, panels = described(OmniglotExperiment(), {
        "experiment": "omniglot", "task": {"train_shots": 10},
        "adaptation": {"method": "reptile", "inner_steps": 5}})
    assert title == ("Omniglot 5-way 1-shot (training tasks 10-shot), reptile: "
                     "meta-training")
    assert panels["query_accuracy"].title == "query accuracy % after 5 steps (training tasks)"
    title, _ = described(OmniglotExperiment(), {"experiment": "omniglot"})
    assert title == "Omniglot 5-way 1-shot, maml: meta-training"
    title, panels = described(SineExperiment(), {"experiment": "sine"})
    assert title == "Sine regression, K = 10, maml: meta-training"
    assert panels["query_loss"].title == "query MSE after 1 step (training tasks)"


def test_long_adaptation_curves_are_a_band_and_references_differ_in_style(tmp_path,
                                                                         saved_figures):
    """Past 16 steps the 95% interval is a band, not an error bar per step; published
    references take distinct line styles so that close values stay apart."""
    from metarl.plots import plot_adaptation_curves

    steps = list(range(51))
    curve = {"mean": [20.0 + s for s in steps], "ci95": [1.0] * 51}
    plot_adaptation_curves({"reptile": curve}, steps, tmp_path / "c.png", ylabel="%",
                           reference={"MAML (paper)": {50: 98.7}, "Reptile (paper)": {50: 97.68},
                                      "FOMAML (paper)": {50: 98.3}})
    (ax,) = saved_figures[-1].axes
    assert not ax.containers, "no error bars"
    (band,) = ax.collections
    heights = band.get_paths()[0].vertices[:, 1]
    assert heights.min() == pytest.approx(19.0) and heights.max() == pytest.approx(71.0)
    styles = [line.get_linestyle() for line in ax.get_lines() if "paper" in line.get_label()]
    assert len(styles) == len(set(styles)) == 3


def test_adaptation_curves_draw_a_reference_at_its_steps(tmp_path, saved_figures):
    from metarl.plots import plot_adaptation_curves

    curves = {"maml": {"mean": [0.9, 0.4, 0.3], "ci95": [0.1, 0.1, 0.1]}}
    plot_adaptation_curves(curves, [0, 1, 10], tmp_path / "c.png", ylabel="mse",
                           reference={"MAML paper": {1: 0.42, 5: 0.2, 10: 0.13}})
    (ax,) = saved_figures[-1].axes
    (paper,) = [line for line in ax.get_lines() if line.get_label() == "MAML paper"]
    # step 5 lies between evaluated steps but was not evaluated: not drawn
    assert list(paper.get_xdata()) == [1, 10] and list(paper.get_ydata()) == [0.42, 0.13]
    assert ax.get_xlabel() == "gradient steps" and ax.get_ylabel() == "mse"


def test_over_training_shows_the_chosen_step_counts_with_their_bands(tmp_path, saved_figures):
    import numpy as np

    from metarl.plots import plot_over_training

    summary = {"metric": "return", "steps": [0, 1, 2], "iterations": [50, 100],
               "mean": [[-45.0, -20.0, -15.0], [-44.0, -12.0, -9.0]],
               "ci95": [[2.0, 3.0, 1.0], [2.0, 2.5, 0.5]], "reference": None}
    plot_over_training(summary, tmp_path / "curve.png", shown=[2])
    (ax,) = saved_figures[-1].axes
    (line,) = ax.get_lines()
    assert line.get_label() == "2 steps" and list(line.get_ydata()) == [-15.0, -9.0]
    (band,) = ax.collections
    heights = band.get_paths()[0].vertices[:, 1]  # in data units
    np.testing.assert_allclose([heights.min(), heights.max()], [-16.0, -8.5])


def test_runs_compared_draw_training_means_evaluations_and_the_reference(tmp_path,
                                                                         saved_figures):
    from metarl.plots import plot_runs_compared

    training = {"a": [(1, 1.0), (2, 3.0), (3, 5.0)], "b": [(1, 0.0), (2, 2.0), (3, 4.0)]}
    plot_runs_compared(training, {"a": [], "b": []}, tmp_path / "one.png", metric="return",
                       evaluated="return", window=2)
    (left,) = saved_figures[-1].axes  # nothing evaluated: one panel
    means = {line.get_label(): list(line.get_ydata()) for line in left.get_lines()}
    assert means["a"] == [1.0, 2.0, 4.0] and means["b"] == [0.0, 1.0, 3.0]
    plot_runs_compared(training, {"b": [(3, 9.0, 1.0), (1, 7.0, 0.5)]}, tmp_path / "two.png",
                       metric="return", evaluated="return after 1 step", window=2,
                       reference=("MAML paper", 8.0))
    left, right = saved_figures[-1].axes
    (evaluated,) = right.containers
    assert evaluated.get_label() == "b"
    assert list(evaluated.lines[0].get_xdata()) == [1.0, 3.0]  # in order of iteration
    assert list(evaluated.lines[0].get_ydata()) == [7.0, 9.0]
    (bars,) = evaluated.lines[2]  # the whole 95% interval, each side of the mean
    assert [tuple(segment[:, 1]) for segment in bars.get_segments()] == [(6.5, 7.5),
                                                                          (8.0, 10.0)]
    (b_training,) = [line for line in left.get_lines() if line.get_label() == "b"]
    assert evaluated.lines[0].get_color() == b_training.get_color() == "C1"  # one colour a run
    for ax in (left, right):
        (paper,) = [line for line in ax.get_lines() if line.get_label() == "MAML paper"]
        assert list(paper.get_ydata()) == [8.0, 8.0]


def test_a_long_adaptation_curve_gets_readable_ticks(tmp_path, saved_figures):
    """A tick per step up to 16 steps; beyond, a few whole-number ticks (1001 labels would
    overlap into a black band)."""
    for steps, most_ticks in ((3, 4), (16, 17), (17, 12), (1000, 12)):
        curves = {"maml": {"mean": np.linspace(-40, -5, steps + 1).tolist(),
                           "ci95": [1.0] * (steps + 1)}}
        plot_adaptation_curves(curves, list(range(steps + 1)), tmp_path / "a.png",
                               ylabel="return")
        ticks = [t for t in saved_figures[-1].axes[0].get_xticks() if 0 <= t <= steps]
        assert len(ticks) <= most_ticks and all(float(t).is_integer() for t in ticks)
        if steps in (3, 16):
            assert ticks == list(range(steps + 1))


def test_the_legend_of_a_curve_plot_sits_beside_the_axes_not_on_the_data(tmp_path,
                                                                         saved_figures):
    """Inside the axes the legend hid the paper's markers (navigation2d's random init at
    step 3); beside them it hides nothing, and the saved picture includes it."""
    curves = {"maml": {"mean": [-40.0, -10.0, -4.0, -3.5], "ci95": [2.0, 1.0, 0.5, 0.5]}}
    plot_adaptation_curves(curves, [0, 1, 2, 3], tmp_path / "a.png", ylabel="return",
                           reference={"paper: random init": {0: -82.0, 3: -47.0}})
    fig = saved_figures[-1]
    (ax,) = fig.axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    axes = ax.get_window_extent(renderer)
    assert legend.x0 >= axes.x1, "right of the axes"
    assert legend.x1 <= fig.bbox.x1, "inside the picture"
