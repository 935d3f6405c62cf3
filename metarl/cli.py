"""``metarl train | evaluate | render | benchmark | demo | config`` (also ``python -m metarl``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from metarl.config import ConfigError, dump_config, parse_override
from metarl.experiment import Experiment, NonFiniteLossError
from metarl.runner import TrainingStopped

DEMO_CONFIG = "navigation2d-quick"


def builtin_configs() -> dict[str, Path]:
    """Configs shipped with metarl, by file stem (``sine``, ``sine-quick``, ...)."""
    root = resources.files("metarl.configs")
    found: dict[str, Path] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        for child in node.iterdir():
            if child.is_dir():
                stack.append(child)
            elif child.name.endswith(".yaml"):
                found[child.name[: -len(".yaml")]] = Path(str(child))
    return dict(sorted(found.items()))


def config_summary(path: Path, width: int = 90) -> str:
    """What a config file is, from its header comment: up to the first ``:``, ``(`` or
    sentence end, at most ``width`` characters."""
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    text = " ".join(header)
    ends = [i for i in (text.find(": "), text.find(" ("), text.find(". ")) if i > 0]
    if text.endswith("."):
        ends.append(len(text) - 1)
    summary = text[:min(ends)] if ends else text
    return summary if len(summary) <= width else summary[:width - 1].rsplit(" ", 1)[0] + "…"


def resolve_config_path(text: str) -> Path:
    """A config file path, or the name of a shipped config (which a folder of that name,
    such as a run directory named after its config, does not hide)."""
    path = Path(text)
    if path.is_file():
        return path
    configs = builtin_configs()
    if text in configs:
        return configs[text]
    if path.is_dir() and (path / "config.yaml").is_file():
        raise ConfigError(f"config {text!r} is a run directory: its config is "
                          f"{path / 'config.yaml'} (give that file), and `metarl train "
                          f"--resume {text}` continues the run")
    if path.is_dir():
        raise ConfigError(f"config {text} is a directory, not a config file; give a YAML "
                          "file, or a shipped config's name (see `metarl config`)")
    if path.suffix.lower() in (".yaml", ".yml") or "/" in text:
        raise ConfigError(f"config file {text} does not exist; or give a shipped config's "
                          "name (see `metarl config`)")
    raise ConfigError(f"config {text!r} is neither a file nor a shipped config; shipped "
                      f"configs: {', '.join(configs)}")


def _versions() -> str:
    """``metarl X (torch Y, gymnasium Z, mujoco W, Python V)``, without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    from metarl import __version__
    parts = ", ".join(f"{name} {of(name)}" for name in ("torch", "gymnasium", "mujoco"))
    return f"metarl {__version__} ({parts}, Python {sys.version.split()[0]})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metarl", description="Meta-learning and meta-RL on PyTorch, Gymnasium and MuJoCo: "
        "MAML (second and first order), Reptile, Meta-SGD, MAML-TRPO.")
    parser.add_argument("--version", action="version", version=_versions(),
                        help="print the versions of metarl and what it runs on, and exit")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="meta-train from a config (or resume a run)")
    train.add_argument("config", nargs="?",
                       help="YAML config file or shipped config name (see `metarl config`)")
    train.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config value, e.g. "
                       "training.iterations=500 (repeatable)")
    train.add_argument("--run-dir", type=_run_dir, help="where the run is written: a new or "
                       "empty folder (default: runs/<config>-<time>)")
    train.add_argument("--seed", type=int, help="override the config's seed")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR",
                       help="continue the interrupted run in RUN_DIR (with --set "
                       "training.iterations=N: train a finished run longer)")

    # RUN_DIR is optional to argparse only to explain `--baselines RUN_DIR` (where --baselines
    # takes it as NAMES); the usage line shows it required, as it is
    evaluate = commands.add_parser("evaluate", help="adaptation curve of a trained run",
                                   usage="%(prog)s [-h] RUN_DIR [options]")
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR", nargs="?",
                          help="a run directory (or one of its snapshots/iteration-N)")
    evaluate.add_argument("--steps", type=int, help="evaluate after 0..STEPS gradient steps "
                          "(default: the config's evaluation.steps)")
    evaluate.add_argument("--tasks", type=int, help="number of test tasks (default: the "
                          "config's evaluation.tasks)")
    evaluate.add_argument("--seed", type=int, help="seed of the test tasks and of their data: "
                          "episodes for meta-RL, points or images for supervised runs "
                          "(with evaluation.task_draw=maml_authors: of the episodes only; "
                          "default: the config's evaluation.seed)")
    evaluate.add_argument("--baselines", nargs="?", const="all", metavar="NAMES",
                          help="also evaluate the paper's baselines on the same test tasks: "
                          "all of the experiment's, or those named, comma-separated (meta-RL: "
                          "random, pretrained, oracle; sine: pretrained; omniglot: none)")
    evaluate.add_argument("--set", dest="overrides", action="append", default=[],
                          metavar="KEY=VALUE", help="evaluate with an evaluation.* value other "
                          "than the run's, e.g. evaluation.later_lr_scale=0.25, or a baseline "
                          "setting, e.g. baselines.oracle_iterations=500 (repeatable; the "
                          "run's config.yaml stays as it is)")
    evaluate.add_argument("--output-dir", type=_run_dir, metavar="DIR",
                          help="write evaluation.json and adaptation.png to DIR (made if "
                          "missing) instead of RUN_DIR, whose own evaluation, pictures and "
                          "baselines stay as they are (baselines it lacks are cached in DIR): "
                          "e.g. to compare evaluation settings (not with --snapshots)")
    evaluate.add_argument("--snapshots", action="store_true",
                          help="also evaluate every snapshot of the run (run.snapshot_every): "
                          "the curve by meta-iteration, in evaluation-over-training.png "
                          "(--baselines: for the latest checkpoint only)")

    render = commands.add_parser("render", help="pictures of a trained run adapting")
    render.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="a run directory (or one of its snapshots/iteration-N)")
    render.add_argument("--tasks", type=int,
                        help="number of tasks the pictures show (default: 4; a --video shows "
                        "one, chosen with --task)")
    render.add_argument("--steps", type=int, help="adaptation steps to show (default: the "
                        "config's evaluation.steps; meta-RL pictures draw six of them at most: "
                        "0, 1 and the last with evenly spaced ones between)")
    render.add_argument("--seed", type=int, help="seed of the shown tasks and their data "
                        "(episodes, points or images; with evaluation.task_draw=maml_authors: "
                        "of the episodes only; default: the config's evaluation.seed)")
    render.add_argument("--output", type=Path, help="output file (default: in RUN_DIR)")
    render.add_argument("--video", type=Path, metavar="FILE.mp4|FILE.gif",
                        help="meta-RL runs: a video of one task's episodes before "
                        "adaptation and after each step (at most 10), side by side")
    render.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="render with an evaluation.* value other than "
                        "the run's, as metarl evaluate --set (repeatable; render draws no "
                        "baselines, so their keys are refused)")
    render.add_argument("--task", metavar="INDEX|KEY=VALUE",
                        help="the task of --video: a test-task index (default 0) or e.g. "
                        "velocity=1.5, direction=-1, goal=0.3,-0.2")

    benchmark = commands.add_parser(
        "benchmark", help="speed figures, side by side: medians of repeated calls with their "
        "range (seconds per meta-iteration: means, with the range)")
    benchmark.add_argument("name", nargs="?", default="all",
                           help=f"which benchmark: {', '.join(_benchmark_names())} or all "
                           "(default: all)")
    benchmark.add_argument("--repeats", type=int, default=20,
                           help="how long to time each configuration (default: %(default)s): "
                           "sine times REPEATS meta-iterations, navigation 2-5 (REPEATS, "
                           "clipped) iterations and REPEATS/4 rollouts, cheetah REPEATS/10 "
                           "of each, omniglot REPEATS/4 iterations (at least one; rollouts "
                           "at least 3 where REPEATS allows; all takes minutes, most of them "
                           "on the cheetah)")
    benchmark.add_argument("--device", default="cpu",
                           help="where the omniglot benchmark computes: cpu (default), cuda, "
                           "cuda:N or auto (a GPU where one is visible); the other benchmarks "
                           "time CPU work, and take only cpu or auto")

    demo = commands.add_parser("demo", help="train, evaluate and render a small default run")
    demo.add_argument("config", nargs="?",
                      help=f"config file or shipped name (default: {DEMO_CONFIG})")
    demo.add_argument("--run-dir", type=_run_dir, help="where the run is written (default: "
                      "runs/CONFIG-TIME)")
    demo.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE", help="override a config value, e.g. "
                      "training.iterations=20 (repeatable; not with --resume)")
    demo.add_argument("--seed", type=int, help="override the config's seed")
    demo.add_argument("--resume", type=Path, metavar="RUN_DIR",
                      help="finish an interrupted demo: continue its training where it "
                      "stopped, then evaluate (keeping an evaluation.json of the checkpoint "
                      "made with the demo's settings) and render, replacing the run's "
                      "pictures")

    config = commands.add_parser("config", help="list shipped configs, or print one resolved")
    config.add_argument("config", nargs="?", help="config file or shipped name")
    config.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value (repeatable)")
    return parser


