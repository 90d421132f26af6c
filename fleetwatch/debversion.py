"""Debian version ordering, exactly as ``dpkg --compare-versions`` orders versions.

A version is ``[epoch:]upstream[-revision]``. Epochs compare as numbers; upstream and revision
compare part by part, alternating between runs of non-digits (letters sort before other
characters, and ``~`` sorts before everything, even the end of the string) and runs of digits
(compared as numbers).
"""

from __future__ import annotations

import functools

_DIGITS = frozenset("0123456789")


class InvalidVersionError(ValueError):
    """A string that is not a Debian version."""


def _order(char: str) -> int:
    if char == "~":
        return -1
    if char.isascii() and char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:  # noqa: C901  (dpkg's algorithm, kept in its shape)
    """dpkg's verrevcmp() on an upstream version or a revision."""
    i = j = 0
    len_a, len_b = len(a), len(b)
    while i < len_a or j < len_b:
        while (i < len_a and a[i] not in _DIGITS) or (j < len_b and b[j] not in _DIGITS):
            order_a = _order(a[i]) if i < len_a and a[i] not in _DIGITS else 0
            order_b = _order(b[j]) if j < len_b and b[j] not in _DIGITS else 0
            if order_a != order_b:
                return order_a - order_b
            i += 1
            j += 1
        while i < len_a and a[i] == "0":
            i += 1
        while j < len_b and b[j] == "0":
            j += 1
        first_diff = 0
        while i < len_a and a[i] in _DIGITS and j < len_b and b[j] in _DIGITS:
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len_a and a[i] in _DIGITS:
            return 1
        if j < len_b and b[j] in _DIGITS:
            return -1
        if first_diff:
            return first_diff
    return 0


@functools.lru_cache(maxsize=65536)
def parse(version: str) -> tuple[int, str, str]:
    """Split a version into (epoch, upstream, revision); raise InvalidVersionError if it is none."""
    text = version.strip()
    if not text or any(c.isspace() for c in text):
        msg = f"not a Debian version: {version!r}"
        raise InvalidVersionError(msg)
    epoch = 0
    if ":" in text:
        epoch_text, text = text.split(":", 1)
        if not epoch_text.isdigit() or not epoch_text.isascii():
            msg = f"not a Debian version (epoch must be a number): {version!r}"
            raise InvalidVersionError(msg)
        epoch = int(epoch_text)
    upstream, _, revision = text.rpartition("-") if "-" in text else (text, "", "")
    if not upstream:
        msg = f"not a Debian version (empty upstream part): {version!r}"
        raise InvalidVersionError(msg)
    return epoch, upstream, revision


def compare(a: str, b: str) -> int:
    """Negative, zero or positive as version ``a`` sorts before, equal to or after ``b``."""
    epoch_a, upstream_a, revision_a = parse(a)
    epoch_b, upstream_b, revision_b = parse(b)
    if epoch_a != epoch_b:
        return epoch_a - epoch_b
    return _compare_part(upstream_a, upstream_b) or _compare_part(revision_a, revision_b)


sort_key = functools.cmp_to_key(compare)
"""Use as ``sorted(versions, key=sort_key)``."""
