"""Typed configuration: dataclass fields with their meaning and bounds, YAML in and out.

Every experiment is described by a tree of dataclasses. Each leaf field is declared with
:func:`param`, which records a one-line help text and the allowed values. :func:`load_config`
reads a YAML file, applies ``--set key.sub=value`` overrides, and builds the dataclass tree,
rejecting unknown keys, wrong types and out-of-range values with a :class:`ConfigError` that
names the key and what is allowed, before any work starts. :func:`dump_config` writes the
resolved tree back as commented YAML (the help texts become the comments).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, mistyped or out of range."""


def param(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    min_items: int | None = None,
    default_factory: Any = dataclasses.MISSING,
    bound_reason: str = "",
) -> Any:
    """Declare a config field with its one-line meaning and numeric bounds.

    Bounds apply to numbers and to every element of a list of numbers; ``min_items`` is the
    shortest list allowed; ``bound_reason`` says why, after a value out of the bounds.
    Allowed strings are declared with ``Literal[...]`` in the type annotation.
    """
    metadata = {"help": help, "gt": gt, "ge": ge, "lt": lt, "le": le, "min_items": min_items,
                "bound_reason": bound_reason}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    if isinstance(default, list | dict):
        value = default
        return dataclasses.field(default_factory=lambda: list(value) if isinstance(value, list)
                                 else dict(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls: type[T], help: str = "") -> Any:
    """Declare a nested config section built from its own defaults."""
    return dataclasses.field(default_factory=cls, metadata={"help": help})


# --------------------------------------------------------------------------- building

_PLAIN_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                type(None): "null"}


def _type_name(tp: Any) -> str:
    """What values of annotation ``tp`` look like, in words: "a number or null", ..."""
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, Sequence, tuple):
        args = get_args(tp)
        if not args:
            return "a list"
        item = _type_name(args[0])
        return "a list of " + {"a number": "numbers", "an integer": "integers",
                               "a string": "strings"}.get(item, item)
    if tp in _PLAIN_NAMES:
        return _PLAIN_NAMES[tp]
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form."""
    origin = get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise ConfigError(f"{key} = {value!r}: allowed values are "
                              + ", ".join(repr(a) for a in allowed))
        return value
    if origin in (Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _convert(value, option, key)
            except ConfigError:
                continue
        hint = _mapping_hint(value) if str in get_args(tp) else ""
        raise ConfigError(f"{key} = {value!r}: expected {_type_name(tp)}{hint}")
    if origin in (list, tuple, Sequence):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} = {value!r}: expected {_type_name(tp)}")
        (item_type,) = get_args(tp)[:1] or (Any,)
        return [_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key} = {value!r}: expected null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool | int):
            value = int(value)  # a NumPy integer, from code
        if isinstance(value, float) and value.is_integer():
            if abs(value) > 2**53:  # 1e30 would become 1000000000000000019884624838656
                raise ConfigError(f"{key} = {value!r}: expected an integer; a float this "
                                  "large is not exact, write the integer out")
            return int(value)  # 1e4 is a YAML float
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} = {value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool | int | float):
            value = float(value)  # a NumPy float32, from code
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} = {value!r}: expected a number")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r}: expected a finite number")
        return value
    if tp is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)  # a pathlib.Path, from code
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {value!r}: expected a string{_mapping_hint(value)}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


def _mapping_hint(value: Any) -> str:
    """Why a string setting got a mapping: YAML reads unquoted ``cuda:`` or ``a: b`` as one."""
    if not isinstance(value, dict) or len(value) != 1:
        return ""
    ((inner, rest),) = value.items()
    text = f"{inner}:" if rest is None else f"{inner}: {rest}"
    return f"; YAML reads {text!r} as a mapping, so quote the string or drop the ':'"


def _check_bounds(value: Any, meta: Mapping[str, Any], key: str) -> None:
    if isinstance(value, list):
        min_items = meta.get("min_items")
        if min_items is not None and len(value) < min_items:
            raise ConfigError(f"{key} = {yaml_scalar(value)}: give at least {min_items} "
                              f"value{'s' if min_items != 1 else ''}")
        items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    else:
        items = [(key, value)]
    for where, v in items:
        if not isinstance(v, int | float) or isinstance(v, bool):
            continue
        for name, test, words in (("gt", v.__gt__, ">"), ("ge", v.__ge__, ">="),
                                  ("lt", v.__lt__, "<"), ("le", v.__le__, "<=")):
            bound = meta.get(name)
            if bound is not None and not test(bound):
                reason = meta.get("bound_reason")
                raise ConfigError(f"{where} = {v!r}: must be {words} {bound}"
                                  + (f" ({reason})" if reason else ""))


def _build(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ConfigError(f"unknown key {prefix + '.' if prefix else ''}{unknown[0]}; "
                          f"allowed keys{where}: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            value = _convert(data[name], hints[name], key)
            _check_bounds(value, f.metadata, key)
            kwargs[name] = value
        elif (f.default is dataclasses.MISSING
              and f.default_factory is dataclasses.MISSING):
            raise ConfigError(f"missing required key {key}")
    try:
        instance = cls(**kwargs)
    except ConfigError as error:
        if not prefix:
            raise
        # A check across fields (__post_init__) names its first field without the section.
        message = str(error)
        first = re.split(r"[\s\[.=]", message, maxsplit=1)[0]
        raise ConfigError(f"{prefix}.{message}" if first in fields
                          else f"{prefix}: {message}") from None
    return instance


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build and validate a config dataclass tree from plain data (as read from YAML)."""
    return _build(cls, data)


