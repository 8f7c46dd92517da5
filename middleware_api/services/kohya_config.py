"""kohya's `config.toml`: a template per base model type merged with a request's `config_params`, and a TOML writer.

`config_params` is `{section: {argument: value}}`. An argument the template has keeps
the template's type (and moves to the template's section, because kohya flattens the
sections and the same argument in two of them would make the file's order decide);
an argument it does not have is kept as given, when TOML can hold it. Paths are the
trainers' business (they pass them on the command line), so requests cannot set them.
Every refusal is a `BadRequest` naming the value.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from middleware_api.services.errors import BadRequest
from middleware_api.services.training_templates import TEMPLATES, Config

SERVER_KEYS = frozenset(
    {"pretrained_model_name_or_path", "train_data_dir", "output_dir", "logging_dir", "save_model_as", "config_file"}
)
"""Arguments the trainers set on kohya's command line; a request's values for them are ignored."""
MAX_TOML_BYTES = 64 * 1024
FLOAT_RANGE = (1e-100, 1e100)  # of a number's magnitude; the job record keeps the config, and DynamoDB stops at 1e125
_ARGUMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_INT64 = (-(2**63), 2**63 - 1)
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def build_config(fm_type: str, config_params: Mapping[str, Any] | None) -> Config:
    """The template of `fm_type` with `config_params` merged in; BadRequest on any value that cannot be used."""
    config = copy.deepcopy(TEMPLATES[fm_type])
    home = {key: section for section, values in config.items() for key in values}
    if config_params is None:
        return config
    if not isinstance(config_params, Mapping):
        raise BadRequest("config_params must be an object of sections such as training")
    for section, values in config_params.items():
        where = f"config_params.{section}"
        if section not in config:
            raise BadRequest(f"config_params: unknown section {section!r}; use one of {', '.join(config)}")
        if not isinstance(values, Mapping):
            raise BadRequest(f"{where} must be an object of kohya arguments")
        for key, value in values.items():
            if not isinstance(key, str) or not _ARGUMENT.match(key):
                raise BadRequest(f"{where}: {str(key)[:100]!r} is not a kohya argument name")
            if key in SERVER_KEYS:
                continue
            if key in home:
                config[home[key]][key] = _typed(f"{where}.{key}", value, config[home[key]][key])
            else:
                config[section][key] = _plain(f"{where}.{key}", value)
    return config


def dump_toml(config: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text of flat tables of strings, integers, floats, booleans and lists of those."""
    lines: list[str] = []
    for section, values in config.items():
        lines.append(f"[{_key(section)}]")
        lines += [f"{_key(key)} = {_value(value)}" for key, value in values.items()]
        lines.append("")
    text = "\n".join(lines)
    if len(text.encode("utf-8")) > MAX_TOML_BYTES:
        raise BadRequest(f"config_params make a config larger than {MAX_TOML_BYTES // 1024} KiB")
    return text


def _typed(where: str, value: Any, default: Any) -> Any:
    """`value` if it has the type of the template's `default` (an integer is a number too)."""
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise BadRequest(f"{where} must be {_TYPE_NAMES.get(kind, kind.__name__)}, not {_shown(value)}")
    return _plain(where, value)


def _plain(where: str, value: Any, in_list: bool = False) -> Any:
    """`value` if TOML can hold it as an argument of kohya's; BadRequest otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise BadRequest(f"{where}: {value} is too large for TOML (64-bit integers)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadRequest(f"{where}: {value} is not a finite number")
        if value and not FLOAT_RANGE[0] <= abs(value) <= FLOAT_RANGE[1]:
            raise BadRequest(f"{where}: {value} is out of range ({FLOAT_RANGE[0]:g} to {FLOAT_RANGE[1]:g})")
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(f"{where} is not valid Unicode text") from None
        return value
    if isinstance(value, list) and not in_list:
        return [_plain(f"{where}[{index}]", item, in_list=True) for index, item in enumerate(value)]
    if value is None:
        raise BadRequest(f"{where}: null cannot be written to TOML; leave the argument out instead")
    what = "a list inside a list" if isinstance(value, list) else "an object"
    raise BadRequest(f"{where}: {what} cannot be a kohya argument; use strings, numbers, booleans or lists of them")


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"{type(value).__name__} is not a TOML value here")


def _string(text: str) -> str:
    escaped = "".join(
        _ESCAPES.get(char) or (f"\\u{ord(char):04X}" if ord(char) < 0x20 or ord(char) == 0x7F else char)
        for char in text
    )
    return f'"{escaped}"'
