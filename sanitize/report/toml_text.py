"""Nested plain data (a config's ``to_dict``) written as TOML, the format of a run.toml.

A small writer rather than a dependency: the data are tables of strings, numbers, booleans
and lists, which TOML 1.0 writes in a few lines. ``tomllib.loads(toml_text(d))`` gives
``d`` back, less its ``None`` values: TOML has no null, so an unset option is written as a
comment (the default applies when the text is read as a run.toml).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_text(data: Mapping[str, Any]) -> str:
    """``data`` as a TOML document: the root's values first, then one ``[table]`` a mapping.

    Raises
    ------
    TypeError
        A value TOML cannot hold (``None`` inside a list, an object that is not a string,
        number, boolean, list or mapping).
    """
    lines: list[str] = []
    _table(data, (), lines)
    return "\n".join(lines) + "\n"


def _table(data: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    values = [(k, v) for k, v in data.items() if not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in data.items() if isinstance(v, Mapping)]
    # A table holding only tables needs no header of its own; an empty one does, to exist.
    if path and (values or not tables):
        if lines:
            lines.append("")
        lines.append("[" + ".".join(_key(k) for k in path) + "]")
    for key, value in values:
        if value is None:
            lines.append(f"# {_key(key)} is unset: the default applies")
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables:
        _table(value, (*path, key), lines)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # Python's "inf", "-inf", "nan" and "1e-05" are TOML floats too
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def _string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
