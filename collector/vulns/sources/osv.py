"""OSV records (https://ossf.github.io/osv-schema/) for the Debian and Ubuntu ecosystems.

A record is one advisory (``DSA-5417-1``, ``DLA-3449-1``, ``USN-6119-1``) or one CVE
(``DEBIAN-CVE-2023-2650``, ``UBUNTU-CVE-2023-2650``), with the source packages it affects per
release and the version that fixes each::

    {"id": "DSA-5417-1", "published": "2023-05-30T00:00:00Z", "upstream": ["CVE-2023-2650"],
     "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/..."}],
     "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
                   "ranges": [{"type": "ECOSYSTEM",
                               "events": [{"introduced": "0"}, {"fixed": "3.0.9-1~deb12u1"}]}]}]}

An entry is made per CVE the record names (``upstream``, else ``aliases``), so that an
advisory's CVEs match as the tracker's do, with the advisory and its publication date kept.
Ecosystems name releases by number; `DEBIAN_RELEASES` and `UBUNTU_RELEASES` turn them into
the codenames hosts report. Records of other ecosystems are skipped.
"""

from __future__ import annotations

import json
import zipfile
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cvss import CVSS3, CVSS4
from cvss.exceptions import CVSSError

from fleetwatch.collector.vulns.model import DataFormatError, Dataset, Entry, severity_of_cvss

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

DEBIAN_RELEASES = {
    "9": "stretch",
    "10": "buster",
    "11": "bullseye",
    "12": "bookworm",
    "13": "trixie",
    "14": "forky",
}
UBUNTU_RELEASES = {
    "14.04": "trusty",
    "16.04": "xenial",
    "18.04": "bionic",
    "20.04": "focal",
    "22.04": "jammy",
    "23.04": "lunar",
    "23.10": "mantic",
    "24.04": "noble",
    "24.10": "oracular",
    "25.04": "plucky",
    "25.10": "questing",
}
_UBUNTU_PRIORITY = {"negligible": "low", "low": "low", "medium": "medium", "high": "high"}
_UBUNTU_PRIORITY["critical"] = "critical"


def release_of(ecosystem: str) -> tuple[str, str] | None:
    """(family, codename) of an OSV ecosystem (``Debian:12``, ``Ubuntu:Pro:18.04:LTS``)."""
    parts = ecosystem.split(":")
    if parts[0] == "Debian" and len(parts) >= 2:
        codename = DEBIAN_RELEASES.get(parts[1])
        return ("debian", codename) if codename else None
    if parts[0] == "Ubuntu":
        number = next((p for p in parts[1:] if p[:1].isdigit()), None)
        if "FIPS" in ecosystem or number is None:
            return None
        codename = UBUNTU_RELEASES.get(number)
        return ("ubuntu", codename) if codename else None
    return None


def read_records(records: Iterable[tuple[str, bytes]]) -> list[Dataset]:
    """Entries of OSV records, given as (where, JSON bytes): one data set per family."""
    sets: dict[str, Dataset] = {}
    seen = 0
    for where, payload in records:
        try:
            document = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            msg = f"{where}: not valid JSON: {exc}"
            raise DataFormatError(msg) from exc
        for record in document if isinstance(document, list) else [document]:
            seen += 1
            for family, entry in _entries(where, record):
                sets.setdefault(family, Dataset(f"osv-{family}")).entries.append(entry)
    if not seen:
        msg = "no OSV record found"
        raise DataFormatError(msg)
    if not sets:
        msg = "no OSV record for a Debian or Ubuntu release"
        raise DataFormatError(msg)
    return list(sets.values())


def zip_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """The JSON members of an OSV zip (as ``all.zip`` of an ecosystem is published)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.endswith(".json"):
                    yield f"{path}:{info.filename}", archive.read(info)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        msg = f"{path}: not a complete zip file: {exc}"
        raise DataFormatError(msg) from exc


def is_record(document: Any) -> bool:
    """Whether a parsed JSON document is an OSV record (or a list of them)."""
    first = document[0] if isinstance(document, list) and document else document
    return isinstance(first, dict) and "id" in first and "affected" in first


def _entries(where: str, record: Any) -> Iterator[tuple[str, Entry]]:
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        msg = f"{where}: not an OSV record (no 'id')"
        raise DataFormatError(msg)
    record_id = record["id"]
    names = [a for a in record.get("upstream") or record.get("aliases") or [] if _is_cve(a)]
    if not names:
        names = [record_id.removeprefix("DEBIAN-").removeprefix("UBUNTU-")]
    advisories = tuple(a for a in [record_id] if a.split("-")[0] in {"DSA", "DLA", "DTSA", "USN"})
    published = _time(where, record.get("published")) if advisories else None
    cvss, severity, urgency = _severity(record.get("severity") or [])
    for affected in record.get("affected") or []:
        package = affected.get("package") or {}
        found = release_of(str(package.get("ecosystem", "")))
        if found is None or not package.get("name"):
            continue
        family, release = found
        fixed = _fixed(affected.get("ranges") or [])
        specific = affected.get("ecosystem_specific") or {}
        item_urgency = specific.get("urgency") or urgency
        flags = ("unimportant",) if item_urgency in {"unimportant", "negligible"} else ()
        for name in names:
            yield (
                family,
                Entry(
                    vuln=name,
                    release=release,
                    source=package["name"],
                    status="open" if fixed is None else "resolved",
                    fixed_version=fixed,
                    urgency=item_urgency,
                    severity=severity or _UBUNTU_PRIORITY.get(item_urgency or ""),
                    cvss=cvss,
                    flags=flags,
                    advisories=advisories,
                    published=published,
                ),
            )


def _is_cve(name: object) -> bool:
    return isinstance(name, str) and name.startswith("CVE-")


def _fixed(ranges: list[Any]) -> str | None:
    fixed = None
    for version_range in ranges:
        if version_range.get("type") != "ECOSYSTEM":
            continue
        for event in version_range.get("events") or []:
            if "fixed" in event:
                fixed = str(event["fixed"])
    return fixed


def _severity(items: list[Any]) -> tuple[float | None, str | None, str | None]:
    """(CVSS base score, severity, Ubuntu priority) from a record's ``severity`` list."""
    cvss = severity = urgency = None
    for item in items:
        kind, score = item.get("type"), str(item.get("score", ""))
        if kind == "Ubuntu":
            urgency = score
        elif kind in {"CVSS_V3", "CVSS_V4"} and cvss is None:
            try:
                vector = CVSS4(score) if kind == "CVSS_V4" else CVSS3(score)
            except CVSSError:
                continue  # an unreadable vector says nothing; the priority may still
            cvss = float(vector.base_score)
            severity = severity_of_cvss(cvss)
    return cvss, severity, urgency


def _time(where: str, text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"{where}: 'published' is not a time: {text!r}"
        raise DataFormatError(msg) from exc
