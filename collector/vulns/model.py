"""The records every source of vulnerability data is read into.

An `Entry` is what one source says about one vulnerability in one source package of one
release: fixed in a version, or open. A `Dataset` is one import: the entries of one kind of
data (the Debian tracker, OSV for Debian, OSV for Ubuntu) or the exploited CVEs (KEV).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["open", "resolved", "undetermined"]
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
FLAGS = ("unimportant", "no-dsa", "postponed", "ignored", "end-of-life", "undetermined")
"""What the data says about an entry besides its version: a minor issue (``unimportant``),
no advisory planned (``no-dsa``, and why: ``postponed``, ``ignored``), a release past its
support (``end-of-life``), or not known to affect the release (``undetermined``)."""


class DataFormatError(ValueError):
    """A file that is not vulnerability data of the expected format; the message says where."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One vulnerability in one source package of one release, as one source describes it."""

    vuln: str
    release: str
    source: str
    status: Status
    fixed_version: str | None = None
    urgency: str | None = None
    severity: str | None = None
    cvss: float | None = None
    flags: tuple[str, ...] = ()
    advisories: tuple[str, ...] = ()
    published: datetime | None = None
    """When the fix was published (the advisory's date), where the data says."""
    known_since: datetime | None = None
    """When this collector first had the fix in its data; None when it came with the first
    import of its kind (then it was published before fleetwatch could know, at an unknown
    time: no grace period can be counted from it)."""

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What makes an entry the same across imports: release, source, id, fixed version."""
        return (self.release, self.source, self.vuln, self.fixed_version or "")

    def row(self) -> list[Any]:
        """The entry as a compact JSON row (`from_row` reads it back)."""
        return [
            self.vuln,
            self.release,
            self.source,
            self.status,
            self.fixed_version,
            self.urgency,
            self.severity,
            self.cvss,
            list(self.flags),
            list(self.advisories),
            _stamp(self.published),
            _stamp(self.known_since),
        ]

    @classmethod
    def from_row(cls, row: list[Any]) -> Entry:
        """An entry from its row; repeated strings and tuples are shared, not copied (the full
        tracker's 400,000 entries name 130,000 CVEs, a few releases and urgencies)."""
        return cls(
            _shared(row[0]),
            _shared(row[1]),
            _shared(row[2]),
            _shared(row[3]),
            row[4],
            _shared(row[5]),
            _shared(row[6]),
            row[7],
            _shared_tuple(row[8]),
            _shared_tuple(row[9]),
            _moment(row[10]),
            _moment(row[11]),
        )


def _shared(text: str | None) -> Any:
    return None if text is None else sys.intern(text)


_TUPLES: dict[tuple[str, ...], tuple[str, ...]] = {}


def _shared_tuple(items: list[str]) -> tuple[str, ...]:
    if not items:
        return ()
    key = tuple(items)
    if len(_TUPLES) > 100_000:
        _TUPLES.clear()
    return _TUPLES.setdefault(key, key)


def _stamp(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def _moment(stamp: int | None) -> datetime | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC)


@dataclass
class Dataset:
    """One imported file's worth of data, ready to replace the data set of its name.

    ``name`` is what an import replaces: ``debian-tracker``, ``osv-debian``, ``osv-ubuntu``
    or ``kev``. ``exploited`` maps CVEs to the date CISA added them (KEV only).
    """

    name: str
    entries: list[Entry] = field(default_factory=list)
    exploited: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """What an import reports: entries, distinct vulnerabilities, source packages."""
        if self.exploited:
            return {"exploited": len(self.exploited)}
        return {
            "entries": len(self.entries),
            "vulnerabilities": len({e.vuln for e in self.entries}),
            "packages": len({e.source for e in self.entries}),
            "releases": len({e.release for e in self.entries}),
        }

    def payload(self) -> dict[str, Any]:
        """The data set as stored: compact rows, read back by `from_payload`."""
        return {
            "name": self.name,
            "entries": [e.row() for e in self.entries],
            "exploited": self.exploited,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Dataset:
        """The data set of a stored payload; the payload's rows are consumed (each replaced by
        its entry in place, so rows and entries are never all in memory at once)."""
        rows: list[Any] = payload["entries"]
        for i, row in enumerate(rows):
            rows[i] = Entry.from_row(row)
        return cls(payload["name"], rows, dict(payload["exploited"]))


def severity_of_cvss(score: float) -> str:
    """CVSS v3/v4 qualitative rating of a base score (none counts as low)."""
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low"
