"""Debian and Ubuntu: the dpkg database for what is installed, ``apt-get -s`` for updates.

What dpkg's status file says is parsed here; what apt prints is parsed in `apt`.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fleetwatch import debversion
from fleetwatch.agent.commands import CommandRunner, run_command
from fleetwatch.agent.package_managers.apt import (
    InstalledPackage,
    Policy,
    classify,
    parse_package_files,
    parse_policy,
    parse_simulation,
    policy_key,
)
from fleetwatch.schema import Package, PackagesData, UpdatesData

if TYPE_CHECKING:
    from collections.abc import Iterator

# dpkg states in which a package's files are on disk.
_PRESENT_STATES = frozenset(
    {
        "installed",
        "half-configured",
        "unpacked",
        "half-installed",
        "triggers-awaited",
        "triggers-pending",
    }
)
_KERNEL_PREFIX = "linux-image-"
APT_TIMEOUT = 300.0
POLICY_BATCH = 5000  # packages per `apt-cache policy` call
# Part of the updates fingerprint: a new way of reading apt's answer makes an upgraded agent
# ask again rather than report a cached answer read the old way.
UPDATES_LOGIC = "apt-policy-1"


_FIELDS = frozenset({"Package", "Status", "Version", "Architecture", "Source"})


def _paragraphs(text: str) -> Iterator[dict[str, str]]:
    """The fields fleetwatch reads of each paragraph of a dpkg status file."""
    fields: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line:
            if fields:
                yield fields
                fields = {}
            continue
        if line[0] in " \t":
            continue  # a continuation line of a multi-line field we do not read
        key, sep, value = line.partition(":")
        if sep and key in _FIELDS:
            fields[key] = value.strip()


def parse_status(text: str) -> list[Package]:
    """The installed packages of a dpkg status file, sorted by name and architecture."""
    packages = [p for p in map(_package_from_fields, _paragraphs(text)) if p is not None]
    packages.sort(key=lambda p: (p.name, p.architecture))
    return packages


def installed_for_policy(text: str) -> list[InstalledPackage]:
    """The installed packages of a dpkg status file and whether each is on hold."""
    packages = []
    for fields in _paragraphs(text):
        # "want flag state": "hold ok installed" for a package on hold
        status = fields.get("Status", "").split()
        if (
            status[-1:]
            and status[-1] in _PRESENT_STATES
            and {"Package", "Version"} <= fields.keys()
        ):
            packages.append(
                InstalledPackage(
                    name=fields["Package"],
                    architecture=fields.get("Architecture", "all"),
                    version=fields["Version"],
                    held=status[0] == "hold",
                )
            )
    return packages


def _package_from_fields(fields: dict[str, str]) -> Package | None:
    state = fields.get("Status", "").rsplit(" ", 1)[-1]
    if state not in _PRESENT_STATES or "Package" not in fields or "Version" not in fields:
        return None
    version = fields["Version"]
    source, source_version = fields["Package"], version
    if "Source" in fields:
        # "Source: name" or "Source: name (version)" when it differs from the binary's
        name_part, _, rest = fields["Source"].partition(" (")
        source = name_part.strip() or source
        if rest.endswith(")"):
            source_version = rest[:-1].strip() or version
    return Package(
        fields["Package"], version, fields.get("Architecture", "all"), source, source_version
    )


def _stat_key(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return f"{path}:absent"
    return f"{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _tree_keys(directory: Path) -> list[str]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return [f"{directory}:absent"]
    return [_stat_key(Path(e.path)) for e in entries if e.is_file()]


class Dpkg:
    """The dpkg database with apt for updates.

    Every path and the command runner can be pointed elsewhere, which is how tests feed it
    files captured from real hosts.
    """

    name = "dpkg"

    def __init__(
        self,
        *,
        status_path: Path = Path("/var/lib/dpkg/status"),
        lists_dir: Path = Path("/var/lib/apt/lists"),
        apt_config_dir: Path = Path("/etc/apt"),
        run: CommandRunner = run_command,
    ) -> None:
        self.status_path = status_path
        self.lists_dir = lists_dir
        self.apt_config_dir = apt_config_dir
        self.run = run

    def installed_packages(self) -> PackagesData:
        text = self.status_path.read_text(encoding="utf-8", errors="replace")
        return PackagesData(manager=self.name, packages=parse_status(text))

    def pending_updates(self) -> UpdatesData:
        output = self.run(
            [
                "apt-get",
                "-s",
                "-o",
                "Debug::NoLocking=true",
                "-o",
                "APT::Get::Show-User-Simulation-Note=false",
                "dist-upgrade",
            ],
            APT_TIMEOUT,
        )
        simulation = parse_simulation(output)
        installed = installed_for_policy(
            self.status_path.read_text(encoding="utf-8", errors="replace")
        )
        native = self.run(["dpkg", "--print-architecture"], APT_TIMEOUT).strip()
        files = parse_package_files(self.run(["apt-cache", "policy"], APT_TIMEOUT))
        keys = sorted({policy_key(p.name, p.architecture, native) for p in installed})
        policies: dict[str, Policy] = {}
        for start in range(0, len(keys), POLICY_BATCH):  # argv stays far below ARG_MAX
            batch = keys[start : start + POLICY_BATCH]
            policies.update(parse_policy(self.run(["apt-cache", "policy", *batch], APT_TIMEOUT)))
        updates, new_installs = classify(simulation, installed, policies, files, native)
        return UpdatesData(
            manager="apt",
            index_refreshed_at=self.index_refreshed_at(),
            updates=updates,
            new_installs=new_installs,
        )

    def index_refreshed_at(self) -> datetime | None:
        """The time of the newest package index (apt stamps each Release file with it)."""
        newest = None
        try:
            entries = list(os.scandir(self.lists_dir))
        except OSError:
            return None
        for entry in entries:
            if entry.name.endswith(("_InRelease", "_Release")) and entry.is_file():
                mtime = entry.stat().st_mtime
                newest = mtime if newest is None else max(newest, mtime)
        return None if newest is None else datetime.fromtimestamp(newest, UTC)

    def packages_signature(self) -> str:
        return _stat_key(self.status_path)

    def updates_signature(self) -> str:
        keys = [
            UPDATES_LOGIC,
            _stat_key(self.status_path),
            *_tree_keys(self.lists_dir),
            _stat_key(self.apt_config_dir / "sources.list"),
            *_tree_keys(self.apt_config_dir / "sources.list.d"),
            _stat_key(self.apt_config_dir / "preferences"),
            *_tree_keys(self.apt_config_dir / "preferences.d"),
            *_tree_keys(self.apt_config_dir / "apt.conf.d"),
        ]
        return hashlib.sha256("\n".join(keys).encode()).hexdigest()

    def kernel_package_version(self, packages: PackagesData, release: str) -> str | None:
        wanted = _KERNEL_PREFIX + release
        for package in packages.rows():
            if package.name == wanted:
                return package.version
        return None

    def newest_kernel(self, packages: PackagesData) -> tuple[str, str] | None:
        kernels = [
            (p.name.removeprefix(_KERNEL_PREFIX), p.version)
            for p in packages.rows()
            # linux-image-6.1.0-28-amd64, not the linux-image-amd64 metapackage
            if p.name.startswith(_KERNEL_PREFIX) and p.name[len(_KERNEL_PREFIX) :][:1].isdigit()
        ]
        if not kernels:
            return None
        return max(kernels, key=lambda k: debversion.sort_key(k[1]))
