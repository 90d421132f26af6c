"""Policy patterns: how a package or service name in the policy matches installed names."""

from __future__ import annotations

import fnmatch
import functools
import re
from typing import Annotated

from pydantic import AfterValidator, Field


def name_matches(pattern: str, name: str) -> bool:
    """Whether a package or service name matches a policy pattern (shell-style wildcards)."""
    return fnmatch.fnmatchcase(name, pattern)


class Patterns:
    """Several patterns, checked against a name at once: the exact names by a set look-up,
    the wildcards by one regular expression. A package list of 1,500 names is checked in a
    pass instead of one pass per pattern."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        self._exact = frozenset(p for p in patterns if not _WILDCARDS.search(p))
        wild = [fnmatch.translate(p) for p in patterns if _WILDCARDS.search(p)]
        self._wild = re.compile("|".join(f"(?:{w})" for w in wild)) if wild else None

    def any(self, name: str) -> bool:
        """Whether the name matches one of the patterns (as `name_matches` would)."""
        return name in self._exact or (self._wild is not None and bool(self._wild.match(name)))

    def first(self, name: str) -> int | None:
        """The position of the first pattern the name matches, if any."""
        if not self.any(name):
            return None
        return next(i for i, p in enumerate(self.patterns) if name_matches(p, name))


_WILDCARDS = re.compile(r"[*?\[]")


@functools.lru_cache(maxsize=1024)
def patterns(items: tuple[str, ...]) -> Patterns:
    """The patterns compiled, once per list a policy holds."""
    return Patterns(items)


def _pattern(value: str) -> str:
    if not value.strip():
        msg = "empty name"
        raise ValueError(msg)
    return value.strip()


NamePattern = Annotated[str, Field(max_length=255), AfterValidator(_pattern)]
"""A package or service name, or a shell-style pattern of names."""
