"""Debian version ordering, exactly as ``dpkg --compare-versions`` orders versions.

A version is ``[epoch:]upstream[-revision]``. Epochs compare as numbers; upstream and revision
compare part by part, alternating between runs of non-digits (letters sort before other
characters, and ``~`` sorts before everything, even the end of the string) and runs of digits
(compared as numbers).
"""

from __future__ import annotations

import functools
import re
import string

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


# dpkg's parseversion() (lib/dpkg/parsehelp.c) in the C locale: its notion of space, of a
# letter, and the epoch as strtol() reads it (a sign is allowed, "-0" is zero).
_SPACE = " \t\n\v\f\r"
_EPOCH = re.compile(r"[+-]?[0-9]+")
_EPOCH_MAX = 2**31 - 1  # INT_MAX
_ALNUM = frozenset(string.ascii_letters + string.digits)
_UPSTREAM_CHARS = _ALNUM | frozenset(".-+~:")
_REVISION_CHARS = _ALNUM | frozenset(".+~")


def _refuse(version: str, why: str) -> InvalidVersionError:
    return InvalidVersionError(f"not a Debian version: {version!r}: {why}")


@functools.lru_cache(maxsize=65536)
def parse(version: str) -> tuple[int, str, str]:
    """Split a version into (epoch, upstream, revision), as dpkg parses it to compare.

    Raises InvalidVersionError where ``dpkg --compare-versions`` fails ("bad syntax" errors).
    dpkg only warns of a version that does not start with a digit or has characters outside
    letters, digits and ``.+~`` (and ``-:`` upstream), and still orders it: so does this. Use
    `validate` for the strict rule dpkg applies to a version it is asked to check or build.
    """
    text = version.strip(_SPACE)
    if not text:
        raise _refuse(version, "version string is empty")
    if any(c in _SPACE for c in text):
        raise _refuse(version, "version string has embedded spaces")
    epoch, text = _split_epoch(version, text)
    upstream, hyphen, revision = text.rpartition("-")
    if not hyphen:
        upstream, revision = text, ""
    elif not revision:
        raise _refuse(version, "revision number is empty")
    if not upstream:
        raise _refuse(version, "version number is empty")
    return epoch, upstream, revision


def _split_epoch(version: str, text: str) -> tuple[int, str]:
    epoch_text, colon, rest = text.partition(":")
    if not colon:
        return 0, text
    if not epoch_text:
        raise _refuse(version, "epoch in version is empty")
    if _EPOCH.fullmatch(epoch_text) is None:
        raise _refuse(version, "epoch in version is not number")
    epoch = int(epoch_text)
    if epoch > _EPOCH_MAX:
        raise _refuse(version, "epoch in version is too big")
    if epoch < 0:
        raise _refuse(version, "epoch in version is negative")
    if not rest:
        raise _refuse(version, "nothing after colon in version number")
    return epoch, rest


def validate(version: str) -> str:
    """Return ``version`` if ``dpkg --validate-version`` accepts it; raise InvalidVersionError.

    Stricter than `parse`: the upstream part starts with a digit and holds only letters,
    digits and ``.+-~:``, the revision only letters, digits and ``.+~``.
    """
    _epoch, upstream, revision = parse(version)
    if upstream[0] not in string.digits:
        raise _refuse(version, "version number does not start with digit")
    if not set(upstream) <= _UPSTREAM_CHARS:
        raise _refuse(version, "invalid character in version number")
    if not set(revision) <= _REVISION_CHARS:
        raise _refuse(version, "invalid character in revision number")
    return version


def is_valid(version: str) -> bool:
    """Whether ``dpkg --validate-version`` accepts ``version``."""
    try:
        validate(version)
    except InvalidVersionError:
        return False
    return True


def compare(a: str, b: str) -> int:
    """Negative, zero or positive as version ``a`` sorts before, equal to or after ``b``."""
    epoch_a, upstream_a, revision_a = parse(a)
    epoch_b, upstream_b, revision_b = parse(b)
    if epoch_a != epoch_b:
        return epoch_a - epoch_b
    return _compare_part(upstream_a, upstream_b) or _compare_part(revision_a, revision_b)


sort_key = functools.cmp_to_key(compare)
"""Use as ``sorted(versions, key=sort_key)``."""