def _run_dir(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("give a directory name (an empty one would write the "
                                          "run into the current directory)")
    return Path(text)


def _benchmark_names() -> list[str]:
    from metarl.benchmark import BENCHMARKS

    return list(BENCHMARKS)


def _check_positive(name: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"--{name} = {value}: must be >= {minimum}")


def _default_run_dir(config_path: Path) -> Path:
    """A new, empty ``runs/<config>-<time>[-N]``, created here so that runs started in the same
    second (in parallel) each get their own."""
    base = Path("runs") / f"{config_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")
        except OSError as error:
            raise ConfigError(f"can't create the run directory {candidate} ({error}); give "
                              "another with --run-dir") from None


def _train(args: argparse.Namespace) -> int:
    from metarl.experiment import load_config
    from metarl.runner import (
        check_new_run_dir,
        create_run_dir,
        extend_run_config,
        train_run,
    )

    made_here = False  # a new run's directory, made by this command
    if args.resume is not None:
        experiment, config, state = _load_resumed_run(args)
        done = int(state["iteration"])
        if args.overrides:
            config = extend_run_config(args.resume, experiment, args.overrides, done=done)
        run_dir = args.resume
        computes_on = experiment.check_machine(config, where=run_dir / "config.yaml",
                                               overrides=args.overrides)
        if done > config.training.iterations:  # config.yaml edited by hand
            print(f"metarl: {run_dir} holds {done} meta-iterations, more than its config.yaml "
                  f"asks for (training.iterations = {config.training.iterations}); nothing to "
                  f"do. Set training.iterations in {run_dir / 'config.yaml'} back to at least "
                  f"{done}, or train it longer with `metarl train --resume {run_dir} --set "
                  "training.iterations=N`", file=sys.stderr)
            return 0
        if done == config.training.iterations:
            print(f"metarl: {run_dir} holds {done} meta-iterations, all that its config asks "
                  f"for (training.iterations = {config.training.iterations}); nothing to do. "
                  f"Train it longer with `metarl train --resume {run_dir} --set "
                  "training.iterations=N`", file=sys.stderr)
            return 0
    else:
        if not args.config:
            raise ConfigError("give a CONFIG to train, or --resume RUN_DIR")
        config_path = resolve_config_path(args.config)
        experiment, config = load_config(config_path, args.overrides, args.seed)
        computes_on = experiment.check_machine(config, overrides=args.overrides)
        run_dir = args.run_dir or _default_run_dir(config_path)
        _note_restart(run_dir, check_new_run_dir(run_dir))
        made_here = not run_dir.exists()
        create_run_dir(run_dir)  # before the trainer is built: a bad path fails at once
    resuming = (f", resuming after meta-iteration {done} of {config.training.iterations}"
                if args.resume is not None else "")
    print(f"metarl: {experiment.name} run in {run_dir}"
          + (f", on {computes_on}" if computes_on else "") + resuming, file=sys.stderr)
    try:
        checkpoint = train_run(experiment, config, run_dir, resume=args.resume is not None)
    except BaseException:
        if args.resume is None and not args.run_dir:
            _remove_if_empty(run_dir, with_parent=True)
        elif made_here:  # the user's --run-dir, made by this command
            _remove_if_empty(run_dir, with_parent=False)
        raise
    print(f"metarl: trained; checkpoint {checkpoint}", file=sys.stderr)
    if args.resume is not None:
        _note_stale_outputs(run_dir, experiment.picture_names)
    return 0


