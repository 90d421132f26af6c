"""The dpkg package manager: installed packages, pending updates, kernels, fingerprints."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from fleetwatch.agent.commands import CommandError
from fleetwatch.agent.package_managers.apt import (
    classify,
    parse_package_files,
    parse_policy,
    parse_simulation,
)
from fleetwatch.agent.package_managers.dpkg import Dpkg, installed_for_policy, parse_status
from fleetwatch.schema import PendingUpdate
from tests.helpers import FIXTURES

APT = FIXTURES / "apt"


class TestParseStatus:
    def test_reads_every_installed_package(self) -> None:
        """A real status file gives one package per installed paragraph."""
        text = (FIXTURES / "dpkg" / "status").read_text()
        packages = parse_status(text)
        assert len(packages) == text.count("Status: install ok installed")
        names = {p.name for p in packages}
        assert {"bash", "libc6", "openssl", "dpkg"} <= names

    def test_source_package_and_version(self) -> None:
        """Source name and version come from the Source field, defaulting to the binary's."""
        packages = {
            p.name: p for p in parse_status((FIXTURES / "dpkg" / "status-kernels").read_text())
        }
        kernel = packages["linux-image-6.1.0-56-amd64"]
        assert (kernel.source, kernel.source_version) == ("linux-signed-amd64", "6.1.192+2")
        assert kernel.version == "6.1.192-2"
        libssl = packages["libssl3"]
        assert libssl.source == "openssl"
        assert libssl.source_version == libssl.version  # "Source: openssl" without a version
        bash = packages["bash"]
        assert bash.source == "bash"

    def test_removed_packages_with_config_files_are_not_installed(self) -> None:
        """A package in the config-files state is not reported as installed."""
        names = {p.name for p in parse_status((FIXTURES / "dpkg" / "status-kernels").read_text())}
        assert "oldtool" not in names

    def test_sorted_for_a_stable_hash(self) -> None:
        """Packages come sorted by name and architecture whatever the file's order."""
        packages = parse_status((FIXTURES / "dpkg" / "status").read_text())
        keys = [(p.name, p.architecture) for p in packages]
        assert keys == sorted(keys)


class TestParseSimulation:
    def test_security_updates_are_marked_by_their_origin(self) -> None:
        """Updates whose candidate comes from a -security suite are security updates."""
        updates = parse_simulation((APT / "dist-upgrade-security.txt").read_text())
        assert len(updates) == 124
        assert sum(u.security for u in updates) == 69
        libgcrypt = next(u for u in updates if u.name == "libgcrypt20")
        assert libgcrypt.security
        assert libgcrypt.installed_version == "1.10.1-3"
        assert libgcrypt.candidate_version == "1.10.1-3+deb12u1"
        assert libgcrypt.origins == [
            "Debian:12.15/oldstable",
            "Debian-Security:12/oldstable-security",
        ]
        base_files = next(u for u in updates if u.name == "base-files")
        assert not base_files.security

    def test_point_release_updates_are_not_security(self) -> None:
        """Without the security suite, no update is marked security (no false positives)."""
        updates = parse_simulation((APT / "dist-upgrade-no-security.txt").read_text())
        assert len(updates) == 102
        assert not any(u.security for u in updates)

    def test_up_to_date_host_has_no_updates(self) -> None:
        """'0 upgraded' output gives an empty list."""
        assert parse_simulation((APT / "dist-upgrade-up-to-date.txt").read_text()) == []

    def test_ubuntu_origins(self) -> None:
        """Ubuntu names its suites jammy-security and jammy-updates.

        Ubuntu's output cannot be captured on the Debian machines this suite runs on; these
        lines follow the format apt prints there.
        """
        text = (
            "Inst libc6 [2.35-0ubuntu3.1] (2.35-0ubuntu3.4 Ubuntu:22.04/jammy-updates, "
            "Ubuntu:22.04/jammy-security [amd64])\n"
            "Inst tzdata [2024a-0ubuntu0.22.04] (2024b-0ubuntu0.22.04 Ubuntu:22.04/jammy-updates [all])\n"
            "Inst libsecurity-thing [1.0] (1.1 Ubuntu:22.04/jammy-updates [amd64])\n"
        )
        updates = {u.name: u for u in parse_simulation(text)}
        assert updates["libc6"].security
        assert not updates["tzdata"].security
        assert not updates["libsecurity-thing"].security  # a name is not an origin

    def test_new_packages_have_no_installed_version(self) -> None:
        """A package pulled in new by an upgrade has no installed version."""
        text = "Inst linux-image-6.1.0-56-amd64 (6.1.192-2 Debian-Security:12/oldstable-security [amd64])\n"
        (update,) = parse_simulation(text)
        assert update.installed_version is None
        assert update.security


