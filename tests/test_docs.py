"""The commands README.md and docs/BENCHMARKS.md show still run as written: each parses, each
config exists and, with its --set overrides, validates, and each evaluate/render --set is
one that the documented run accepts. Nothing is trained or evaluated."""

from __future__ import annotations

import contextlib
import functools
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from metarl.cli import _parser, builtin_configs, resolve_config_path
from metarl.config import ConfigError, apply_overrides, parse_override, read_yaml
from metarl.experiment import (
    EXPERIMENTS,
    config_from_data,
    get_experiment,
    load_config,
    with_evaluation_overrides,
)
from metarl.runner import RESUME_OVERRIDABLE, SNAPSHOTS_NAME, _matches

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/BENCHMARKS.md")
_SEPARATORS = {"&&", "||", ";", "|", "(", ")", "&"}
_COMMAND_PREFIXES = {"time", "nohup", "do", "then", "else"}
_INTEGER_OPTIONS = {"--seed", "--steps", "--tasks", "--repeats"}


@dataclass(frozen=True)
class Documented:
    where: str  # "FILE:LINE"
    argv: list[str]  # the arguments after ``metarl``


def _code_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` inside fenced code blocks, backslash continuations joined."""
    lines: list[tuple[int, str]] = []
    in_block = False
    pending: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        if pending is not None:
            number, line = pending[0], pending[1] + " " + line.lstrip()
            pending = None
        if line.rstrip().endswith("\\"):
            pending = (number, line.rstrip()[:-1])
            continue
        lines.append((number, line))
    return lines


def _segments(line: str) -> list[list[str]]:
    """The simple commands of a shell line, comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token in _SEPARATORS:
            segments.append([])
        else:
            segments[-1].append(token)
    return [s for s in segments if s]


def _metarl_argv(tokens: list[str]) -> list[str] | None:
    """The arguments of a ``metarl``/``python -m metarl`` command, or None for other ones."""
    while tokens and (tokens[0] in _COMMAND_PREFIXES or tokens[0].endswith("/time")
                      or ("=" in tokens[0] and not tokens[0].startswith("-"))):
        tokens = tokens[1:]
        if tokens and tokens[0] == "-v":  # /usr/bin/time -v
            tokens = tokens[1:]
    if tokens[:1] == ["metarl"]:
        return tokens[1:]
    if tokens[:3] == ["python", "-m", "metarl"]:
        return tokens[3:]
    return None


def _placeholders_filled(argv: list[str]) -> list[str]:
    """``argv`` with a placeholder for a number (``--seed S``) replaced by one, and without
    the ``--set`` of a placeholder (``evaluation.KEY=VALUE``, ``training.iterations=N``)."""
    argv = [("1" if previous in _INTEGER_OPTIONS and token.isupper() else token)
            for previous, token in zip(["", *argv[:-1]], argv, strict=True)]
    kept: list[str] = []
    for token in argv:
        if kept[-1:] == ["--set"] and any(part.isupper() for part in re.split(r"[.=]", token)):
            kept.pop()
        else:
            kept.append(token)
    return kept


def _is_mention(tokens: list[str]) -> bool:
    """A command named in prose, not one to run (``metarl render``, ``metarl train
    --resume``): no arguments, or it does not parse and ends with an option."""
    argv = _metarl_argv(tokens)
    if argv is None or len(argv) < 2:
        return True
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse's usage message
            _parser().parse_args(_placeholders_filled(argv))
    except SystemExit:
        return argv[-1].startswith("-")
    return False


def _inline_commands(text: str) -> list[tuple[int, str]]:
    """``(line number, command)`` of each inline code span of the prose that starts with
    ``metarl `` (spans may wrap onto the next line)."""
    prose, in_block = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
        prose.append("" if in_block or line.lstrip().startswith("```") else line)
    joined = "\n".join(prose)
    return [(joined.count("\n", 0, match.start()) + 1, " ".join(match.group(1).split()))
            for match in re.finditer(r"`(metarl [^`]+)`", joined)]