def _note_stale_outputs(run_dir: Path, picture_names: Sequence[str]) -> None:
    """After a resume, say which of the run's evaluation and render outputs show an earlier
    checkpoint, and how to make them again."""
    path = run_dir / "evaluation.json"
    evaluated = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        evaluated = json.loads(path.read_text()).get("checkpoint_iteration")
    if isinstance(evaluated, int):
        print(f"metarl: note: {path} (and adaptation.png) are of meta-iteration {evaluated}, "
              f"before this training; evaluate again: metarl evaluate {run_dir}"
              + (" (with --snapshots for evaluation-over-training.png)"
                 if (run_dir / "evaluation-over-training.json").is_file() else ""),
              file=sys.stderr)
    pictures = [name for name in picture_names if (run_dir / name).is_file()]
    if pictures:  # training never writes them: they predate it
        print(f"metarl: note: {', '.join(pictures)} in {run_dir} "
              f"{'is' if len(pictures) == 1 else 'are'} of a checkpoint before this training; "
              f"render again: metarl render {run_dir}", file=sys.stderr)


def _remove_if_empty(run_dir: Path, *, with_parent: bool) -> None:
    """Remove a run directory made for a run that failed before writing to it (and, for the
    default one, ``runs/`` if that leaves it empty)."""
    for folder in (run_dir, run_dir.parent) if with_parent else (run_dir,):
        with contextlib.suppress(OSError):  # not empty, or gone
            folder.rmdir()