class TestPolicy:
    """apt's policy completes the simulation: captured in the lab root of test_apt_lab.py."""

    @pytest.fixture
    def lab(self) -> dict[str, PendingUpdate]:
        updates, new = classify(
            parse_simulation((APT / "lab-dist-upgrade.txt").read_text()),
            installed_for_policy((FIXTURES / "dpkg" / "status-lab").read_text()),
            parse_policy((APT / "lab-policy-packages.txt").read_text()),
            parse_package_files((APT / "lab-policy-files.txt").read_text()),
            "amd64",
        )
        assert [(u.name, u.installed_version) for u in new] == [("fw-kernel-abi2", None)]
        return {f"{u.name}:{u.architecture}": u for u in updates}

    def test_package_files_name_their_release(self) -> None:
        """Each package file's release fields are read, and security archives are told apart."""
        files = parse_package_files((APT / "lab-policy-files.txt").read_text())
        security = files["file:/srv/repo bookworm-security/main amd64 Packages"]
        assert (security.label, security.archive, security.codename) == (
            "Debian-Security",
            "stable-security",
            "bookworm-security",
        )
        assert security.security
        assert not files["file:/srv/repo bookworm/main amd64 Packages"].security
        assert not files["/var/lib/dpkg/status"].security

    def test_overtaken_security_fix_is_still_security(self, lab: dict[str, PendingUpdate]) -> None:
        """A candidate from stable above a fix from stable-security is a security update."""
        update = lab["fw-overtaken:all"]
        assert update.candidate_version == "1.0-1+deb12u2"
        assert update.origins == ["Debian:stable"]
        assert update.security
        assert update.security_version == "1.0-1+deb12u1"
        assert update.held_back is None

    def test_plain_and_security_upgrades(self, lab: dict[str, PendingUpdate]) -> None:
        """A point-release upgrade is not security; one from the security archive is."""
        assert not lab["fw-plain:all"].security
        assert lab["fw-plain:all"].security_version is None
        assert lab["fw-secure:all"].security
        assert lab["fw-secure:all"].security_version == "1.0-1+deb12u1"

    def test_held_package_is_reported_with_its_candidate(
        self, lab: dict[str, PendingUpdate]
    ) -> None:
        """A package on hold with a newer candidate is reported held, security fix and all."""
        held = lab["fw-held:all"]
        assert held.held_back == "held"
        assert (held.installed_version, held.candidate_version) == ("1.0-1", "1.0-1+deb12u1")
        assert held.security
        assert held.origins == ["Debian-Security:stable-security"]
        assert held.reason is not None
        assert "hold" in held.reason

    def test_multiarch_twin_that_cannot_follow_is_kept_back(
        self, lab: dict[str, PendingUpdate]
    ) -> None:
        """The amd64 half of a Multi-Arch: same pair whose i386 half has no new version."""
        kept = lab["libfwtwin:amd64"]
        assert kept.held_back == "kept-back"
        assert kept.security
        assert kept.reason is not None
        assert "libfwtwin:i386" in kept.reason
        assert "libfwtwin:i386" not in lab  # the twin itself has nothing newer

    def test_pinned_away_security_fix(self, lab: dict[str, PendingUpdate]) -> None:
        """A pin that keeps the candidate at the installed version hides no security fix."""
        pinned = lab["fw-pinned:all"]
        assert pinned.held_back == "pinned"
        assert pinned.candidate_version == "1.0-1+deb12u1"
        assert pinned.security

    def test_up_to_date_packages_are_not_reported(self, lab: dict[str, PendingUpdate]) -> None:
        """Installed at the security version, or with nothing newer: not an update."""
        assert "fw-current:all" not in lab
        assert "fw-kernel-abi1:all" not in lab
        assert "bash:amd64" not in lab
        assert sorted(lab) == [
            "fw-held:all",
            "fw-kernel:all",
            "fw-overtaken:all",
            "fw-pinned:all",
            "fw-plain:all",
            "fw-secure:all",
            "libfwtwin:amd64",
        ]


class FakeApt:
    """Stands in for apt and dpkg by replaying their captured output; counts the calls."""

    def __init__(
        self, simulation: str, *, package_files: str = "", policy: str = "", arch: str = "amd64"
    ) -> None:
        self.outputs = {
            "apt-get": simulation,
            "apt-cache policy": package_files,
            "apt-cache policy PKG": policy,
            "dpkg": arch + "\n",
        }
        self.calls: list[Sequence[str]] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> str:
        self.calls.append(argv)
        if argv[0] == "apt-cache":
            return self.outputs["apt-cache policy PKG" if len(argv) > 2 else "apt-cache policy"]
        return self.outputs[argv[0]]