def _documented_segments() -> list[tuple[str, list[str]]]:
    """``("FILE:LINE", tokens)`` of each simple command of the docs' code blocks and inline
    code spans."""
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for number, line in _code_lines(text):
            found += [(f"{doc}:{number}", tokens) for tokens in _segments(line)]
        for number, line in _inline_commands(text):
            found += [(f"{doc}:{number}", tokens) for tokens in _segments(line)
                      if not _is_mention(tokens)]
    return found


def documented_commands() -> tuple[list[Documented], int]:
    """Every metarl command of the docs' code blocks, and how many were left out because
    they use shell variables."""
    found, with_variables = [], 0
    for where, tokens in _documented_segments():
        argv = _metarl_argv(tokens)
        if argv is None or argv[:1] == ["..."]:  # `python -m metarl ...`: any command
            continue
        if any("$" in token for token in argv):
            with_variables += 1
            continue
        found.append(Documented(where, _placeholders_filled(argv)))
    return found, with_variables


SCRIPT_COMMANDS = [(where, tokens[1], tokens[2:]) for where, tokens in _documented_segments()
                   if tokens[:1] == ["python"] and tokens[1:2] != ["-m"]
                   and tokens[1].startswith("scripts/")]


COMMANDS, WITH_VARIABLES = documented_commands()


def _run_of(path: str) -> str:
    """A run directory, for a snapshot of one its run's directory."""
    parts = Path(path).parts
    if SNAPSHOTS_NAME in parts:
        parts = parts[:parts.index(SNAPSHOTS_NAME)]
    return str(Path(*parts))


@functools.cache
def _trained_runs() -> dict[str, tuple[Path, list[str], int | None]]:
    """``--run-dir`` of each documented ``metarl train CONFIG``: its config, --set, --seed."""
    runs = {}
    for command in COMMANDS:
        try:
            args = _parser().parse_args(command.argv)
        except SystemExit:  # reported by its own test
            continue
        if args.command == "train" and args.resume is None and args.run_dir is not None:
            runs[str(args.run_dir)] = (resolve_config_path(args.config), list(args.overrides),
                                       args.seed)
    return runs


@pytest.fixture(autouse=True)
def _from_the_checkout(monkeypatch):
    monkeypatch.chdir(ROOT)  # the docs' config paths are relative to the checkout


def test_the_docs_show_commands_of_every_kind():
    kinds = {c.argv[0] for c in COMMANDS}
    assert {"train", "evaluate", "render", "benchmark", "demo", "config"} <= kinds
    assert len(COMMANDS) > 100 and WITH_VARIABLES < 20


def test_the_extraction_splits_shell_lines_as_a_shell_does():
    line = ("cp -r a b && MUJOCO_GL=egl metarl render b --video 'x y.mp4'  # note; "
            "metarl config")
    assert [_metarl_argv(s) for s in _segments(line)] == [None, ["render", "b", "--video",
                                                                 "x y.mp4"]]
    assert _code_lines("text\n```bash\nmetarl a \\\n  --b 1\n```\nmetarl c\n") == [
        (3, "metarl a  --b 1")]


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_a_documented_command_is_valid(command):
    try:
        args = _parser().parse_args(command.argv)
    except SystemExit:
        pytest.fail(f"{command.where}: metarl {shlex.join(command.argv)} does not parse")
    try:
        _check(args)
    except ConfigError as error:
        pytest.fail(f"{command.where}: metarl {shlex.join(command.argv)}: {error}")


@pytest.mark.parametrize(("where", "script", "arguments"), SCRIPT_COMMANDS,
                         ids=[where for where, _, _ in SCRIPT_COMMANDS])
def test_a_documented_script_exists_and_takes_the_options_shown(where, script, arguments):
    assert (ROOT / script).is_file(), f"{where}: {script} does not exist"
    source = (ROOT / script).read_text()
    for option in (a.split("=")[0] for a in arguments if a.startswith("--")):
        assert f'"{option}"' in source, f"{where}: {script} has no option {option}"


def test_the_runs_and_pictures_the_docs_name_are_in_the_repository():
    named = {match for doc in DOCS for match in re.findall(
        r"docs/(?:checkpoints/[\w.-]+|[\w.-]+\.(?:png|gif|mp4))", (ROOT / doc).read_text())}
    assert any(name.startswith("docs/checkpoints/") for name in named)
    missing = sorted(name for name in named if not (
        (ROOT / name / "checkpoint.pt").is_file() if name.startswith("docs/checkpoints/")
        else (ROOT / name).is_file()))
    assert not missing, f"the docs name files that are not in the repository: {missing}"


