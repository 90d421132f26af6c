"""Paths of the vulnerability data samples, and packages sections to match them against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetwatch.schema import PackagesData, SystemData, UpdatesData

SAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "vulns"
TRACKER = SAMPLES / "tracker-sample.json"
OSV_DEBIAN = SAMPLES / "osv-debian"
OSV_UBUNTU = SAMPLES / "osv-ubuntu-USN-6409-1.json"
KEV = SAMPLES / "kev-sample.json"


def packages(*rows: tuple[str, str, str, str]) -> PackagesData:
    """A packages section from (name, version, source, source version) rows."""
    return PackagesData(
        manager="dpkg",
        packages=[
            (name, version, "amd64", src, src_version) for name, version, src, src_version in rows
        ],
    )


def updates(*pending: tuple[str, str | None, str]) -> UpdatesData:
    """An updates section from (name, installed, candidate) security updates."""
    return UpdatesData(
        manager="apt",
        updates=[
            {
                "name": name,
                "architecture": "amd64",
                "installed_version": installed,
                "candidate_version": candidate,
                "security": True,
            }
            for name, installed, candidate in pending
        ],
    )


def system(kernel: str = "6.1.0-18-amd64", codename: str = "bookworm") -> SystemData:
    data: dict[str, Any] = {
        "hostname": "h",
        "os": {"id": "debian", "version_id": "12", "codename": codename},
        "architecture": "amd64",
        "kernel": kernel,
        "boot_time": "2024-05-01T00:00:00+00:00",
        "reboot_required": False,
    }
    return SystemData.model_validate(data)
