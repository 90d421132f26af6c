"""Writing the small TOML files fleetwatch needs: agent settings and the collector's policy."""

from __future__ import annotations

import json
from typing import Any


def toml_value(value: Any) -> str:
    """A TOML value for a string, number, boolean, list or inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON's string escapes are all valid in TOML basic strings
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    msg = f"cannot write {type(value).__name__} as TOML"
    raise TypeError(msg)


def toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def toml_table(name: str | None, values: dict[str, Any]) -> str:
    """``[name]`` and its ``key = value`` lines (the values that are not None)."""
    lines = [f"[{name}]"] if name is not None else []
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"
