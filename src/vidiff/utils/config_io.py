"""Nested config dataclasses to and from files (TOML, JSON, YAML) and `--set key=value` strings.

The format follows the file's suffix: ``.toml`` (read with the standard library's `tomllib`,
Python >= 3.11, else the `tomli` package), ``.json``, and ``.yaml`` / ``.yml`` (needs PyYAML,
the optional ``yaml`` extra). TOML is the format of the example configs in ``configs/``: it
needs nothing beyond the standard library and has comments.

A file holds tables named after the sections of the root dataclass, e.g.::

    [train]
    steps = 2000
    lr = 5e-4

Values are checked against each field's annotation: an unknown key is an error listing the
valid keys of its section, a value of the wrong type names the key and the type it expects.
Overrides (``train.lr=1e-4``) are typed by the same annotations: the text is converted to the
field's type (``"1e-4"`` -> float, ``"true"`` -> bool, ``"none"`` -> None for optional fields,
``"[1, 2]"`` or ``"1,2"`` -> a tuple, ``'{"a": 1}'`` (JSON) -> a dict).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the tomli package (a dependency there)
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

__all__ = [
    "ConfigError",
    "CONFIG_SUFFIXES",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config_file",
    "model_index_class",
    "parse_value",
    "read_json",
    "valid_keys",
]

T = TypeVar("T")

#: The config file suffixes `load_config_file` reads.
CONFIG_SUFFIXES = (".toml", ".json", ".yaml", ".yml")


class ConfigError(ValueError):
    """A bad config: unknown key, value of the wrong type, unreadable file."""


# -- type helpers ------------------------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    """(True, X) for `X | None` / `Optional[X]`, else (False, tp)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return True, args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
    return False, tp


def type_name(tp: Any) -> str:
    """A readable name of an annotation: "int", "float or None", "tuple of int"."""
    optional, inner = _is_optional(tp)
    if optional:
        return f"{type_name(inner)} or None"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        kind = "tuple" if origin is tuple else "list"
        return f"{kind} of {type_name(args[0])}" if args else kind
    if origin is dict:
        return "table (dict)"
    if dataclasses.is_dataclass(tp):
        return f"table [{tp.__name__}]"
    return getattr(tp, "__name__", str(tp))


def _check_value(key: str, value: Any, tp: Any) -> Any:
    """`value` (from a file) converted to annotation `tp`, or a ConfigError naming `key`."""
    if tp is Any:
        return value
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: expected {type_name(tp)}, got None")
    tp = inner
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check_value(key, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {type_name(tp)}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {type_name(tp)}, got {value!r}")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        items = [_check_value(key, v, args[0]) if args else v for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table (dict), got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {type_name(tp)}, got {value!r}")


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_value(key: str, text: str, tp: Any) -> Any:
    """The command-line text `text` for field `key` converted to annotation `tp`."""
    optional, inner = _is_optional(tp)
    stripped = text.strip()
    if optional and stripped.lower() in ("none", "null", "~"):
        return None
    tp = inner
    origin = typing.get_origin(tp)
    if tp is bool:
        if stripped.lower() in _TRUE:
            return True
        if stripped.lower() in _FALSE:
            return False
        raise ConfigError(f"{key}: expected a bool (true or false), got {text!r}")
    if tp is int:
        try:
            return int(stripped)
        except ValueError:
            try:
                number = float(stripped)  # "1e3" is an int too
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
            raise ConfigError(f"{key}: expected an int, got {text!r}") from None
    if tp is float:
        try:
            return float(stripped)
        except ValueError:
            raise ConfigError(f"{key}: expected a float, got {text!r}") from None
    if tp is str:
        return text
    if origin in (tuple, list) or origin is dict or tp is dict or tp is Any or origin in (
        typing.Union,
        types.UnionType,
    ):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            if origin in (tuple, list):  # "1,2,3" -> [1, 2, 3]
                args = [a for a in typing.get_args(tp) if a is not Ellipsis]
                parts = [p for p in stripped.strip("()[]").split(",") if p.strip()]
                value = [parse_value(key, p, args[0]) if args else p for p in parts]
            elif tp is Any or origin in (typing.Union, types.UnionType):
                value = text
            else:
                raise ConfigError(
                    f"{key}: expected {type_name(tp)} as JSON (e.g. '{{\"a\": 1}}'), got {text!r}"
                ) from None
        return _check_value(key, value, tp)
    raise ConfigError(f"{key}: cannot parse a {type_name(tp)} from the command line")


# -- dataclass <-> dict ---------------------------------------------------------------------
def valid_keys(cls: type) -> list[str]:
    """The field names of dataclass `cls`, in definition order."""
    return [f.name for f in dataclasses.fields(cls)]


def _unknown_key(section: str, key: str, cls: type) -> ConfigError:
    where = f"[{section}]" if section else "the config"
    kind = "section" if not section else "key"
    full = f"{section}.{key}" if section else key
    return ConfigError(
        f"unknown config {kind} {full!r}; valid keys of {where}: {', '.join(valid_keys(cls))}"
    )