def _github_anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown ``text`` (repeats get -1, -2...),
    and those written out as ``<a id="...">``."""
    anchors: set[str] = set()
    written_out: set[str] = set()  # not counted in the headings' repeats
    in_block = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            continue
        written_out.update(re.findall(r'<a (?:id|name)="([^"]+)"', line))
        line = re.sub(r'<a (?:id|name)="[^"]*"></a>', "", line).rstrip()
        if heading := re.match(r"#{1,6} +(.*)", line):
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            candidate, n = slug, 0
            while candidate in anchors:
                n += 1
                candidate = f"{slug}-{n}"
            anchors.add(candidate)
    return anchors | written_out


def test_anchors_are_githubs_heading_slugs_and_written_out_ones():
    text = ('<a id="sine-maml"></a>\n# Sine (MAML)\n## Sine (MAML)\n```\n# not a heading\n'
            '<a id="in-code"></a>\n```\n<a id="one-step"></a>\nText <a name="old-style"></a>\n'
            '## Steps <a id="steps-here"></a>\n')
    assert _github_anchors(text) == {"sine-maml", "sine-maml-1", "one-step", "old-style",
                                     "steps", "steps-here"}


@pytest.mark.parametrize("doc", DOCS)
def test_the_links_of_a_doc_lead_somewhere(doc):
    path = ROOT / doc
    text = path.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    broken = []
    for target in targets:
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part) if file_part else path
        leads_somewhere = linked.exists() and not (
            fragment and linked.suffix == ".md"
            and fragment not in _github_anchors(linked.read_text()))
        if not leads_somewhere:
            broken.append(target)
    assert not broken, f"{doc} links to what is not there: {broken}"


def _check(args) -> None:
    if args.command in ("train", "config", "demo") and getattr(args, "config", None):
        load_config(resolve_config_path(args.config), getattr(args, "overrides", ()),
                    getattr(args, "seed", None))
    elif args.command == "train" and args.resume is not None:
        _check_resume(str(args.resume), args.overrides)
    elif args.command in ("evaluate", "render") and args.overrides:
        _check_evaluation_overrides(str(args.run_dir), args.overrides,
                                    baselines=args.command == "evaluate")
    elif args.command == "benchmark":
        from metarl.benchmark import BENCHMARKS

        assert args.name in (*BENCHMARKS, "all"), args.name


def _check_resume(run_dir: str, overrides: list[str]) -> None:
    trained = _trained_runs().get(_run_of(run_dir))
    experiments = ([load_config(trained[0])[0]] if trained is not None
                   else [get_experiment(name) for name in EXPERIMENTS])
    allowed = RESUME_OVERRIDABLE + tuple(key for experiment in experiments
                                         for key in experiment.location_keys)
    for text in overrides:
        assert _matches(".".join(parse_override(text)[0]), allowed), text
    if trained is not None:
        config_path, trained_overrides, seed = trained
        data = apply_overrides(read_yaml(config_path), [*trained_overrides, *overrides])
        if seed is not None:
            data["seed"] = seed
        config_from_data(data)


def _check_evaluation_overrides(run_dir: str, overrides: list[str], *, baselines: bool) -> None:
    trained = _trained_runs().get(_run_of(run_dir))
    candidates = ([trained[:2]] if trained is not None
                  else [(path, []) for path in builtin_configs().values()])
    errors = []
    for config_path, trained_overrides in candidates:
        experiment, config = load_config(config_path, trained_overrides)
        try:
            with_evaluation_overrides(experiment, config, overrides, baselines=baselines)
            return
        except ConfigError as error:
            errors.append(str(error))
    raise ConfigError("; ".join(dict.fromkeys(errors)))


def test_readmes_python_examples_run(monkeypatch):
    """Every ```python block of README, run as a user would from the repository root."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(ROOT)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})


def test_readmes_maml_example_prints_the_same_number_each_run(capsys):
    """Its weights and tasks come from its own seeded generator, not the global one."""
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(),
                                      re.S) if "meta_gradient" in b]
    printed = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and float(printed[0]) > 0
