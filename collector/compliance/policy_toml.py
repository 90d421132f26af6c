"""The policy file's TOML, read fast: toml-rs where it is installed, tomllib's words on refusal.

A policy generated from a large inventory holds one ``[hosts."NAME"]`` table per host: 5.8 MB
at 100,000 hosts, which the standard library's pure-Python `tomllib` takes about 5 s of CPU
to read, in every collector process, on every change of the file. toml-rs (the collector
extra) reads it about five times faster, told to read TOML 1.0 as `tomllib` does: on the
toml-test suite's TOML 1.0 files the two accept and refuse the same files and return the
same values, dates and times included, but for a byte order mark, which `tomllib` refuses
and toml-rs skips. So a file with one goes to `tomllib`, as does any file toml-rs refuses:
a refusal always carries `tomllib`'s message, as it did before toml-rs.

toml-rs recurses without a limit and overflows the stack on arrays or inline tables nested
some thousands deep (the process dies), where `tomllib` raises an error. A file nested
deeper than ``MAX_FAST_DEPTH`` goes to `tomllib` instead: the depth is counted on the
file's brackets, its strings and comments left out, by a few passes of C-speed string
operations.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

try:
    import toml_rs
except ImportError:  # the deploy side installs fleetwatch without the collector extra
    # tomllib alone then: slower, the same answers
    toml_rs = None  # type: ignore[assignment]

MAX_FAST_DEPTH = 32
"""Brackets nested deeper than this are read by `tomllib` (toml-rs crashes some thousands deep)."""

# strings (multi-line ones first, each with the one or two quotes TOML lets close its
# content) and comments, which may hold brackets that nest nothing
_NOT_STRUCTURE = re.compile(
    r'"""(?:[^"\\]|\\[\s\S]|"(?!""))*"""(?:""?)?'
    r"|'''[\s\S]*?'''(?:''?)?"
    r'|"(?:[^"\\\n]|\\.)*"'
    r"|'[^'\n]*'"
    r"|#[^\n]*"
)
# any other character outside strings and comments is ASCII in a TOML 1.0 file (one that is
# not stays in the brackets left, which then never reduce to nothing: not shallow)
_NOT_BRACKETS = {code: None for code in range(128) if chr(code) not in "[]{}"}


def loads(text: str) -> dict[str, Any]:
    """The TOML document, as `tomllib.loads` returns it; its error when the text is not TOML 1.0.

    Raises `tomllib.TOMLDecodeError`, with `tomllib`'s message.
    """
    if toml_rs is not None and not text.startswith("\ufeff") and shallow(text):
        try:
            return toml_rs.loads(text, toml_version="1.0.0")
        except ValueError:  # its TOMLDecodeError: tomllib words the refusal
            pass
    return tomllib.loads(text)


def shallow(text: str, depth: int = MAX_FAST_DEPTH) -> bool:
    """Whether the brackets outside strings and comments nest at most ``depth`` deep, balanced."""
    brackets = _NOT_STRUCTURE.sub("", text).translate(_NOT_BRACKETS)
    for _ in range(depth):
        if not brackets:
            return True
        inner_removed = brackets.replace("[]", "").replace("{}", "")
        if inner_removed == brackets:  # unbalanced or crossed: not TOML, tomllib says why
            return False
        brackets = inner_removed
    return not brackets
