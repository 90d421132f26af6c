"""Reading the Debian tracker's JSON, OSV records and the KEV catalogue."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleetwatch.collector.vulns.formats import detect, read_path
from fleetwatch.collector.vulns.model import DataFormatError, Dataset
from fleetwatch.collector.vulns.sources import debian_tracker, kev, osv
from tests.collector.vulns.samples import KEV, OSV_DEBIAN, OSV_UBUNTU, TRACKER


def _by(dataset: Dataset, source: str, vuln: str, release: str) -> object:
    found = [e for e in dataset.entries if (e.source, e.vuln, e.release) == (source, vuln, release)]
    assert len(found) <= 1
    return found[0] if found else None


class TestDebianTracker:
    def test_reads_status_fixed_version_urgency_and_nodsa(self) -> None:
        """Each release of each issue becomes an entry with the tracker's own words."""
        with TRACKER.open("rb") as stream:
            data = debian_tracker.read(stream)
        ssh = _by(data, "openssh", "CVE-2024-6387", "bookworm")
        assert ssh is not None
        assert (ssh.status, ssh.fixed_version, ssh.urgency, ssh.severity) == (
            "resolved",
            "1:9.2p1-2+deb12u3",
            "high",
            "high",
        )
        curl = _by(data, "curl", "CVE-2024-2398", "bookworm")
        assert curl is not None
        assert curl.flags == ("no-dsa", "postponed")
        tar = _by(data, "tar", "CVE-2005-2541", "bookworm")
        assert tar is not None
        assert (tar.status, tar.fixed_version, tar.flags) == ("open", None, ("unimportant",))

    def test_fixed_version_zero_means_never_affected(self) -> None:
        """A release whose fixed version is 0 never had the bug: no entry."""
        with TRACKER.open("rb") as stream:
            data = debian_tracker.read(stream)
        assert _by(data, "glibc", "CVE-2023-4911", "bullseye") is None
        assert _by(data, "glibc", "CVE-2023-4911", "bookworm") is not None

    def test_guessed_urgency_and_undetermined_status(self) -> None:
        """A starred urgency is read without its star; undetermined is flagged."""
        with TRACKER.open("rb") as stream:
            data = debian_tracker.read(stream)
        curl = _by(data, "curl", "CVE-2025-0725", "bookworm")
        assert curl is not None
        assert (curl.urgency, curl.severity, curl.flags) == ("low", "low", ("undetermined",))

    def test_truncated_document_is_refused(self) -> None:
        """A document cut short is an error, never a shorter data set."""
        payload = TRACKER.read_bytes()
        with pytest.raises(DataFormatError, match="truncated"):
            debian_tracker.read(io.BytesIO(payload[: len(payload) // 2]))

    def test_unknown_status_names_the_place(self) -> None:
        """A release with a status the tracker never writes is refused, with where."""
        bad = b'{"curl": {"CVE-1": {"releases": {"bookworm": {"status": "fixed"}}}}}'
        with pytest.raises(DataFormatError, match="curl CVE-1 bookworm: status"):
            debian_tracker.read(io.BytesIO(bad))


class TestOsv:
    def test_advisory_records_give_one_entry_per_cve_with_date_and_cvss(self) -> None:
        """A DSA names its CVEs; each entry keeps the advisory, its date and CVSS score."""
        (data,) = read_path(OSV_DEBIAN)
        assert data.name == "osv-debian"
        entry = _by(data, "glibc", "CVE-2023-4911", "bookworm")
        assert entry is not None
        assert entry.advisories == ("DSA-5514-1",)
        assert entry.published == datetime(2023, 10, 3, tzinfo=UTC)
        assert entry.fixed_version == "2.36-9+deb12u3"
        assert entry.cvss == 7.8
        assert entry.severity == "high"

    def test_ubuntu_priority_and_release_codename(self) -> None:
        """Ubuntu:22.04:LTS is jammy; the USN's priority is the severity; FIPS is skipped."""
        (data,) = read_path(OSV_UBUNTU)
        assert data.name == "osv-ubuntu"
        assert {e.release for e in data.entries} == {"jammy"}
        entry = _by(data, "glibc", "CVE-2023-4911", "jammy")
        assert entry is not None
        assert (entry.urgency, entry.severity) == ("high", "high")

    def test_zip_of_records(self, tmp_path: Path) -> None:
        """An ecosystem's all.zip is read member by member."""
        archive = tmp_path / "all.zip"
        with zipfile.ZipFile(archive, "w") as zipped:
            for record in OSV_DEBIAN.iterdir():
                zipped.write(record, record.name)
        (data,) = read_path(archive)
        assert {e.vuln for e in data.entries} == {"CVE-2023-4527", "CVE-2023-4911", "CVE-2024-6387"}

    def test_truncated_zip_is_refused(self, tmp_path: Path) -> None:
        """A zip cut short is refused with the file named."""
        archive = tmp_path / "all.zip"
        with zipfile.ZipFile(archive, "w") as zipped:
            for record in OSV_DEBIAN.iterdir():
                zipped.write(record, record.name)
        archive.write_bytes(archive.read_bytes()[:200])
        with pytest.raises(DataFormatError, match=r"all\.zip: not a complete zip"):
            read_path(archive)

    def test_release_names(self) -> None:
        """Ecosystem names map to the codenames hosts report."""
        assert osv.release_of("Debian:11") == ("debian", "bullseye")
        assert osv.release_of("Ubuntu:Pro:18.04:LTS") == ("ubuntu", "bionic")
        assert osv.release_of("Ubuntu:24.04:LTS") == ("ubuntu", "noble")
        assert osv.release_of("PyPI") is None


class TestKev:
    def test_exploited_cves_with_date_added(self) -> None:
        """The catalogue is read as CVE -> date added."""
        data = kev.read(KEV.read_bytes())
        assert data.exploited["CVE-2023-4911"] == "2023-11-21"
        assert len(data.exploited) == 3

    def test_other_json_is_not_the_catalogue(self) -> None:
        """A JSON document without the catalogue's keys is refused."""
        with pytest.raises(DataFormatError, match="not the KEV catalogue"):
            kev.read(b'{"vulnerabilities": {}}')


class TestDetection:
    @pytest.mark.parametrize(
        ("path", "expected"),
        [(TRACKER, "debian-tracker"), (OSV_UBUNTU, "osv"), (KEV, "kev")],
    )
    def test_format_is_told_by_the_first_bytes(self, path: Path, expected: str) -> None:
        """Each sample's format is detected without parsing the whole file."""
        assert detect(path) == expected

    def test_unknown_format_asks_for_format(self, tmp_path: Path) -> None:
        """A file of no known format is refused, and the error says to give --format."""
        other = tmp_path / "x.json"
        other.write_text('{"hello": 1}')
        with pytest.raises(DataFormatError, match="--format"):
            read_path(other)
