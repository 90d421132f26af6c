"""Which vulnerabilities a host carries: its source packages against the data, in dpkg order.

The data is held in memory indexed by (release codename, source package), so matching a host
costs one dictionary look-up per installed source package, and the version comparisons of
the few packages that have entries. Which entries a (release, source, version) falls under,
and the verdicts for a package no pending update touches, are kept too: a fleet runs a few
versions of each package, so after the first host most are answered by a look-up.

A host is affected by an entry when the installed source version sorts below the release's
fixed version, or when the release's status is open (or undetermined). The kernel is the
exception: what runs is what counts, so the ``linux`` source is matched at the version of
the booted kernel's image package, and a fixed image installed but not booted says so.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from fleetwatch.collector.vulns.model import SEVERITY_RANK, Entry
from fleetwatch.debversion import InvalidVersionError, compare, parse, sort_key

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from fleetwatch.collector.vulns.model import Dataset
    from fleetwatch.schema import PackagesData, PendingUpdate, SystemData, UpdatesData

KERNEL_SOURCE = "linux"
_CACHE_LIMIT = 200_000


@dataclass(frozen=True, slots=True)
class Match:
    """One vulnerability a host carries, in one of its source packages."""

    vuln: str
    source: str
    release: str
    installed_version: str
    fixed_version: str | None
    status: str
    severity: str | None
    urgency: str | None
    cvss: float | None
    fixable: bool
    """A pending update reaches the fixed version (for the kernel: or a fixed image is
    installed, and only a reboot is missing)."""
    exploited: bool
    flags: tuple[str, ...]
    advisories: tuple[str, ...]
    fix_since: datetime | None
    """When the fix became available: its advisory's date, else when this collector's data
    first had it; None when it came with the first data imported (published long before)."""
    binaries: tuple[str, ...]
    note: str | None = None

    @property
    def severity_rank(self) -> int:
        """Order of severity; an unrated vulnerability ranks as medium."""
        return SEVERITY_RANK.get(self.severity or "medium", 1)


def _before(installed: str, fixed: str) -> bool | None:
    """Whether ``installed`` sorts before ``fixed``; None when either is no dpkg version."""
    try:
        return compare(installed, fixed) < 0
    except InvalidVersionError:
        return None


def _merge(entries: list[Entry]) -> Entry:
    """One entry from what several sources say of one (release, source, vulnerability).

    The tracker's status and urgency win (it is Debian's own verdict per release); OSV adds
    the advisories, their dates and a CVSS score. Without the tracker, the record with a fix
    wins over an open one.
    """
    entries = sorted(
        entries, key=lambda e: (e.advisories != () or e.cvss is not None, e.status != "resolved")
    )
    base = entries[0]
    advisories = tuple(sorted({a for e in entries for a in e.advisories}))
    dates = [e.published for e in entries if e.published is not None]
    cvss = next((e.cvss for e in entries if e.cvss is not None), None)
    severity = base.severity or next((e.severity for e in entries if e.severity), None)
    known = [e.known_since for e in entries if e.known_since is not None]
    return replace(
        base,
        advisories=advisories,
        published=min(dates) if dates else None,
        cvss=cvss,
        severity=severity,
        known_since=min(known) if len(known) == len(entries) else None,
    )


class VulnIndex:
    """Imported vulnerability data, indexed for matching; ``generation`` names its content."""

    def __init__(self, datasets: Iterable[Dataset] = (), generation: str = "") -> None:
        self.generation = generation
        self.exploited: dict[str, str] = {}
        # (release, source) -> vulnerability -> entry; what several data sets say of one
        # vulnerability is merged once all are read
        index: dict[tuple[str, str], dict[str, Entry]] = {}
        several: dict[tuple[str, str, str], list[Entry]] = {}
        names = []
        for dataset in datasets:
            names.append(dataset.name)
            self.exploited.update(dataset.exploited)
            for entry in dataset.entries:
                key = (entry.release, entry.source)
                by_vuln = index.get(key)
                if by_vuln is None:
                    by_vuln = index[key] = {}
                have = by_vuln.get(entry.vuln)
                if have is None:
                    by_vuln[entry.vuln] = entry
                else:
                    several.setdefault((*key, entry.vuln), [have]).append(entry)
        for (release, source, vuln), group in several.items():
            index[release, source][vuln] = _merge(group)
        self.names = tuple(names)
        self._index = {key: tuple(by_vuln.values()) for key, by_vuln in index.items()}
        self._affected: dict[tuple[str, str, str], tuple[Entry, ...]] = {}
        self._matched: dict[tuple[str, ...], tuple[Match, ...]] = {}

    def __bool__(self) -> bool:
        return bool(self._index)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._index.values())

    def entries(self, release: str, source: str) -> tuple[Entry, ...]:
        """What the data says of a source package in a release."""
        return self._index.get((release, source), ())

    def affecting(self, release: str, source: str, version: str) -> tuple[Entry, ...]:
        """The entries a source package at this version falls under in a release."""
        key = (release, source, version)
        found = self._affected.get(key)
        if found is None:
            found = tuple(
                entry
                for entry in self._index.get((release, source), ())
                if entry.status != "resolved"
                or (entry.fixed_version is not None and _before(version, entry.fixed_version))
            )
            if len(self._affected) >= _CACHE_LIMIT:
                self._affected.clear()
            self._affected[key] = found
        return found

    def match(
        self,
        release: str | None,
        packages: PackagesData,
        updates: UpdatesData | None = None,
        system: SystemData | None = None,
    ) -> list[Match]:
        """Every vulnerability the host's installed source packages fall under."""
        if not release or not self._index:
            return []
        installed: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        images: dict[str, str] = {}
        for package in packages.rows():
            if package.name.startswith("linux-image-") and package.source.startswith("linux"):
                # signed images are built from linux-signed-ARCH; the data tracks ``linux``
                images[package.name] = package.version
                continue
            installed[package.source][package.source_version].append(package.name)
        # upgrades (held-back ones too: the fix is there, apt will not take it by itself)
        # and new installs (a new kernel image), by binary package
        pending = {
            u.name: u for u in ([*updates.updates, *updates.new_installs] if updates else [])
        }
        kernel_note = self._kernel(installed, images, system)
        matches: list[Match] = []
        for source, versions in installed.items():
            if (release, source) not in self._index:
                continue
            for version, binaries in versions.items():
                plain = source != KERNEL_SOURCE and not any(b in pending for b in binaries)
                key = (release, source, version, *binaries)
                found = self._matched.get(key) if plain else None
                if found is None:
                    found = tuple(
                        self._match(entry, version, binaries, pending, images, kernel_note)
                        for entry in self.affecting(release, source, version)
                    )
                    if plain:
                        # the same package at the same version on the next host: same verdict
                        if len(self._matched) >= _CACHE_LIMIT:
                            self._matched.clear()
                        self._matched[key] = found
                matches.extend(found)
        matches.sort(key=lambda m: (m.source, m.vuln))
        return matches

    @staticmethod
    def _kernel(
        installed: dict[str, dict[str, list[str]]],
        images: dict[str, str],
        system: SystemData | None,
    ) -> str | None:
        """Put the running kernel's image in place of the ``linux`` source; say what was done."""
        if not images:
            return None
        running = system.kernel if system else None
        name = next(
            (
                n
                for n in (f"linux-image-{running}", f"linux-image-{running}-unsigned")
                if n in images
            ),
            None,
        )
        if name is None:
            # the booted kernel is not from a package: judge the newest image installed
            newest = max(images, key=lambda n: _sortable(images[n]))
            installed[KERNEL_SOURCE] = {images[newest]: [newest]}
            return f"running kernel {running or '?'} is not from an installed package"
        installed[KERNEL_SOURCE] = {images[name]: [name]}
        return None

    def _match(
        self,
        entry: Entry,
        version: str,
        binaries: list[str],
        pending: dict[str, PendingUpdate],
        images: dict[str, str],
        kernel_note: str | None,
    ) -> Match:
        fixed = entry.fixed_version
        fixable = False
        note = None
        if fixed is not None:
            reaching = [
                pending[name]
                for name in binaries
                if name in pending and _before(pending[name].candidate_version, fixed) is False
            ]
            fixable = bool(reaching)
            if reaching and all(u.held_back for u in reaching):
                first = reaching[0]
                note = f"the fix is not installed by apt: {first.name} {first.held_back}" + (
                    f" ({first.reason})" if first.reason else ""
                )
            if entry.source == KERNEL_SOURCE and images:
                booted = set(binaries)
                fixed_images = sorted(
                    n for n, v in images.items() if n not in booted and _before(v, fixed) is False
                )
                new_images = sorted(
                    n
                    for n, u in pending.items()
                    if n.startswith("linux-image-") and _before(u.candidate_version, fixed) is False
                )
                if fixed_images:
                    fixable = True
                    note = f"fixed kernel {fixed_images[-1]} is installed but not booted: reboot"
                elif new_images:
                    fixable = True
                note = note or kernel_note
        return Match(
            vuln=entry.vuln,
            source=entry.source,
            release=entry.release,
            installed_version=version,
            fixed_version=fixed,
            status=entry.status,
            severity=entry.severity,
            urgency=entry.urgency,
            cvss=entry.cvss,
            fixable=fixable,
            exploited=entry.vuln in self.exploited,
            flags=entry.flags,
            advisories=entry.advisories,
            fix_since=entry.published or entry.known_since,
            binaries=tuple(sorted(binaries)),
            note=note,
        )


def _sortable(version: str) -> Any:
    """A sort key for a version; an invalid one sorts first."""
    try:
        parse(version)
    except InvalidVersionError:
        return sort_key("0")
    return sort_key(version)
