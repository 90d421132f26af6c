"""The Debian Security Tracker's JSON (https://security-tracker.debian.org/tracker/data/json).

One document, keyed by source package, then by issue (CVE, or a ``TEMP-`` name), then by
release codename::

    {"openssl": {"CVE-2023-0286": {
        "description": "...", "scope": "remote", "debianbug": 1031500,
        "releases": {"bookworm": {
            "status": "resolved",              # or "open", "undetermined"
            "repositories": {"bookworm": "3.0.9-1", "bookworm-security": "3.0.11-1~deb12u2"},
            "fixed_version": "3.0.8-1",        # "0": never affected
            "urgency": "high",                 # unimportant, low, medium, high, not yet
                                               # assigned, end-of-life; "*" marks guesses
            "nodsa": "Minor issue",            # no advisory planned...
            "nodsa_reason": "postponed"}}}}}   # ...and why (postponed, ignored)

The full file is tens of megabytes; it is read one package at a time (ijson over yajl), so
the parsed document never lives in memory whole. It carries no advisory dates: those come
from OSV records of DSAs and DLAs, imported beside it.
"""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING, Any

import ijson

from fleetwatch.collector.vulns.model import DataFormatError, Dataset, Entry

if TYPE_CHECKING:
    from collections.abc import Iterator

NAME = "debian-tracker"
_SEVERITY = {"unimportant": "low", "low": "low", "medium": "medium", "high": "high"}
_STATUSES = {"open", "resolved", "undetermined"}


def read(stream: IO[bytes]) -> Dataset:
    """Every entry of a tracker document; `DataFormatError` names the first thing wrong."""
    dataset = Dataset(NAME)
    try:
        for source, issues in ijson.kvitems(stream, "", use_float=True):
            dataset.entries.extend(_entries(source, issues))
    except ijson.JSONError as exc:
        msg = f"not complete JSON (truncated or broken): {exc}"
        raise DataFormatError(msg) from exc
    if not dataset.entries:
        msg = "no package of the Debian Security Tracker's format found"
        raise DataFormatError(msg)
    return dataset


def _entries(source: str, issues: Any) -> Iterator[Entry]:
    if not isinstance(issues, dict):
        msg = f"package {source!r}: not an object of issues"
        raise DataFormatError(msg)
    for vuln, issue in issues.items():
        releases = issue.get("releases") if isinstance(issue, dict) else None
        if not isinstance(releases, dict):
            msg = f"{source} {vuln}: no 'releases' object"
            raise DataFormatError(msg)
        for release, state in releases.items():
            entry = _entry(source, vuln, release, state)
            if entry is not None:
                yield entry


def _entry(source: str, vuln: str, release: str, state: Any) -> Entry | None:
    where = f"{source} {vuln} {release}"
    if not isinstance(state, dict) or state.get("status") not in _STATUSES:
        msg = f"{where}: status is not one of {sorted(_STATUSES)}"
        raise DataFormatError(msg)
    status = state["status"]
    fixed = state.get("fixed_version")
    if status == "resolved" and (fixed is None or fixed == "0"):
        return None  # never affected this release
    urgency = str(state.get("urgency") or "").rstrip("*").strip() or None
    flags = []
    if urgency in {"unimportant", "end-of-life"}:
        flags.append(urgency)
    if state.get("nodsa") is not None:
        flags.append("no-dsa")
        reason = state.get("nodsa_reason")
        if reason in {"postponed", "ignored"}:
            flags.append(reason)
    if status == "undetermined":
        flags.append("undetermined")
    intern = (
        sys.intern
    )  # the same few releases, statuses, urgencies, hundreds of thousands of times
    return Entry(
        vuln=intern(vuln),
        release=intern(release),
        source=intern(source),
        status=status,
        fixed_version=str(fixed) if status == "resolved" else None,
        urgency=intern(urgency) if urgency else None,
        severity=_SEVERITY.get(urgency or ""),
        flags=_FLAGS.setdefault(tuple(flags), tuple(flags)),
    )


_FLAGS: dict[tuple[str, ...], tuple[str, ...]] = {}