def _evaluate(args: argparse.Namespace) -> int:
    from metarl.experiment import EvaluateOptions, resolve_baselines, with_evaluation_overrides
    from metarl.runner import load_run

    if args.run_dir is None:
        if args.baselines is not None and Path(args.baselines).is_dir():
            raise ConfigError(f"--baselines took {args.baselines!r} for its NAMES; give RUN_DIR "
                              f"first (metarl evaluate {args.baselines} --baselines) or write "
                              "--baselines=NAMES")
        raise ConfigError("give the RUN_DIR to evaluate")
    _check_positive("steps", args.steps, 0)
    _check_positive("tasks", args.tasks, 2)
    _check_positive("seed", args.seed, 0)
    experiment, config, state = load_run(args.run_dir)
    baselines = resolve_baselines(experiment, args.baselines)
    if args.baselines == "all" and not baselines:
        print(f"metarl: {experiment.name} defines no baselines; evaluating the run alone",
              file=sys.stderr)
    evaluated_config = with_evaluation_overrides(experiment, config, args.overrides)
    # also where every snapshot's result is reused
    experiment.check_machine(evaluated_config, where=args.run_dir / "config.yaml",
                             overrides=args.overrides)
    _note_unused_baseline_settings(experiment, baselines, args.overrides)
    output_dir = _evaluation_output_dir(args)
    options = EvaluateOptions(steps=args.steps, tasks=args.tasks, seed=args.seed,
                              baselines=baselines, output_dir=output_dir)
    if args.snapshots:
        from metarl.over_training import PLOT_NAME, SUMMARY_NAME, evaluate_over_training

        written_to = output_dir or args.run_dir
        with _folders_removed_on_failure(output_dir):
            summary = evaluate_over_training(args.run_dir, options, args.overrides)
        print(summary["table"])
        if baselines:  # evaluated with the latest checkpoint only
            print("the run's latest checkpoint and the baselines:")
            print(json.loads((written_to / "evaluation.json").read_text())["table"])
        where = ("the run directory and each snapshot of an earlier iteration"
                 if output_dir is None else
                 f"{output_dir} (the latest checkpoint's) and {output_dir / 'snapshots'}/ "
                 "(the earlier ones'); the run is as it was")
        print(f"metarl: wrote {written_to / SUMMARY_NAME}, {written_to / PLOT_NAME} and "
              f"an evaluation.json per evaluated checkpoint (kept where it was current) in "
              f"{where}", file=sys.stderr)
        return 0
    config = evaluated_config
    _note_learned_rates(config, args.overrides)
    written_to = output_dir or args.run_dir
    with _folders_removed_on_failure(output_dir):
        if output_dir is not None:
            try:
                output_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ConfigError(f"--output-dir {output_dir}: can't make it "
                                  f"({error.strerror or error})") from None
        result = experiment.evaluate(config, state, args.run_dir, options)
    print(result.get("table", ""))
    print(f"metarl: wrote {written_to / 'evaluation.json'} and "
          f"{written_to / 'adaptation.png'}", file=sys.stderr)
    return 0


