"""Command-line options generated from the config dataclasses, and JSON config files.

The one generator behind every command's settings: `siamese-tfx run/demo` (PipelineConfig),
`siamese-tfx kubeflow ...` (KubeflowConfig on top) and `siamese-tfx serve` (ServerConfig). Each
field declared with `config.option(default, help, ...)` becomes one option: `--field-name` (or
the field's `flags` metadata), its help text with the default, `choices`, a `--x/--no-x` pair
for booleans, a repeatable option for tuples. A field holding a dataclass (a config section)
becomes an argument group of its own. Options left out parse as None, so only what the user gave
overrides the base config (defaults, or a `--config` JSON file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any, Mapping, TypeVar, Union

from siamese_tfx.components.contract import errors
from siamese_tfx.components.contract.config import from_dict

T = TypeVar("T")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value_type(hint: Any) -> Any:
    """The scalar type of a field: `Optional[int]` -> int, `tuple[str, ...]` -> tuple."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
        origin = typing.get_origin(hint)
    return origin or hint


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, prefix: str,
                          title: str = "") -> None:
    """One option per `option(...)` field of dataclass `cls` (dest `<prefix>.<field>`), in a
    group titled `title` (default "<prefix> settings"); dataclass fields become their own
    groups (dest `<field>.<name>`)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title or f"{prefix} settings")
    sections = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            sections.append(f)
            continue
        if "help" not in f.metadata:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = _value_type(hints[f.name])
        scale = f.metadata.get("cli_scale", 1)  # the option is in these units of the field
        kwargs: dict[str, Any] = {"dest": f"{prefix}.{f.name}", "default": None}
        help_text = f.metadata["help"]
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind is tuple:
            kwargs.update(action="append", metavar="ARG")
            help_text += " Repeat for several."
        else:
            kwargs.update(type=kind, metavar=f.name.upper())
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if default not in ("", (), None):
            shown = default // scale if scale != 1 else default
            help_text += f" (default: {shown})".replace("%", "%%")
        group.add_argument(*f.metadata.get("flags", (_flag(f.name),)), help=help_text, **kwargs)
    for f in sections:
        add_dataclass_options(parser, hints[f.name], f.name)


def given_values(args: argparse.Namespace, cls: type, prefix: str) -> dict[str, Any]:
    """The options of `cls` the user gave (see add_dataclass_options), as a nested dict of
    field values: {field: value} and {section: {field: value}}."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in vars(args).items():
        if value is None or "." not in key:
            continue
        owner, name = key.split(".", 1)
        if owner == prefix and name in fields:
            scale = fields[name].metadata.get("cli_scale")
            values[name] = value * scale if scale else value
        elif owner in fields and dataclasses.is_dataclass(hints[owner]):
            values.setdefault(owner, {})[name] = value
    return values


def apply_args(base: T, args: argparse.Namespace, prefix: str) -> T:
    """`base` (a config dataclass) with every option the user gave applied."""
    return from_dict(type(base), _merged(dataclasses.asdict(base),
                                         given_values(args, type(base), prefix)))


def add_config_options(parser: argparse.ArgumentParser, cls: type, prefix: str, file_flag: str,
                       title: str = "") -> None:
    """`file_flag FILE` (a JSON file of `cls` settings) and `cls`'s options
    (add_dataclass_options); `config_from_args` reads them back."""
    parser.add_argument(file_flag, dest=_file_dest(prefix), default=None,
                        help=f"JSON file of {cls.__name__} settings; options override it.")
    add_dataclass_options(parser, cls, prefix, title)


def config_from_args(args: argparse.Namespace, cls: type[T], prefix: str,
                     base: T | None = None) -> T:
    """The settings of `add_config_options`: the JSON file when given, else `base` (default:
    `cls`'s defaults), with every option the user gave applied. A file or option that names an
    unknown setting or a bad value fails with ValueError naming it."""
    path = getattr(args, _file_dest(prefix), None)
    values = (read_json(path, cls) if path
              else dataclasses.asdict(base) if base is not None else {})
    values = _merged(values, given_values(args, cls, prefix))
    try:
        return from_dict(cls, values)
    except (TypeError, ValueError) as e:
        raise errors.UsageError(f"{path}: {e}" if path else str(e)) from e


def read_json(path: str, cls: type) -> dict[str, Any]:
    """The settings in JSON file `path` (the shape of dataclasses.asdict of `cls`)."""
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise errors.UsageError(f"cannot read {cls.__name__} settings from {path}: {e}") from e
    if not isinstance(values, dict):
        raise errors.UsageError(f"{path}: {cls.__name__} settings must be a JSON object")
    return values


def _merged(values: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(values)
    for name, value in overrides.items():
        merged[name] = (_merged(merged.get(name) or {}, value) if isinstance(value, dict)
                        else value)
    return merged


def _file_dest(prefix: str) -> str:
    return f"{prefix}:file"
