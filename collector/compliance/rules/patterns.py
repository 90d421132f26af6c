"""Policy patterns: how a package or service name in the policy matches installed names."""

from __future__ import annotations

import fnmatch
from typing import Annotated

from pydantic import AfterValidator, Field


def name_matches(pattern: str, name: str) -> bool:
    """Whether a package or service name matches a policy pattern (shell-style wildcards)."""
    return fnmatch.fnmatchcase(name, pattern)


def _pattern(value: str) -> str:
    if not value.strip():
        msg = "empty name"
        raise ValueError(msg)
    return value.strip()


NamePattern = Annotated[str, Field(max_length=255), AfterValidator(_pattern)]
"""A package or service name, or a shell-style pattern of names."""
