"""Who the host is, what it runs, and whether it waits for a reboot."""

from __future__ import annotations

import contextlib
import platform
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from fleetwatch import debversion
from fleetwatch.schema import OsRelease, SystemData

if TYPE_CHECKING:
    from collections.abc import Callable

    from fleetwatch.agent.collectors.packages import InstalledPackages
    from fleetwatch.schema import SectionName


def parse_os_release(text: str) -> OsRelease:
    """The fields fleetwatch reports from an os-release file (shell-style KEY=value lines)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value.replace('\\"', '"')
    return OsRelease(
        id=values.get("ID") or None,
        version_id=values.get("VERSION_ID") or None,
        codename=values.get("VERSION_CODENAME") or None,
        pretty_name=(values.get("PRETTY_NAME") or None),
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


class SystemCollector:
    name: SectionName = "system"

    def __init__(  # noqa: PLR0913  (every source can be pointed at a fixture)
        self,
        installed: InstalledPackages | None,
        *,
        os_release: Path = Path("/etc/os-release"),
        machine_id: Path = Path("/etc/machine-id"),
        reboot_required: Path = Path("/var/run/reboot-required"),
        hostname: Callable[[], str] = socket.gethostname,
        kernel: Callable[[], str] = platform.release,
        architecture: Callable[[], str] = platform.machine,
        boot_time: Callable[[], float] = psutil.boot_time,
    ) -> None:
        self.installed = installed
        self.os_release = os_release
        self.machine_id = machine_id
        self.reboot_required = reboot_required
        self.hostname = hostname
        self.kernel = kernel
        self.architecture = architecture
        self.boot_time = boot_time

    def collect(self) -> SystemData:
        release = self.kernel()
        latest, outdated = self._kernel_state(release)
        reboot_since = None
        with contextlib.suppress(OSError):
            reboot_since = datetime.fromtimestamp(
                self.reboot_required.stat().st_mtime, timezone.utc
            )
        packages_text = _read(self.reboot_required.with_name(self.reboot_required.name + ".pkgs"))
        reboot_packages = sorted(
            {p.strip() for p in (packages_text or "").splitlines() if p.strip()}
        )
        machine_id = (_read(self.machine_id) or "").strip() or None
        return SystemData(
            hostname=self.hostname(),
            machine_id=machine_id,
            os=parse_os_release(_read(self.os_release) or ""),
            architecture=self.architecture(),
            kernel=release,
            # whole seconds: the kernel's boot time is stable, its float rendering is not
            boot_time=datetime.fromtimestamp(int(self.boot_time()), timezone.utc),
            reboot_required=reboot_since is not None,
            reboot_required_packages=reboot_packages,
            reboot_required_since=reboot_since,
            kernel_latest_installed=latest,
            kernel_outdated=outdated,
        )

    def _kernel_state(self, release: str) -> tuple[str | None, bool | None]:
        """The newest installed kernel, and whether the running one is older.

        Unknown (None) when the running kernel is not an installed package: a custom or
        container host kernel says nothing about this host's packages.
        """
        if self.installed is None:
            return None, None
        packages = self.installed.get()
        manager = self.installed.manager
        newest = manager.newest_kernel(packages)
        if newest is None:
            return None, None
        running_version = manager.kernel_package_version(packages, release)
        if running_version is None:
            return newest[0], None
        return newest[0], debversion.compare(newest[1], running_version) > 0
