"""What apt prints: the upgrades it would install, and what its policy knows beyond them.

``apt-get -s dist-upgrade`` needs no root and changes nothing; it prints one ``Inst`` line per
package it would install, naming the origins of the candidate version::

    Inst libgcrypt20 [1.10.1-3] (1.10.1-3+deb12u1 Debian:12.15/oldstable, \
Debian-Security:12/oldstable-security [amd64])

An ``Inst`` line without an installed version in brackets is a new install (a new kernel ABI
package pulled in by its metapackage), reported apart from the upgrades.

The simulation says nothing of what apt will *not* upgrade, and names only the candidate's
origins. ``apt-cache policy PKG...`` gives, for every installed package, its installed and
candidate versions and every version apt knows with the package files that offer it;
``apt-cache policy`` alone names each package file's release (origin, label, archive,
codename). From both:

* an upgrade is a **security update** when any version newer than the installed one is offered
  by a security archive (``*-security``, or the ``Debian-Security`` label), not only when the
  candidate is: a fix from ``bookworm-security`` overtaken by a point release in ``bookworm``
  is still a pending security fix;
* a package whose candidate is newer than the installed version but that the simulation does
  not upgrade is reported **held** (dpkg selection ``hold``, as ``apt-mark hold`` sets it) or
  **kept back** (apt's resolver would not upgrade it, e.g. a ``Multi-Arch: same`` package whose
  twin of another architecture has no matching version);
* a package whose candidate is not newer but which a security archive offers in a newer version
  is reported **pinned**: apt's pin priorities keep the fix away.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from fleetwatch import debversion
from fleetwatch.schema import PendingUpdate

_INST = re.compile(
    r"^Inst (?P<name>\S+)"
    r"(?: \[(?P<installed>[^\]]+)\])?"
    r" \((?P<candidate>\S+) (?P<origins>.*) \[(?P<arch>[^\]]+)\]\)"
)
# " 500 http://deb.debian.org/debian bookworm/main amd64 Packages" in ``apt-cache policy``'s
# list of package files, and the same source line under a version in a package's table.
_PACKAGE_FILE = re.compile(r"^ +(?P<priority>-?\d+) (?P<source>\S.*)$")
_RELEASE = re.compile(r"^ +release (?P<fields>.*)$")
_VERSION_ROW = re.compile(r"^ (?:\*\*\*| {3}) (?P<version>\S+) (?P<priority>-?\d+)$")
_MAX_ORIGINS = 32

HeldBack = Literal["held", "kept-back", "pinned"]


@dataclass(frozen=True)
class Release:
    """The release fields apt gives a package file: o=Debian,a=stable-security,..."""

    origin: str | None = None
    label: str | None = None
    archive: str | None = None
    codename: str | None = None
    version: str | None = None

    @property
    def security(self) -> bool:
        suites = (self.archive or "", self.codename or "")
        return any(s.endswith("-security") for s in suites) or self.label == "Debian-Security"

    def describe(self) -> str:
        """The origin as apt writes it in ``Inst`` lines: ``Label:Version/archive``."""
        name = self.label or self.origin or "local"
        version = f"{self.version}/" if self.version else ""
        return f"{name}:{version}{self.archive or self.codename or 'unknown'}"


@dataclass
class Policy:
    """What ``apt-cache policy PKG`` says of one package."""

    installed: str | None = None
    candidate: str | None = None
    versions: dict[str, list[str]] = field(default_factory=dict)
    """Each version apt knows, with the package files (source lines) that offer it."""


@dataclass(frozen=True)
class InstalledPackage:
    """An installed package as dpkg knows it: what the policy query is asked with."""

    name: str
    architecture: str
    version: str
    held: bool


def parse_simulation(text: str) -> list[PendingUpdate]:
    """Every ``Inst`` line of ``apt-get -s dist-upgrade`` output, sorted by name and arch.

    New installs are in the list too, without an installed version; `pending_updates` sets
    them apart.
    """
    updates = []
    for line in text.splitlines():
        match = _INST.match(line)
        if match is None:
            continue
        origins = [o.strip() for o in match["origins"].split(",") if o.strip()]
        # a foreign-architecture package is written name:arch
        name = match["name"].removesuffix(f":{match['arch']}")
        updates.append(
            PendingUpdate(
                name=name,
                architecture=match["arch"],
                installed_version=match["installed"],
                candidate_version=match["candidate"],
                security=any(_is_security_origin(o) for o in origins),
                origins=origins[:_MAX_ORIGINS],
            )
        )
    updates.sort(key=lambda u: (u.name, u.architecture))
    return updates


def _is_security_origin(origin: str) -> bool:
    # Debian's origins read Debian-Security:12/oldstable-security, Ubuntu's
    # Ubuntu:22.04/jammy-security: the suite after the slash is what counts.
    suite = origin.rsplit("/", 1)[-1]
    return suite.endswith("-security") or origin.startswith("Debian-Security:")


def parse_package_files(text: str) -> dict[str, Release]:
    """The release of each package file in ``apt-cache policy`` (no arguments) output.

    Keyed by the source line as it appears under a version in a package's table, e.g.
    ``http://deb.debian.org/debian-security bookworm-security/main amd64 Packages``.
    """
    files: dict[str, Release] = {}
    source: str | None = None
    for line in text.splitlines():
        release = _RELEASE.match(line)
        if release is not None and source is not None:
            fields = dict(
                part.split("=", 1) for part in release["fields"].split(",") if "=" in part
            )
            files[source] = Release(
                origin=fields.get("o"),
                label=fields.get("l"),
                archive=fields.get("a"),
                codename=fields.get("n"),
                version=fields.get("v"),
            )
            continue
        package_file = _PACKAGE_FILE.match(line)
        source = package_file["source"] if package_file is not None else None
    return files


def parse_policy(text: str) -> dict[str, Policy]:
    """Each package's installed and candidate version and version table.

    Keyed as apt prints the package: ``name`` for the native architecture (and ``all``),
    ``name:arch`` for a foreign one.
    """
    policies: dict[str, Policy] = {}
    current: Policy | None = None
    version: str | None = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = policies.setdefault(line[:-1], Policy())
            version = None
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("Installed: "):
            current.installed = _version_or_none(stripped.removeprefix("Installed: "))
        elif stripped.startswith("Candidate: "):
            current.candidate = _version_or_none(stripped.removeprefix("Candidate: "))
        elif (row := _VERSION_ROW.match(line)) is not None:
            version = row["version"]
            current.versions.setdefault(version, [])
        elif version is not None and (package_file := _PACKAGE_FILE.match(line)) is not None:
            current.versions[version].append(package_file["source"])
    return policies


def _version_or_none(text: str) -> str | None:
    return None if text.strip() in {"", "(none)"} else text.strip()


def policy_key(name: str, architecture: str, native: str) -> str:
    """How apt names a package in policy output (and how to ask for it)."""
    return name if architecture in {native, "all"} else f"{name}:{architecture}"


def _newer(version: str, than: str) -> bool:
    try:
        return debversion.compare(version, than) > 0
    except debversion.InvalidVersionError:
        return False


def _security_version(policy: Policy, installed: str, files: dict[str, Release]) -> str | None:
    """The newest version above ``installed`` that a security archive offers, if any."""
    fixes = [
        version
        for version, sources in policy.versions.items()
        if _newer(version, installed) and any(files.get(s, Release()).security for s in sources)
    ]
    return max(fixes, key=debversion.sort_key) if fixes else None


def _origins(policy: Policy, version: str, files: dict[str, Release]) -> list[str]:
    origins = dict.fromkeys(
        files[s].describe() for s in policy.versions.get(version, []) if s in files
    )
    return list(origins)[:_MAX_ORIGINS]


def classify(
    simulation: list[PendingUpdate],
    installed: list[InstalledPackage],
    policies: dict[str, Policy],
    files: dict[str, Release],
    native: str,
) -> tuple[list[PendingUpdate], list[PendingUpdate]]:
    """(updates, new installs): the simulation's upgrades completed by apt's policy.

    Upgrades are marked security when a security archive offers any newer version; packages
    with a newer candidate (or a newer security version) that apt will not install are added
    as held, kept back or pinned, with the reason.
    """
    simulated = {(u.name, u.architecture) for u in simulation}
    updates: list[PendingUpdate] = []
    new_installs: list[PendingUpdate] = []
    for update in simulation:
        if update.installed_version is None:
            new_installs.append(update)
            continue
        policy = policies.get(policy_key(update.name, update.architecture, native))
        fix = None
        if policy is not None:
            fix = _security_version(policy, update.installed_version, files)
        updates.append(
            update.model_copy(
                update={"security": update.security or fix is not None, "security_version": fix}
            )
        )
    twins: dict[str, list[InstalledPackage]] = {}
    for package in installed:
        twins.setdefault(package.name, []).append(package)
    for package in installed:
        if (package.name, package.architecture) in simulated:
            continue
        key = policy_key(package.name, package.architecture, native)
        policy = policies.get(key)
        if policy is None or policy.installed is None:
            continue
        held_back = _held_back(package, policy, files, twins[package.name], policies, native)
        if held_back is not None:
            updates.append(held_back)
    updates.sort(key=lambda u: (u.name, u.architecture))
    new_installs.sort(key=lambda u: (u.name, u.architecture))
    return updates, new_installs


def _held_back(
    package: InstalledPackage,
    policy: Policy,
    files: dict[str, Release],
    twins: list[InstalledPackage],
    policies: dict[str, Policy],
    native: str,
) -> PendingUpdate | None:
    installed = policy.installed or package.version
    fix = _security_version(policy, installed, files)
    candidate = policy.candidate
    how: HeldBack
    if candidate is not None and _newer(candidate, installed):
        if package.held:
            how, reason = "held", "on hold (apt-mark hold / dpkg selection hold)"
        else:
            how, reason = (
                "kept-back",
                _kept_back_reason(package, candidate, twins, policies, native),
            )
    elif fix is not None:
        how = "pinned"
        reason = f"apt's pin priorities keep the candidate at {candidate or 'none'}"
        candidate = fix
    else:
        return None
    return PendingUpdate(
        name=package.name,
        architecture=package.architecture,
        installed_version=installed,
        candidate_version=candidate,
        security=fix is not None,
        origins=_origins(policy, candidate, files),
        security_version=fix,
        held_back=how,
        reason=reason,
    )


def _kept_back_reason(
    package: InstalledPackage,
    candidate: str,
    twins: list[InstalledPackage],
    policies: dict[str, Policy],
    native: str,
) -> str:
    for twin in twins:
        if twin.architecture == package.architecture:
            continue
        twin_policy = policies.get(policy_key(twin.name, twin.architecture, native))
        twin_candidate = twin_policy.candidate if twin_policy is not None else None
        if twin_candidate != candidate:
            return (
                f"kept back: {twin.name}:{twin.architecture} is installed too and cannot "
                f"follow to {candidate} (its candidate: {twin_candidate or 'none'})"
            )
    return "kept back: apt's resolver would not upgrade it (apt-get -s install names why)"
