"""Installed packages, read from the package manager's database when it changed."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetwatch.agent.package_managers import PackageManager
    from fleetwatch.schema import PackagesData, SectionName


class InstalledPackages:
    """The installed-package list, re-read only when the package database changed.

    Shared by the packages and system collectors, which may ask for it at the same time.
    """

    def __init__(self, manager: PackageManager) -> None:
        self.manager = manager
        self._lock = threading.Lock()
        self._signature: str | None = None
        self._data: PackagesData | None = None

    def get(self) -> PackagesData:
        with self._lock:
            signature = self.manager.packages_signature()
            if self._data is None or signature != self._signature:
                self._data = self.manager.installed_packages()
                self._signature = signature
            return self._data


class PackagesCollector:
    name: SectionName = "packages"

    def __init__(self, installed: InstalledPackages) -> None:
        self.installed = installed

    def collect(self) -> PackagesData:
        return self.installed.get()
