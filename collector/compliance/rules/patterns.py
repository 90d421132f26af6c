"""Policy patterns: how a package or service name in the policy matches installed names."""

from __future__ import annotations

import fnmatch


def name_matches(pattern: str, name: str) -> bool:
    """Whether a package or service name matches a policy pattern (shell-style wildcards)."""
    return fnmatch.fnmatchcase(name, pattern)
