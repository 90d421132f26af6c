"""Matching a host's source packages against the data, in dpkg version order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleetwatch.collector.vulns.formats import read_path
from fleetwatch.collector.vulns.matching import Match, VulnIndex
from fleetwatch.collector.vulns.model import Dataset, Entry
from tests.collector.vulns.samples import KEV, OSV_DEBIAN, TRACKER, packages, system, updates


@pytest.fixture(scope="module")
def index() -> VulnIndex:
    datasets = [*read_path(TRACKER), *read_path(OSV_DEBIAN), *read_path(KEV)]
    return VulnIndex(datasets, "test")


def _by_name(matches: list[Match], vuln: str) -> Match:
    (match,) = [m for m in matches if m.vuln == vuln]
    return match


def _one(fixed: str, status: str = "resolved") -> VulnIndex:
    entry = Entry("CVE-1", "bookworm", "pkg", status, fixed if status == "resolved" else None)  # type: ignore[arg-type]
    return VulnIndex([Dataset("debian-tracker", [entry])])


@pytest.mark.parametrize(
    ("installed", "fixed", "affected"),
    [
        ("1.0-1", "1.0-2", True),
        ("1.0-2", "1.0-2", False),
        ("1.0-3", "1.0-2", False),
        # an epoch outweighs everything after it
        ("2.0-1", "1:1.0-1", True),
        ("1:1.0-1", "2.0-1", False),
        ("1:9.2p1-2+deb12u2", "1:9.2p1-2+deb12u3", True),
        # ~ sorts before anything, even the end of the version
        ("3.0.13-1~deb12u1", "3.0.13-1", True),
        ("3.0.13-1", "3.0.13-1~deb12u1", False),
        ("3.0.11-1~deb12u2", "3.0.13-1~deb12u1", True),
        ("1.0~rc1-1", "1.0-1", True),
        # a binNMU and a stable update sort after the version they build on
        ("2.36-9+deb12u3", "2.36-9+deb12u3", False),
        ("2.36-9+deb12u10", "2.36-9+deb12u3", False),
        ("1.0-1", "1.0-1+b1", True),
    ],
)
def test_dpkg_order_decides(installed: str, fixed: str, affected: bool) -> None:
    """Affected exactly when the installed source version sorts before the fixed one."""
    host = packages(("bin", installed, "pkg", installed))
    found = _one(fixed).match("bookworm", host)
    assert bool(found) is affected


def test_open_status_affects_every_version() -> None:
    """With no fix in the release, every installed version is affected."""
    host = packages(("bin", "99:9", "pkg", "99:9"))
    (match,) = _one("", status="open").match("bookworm", host)
    assert (match.status, match.fixed_version, match.fixable) == ("open", None, False)


def test_matches_by_source_package_and_release(index: VulnIndex) -> None:
    """Binaries of one source match once, as that source; other releases do not count."""
    host = packages(
        ("libssl3", "3.0.11-1~deb12u2", "openssl", "3.0.11-1~deb12u2"),
        ("openssl", "3.0.11-1~deb12u2", "openssl", "3.0.11-1~deb12u2"),
        ("libc6", "2.36-9+deb12u9", "glibc", "2.36-9+deb12u9"),
    )
    found = index.match("bookworm", host)
    assert [(m.source, m.vuln) for m in found] == [("openssl", "CVE-2024-0727")]
    assert found[0].binaries == ("libssl3", "openssl")
    assert found[0].flags == ("no-dsa",)
    assert index.match("bullseye", host) != found
    assert index.match(None, host) == []


def test_a_pending_update_reaching_the_fix_makes_it_fixable(index: VulnIndex) -> None:
    """Fixable when a pending update of one of the source's binaries reaches the fix."""
    host = packages(("libc6", "2.36-9+deb12u1", "glibc", "2.36-9+deb12u1"))
    early = updates(("libc6", "2.36-9+deb12u1", "2.36-9+deb12u2"))
    late = updates(("libc6", "2.36-9+deb12u1", "2.36-9+deb12u9"))
    unfixable = _by_name(index.match("bookworm", host, early), "CVE-2023-4911")
    fixable = _by_name(index.match("bookworm", host, late), "CVE-2023-4911")
    assert (unfixable.fixable, fixable.fixable) == (False, True)