def config_from_dict(cls: type[T], data: Mapping[str, Any] | None, section: str = "") -> T:
    """An instance of dataclass `cls` from a nested dict, every value checked; missing keys
    take the field defaults. `section` prefixes the keys in error messages."""
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{section or 'config'}: expected a table, got {data!r}")
    data = dict(data or {})
    hints = _hints(cls)
    kwargs = {}
    names = valid_keys(cls)
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(section, key, cls)
        full = f"{section}.{key}" if section else key
        tp = hints[key]
        optional, inner = _is_optional(tp)
        if optional and dataclasses.is_dataclass(inner) and value is not None:
            tp = inner  # `Section | None` given as a table
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{full}: expected a table [{full}], got {value!r}")
            kwargs[key] = config_from_dict(tp, value, full)
        else:
            kwargs[key] = _check_value(full, value, tp)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{section or 'config'}: {err}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A nested dict of plain values (tuples as lists), ready for JSON or TOML."""

    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return plain(config)


def apply_overrides(config: T, overrides: Iterable[str]) -> T:
    """A copy of `config` with `section.key=value` overrides applied (typed by the fields).

    ``model.overrides.model_channels=32`` sets one entry of a dict field (the value parsed as
    JSON when it can be, else kept as a string).
    """
    data = config_to_dict(config)
    cls = type(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value "
                              f"(e.g. train.lr=1e-4)")
        path, text = item.split("=", 1)
        parts = [p.strip() for p in path.strip().split(".")]
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key")
        node_cls: Any = cls
        node = data
        prefix = ""
        for i, part in enumerate(parts):
            full = f"{prefix}.{part}" if prefix else part
            if not dataclasses.is_dataclass(node_cls):
                raise ConfigError(f"override {item!r}: {prefix} is not a section")
            if part not in valid_keys(node_cls):
                raise _unknown_key(prefix, part, node_cls)
            tp = _hints(node_cls)[part]
            last = i == len(parts) - 1
            if dataclasses.is_dataclass(tp):
                if last:
                    raise ConfigError(f"override {item!r}: {full} is a section; set one of "
                                      f"its keys: {', '.join(valid_keys(tp))}")
                node, node_cls, prefix = node[part], tp, full
                continue
            if last:
                node[part] = parse_value(full, text, tp)
            elif typing.get_origin(_is_optional(tp)[1]) is dict or _is_optional(tp)[1] is dict:
                sub = node.get(part) or {}
                node[part] = sub
                for p in parts[i + 1 : -1]:
                    sub = sub.setdefault(p, {})
                try:
                    sub[parts[-1]] = json.loads(text)
                except json.JSONDecodeError:
                    sub[parts[-1]] = text
            else:
                raise ConfigError(f"override {item!r}: {full} is a {type_name(tp)}, "
                                  f"not a section")
            break
    return config_from_dict(cls, data)


# -- files -------------------------------------------------------------------------------------
def _load_toml(text: str) -> dict:
    if tomllib is None:  # pragma: no cover - Python 3.10
        raise ConfigError("reading TOML on Python 3.10 needs the tomli package "
                          "(pip install tomli), or use a .json config")
    return tomllib.loads(text)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The nested dict in a TOML, JSON or YAML config file (by suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ConfigError(f"config file {str(path)!r}: unknown suffix {path.suffix!r}; "
                          f"use one of {', '.join(CONFIG_SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {str(path)!r}: {err}") from None
    try:
        if suffix == ".toml":
            data = _load_toml(text)
        elif suffix == ".json":
            data = json.loads(text) if text.strip() else {}
        else:
            try:
                import yaml  # optional dependency
            except ImportError:
                raise ConfigError(
                    f"config file {str(path)!r}: YAML needs PyYAML (pip install "
                    "'vidiff[yaml]'); or write the config as .toml or .json"
                ) from None
            data = yaml.safe_load(text) or {}
    except ConfigError:
        raise
    except Exception as err:  # the parsers' own error types
        raise ConfigError(f"cannot parse config file {str(path)!r}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table of sections, "
                          f"got {type(data).__name__}")
    return data


def read_json(path: str | os.PathLike, required: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON object in the file at `path` (a model's config.json, a scheduler or tokenizer
    config) with the `required` keys; a `ConfigError` naming the file when it is missing,
    unreadable, not JSON, not an object or lacks a required key. Every JSON file vidiff reads
    goes through here, so no raw parser error escapes."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {str(path)!r}: {err}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{str(path)!r} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{str(path)!r}: expected a JSON object, got {type(data).__name__}")
    missing = [key for key in required if key not in data]
    if missing:
        raise ConfigError(f"{str(path)!r} lacks {', '.join(map(repr, missing))}")
    return data


def model_index_class(root: str | os.PathLike) -> str | None:
    """The pipeline class a diffusers root's model_index.json names (``_class_name``); None
    without a readable one."""
    index = Path(root) / "model_index.json"
    if not index.is_file():
        return None
    try:
        return read_json(index).get("_class_name")
    except ValueError:
        return None
