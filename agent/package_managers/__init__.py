"""Package managers behind one interface, so rpm and apk hosts can follow dpkg ones.

A package manager answers three questions: what is installed, what would be upgraded (and
which of those upgrades are security fixes), and which kernels are installed. It also gives
cheap fingerprints of its inputs so that the expensive questions are asked only when the
answer can have changed.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fleetwatch.agent.commands import CommandRunner
    from fleetwatch.schema import PackagesData, UpdatesData


class PackageManager(Protocol):
    name: str

    def installed_packages(self) -> PackagesData:
        """Every installed package."""
        ...

    def pending_updates(self) -> UpdatesData:
        """Upgrades that are available, each marked security or not."""
        ...

    def packages_signature(self) -> str:
        """A fingerprint that changes whenever the installed packages may have changed."""
        ...

    def updates_signature(self) -> str:
        """A fingerprint that changes whenever the pending updates may have changed."""
        ...

    def kernel_package_version(self, packages: PackagesData, release: str) -> str | None:
        """The package version of the kernel with this ``uname -r`` release, if packaged."""
        ...

    def newest_kernel(self, packages: PackagesData) -> tuple[str, str] | None:
        """(release, package version) of the newest installed kernel package."""
        ...


class NoPackageManagerError(RuntimeError):
    """No supported package manager on this host."""


def detect(run: CommandRunner | None = None) -> PackageManager:
    """The package manager of this host; raise NoPackageManagerError when none is supported."""
    from fleetwatch.agent.package_managers.dpkg import Dpkg  # noqa: PLC0415  (dpkg imports this module)

    if shutil.which("dpkg") and shutil.which("apt-get"):
        return Dpkg(run=run) if run else Dpkg()
    msg = "no supported package manager found (looked for dpkg with apt-get)"
    raise NoPackageManagerError(msg)