def test_a_held_back_fix_is_fixable_and_says_why_apt_does_not_install_it() -> None:
    """A held (or kept-back, pinned) update reaching the fix: fixable, with apt's reason."""
    host = packages(("bin", "1.0-1", "pkg", "1.0-1"))
    pending = updates(("bin", "1.0-1", "1.0-2"))
    held = pending.updates[0].model_copy(update={"held_back": "held", "reason": "on hold"})
    (match,) = _one("1.0-2").match("bookworm", host, pending.model_copy(update={"updates": [held]}))
    assert match.fixable
    assert match.note == "the fix is not installed by apt: bin held (on hold)"
    (plain,) = _one("1.0-2").match("bookworm", host, pending)
    assert (plain.fixable, plain.note) == (True, None)


def test_a_new_kernel_image_among_new_installs_makes_the_kernel_fixable(index: VulnIndex) -> None:
    """A new kernel ABI package is a new install, not an update: it still brings the fix."""
    host = packages(
        ("linux-image-6.1.0-17-amd64", "6.1.69-1", "linux-signed-amd64", "6.1.69+1"),
    )
    new = updates(("linux-image-6.1.0-18-amd64", None, "6.1.76-1"))
    new = new.model_copy(update={"updates": [], "new_installs": new.updates})
    (match,) = index.match("bookworm", host, new, system=system(kernel="6.1.0-17-amd64"))
    assert (match.source, match.fixable) == ("linux", True)
    (unfixed,) = index.match("bookworm", host, None, system=system(kernel="6.1.0-17-amd64"))
    assert unfixed.fixable is False


def test_exploited_advisory_date_and_cvss_join_the_tracker_verdict(index: VulnIndex) -> None:
    """The tracker decides; OSV adds the DSA, its date and CVSS; KEV marks it exploited."""
    host = packages(("libc6", "2.36-9+deb12u1", "glibc", "2.36-9+deb12u1"))
    found = index.match("bookworm", host)
    # CVE-2023-4527 is known from the DSA alone: it matches too, as the DSA says
    assert [m.vuln for m in found] == ["CVE-2023-4527", "CVE-2023-4911"]
    match = _by_name(found, "CVE-2023-4911")
    assert match.exploited is True
    assert match.advisories == ("DSA-5514-1",)
    assert match.fix_since == datetime(2023, 10, 3, tzinfo=UTC)
    assert (match.cvss, match.severity) == (7.8, "high")


def test_running_kernel_counts_not_the_newest_installed(index: VulnIndex) -> None:
    """A fixed kernel installed but not booted leaves the host affected, and says so."""
    host = packages(
        ("linux-image-6.1.0-17-amd64", "6.1.69-1", "linux-signed-amd64", "6.1.69+1"),
        ("linux-image-6.1.0-18-amd64", "6.1.76-1", "linux-signed-amd64", "6.1.76+1"),
        ("linux-libc-dev", "6.1.76-1", "linux", "6.1.76-1"),
    )
    (match,) = index.match("bookworm", host, system=system(kernel="6.1.0-17-amd64"))
    assert (match.source, match.installed_version, match.fixable) == ("linux", "6.1.69-1", True)
    assert match.note is not None
    assert "linux-image-6.1.0-18-amd64 is installed but not booted" in match.note
    assert index.match("bookworm", host, system=system(kernel="6.1.0-18-amd64")) == []


def test_versions_an_agent_should_never_send_are_skipped(index: VulnIndex) -> None:
    """A version dpkg would refuse matches nothing rather than failing the host."""
    host = packages(("libc6", "not a version", "glibc", "not a version"))
    assert index.match("bookworm", host) == []


def test_a_verdict_kept_for_the_next_host_never_hides_a_pending_fix(index: VulnIndex) -> None:
    """The same package seen again is answered from the cache, until an update reaches it."""
    host = packages(("libc6", "2.36-9+deb12u1", "glibc", "2.36-9+deb12u1"))
    first = index.match("bookworm", host)
    assert index.match("bookworm", host) == first
    late = updates(("libc6", "2.36-9+deb12u1", "2.36-9+deb12u9"))
    assert _by_name(index.match("bookworm", host, late), "CVE-2023-4911").fixable is True
    assert _by_name(index.match("bookworm", host), "CVE-2023-4911").fixable is False
