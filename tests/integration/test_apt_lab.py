"""The agent on real data: a Debian 12 root with a local archive, checked against apt itself.

A debootstrapped bookworm root (tests/debian_roots.py) gets a local repository of real
packages built here (tests/apt_repo.py) with a ``bookworm`` suite (Origin Debian, Label
Debian) and a ``bookworm-security`` suite (Label Debian-Security), as Debian's archive names
them. Older versions are installed, then apt is left to see:

==================  ===========================================================================
fw-plain            1.0-1 -> 1.1-1 from bookworm: an upgrade, not security
fw-secure           1.0-1 -> 1.0-1+deb12u1 from bookworm-security: a security upgrade
fw-overtaken        1.0-1; +deb12u1 in bookworm-security, +deb12u2 (the candidate) in bookworm:
                    still a pending security fix
fw-held             1.0-1, ``apt-mark hold``; +deb12u1 in bookworm-security: held, security
libfwtwin           Multi-Arch: same, amd64 and i386 at 1.0-1; +deb12u1 in bookworm-security
                    for amd64 only: the amd64 half is kept back, security
fw-pinned           1.0-1 pinned (priority 1001); +deb12u1 in bookworm-security: pinned, security
fw-kernel           metapackage 1.0 -> 2.0, which pulls in fw-kernel-abi2 (bookworm-security):
                    an upgrade, and a new install that is not a pending update
fw-current          installed at the security version: nothing
==================  ===========================================================================

The real agent, installed from a wheelhouse into a virtualenv in the root, reports on it
(``fleetwatch-agent collect``); each item is checked against ``apt-get -s dist-upgrade``,
``apt-cache policy``, ``apt-mark showhold``, ``dpkg-query`` and ``dpkg --compare-versions``
run in the same root.

Then a real collector (SQLite) gets ``tests/fixtures/vulns/tracker-lab.json``, the Debian
Security Tracker's format naming these source packages, through ``fleetwatch vulns import``;
the agent in the root reports to it over loopback (``fleetwatch-agent run --once``), and the
collector's verdicts are checked against the data and dpkg, vulnerability by vulnerability.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.apt_repo import Deb, Suite, build_deb, build_repo
from tests.debian_roots import cached_root, chroot_run, private_root
from tests.helpers import BIN, FIXTURES, CollectorProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROOT_PACKAGES = ("python3", "python3-venv", "ca-certificates", "iproute2", "procps")
AMD64, I386 = "amd64", "i386"
TWIN = {"Multi-Arch": "same"}

INSTALLED = [
    Deb("fw-plain", "1.0-1"),
    Deb("fw-secure", "1.0-1"),
    Deb("fw-overtaken", "1.0-1", source="fwovertaken"),
    Deb("fw-held", "1.0-1"),
    Deb("libfwtwin", "1.0-1", AMD64, "fwtwin", TWIN),
    Deb("libfwtwin", "1.0-1", I386, "fwtwin", TWIN),
    Deb("fw-pinned", "1.0-1"),
    Deb("fw-kernel", "1.0", fields={"Depends": "fw-kernel-abi1"}),
    Deb("fw-kernel-abi1", "1.0", source="fwkernel"),
    Deb("fw-current", "1.0-1+deb12u1"),
]
STABLE = [
    Deb("fw-plain", "1.1-1"),
    Deb("fw-overtaken", "1.0-1+deb12u2", source="fwovertaken"),
    Deb("fw-held", "1.0-1"),
    Deb("libfwtwin", "1.0-1", AMD64, "fwtwin", TWIN),
    Deb("libfwtwin", "1.0-1", I386, "fwtwin", TWIN),
    Deb("fw-pinned", "1.0-1"),
    Deb("fw-kernel", "2.0", fields={"Depends": "fw-kernel-abi2"}),
    Deb("fw-current", "1.0-1"),
]
SECURITY = [
    Deb("fw-secure", "1.0-1+deb12u1"),
    Deb("fw-overtaken", "1.0-1+deb12u1", source="fwovertaken"),
    Deb("fw-held", "1.0-1+deb12u1"),
    Deb("libfwtwin", "1.0-1+deb12u1", AMD64, "fwtwin", TWIN),
    Deb("fw-pinned", "1.0-1+deb12u1"),
    Deb("fw-kernel-abi2", "2.0", source="fwkernel"),
    Deb("fw-current", "1.0-1+deb12u1"),
]
SUITES = [
    Suite("stable", "bookworm", "Debian", "Debian", tuple(STABLE)),
    Suite("stable-security", "bookworm-security", "Debian", "Debian-Security", tuple(SECURITY)),
]
PIN = "Package: fw-pinned\nPin: version 1.0-1\nPin-Priority: 1001\n"

# (name, architecture) -> (held_back, security): the scenario as designed; apt confirms it
EXPECTED = {
    ("fw-plain", "all"): (None, False),
    ("fw-secure", "all"): (None, True),
    ("fw-overtaken", "all"): (None, True),
    ("fw-kernel", "all"): (None, False),
    ("fw-held", "all"): ("held", True),
    ("libfwtwin", AMD64): ("kept-back", True),
    ("fw-pinned", "all"): ("pinned", True),
}


# vulnerability -> (source, severity, fixable, flags, what the note says): from tracker-lab.json
VERDICTS = {
    "CVE-2099-1001": ("fw-secure", "high", True, [], None),
    "CVE-2099-1002": ("fwovertaken", "medium", True, [], None),
    "CVE-2099-1003": ("fw-held", "high", True, [], "fw-held held"),
    "CVE-2099-1004": ("fwtwin", "medium", True, [], "libfwtwin:i386"),
    "CVE-2099-1005": ("fw-pinned", "low", True, ["no-dsa"], "fw-pinned pinned"),
    "CVE-2099-1006": ("fw-plain", "low", False, ["unimportant"], None),
}
NOT_AFFECTED = {
    "CVE-2099-1007": "fw-current is installed at the fixed version",
    "CVE-2099-1008": "fixed_version 0: bookworm was never affected",
    "CVE-2099-1010": "a bullseye entry only",
}


@dataclass
class Lab:
    """The root after the agent ran, and what apt and dpkg say there."""

    root: Path
    report: dict[str, Any]
    simulation: str
    holds: set[str]

    @property
    def updates(self) -> dict[tuple[str, str], dict[str, Any]]:
        data = self.report["sections"]["updates"]["data"]
        return {(u["name"], u["architecture"]): u for u in data["updates"]}

    def policy(self, name: str) -> str:
        return chroot_run(self.root, "apt-cache", "policy", name, env={"LC_ALL": "C"}).stdout

    def newer(self, a: str, b: str) -> bool:
        """dpkg's own answer to: is version a newer than b?"""
        done = chroot_run(self.root, "dpkg", "--compare-versions", a, "gt", b, check=False)
        return done.returncode == 0