@pytest.fixture
def apt_root(tmp_path: Path) -> Path:
    """A host's package files: a status file, package lists and apt configuration."""
    (tmp_path / "status").write_bytes((FIXTURES / "dpkg" / "status").read_bytes())
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_InRelease").write_text("x")
    os.utime(
        lists / "deb.debian.org_debian_dists_bookworm_InRelease", (1_700_000_000, 1_700_000_000)
    )
    (tmp_path / "etc").mkdir()
    return tmp_path


def _dpkg(root: Path, run: FakeApt) -> Dpkg:
    return Dpkg(
        status_path=root / "status", lists_dir=root / "lists", apt_config_dir=root / "etc", run=run
    )


class TestDpkg:
    def test_pending_updates_run_apt_get_simulation_without_root(self, apt_root: Path) -> None:
        """Updates come from `apt-get -s dist-upgrade`, with the index time from its lists."""
        run = FakeApt((APT / "dist-upgrade-security.txt").read_text())
        data = _dpkg(apt_root, run).pending_updates()
        assert run.calls[0][:2] == ["apt-get", "-s"]
        assert run.calls[0][-1] == "dist-upgrade"
        assert len(data.updates) == 124
        assert data.index_refreshed_at is not None
        assert data.index_refreshed_at.timestamp() == 1_700_000_000

    def test_pending_updates_ask_apt_policy_for_every_installed_package(
        self, tmp_path: Path
    ) -> None:
        """Policy is asked by apt's own names (name:arch only for a foreign architecture)."""
        (tmp_path / "status").write_bytes((FIXTURES / "dpkg" / "status-lab").read_bytes())
        run = FakeApt(
            (APT / "lab-dist-upgrade.txt").read_text(),
            package_files=(APT / "lab-policy-files.txt").read_text(),
            policy=(APT / "lab-policy-packages.txt").read_text(),
        )
        data = _dpkg(tmp_path, run).pending_updates()
        asked = next(c for c in run.calls if c[:2] == ["apt-cache", "policy"] and len(c) > 2)
        assert {"fw-held", "libfwtwin", "libfwtwin:i386", "bash"} <= set(asked)
        assert "fw-held:all" not in asked
        assert "bash:amd64" not in asked
        assert [u.name for u in data.new_installs] == ["fw-kernel-abi2"]
        batched = FakeApt("", policy=(APT / "lab-policy-packages.txt").read_text())
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("fleetwatch.agent.package_managers.dpkg.POLICY_BATCH", 50)
            _dpkg(tmp_path, batched).pending_updates()
        sizes = [len(c) - 2 for c in batched.calls if c[:2] == ["apt-cache", "policy"]][1:]
        assert sizes == [50, 50, len(asked) - 2 - 100]  # every package, asked in batches
        assert {u.name: u.held_back for u in data.updates if u.held_back} == {
            "fw-held": "held",
            "fw-pinned": "pinned",
            "libfwtwin": "kept-back",
        }

    def test_signature_changes_with_the_package_database_and_lists(self, apt_root: Path) -> None:
        """The updates fingerprint moves when dpkg's status, a list or apt's config changes,
        and when the agent reads apt's answer another way."""
        manager = _dpkg(apt_root, FakeApt(""))
        first = manager.updates_signature()
        assert manager.updates_signature() == first
        time.sleep(0.01)
        (apt_root / "lists" / "security_InRelease").write_text("new")
        second = manager.updates_signature()
        assert second != first
        (apt_root / "etc" / "preferences").write_text("Package: *\n")
        third = manager.updates_signature()
        assert third != second
        with pytest.MonkeyPatch.context() as patch:  # an agent that reads apt another way
            patch.setattr("fleetwatch.agent.package_managers.dpkg.UPDATES_LOGIC", "next")
            assert manager.updates_signature() != third

    def test_newest_kernel_and_running_kernel(self) -> None:
        """The newest installed kernel package is found by version; the metapackage is not one."""
        manager = Dpkg(status_path=FIXTURES / "dpkg" / "status-kernels")
        packages = manager.installed_packages()
        assert manager.newest_kernel(packages) == ("6.1.0-56-amd64", "6.1.192-2")
        assert manager.kernel_package_version(packages, "6.1.0-54-amd64") == "6.1.190-1"
        assert manager.kernel_package_version(packages, "6.18.44-custom") is None

    def test_apt_failure_is_an_error(self, apt_root: Path) -> None:
        """A failing apt-get raises, so the updates section becomes an error entry."""

        def broken(argv: Sequence[str], timeout: float) -> str:
            raise CommandError("apt-get failed: E: Could not open lock file")

        with pytest.raises(CommandError):
            Dpkg(status_path=apt_root / "status", run=broken).pending_updates()
