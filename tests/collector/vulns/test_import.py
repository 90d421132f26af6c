"""Importing data sets: whole or not at all, with source, time and counts recorded."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleetwatch.collector.storage.store import Store
from fleetwatch.collector.vulns.data import KnownVulnerabilities
from fleetwatch.collector.vulns.model import DataFormatError
from tests.collector.storage.conftest import store  # noqa: F401  (the fixture)
from tests.collector.vulns.samples import KEV, OSV_DEBIAN, TRACKER, packages

T1 = datetime(2024, 6, 1, tzinfo=UTC)
T2 = datetime(2024, 7, 1, tzinfo=UTC)


def test_import_records_source_time_and_counts(store: Store) -> None:  # noqa: F811
    """An import says what it holds, from where and when."""
    known = KnownVulnerabilities(store)
    (info,) = known.import_path(TRACKER, now=T1)
    assert (info.name, info.source, info.imported_at) == ("debian-tracker", str(TRACKER), T1)
    assert info.counts == {"entries": 12, "vulnerabilities": 8, "packages": 6, "releases": 3}
    assert [i.name for i in known.status()] == ["debian-tracker"]


def test_a_directory_of_several_formats_is_one_import(store: Store, tmp_path: Path) -> None:  # noqa: F811
    """Tracker, OSV and KEV files in one directory are imported together."""
    data = tmp_path / "data"
    shutil.copytree(OSV_DEBIAN, data / "osv")
    for path in (TRACKER, KEV):
        shutil.copy(path, data / path.name)
    known = KnownVulnerabilities(store)
    infos = known.import_path(data, now=T1)
    assert sorted(i.name for i in infos) == ["debian-tracker", "kev", "osv-debian"]
    assert known.refresh() is True
    assert known.index.exploited["CVE-2024-1086"] == "2024-05-30"


def test_broken_file_changes_nothing(store: Store, tmp_path: Path) -> None:  # noqa: F811
    """A truncated file in a directory refuses the whole import; what was held stays."""
    known = KnownVulnerabilities(store)
    known.import_path(TRACKER, now=T1)
    before = known.status()
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(KEV, data / "kev.json")
    payload = TRACKER.read_bytes()
    (data / "tracker.json").write_bytes(payload[: len(payload) - 40])
    with pytest.raises(DataFormatError, match=r"tracker\.json: not complete JSON"):
        known.import_path(data, now=T2)
    assert known.status() == before


def test_refresh_follows_imports_by_any_process(store: Store) -> None:  # noqa: F811
    """A process loads new data when the stored generation changes, and only then."""
    reader = KnownVulnerabilities(store)
    assert reader.refresh() is False
    assert not reader.index
    KnownVulnerabilities(store).import_path(TRACKER, now=T1)
    assert reader.refresh() is True
    assert reader.refresh() is False
    host = packages(("libc6", "2.36-9+deb12u1", "glibc", "2.36-9+deb12u1"))
    assert [m.vuln for m in reader.index.match("bookworm", host)] == ["CVE-2023-4911"]


def test_first_import_dates_nothing_later_imports_date_new_fixes(
    store: Store,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Fixes in the first import count as long published; a fix new in a refresh is dated."""
    known = KnownVulnerabilities(store)
    known.import_path(TRACKER, now=T1)
    newer = tmp_path / "tracker.json"
    newer.write_text(
        TRACKER.read_text().replace(
            '"status": "open",\n          "repositories": {"bookworm": "1.34+dfsg-1.2+deb12u1"},',
            '"status": "resolved", "fixed_version": "1.34+dfsg-1.2+deb12u2",',
        )
    )
    known.import_path(newer, now=T2)
    known.refresh()
    tar = packages(("tar", "1.34+dfsg-1.2+deb12u1", "tar", "1.34+dfsg-1.2+deb12u1"))
    glibc = packages(("libc6", "2.36-9+deb12u1", "glibc", "2.36-9+deb12u1"))
    (tar_match,) = known.index.match("bookworm", tar)
    (glibc_match,) = known.index.match("bookworm", glibc)
    assert tar_match.fix_since == T2
    assert glibc_match.fix_since is None