def _evaluation_output_dir(args: argparse.Namespace) -> Path | None:
    """``evaluate --output-dir``, checked: None when not given or when it is RUN_DIR itself."""
    from metarl.checkpoint import CHECKPOINT_NAME

    output_dir: Path | None = args.output_dir
    if output_dir is None:
        return None
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"--output-dir {output_dir}: not a directory")
    if output_dir.resolve() == args.run_dir.resolve():
        return None
    if (output_dir / CHECKPOINT_NAME).exists():
        raise ConfigError(f"--output-dir {output_dir} holds a run of its own ({CHECKPOINT_NAME}), "
                          "whose evaluation would be replaced; give a folder of its own")
    return output_dir


def _note_restart(run_dir: Path, replaced: Sequence[str]) -> None:
    if replaced:
        print(f"metarl: note: {run_dir} holds a run stopped before its first checkpoint; a new "
              f"run starts there in its place ({', '.join(replaced)})", file=sys.stderr)


def _note_unused_baseline_settings(experiment: Experiment, baselines: Sequence[str],
                                   overrides: Sequence[str]) -> None:
    """Say so when --set changes settings of baselines that are not evaluated: any of the
    baseline section without --baselines, ``NAME_...`` keys (``oracle_iterations``) without
    baseline NAME."""
    section = experiment.baseline_section
    if not section:
        return
    unused = []
    for text in overrides:
        path = parse_override(text)[0]
        if path[:1] != [section]:
            continue
        owner = next((name for name in experiment.baseline_names
                      if len(path) > 1 and path[1].startswith(f"{name}_")), None)
        if not baselines or (owner is not None and owner not in baselines):
            unused.append(text)
    if unused:
        evaluated = (f"only {', '.join(baselines)} {'is' if len(baselines) == 1 else 'are'} "
                     "evaluated" if baselines else "no baselines are evaluated (add --baselines)")
        print(f"metarl: note: {evaluated}; {', '.join(unused)} "
              f"{'has' if len(unused) == 1 else 'have'} no effect", file=sys.stderr)


def _note_learned_rates(config: object, overrides: Sequence[str]) -> None:
    """Say so when --set gives test-time learning rates that a Meta-SGD run doesn't use."""
    adaptation = getattr(config, "adaptation", None)
    if not getattr(adaptation, "learn_inner_lr", False):
        return
    ignored = [text for text in overrides
               if parse_override(text)[0] in (["evaluation", "inner_lr"],
                                              ["evaluation", "later_lr_scale"])]
    if ignored:
        print(f"metarl: note: this Meta-SGD run adapts with its learned per-parameter rates; "
              f"{', '.join(ignored)} has no effect", file=sys.stderr)


