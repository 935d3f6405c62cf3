"""Pictures of a run: learning curves and adaptation curves with error bars (PNG)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from metarl.experiment import Panel
from metarl.logging import read_metrics


def panel_grid(panels: int, *, width: float, height: float,
               max_columns: int = 4) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure with ``panels`` axes in rows of at most ``max_columns`` (sizes in inches per
    panel); unused axes of the last row are hidden. Returns the figure and the used axes."""
    columns = max(1, min(panels, max_columns))
    rows = max(1, -(-panels // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows),
                             squeeze=False)
    for ax in axes.flat[panels:]:
        ax.axis("off")
    return fig, list(axes.flat[:panels])


TITLE_CHARACTERS_PER_INCH = 9.5
"""About how many characters of a 12-point title fit in an inch of figure width."""


def wrapped_title(title: str, width_inches: float) -> str:
    """``title`` broken into lines that fit ``width_inches`` (long run titles name the
    environment's settings and would run off the figure)."""
    return textwrap.fill(title, max(20, int(width_inches * TITLE_CHARACTERS_PER_INCH)))


def save_figure(fig: plt.Figure, output: Path, *, title: str = "", dpi: int = 110) -> Path:
    """Give ``fig`` an overall title (if any), lay it out, write it to ``output`` and close it."""
    if title:
        fig.suptitle(wrapped_title(title, fig.get_figwidth()))
    fig.tight_layout()
    fig.savefig(output, dpi=dpi)
    plt.close(fig)
    return output


def _finish_axes(fig: plt.Figure, ax: plt.Axes, output: Path, *, xlabel: str, ylabel: str,
                 title: str, log_y: bool) -> Path:
    """Label, grid and legend a one-panel curve figure, then save it to ``output``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    # beside the axes, not on them: inside, the legend hid markers wherever it went
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    if title:
        ax.set_title(wrapped_title(title, fig.get_figwidth() * ax.get_position().width))
    return save_figure(fig, output, dpi=120)


def plot_learning_curve(metrics_path: Path, output: Path, *, title: str = "",
                        panels: Mapping[str, Panel | None] | None = None,
                        skip: Sequence[str] = ("iteration", "wall_time")) -> Path | None:
    """One panel per metric of ``metrics.jsonl`` against the meta-iteration (smoothed).

    ``panels`` names the metrics to draw first, in order, with their titles (and limits, a
    reference line); a metric it maps to None is not drawn, one it lacks is drawn last under
    its own name.
    """
    records = read_metrics(metrics_path)
    if not records:
        return None
    panels = panels or {}
    logged = [k for k in records[-1] if k not in skip]
    names = ([k for k in panels if k in logged and panels[k] is not None]
             + [k for k in logged if k not in panels])
    iterations = np.array([r["iteration"] for r in records])
    fig, axes = panel_grid(len(names), width=4.2, height=3.2)
    for ax, name in zip(axes, names, strict=True):
        panel = panels.get(name) or Panel(name)
        values = np.array([r.get(name, np.nan) for r in records], dtype=float)
        window = max(1, len(values) // 50)
        # the raw values faint under their moving average; alone (under 100 iterations) plain
        ax.plot(iterations, values, color="0.75" if window > 1 else "C0",
                linewidth=0.8 if window > 1 else 1.6, marker="o" if len(values) <= 30 else None,
                markersize=3)
        if window > 1:
            kernel = np.ones(window) / window
            smooth = np.convolve(values, kernel, mode="valid")
            ax.plot(iterations[window - 1:], smooth, color="C0", linewidth=1.6)
        if panel.line is not None:
            ax.axhline(panel.line[0], color="0.3", linestyle="--", linewidth=1,
                       label=panel.line[1])
            ax.legend(fontsize=8, loc="lower right")
        if panel.limits is not None:
            ax.set_ylim(*panel.limits)
        ax.set_xlabel("meta-iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("\n".join(textwrap.wrap(panel.title, 44)), fontsize=10)
        ax.grid(alpha=0.3)
    return save_figure(fig, output, title=title)


REFERENCE_STYLES = (":", "--", "-.", (0, (1, 3)))
"""Line styles of the published references, in turn, so that close lines stay apart."""


def plot_adaptation_curves(curves: Mapping[str, Mapping[str, Sequence[float]]],
                           steps: Sequence[int], output: Path, *, ylabel: str,
                           title: str = "",
                           reference: Mapping[str, Mapping[int, float]] | None = None,
                           log_y: bool = False,
                           value_range: tuple[float, float] | None = None) -> Path:
    """Mean ± 95% interval after each number of adaptation steps, one line per curve.

    ``reference`` marks published numbers (name -> {steps: value}) with grey crosses, those at
    the evaluated ``steps`` only. A curve or reference with one value only (a policy that
    does not adapt, as the oracle) is a horizontal line across the steps, its 95% interval a
    band. ``value_range`` (e.g. 0-100 for an accuracy in %) clips the drawn intervals.
    """
    low, high = value_range if value_range is not None else (-np.inf, np.inf)
    fig, ax = plt.subplots(figsize=(8.2, 4))
    for i, (name, curve) in enumerate(curves.items()):
        mean = np.asarray(curve["mean"], dtype=float)
        ci = np.asarray(curve["ci95"], dtype=float)
        below, above = np.minimum(ci, mean - low), np.minimum(ci, high - mean)
        if len(mean) == 1 and len(steps) > 1:
            ax.axhline(mean[0], linestyle="--", color=f"C{i}", label=f"{name} (no adaptation)")
            ax.axhspan(mean[0] - below[0], mean[0] + above[0], color=f"C{i}", alpha=0.12)
            continue
        if len(steps) > 16:  # error bars at every step would bury the curve: a band
            ax.plot(steps, mean, marker="o", markersize=2.5, label=name, color=f"C{i}")
            ax.fill_between(steps, mean - below, mean + above, color=f"C{i}", alpha=0.2,
                            linewidth=0)
            continue
        ax.errorbar(steps, mean, yerr=np.stack([below, above]), marker="o", capsize=3,
                    label=name, color=f"C{i}")
    for i, (name, values) in enumerate((reference or {}).items()):
        color = f"{0.15 + 0.18 * i:.2f}"
        style = REFERENCE_STYLES[i % len(REFERENCE_STYLES)]
        if len(values) == 1 and len(steps) > 1:
            ax.axhline(next(iter(values.values())), linestyle=style, color=color, label=name)
            continue
        shown = {step: value for step, value in values.items() if step in steps}
        if shown:
            ax.plot(list(shown), list(shown.values()), linestyle=style, color=color,
                    marker="x", markersize=8, label=name)
    if max(steps, default=0) <= 16:
        ax.set_xticks(list(steps))
    else:  # a tick per step would overlap
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish_axes(fig, ax, output, xlabel="gradient steps", ylabel=ylabel, title=title,
                        log_y=log_y)


def plot_over_training(summary: Mapping[str, Any], output: Path, *, title: str = "",
                       shown: Sequence[int] | None = None, log_y: bool = False) -> Path:
    """The evaluated metric after each of ``shown`` step counts (mean ± 95% interval as a
    band) against the meta-iteration of the evaluated checkpoint; the published reference,
    if any, as dotted lines in the colour of its step count.

    ``summary``: as written by :func:`metarl.over_training.evaluate_over_training`, with
    ``iterations [P]``, ``steps [S]``, ``mean`` and ``ci95 [P][S]``, ``metric`` and
    ``reference`` (None or ``{"name", "values": {step: value}}``).
    """
    steps = list(summary["steps"])
    shown = list(shown) if shown is not None else steps
    iterations = np.asarray(summary["iterations"])
    mean = np.asarray(summary["mean"], dtype=float)
    ci = np.asarray(summary["ci95"], dtype=float)
    reference = summary.get("reference") or {"name": "", "values": {}}
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for i, step in enumerate(shown):
        column = steps.index(step)
        color = f"C{i}"
        ax.plot(iterations, mean[:, column], marker="o", color=color,
                label=f"{step} step" + ("" if step == 1 else "s"))
        ax.fill_between(iterations, mean[:, column] - ci[:, column],
                        mean[:, column] + ci[:, column], color=color, alpha=0.15)
        if str(step) in reference["values"]:
            ax.axhline(reference["values"][str(step)], color=color, linestyle=":",
                       linewidth=1.2)
    if reference["name"]:
        ax.plot([], [], color="0.3", linestyle=":", label=f"{reference['name']} (dotted)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish_axes(fig, ax, output, xlabel="meta-iteration of the evaluated checkpoint",
                        ylabel=f"{summary['metric']} (mean ± 95% CI)", title=title,
                        log_y=log_y)


def moving_average(values: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Means over the last ``window`` values (fewer at the start), same length as ``values``."""
    array = np.asarray(values, dtype=float)
    sums = np.cumsum(np.insert(array, 0, 0.0))
    ends = np.arange(1, len(array) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def plot_runs_compared(training: Mapping[str, Sequence[tuple[int, float]]],
                       evaluations: Mapping[str, Sequence[tuple[int, float, float]]],
                       output: Path, *, metric: str, evaluated: str, window: int = 10,
                       reference: tuple[str, float] | None = None, title: str = "") -> Path:
    """Several runs side by side: a training metric against the meta-iteration (the mean over
    the last ``window`` iterations; the raw values faint) and, where runs were evaluated at
    several checkpoints, the evaluated metric (mean ± 95% interval) against the iteration.

    ``training``: label -> [(iteration, value)]; ``evaluations``: label -> [(iteration, mean,
    ci95)] (labels without evaluations are left out of the right panel, which is drawn only
    when one has some); ``reference``: a published value (name, value), a dotted line there.
    """
    panels = 2 if any(evaluations.values()) else 1
    fig, axes = panel_grid(panels, width=6.0, height=4.2)
    for i, (label, points) in enumerate(training.items()):
        iterations, values = (np.asarray(x) for x in zip(*points, strict=True))
        axes[0].plot(iterations, values, color=f"C{i}", alpha=0.2, linewidth=0.7)
        axes[0].plot(iterations, moving_average(values, window), color=f"C{i}", label=label)
    axes[0].set_xlabel("meta-iteration")
    axes[0].set_ylabel(f"{metric} (mean over {window} iterations)")
    if panels == 2:
        for i, label in enumerate(training):
            rows = sorted(evaluations.get(label, ()))
            if not rows:
                continue
            iterations, means, cis = (np.asarray(x, dtype=float) for x in zip(*rows, strict=True))
            axes[1].errorbar(iterations, means, yerr=cis, marker="o", capsize=3,
                             color=f"C{i}", label=label)
        axes[1].set_xlabel("meta-iteration of the evaluated checkpoint")
        axes[1].set_ylabel(f"{evaluated} (mean ± 95% CI)")
    for ax in axes:
        if reference is not None:
            ax.axhline(reference[1], color="0.3", linestyle=":", label=reference[0])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, output, title=title)