def _setup_root(root: Path, work: Path) -> None:
    repo = build_repo(work / "repo", SUITES, (AMD64, I386))
    shutil.copytree(repo, root / "srv" / "repo")
    installed = root / "srv" / "installed"
    installed.mkdir(parents=True)
    for deb in INSTALLED:
        build_deb(deb, installed)
    # the local archive only: no network, and no lists left from debootstrap
    (root / "etc" / "apt" / "sources.list").write_text(
        "".join(f"deb [trusted=yes] file:/srv/repo {s.codename} main\n" for s in SUITES)
    )
    for extra in (root / "etc" / "apt" / "sources.list.d").glob("*"):
        extra.unlink()
    (root / "etc" / "apt" / "preferences.d" / "fw-pinned").write_text(PIN)
    lists = root / "var" / "lib" / "apt" / "lists"
    shutil.rmtree(lists)
    (lists / "partial").mkdir(parents=True)
    chroot_run(root, "dpkg", "--add-architecture", I386)
    chroot_run(root, "sh", "-c", "dpkg -i /srv/installed/*.deb")
    chroot_run(root, "apt-get", "update")
    chroot_run(root, "apt-mark", "hold", "fw-held")


def _install_agent(root: Path) -> None:
    from fleetwatch.deploy.wheels import Target, WheelhouseError, build, default_source

    source = default_source()
    assert source is not None
    python = chroot_run(
        root, "python3", "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"
    ).stdout.strip()
    libc = chroot_run(root, "getconf", "GNU_LIBC_VERSION").stdout.split()[-1]
    machine = chroot_run(root, "uname", "-m").stdout.strip()
    try:
        wheelhouse = build(source, Target(python, machine, libc))
    except WheelhouseError as exc:
        pytest.skip(f"no wheelhouse for the agent in the root: {exc}")
    shutil.copytree(wheelhouse.directory, root / "srv" / "wheelhouse")
    chroot_run(root, "python3", "-m", "venv", "/opt/fleetwatch")
    chroot_run(
        root,
        "/opt/fleetwatch/bin/pip",
        "install",
        "--quiet",
        "--no-index",
        "--find-links",
        "/srv/wheelhouse",
        "fleetwatch",
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = cached_root("bookworm", *ROOT_PACKAGES)
    for tool in ("dpkg-deb", "dpkg-scanpackages", "apt-ftparchive"):
        if shutil.which(tool) is None:
            pytest.skip(f"building the local archive needs {tool} (dpkg-dev, apt-utils)")
    work = tmp_path_factory.mktemp("apt-lab")
    with private_root(base, work / "overlay") as root:
        _setup_root(root, work)
        _install_agent(root)
        collected = chroot_run(
            root,
            "/opt/fleetwatch/bin/fleetwatch-agent",
            "collect",
            env={
                "FLEETWATCH_HOST_ID": "apt-lab",
                "FLEETWATCH_STATE_DIR": "/var/lib/fleetwatch-agent",
                "FLEETWATCH_LOG_LEVEL": "warning",
            },
        )
        simulation = chroot_run(root, "apt-get", "-s", "dist-upgrade", env={"LC_ALL": "C"})
        holds = chroot_run(root, "apt-mark", "showhold").stdout.split()
        yield Lab(root, json.loads(collected.stdout), simulation.stdout, set(holds))


@pytest.fixture(scope="module")
def verdicts(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """The collector's vulnerabilities of the lab root, after the agent reported to it."""
    work = tmp_path_factory.mktemp("apt-lab-collector")
    database_url = f"sqlite:///{work / 'fleetwatch.db'}"
    imported = subprocess.run(
        [str(BIN / "fleetwatch"), "vulns", "import", str(FIXTURES / "vulns" / "tracker-lab.json"),
         "--database-url", database_url],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    collector = CollectorProcess(work, database_url).start()
    try:
        chroot_run(
            lab.root,
            "/opt/fleetwatch/bin/fleetwatch-agent",
            "run",
            "--once",
            env={
                "FLEETWATCH_HOST_ID": "apt-lab",
                "FLEETWATCH_STATE_DIR": "/var/lib/fleetwatch-agent",
                "FLEETWATCH_COLLECTOR_URL": collector.url,
                "FLEETWATCH_ENROLL_SECRET": collector.enroll_secret,
                "FLEETWATCH_ALLOW_INSECURE_HTTP": "true",  # loopback, in a test
                "FLEETWATCH_LOG_LEVEL": "warning",
            },
        )
        yield collector.api("/api/v1/vulnerabilities", host_id="apt-lab")
    finally:
        collector.stop()


_INST = re.compile(r"^Inst (\S+) (?:\[(\S+)\] )?\((\S+) .* \[(\S+)\]\)$", re.MULTILINE)


def _kept_back(simulation: str) -> set[str]:
    match = re.search(r"kept back:\n((?:  .*\n)+)", simulation)
    return set(match[1].split()) if match else set()


class TestUpdatesOnRealApt:
    def test_sections_were_collected(self, lab: Lab) -> None:
        """The agent in the root reports packages and updates, not errors."""
        sections = lab.report["sections"]
        assert sections["updates"].get("error") is None, sections["updates"]
        assert sections["packages"].get("error") is None, sections["packages"]

    def test_the_scenario_is_what_apt_sees(self, lab: Lab) -> None:
        """Every crafted case is reported as designed, and nothing else of ours."""
        reported = {
            key: (u.get("held_back"), u["security"])
            for key, u in lab.updates.items()
            if key[0].startswith(("fw-", "libfw"))
        }
        assert reported == EXPECTED

    def test_every_upgrade_apt_simulates_is_reported_as_apt_says(self, lab: Lab) -> None:
        """Each Inst line with an installed version is an update with the same versions."""
        simulated = {
            (name.split(":")[0], arch): (installed, candidate)
            for name, installed, candidate, arch in _INST.findall(lab.simulation)
            if installed
        }
        reported = {
            key: (u["installed_version"], u["candidate_version"])
            for key, u in lab.updates.items()
            if u.get("held_back") is None
        }
        assert reported == simulated

    def test_new_installs_are_apart_from_updates(self, lab: Lab) -> None:
        """An Inst line without an installed version is a new install, never an update."""
        simulated = {
            (name, arch, candidate)
            for name, installed, candidate, arch in _INST.findall(lab.simulation)
            if not installed
        }
        data = lab.report["sections"]["updates"]["data"]
        new = {(u["name"], u["architecture"], u["candidate_version"]) for u in data["new_installs"]}
        assert new == simulated == {("fw-kernel-abi2", "all", "2.0")}
        assert ("fw-kernel-abi2", "all") not in lab.updates

    def test_held_packages_are_apt_marks_holds(self, lab: Lab) -> None:
        """The held updates are the packages apt-mark shows held, with apt's candidate."""
        held = {name for (name, _), u in lab.updates.items() if u.get("held_back") == "held"}
        assert held == lab.holds == {"fw-held"}
        update = lab.updates[("fw-held", "all")]
        assert f"Candidate: {update['candidate_version']}\n" in lab.policy("fw-held")

    def test_kept_back_is_what_apt_keeps_back_less_the_holds(self, lab: Lab) -> None:
        """apt-get's kept-back list is the held and kept-back updates; the twin is named."""
        kept = {name for (name, _), u in lab.updates.items() if u.get("held_back")} - {"fw-pinned"}
        assert kept == _kept_back(lab.simulation)
        twin = lab.updates[("libfwtwin", AMD64)]
        assert "libfwtwin:i386" in twin["reason"]
        assert f"Candidate: {twin['candidate_version']}\n" in lab.policy("libfwtwin")

    def test_security_is_any_newer_version_from_a_security_suite(self, lab: Lab) -> None:
        """apt-cache policy lists the security version under bookworm-security, and dpkg
        says it is newer than the installed one; updates without one have none there."""
        for (name, arch), update in lab.updates.items():
            key = name if arch in {"all", AMD64} else f"{name}:{arch}"
            table = lab.policy(key).split("Version table:", 1)[1]
            offered = re.findall(
                r"^ (?:\*\*\*| {3}) (\S+) -?\d+\n((?: {8}.*\n)+)", table, re.MULTILINE
            )
            from_security = [v for v, sources in offered if "bookworm-security" in sources]
            newer = [v for v in from_security if lab.newer(v, update["installed_version"])]
            assert update["security"] == bool(newer), name
            if newer:
                assert update["security_version"] in newer, name

    def test_packages_are_what_dpkg_query_lists(self, lab: Lab) -> None:
        """Every installed package, its version, architecture and source, as dpkg-query says."""
        listed = chroot_run(
            lab.root,
            "dpkg-query",
            "-W",
            "-f",
            "${db:Status-Status} ${Package} ${Version} ${Architecture} "
            "${source:Package} ${source:Version}\n",
        ).stdout
        expected = {
            tuple(line.split()[1:]) for line in listed.splitlines() if line.startswith("installed ")
        }
        rows = lab.report["sections"]["packages"]["data"]["packages"]
        assert {tuple(row) for row in rows} == expected
        assert ["libfwtwin", "1.0-1", I386, "fwtwin", "1.0-1"] in rows


class TestVulnerabilityVerdicts:
    def test_each_affected_package_is_found_as_the_data_says(
        self, verdicts: list[dict[str, Any]]
    ) -> None:
        """One verdict per affected vulnerability: source, severity, fix, flags and note."""
        found = {
            v["vuln"]: (v["source"], v["severity"], v["fixable"], v["flags"], v["note"])
            for v in verdicts
        }
        assert found.keys() == VERDICTS.keys()
        for vuln, (source, severity, fixable, flags, note) in VERDICTS.items():
            assert found[vuln][:4] == (source, severity, fixable, flags), vuln
            if note is None:
                assert found[vuln][4] is None, vuln
            else:
                assert note in found[vuln][4], vuln

    def test_installed_and_fixed_versions_agree_with_dpkg(
        self, lab: Lab, verdicts: list[dict[str, Any]]
    ) -> None:
        """Each verdict's installed version is dpkg's source version, below the fix in dpkg's
        order; the unaffected cases are so by dpkg's order or the release."""
        sources = {row[3]: row[4] for row in lab.report["sections"]["packages"]["data"]["packages"]}
        for verdict in verdicts:
            assert verdict["installed_version"] == sources[verdict["source"]]
            assert verdict["release"] == "bookworm"
            if verdict["fixed_version"] is not None:
                assert lab.newer(verdict["fixed_version"], verdict["installed_version"])
        assert not lab.newer("1.0-1+deb12u1", sources["fw-current"])  # CVE-2099-1007
        assert {v["vuln"] for v in verdicts}.isdisjoint(NOT_AFFECTED)

    def test_fixable_means_apt_has_the_fix(self, lab: Lab, verdicts: list[dict[str, Any]]) -> None:
        """A fixable verdict's binary has an apt candidate (or a version in the version table
        of its policy) at or above the fixed version; held back ones say why apt will not."""
        for verdict in verdicts:
            if not verdict["fixable"]:
                assert verdict["fixed_version"] is None
                continue
            versions = {
                version
                for binary in verdict["binaries"]
                for version in re.findall(
                    r"^ (?:\*\*\*| {3}) (\S+) -?\d+$", lab.policy(binary), re.MULTILINE
                )
            }
            assert any(not lab.newer(verdict["fixed_version"], v) for v in versions), verdict