def _render(args: argparse.Namespace) -> int:
    _check_positive("tasks", args.tasks)
    _check_positive("steps", args.steps, 0)
    _check_positive("seed", args.seed, 0)
    if args.video is not None and args.output is not None:
        raise ConfigError("--video names the video file; give no --output with it")
    target = args.video if args.video is not None else args.output
    with _folders_removed_on_failure(None if target is None else target.parent):
        return _render_into(args)


@contextlib.contextmanager
def _folders_removed_on_failure(folder: Path | None) -> Iterator[None]:
    """Remove again, if the block fails or is interrupted, the folders up to ``folder`` that
    do not exist yet (those the block may make), as far as they are still empty."""
    made = [] if folder is None else [f for f in (folder, *folder.parents) if not f.exists()]
    try:
        yield
    except BaseException:
        for path in made:  # deepest first
            _remove_if_empty(path, with_parent=False)
        raise


def _render_into(args: argparse.Namespace) -> int:
    """``metarl render`` once its numbers are checked; the folders it makes for ``--output``
    or ``--video`` are removed again by :func:`_render` if it fails."""
    from metarl.experiment import RenderOptions, with_evaluation_overrides
    from metarl.runner import load_run

    if args.output is not None:
        _check_picture_path(args.output)
    experiment, config, state = load_run(args.run_dir)
    if experiment.name != "meta_rl" and (args.video is not None or args.task is not None):
        raise ConfigError(f"--video and --task are for meta-RL runs; runs of experiment "
                          f"{experiment.name} draw pictures only")
    for text in args.overrides:
        key = ".".join(parse_override(text)[0])
        if key in experiment.render_ignored_keys:
            raise ConfigError(f"--set {text}: metarl render draws no {key}; it changes only "
                              "metarl evaluate")
    config = with_evaluation_overrides(experiment, config, args.overrides, baselines=False)
    experiment.check_machine(config, where=args.run_dir / "config.yaml",
                             overrides=args.overrides)
    if args.video is not None:  # all checked before the video's folder is made
        if args.tasks is not None:
            raise ConfigError("--tasks sets how many tasks the pictures show; a --video shows "
                              "one task, chosen with --task INDEX or KEY=VALUE")
        _check_video_steps(args.steps, config.evaluation.steps)
        _check_video_path(args.video)
    _note_learned_rates(config, args.overrides)
    paths = experiment.render(config, state, args.run_dir, RenderOptions(
        tasks=4 if args.tasks is None else args.tasks, steps=args.steps, seed=args.seed,
        output=args.output, video=args.video, task=args.task))
    for path in paths:
        print(f"metarl: wrote {path}", file=sys.stderr)
    return 0


def _check_picture_path(path: Path) -> None:
    """``--output``: a file type matplotlib writes, named by its suffix; its folder is made."""
    from matplotlib.figure import Figure

    types = sorted(Figure().canvas.get_supported_filetypes())
    _check_not_a_directory("--output", path)
    if path.suffix.lower().lstrip(".") not in types:
        raise ConfigError(f"--output {path}: name the picture's file type by its suffix, one "
                          f"of .{', .'.join(types)} (e.g. {path.with_suffix('.png').name})")
    _check_writable("--output", path)


def _check_video_steps(steps: int | None, configured: int) -> None:
    """``--steps`` of a ``--video``, or without it the run's ``evaluation.steps``."""
    from metarl.rl.video import check_video_steps

    if steps is not None:
        check_video_steps(steps)
    else:
        check_video_steps(configured, source=f"evaluation.steps = {configured}")


