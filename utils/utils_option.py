"""Option files: JSON with ``//`` comments (KAIR style), defaults, validation and overrides.

A *schema* is a nested dict of default values. Every key an option file may use appears in
it, and a default's type is the type the key must have (an int default accepts ints, a
float default accepts ints and floats, a ``None`` default accepts anything). A dict whose
only key is ``"*"`` maps free names (e.g. dataset phases) to the schema under ``"*"``.

Errors name the dotted key and, for unknown keys, suggest the closest valid one.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["OptionError", "apply_overrides", "load_json_with_comments", "merge_with_schema", "parse_options"]


class OptionError(ValueError):
    """Invalid options; the message names the file, the key and what is wrong."""


_COMMENT = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*')


def load_json_with_comments(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON file in which ``//`` starts a comment (outside strings)."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"{path}: option file does not exist")
    text = path.read_text(encoding="utf-8")
    stripped = _COMMENT.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "", text)
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise OptionError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise OptionError(f"{path}: the top level must be a JSON object, found {type(data).__name__}")
    return data


def _type_ok(value: Any, default: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    if isinstance(default, dict):
        return isinstance(value, dict)
    return isinstance(value, type(default))


def _type_name(default: Any) -> str:
    return {
        bool: "true/false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(default), type(default).__name__)


RENAMED_KEYS: dict[str, str] = {"bf16": "half"}
"""Old option names (key -> new key), named in the error that an old option file gets."""


def merge_with_schema(options: Mapping[str, Any], schema: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Return ``schema`` defaults overlaid with ``options``, checking every key and type.

    Raises ``OptionError`` for an unknown key (with the closest valid key) or a wrong type.
    """
    if set(schema) == {"*"}:
        return {
            name: merge_with_schema(value, schema["*"], f"{where}{name}.")
            if isinstance(value, Mapping)
            else _fail_type(f"{where}{name}", value, schema["*"])
            for name, value in options.items()
        }
    merged = copy.deepcopy(dict(schema))
    for key, value in options.items():
        dotted = f"{where}{key}"
        if key not in schema:
            if RENAMED_KEYS.get(key) in schema:
                raise OptionError(f"option '{dotted}' was renamed to '{where}{RENAMED_KEYS[key]}'")
            close = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.5)
            hint = f"; did you mean '{where}{close[0]}'?" if close else f"; valid keys here: {sorted(schema)}"
            raise OptionError(f"unknown option '{dotted}'{hint}")
        default = schema[key]
        if isinstance(default, dict) and default:
            if not isinstance(value, Mapping):
                _fail_type(dotted, value, default)
            merged[key] = merge_with_schema(value, default, f"{dotted}.")
        elif not _type_ok(value, default):
            _fail_type(dotted, value, default)
        else:
            merged[key] = float(value) if isinstance(default, float) and value is not None else value
    return merged


def _fail_type(dotted: str, value: Any, default: Any) -> Any:
    raise OptionError(f"option '{dotted}' must be {_type_name(default)}, got {json.dumps(value)}")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # bare strings need no quotes: path.root=results


def apply_overrides(options: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (value parsed as JSON, else taken as a string), in place."""
    for item in overrides:
        if "=" not in item:
            raise OptionError(f"override {item!r} must look like section.key=value")
        dotted, text = item.split("=", 1)
        node = options
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            if node.get(part) is None:  # a missing or null section (e.g. "netG": null) starts empty
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise OptionError(f"override {item!r}: '{part}' is not a section")
        node[parts[-1]] = _parse_value(text)
    return options


def parse_options(
    path: str | os.PathLike | None, schema: Mapping[str, Any], overrides: Iterable[str] = ()
) -> dict[str, Any]:
    """Load an option file (or none), apply overrides and validate against ``schema``."""
    raw = load_json_with_comments(path) if path else {}
    apply_overrides(raw, overrides)
    try:
        return merge_with_schema(raw, schema)
    except OptionError as exc:
        raise OptionError(f"{path or 'options'}: {exc}") from None