def validate_config(config: T) -> T:
    """Check a config dataclass tree built or changed in code as a config file is checked.

    Returns a validated copy in plain types (a path as a string, a NumPy integer as an int);
    raises :class:`ConfigError` naming the first bad key and what is allowed. ``config``
    itself is not changed.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a config dataclass instance, got {config!r}")
    return from_dict(type(config), to_dict(config))


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass tree (lists stay lists)."""
    return dataclasses.asdict(config)


# --------------------------------------------------------------------------- reading YAML

class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two YAML 1.2 rules it lacks: ``1e-3`` is a number (YAML 1.1
    needs a dot, ``1.0e-3``), and a key given twice in one mapping is an error instead of the
    later value silently replacing the earlier."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise ConfigError(f"key {key} is given twice in one mapping (lines "
                                  f"{seen[key].line + 1} and {key_node.start_mark.line + 1})")
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.yaml_implicit_resolvers = {
    first: list(resolvers) for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def yaml_load(text: str) -> Any:
    """Parse YAML text as configs and ``--set`` values are read (see :class:`_ConfigLoader`)."""
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: no arbitrary objects


# --------------------------------------------------------------------------- overrides

def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into ``(["a", "b", "c"], value)``, the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, for example "
                          "training.iterations=100")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({error})") from None
    except ConfigError as error:
        raise ConfigError(f"override {text!r}: {error}") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key.sub=value`` override applied."""
    result = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        if path == ["experiment"] and data.get("experiment") not in (None, value):
            raise ConfigError(f"override {text!r}: a config's experiment can't be changed with "
                              "--set (its other keys belong to it); start from a config of "
                              "that experiment (see `metarl config`)")
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return result


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML config (not UTF-8 text)") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(part for part in (error.context, error.problem) if part)
        raise ConfigError(f"{path}{where}: not valid YAML: {what}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


# --------------------------------------------------------------------------- writing

def yaml_scalar(value: Any) -> str:
    """A value as one line of YAML, as configs and --set write it: null, true, [1, 2], ..."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    return text.removesuffix("...").strip()


def dump_config(config: Any, header: str = "") -> str:
    """Commented YAML of a config dataclass tree; each field's help text is its comment."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []

    def emit(obj: Any, indent: int) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            help_text = f.metadata.get("help", "")
            pad = "  " * indent
            if dataclasses.is_dataclass(value):
                if help_text:
                    lines.append(f"{pad}# {help_text}")
                lines.append(f"{pad}{f.name}:")
                emit(value, indent + 1)
            else:
                comment = f"  # {help_text}" if help_text else ""
                lines.append(f"{pad}{f.name}: {yaml_scalar(value)}{comment}")

    emit(config, 0)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- shared sections

@dataclasses.dataclass
class AdaptationConfig:
    """How a task's fast weights are computed from the meta-parameters."""

    method: Literal["maml", "fomaml", "reptile"] = param(
        "maml", "meta-gradient: maml (second order), fomaml (first order) or reptile")
    inner_steps: int = param(1, "gradient steps on the support set during meta-training", ge=1)
    inner_lr: float = param(0.01, "inner-loop (adaptation) learning rate", gt=0)
    learn_inner_lr: bool = param(
        False, "Meta-SGD: learn a per-parameter inner learning rate (maml / fomaml only)")
    vectorize: Literal["auto", "vmap", "loop"] = param(
        "auto", "batch tasks with torch.func.vmap, a per-task loop, or auto (the measured "
        "faster one for the model)")

    def __post_init__(self) -> None:
        if self.learn_inner_lr and self.method == "reptile":
            raise ConfigError("learn_inner_lr = true needs method maml or fomaml (Reptile has "
                              "no gradient through the inner learning rate)")

    @property
    def label(self) -> str:
        """The method as tables, plots and titles name it: ``maml + Meta-SGD`` for learned
        per-parameter rates."""
        return self.method + (" + Meta-SGD" if self.learn_inner_lr else "")


@dataclasses.dataclass
class RunConfig:
    """Bookkeeping of a run: checkpoints, progress display, logs."""

    checkpoint_every: int = param(
        1000, "write RUN_DIR/checkpoint.pt every this many meta-iterations, and at the end", ge=1)
    snapshot_every: int = param(
        0, "also keep the run as it stood after every this many meta-iterations in "
        "RUN_DIR/snapshots/iteration-N/, a run directory of its own to evaluate or render "
        "(0: keep none)", ge=0)
    progress: bool = param(True, "show a progress bar with ETA and current metrics")
    tensorboard: bool = param(True, "write TensorBoard scalars under RUN_DIR/tensorboard")