def _check_video_path(path: Path) -> None:
    """``--video``: .mp4 or .gif, in a folder that can be made and written."""
    from metarl.rl.video import VIDEO_SUFFIXES

    _check_not_a_directory("--video", path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(f"--video {path}: the file name must end in "
                          f"{' or '.join(VIDEO_SUFFIXES)} (e.g. {path.with_suffix('.mp4').name})")
    _check_writable("--video", path)


def _check_not_a_directory(flag: str, path: Path) -> None:
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; give a file name")


def _check_writable(flag: str, path: Path) -> None:
    """Make ``path``'s folder and write a file there, before any work that would be lost."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{flag} {path}: can't create its folder ({error})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".metarl-write-check-"):
            pass
    except OSError as error:
        raise ConfigError(f"{flag} {path}: can't write in {path.parent} ({error})") from None


def _benchmark(args: argparse.Namespace) -> int:
    from metarl.benchmark import run_benchmarks

    _check_positive("repeats", args.repeats)
    run_benchmarks(args.name, repeats=args.repeats, device=args.device)
    return 0


def _load_resumed_run(args: argparse.Namespace) -> tuple[Experiment, Any, dict[str, Any]]:
    """The run that ``--resume RUN_DIR`` continues (train or demo), with its saved config."""
    from metarl.runner import check_resumable, load_run

    if args.config or args.seed is not None or args.run_dir:
        raise ConfigError("--resume RUN_DIR continues a run with its saved config; "
                          "give no CONFIG, --seed or --run-dir with it")
    check_resumable(args.resume)
    return load_run(args.resume)


def _demo(args: argparse.Namespace) -> int:
    from metarl.experiment import load_config
    from metarl.runner import check_new_run_dir, create_run_dir, train_run

    if args.resume is not None:
        if args.overrides:
            raise ConfigError("metarl demo --resume finishes a demo with its saved config; "
                              "give no --set with it (to train a finished run longer: "
                              f"metarl train --resume {args.resume} --set "
                              "training.iterations=N)")
        run_dir = args.resume
        try:
            experiment, config, _ = _load_resumed_run(args)
        except ConfigError as error:  # its advice (start afresh, resume) is a demo's here
            raise ConfigError(str(error).replace("metarl train ", "metarl demo ")) from None
        print(f"metarl demo: 1/3 meta-training {experiment.name} in {run_dir} (continued)",
              file=sys.stderr)
    else:
        config_path = resolve_config_path(args.config or DEMO_CONFIG)
        experiment, config = load_config(config_path, args.overrides, args.seed)
        experiment.check_machine(config, overrides=args.overrides)
        run_dir = args.run_dir or _default_run_dir(config_path)
        try:
            _note_restart(run_dir, check_new_run_dir(run_dir))
        except ConfigError as error:  # a demo there is finished with demo --resume
            raise ConfigError(str(error).replace("metarl train --resume", "metarl demo --resume")
                              ) from None
        create_run_dir(run_dir)
        print(f"metarl demo: 1/3 meta-training {experiment.name} in {run_dir}",
              file=sys.stderr)
    finish = f"metarl demo --resume {run_dir}"
    try:
        train_run(experiment, config, run_dir, resume=args.resume is not None)
    except TrainingStopped as error:  # the demo, not only its training, continues from here
        raise TrainingStopped(str(error).replace(f"metarl train --resume {run_dir}", finish),
                              error.exit_code) from None
    try:
        return _evaluate_and_render_demo(experiment, run_dir)
    except TrainingStopped as error:  # a baseline's training, interrupted
        raise TrainingStopped(
            str(error).replace("the same command continues it", f"{finish} continues it"),
            error.exit_code) from None
    except KeyboardInterrupt:
        raise TrainingStopped(f"interrupted; the run is trained. Finish the demo with: "
                              f"{finish}", exit_code=130) from None


def _evaluate_and_render_demo(experiment: Experiment, run_dir: Path) -> int:
    """The demo's stages 2 and 3 on the trained run in ``run_dir``."""
    from metarl.experiment import EvaluateOptions, RenderOptions, baseline_section
    from metarl.over_training import previous_evaluation
    from metarl.runner import load_run

    _, config, state = load_run(run_dir)
    ev, section = config.evaluation, baseline_section(experiment, config)
    # a finished demo resumed (stopped while rendering): its evaluation is still current
    result = previous_evaluation(
        run_dir, state["iteration"], ev.steps, ev.tasks, ev.seed, evaluation_config=ev,
        saved_evaluation_config=ev, baselines=experiment.baseline_names,
        baseline_config=section, saved_baseline_config=section,
        scoring_version=experiment.scoring_version)
    if result is None:
        print("metarl demo: 2/3 evaluating adaptation (with baselines)", file=sys.stderr)
        result = experiment.evaluate(config, state, run_dir,
                                     EvaluateOptions(baselines=experiment.baseline_names))
    else:
        print("metarl demo: 2/3 the run's evaluation.json is of this checkpoint, with these "
              "settings: kept", file=sys.stderr)
    print(result.get("table", ""))
    print("metarl demo: 3/3 rendering", file=sys.stderr)
    paths = experiment.render(config, state, run_dir, RenderOptions())
    if experiment.name == "meta_rl":  # and a video of one test task adapting
        from metarl.rl.video import MAX_VIDEO_STEPS, RenderBackendError

        try:
            paths += experiment.render(config, state, run_dir, RenderOptions(
                video=run_dir / "adaptation.gif",
                steps=min(config.evaluation.steps, MAX_VIDEO_STEPS)))
            if config.evaluation.steps > MAX_VIDEO_STEPS:
                print(f"metarl demo: the video shows the first {MAX_VIDEO_STEPS} of the "
                      f"{config.evaluation.steps} steps", file=sys.stderr)
        except RenderBackendError as error:  # MuJoCo without OpenGL: the rest still stands
            print(f"metarl demo: no video: {error}", file=sys.stderr)
    print(f"metarl demo: done. See {run_dir}/: evaluation.json, adaptation.png, "
          f"learning_curve.png, {', '.join(p.name for p in paths)}; "
          f"TensorBoard: tensorboard --logdir {run_dir}", file=sys.stderr)
    return 0


def _config(args: argparse.Namespace) -> int:
    from metarl.experiment import load_config

    if not args.config:
        configs = builtin_configs()
        for name, path in configs.items():
            print(f"{name:<26} {config_summary(path)}")
        folders = sorted({str(path.parent.parent) for path in configs.values()})
        print(f"\nfiles: {', '.join(folders)}/<family>/<name>.yaml; `metarl config NAME` "
              "prints one with every key explained")
        return 0
    _, config = load_config(resolve_config_path(args.config), args.overrides)
    print(dump_config(config), end="")
    return 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "render": _render,
            "benchmark": _benchmark, "demo": _demo, "config": _config}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    thread_hook = threading.excepthook

    def one_line_os_errors(hook_args: threading.ExceptHookArgs) -> None:
        """A background writer's OSError (TensorBoard's, on a full disk) in one line, not a
        traceback; the command itself stops at its next write, saying what was kept."""
        writer = type(hook_args.thread).__module__.startswith("tensorboard.")
        if writer and isinstance(hook_args.exc_value, OSError):
            print(f"metarl: error in a background writer: {hook_args.exc_value}",
                  file=sys.stderr)
        else:
            thread_hook(hook_args)

    threading.excepthook = one_line_os_errors
    try:
        return _run_command(args)
    finally:
        threading.excepthook = thread_hook


def _run_command(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except ConfigError as error:
        print(f"metarl: error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f"metarl: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout stopped reading (`metarl config | head`)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a process the signal stopped
    except OSError as error:  # permissions, a full disk, a path that is a directory
        print(f"metarl: error: {error}", file=sys.stderr)
        return 1
    except TrainingStopped as error:
        print(f"metarl: {error}", file=sys.stderr)
        return error.exit_code
    except NonFiniteLossError as error:  # outside training: evaluation, baselines, rendering
        print(f"metarl: stopped: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("metarl: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as error:
        # torch reports a failed allocation as a RuntimeError
        if not isinstance(error, MemoryError) and not any(
                words in str(error) for words in ("allocate memory", "out of memory")):
            raise
        detail = f": {error}" if str(error) else ""
        print(f"metarl: out of memory{detail}. Smaller batches need less: fewer tasks, "
              "episodes or steps per batch (meta-RL: training.meta_batch_size, "
              "episodes_per_task, env.max_episode_steps; sine and Omniglot: "
              "training.meta_batch_size, and for Omniglot smaller data.image_size or "
              "evaluation.chunk_tasks); for evaluate and render, fewer --tasks or --steps",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
