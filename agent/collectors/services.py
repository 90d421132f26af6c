"""systemd service units: load, active and sub state, and whether each is enabled.

A host without systemd as its init system gets a section that says so; no state is invented.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fleetwatch.agent.commands import CommandRunner, run_command
from fleetwatch.schema import ServicesData, ServiceUnit

if TYPE_CHECKING:
    from fleetwatch.schema import SectionName

SYSTEMCTL_TIMEOUT = 30.0
_BULLETS = ("\u25cf", "*", "\u00d7")  # the marks systemctl puts before troubled units


def parse_list_units(text: str) -> dict[str, tuple[str, str, str]]:
    """``systemctl list-units --plain --no-legend``: unit -> (load, active, sub)."""
    units = {}
    for raw in text.splitlines():
        line = raw.strip()
        for bullet in _BULLETS:
            line = line.removeprefix(bullet).lstrip()
        fields = line.split(None, 4)
        if len(fields) >= 4 and "." in fields[0]:
            units[fields[0]] = (fields[1], fields[2], fields[3])
    return units


def parse_list_unit_files(text: str) -> dict[str, str]:
    """``systemctl list-unit-files --no-legend``: unit file -> state (enabled, static...)."""
    files = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and "." in fields[0]:
            files[fields[0]] = fields[1]
    return files


def _template_of(unit: str) -> str | None:
    # getty@tty1.service is enabled or not through getty@.service
    name, at, rest = unit.partition("@")
    if not at:
        return None
    return f"{name}@.{rest.rsplit('.', 1)[-1]}"


class ServicesCollector:
    name: SectionName = "services"

    def __init__(
        self,
        run: CommandRunner = run_command,
        systemd_marker: Path = Path("/run/systemd/system"),
    ) -> None:
        self.run = run
        # sd_booted(): systemd is the init system exactly when this directory exists
        self.systemd_marker = systemd_marker

    def collect(self) -> ServicesData:
        if not self.systemd_marker.is_dir():
            return ServicesData(
                available=False,
                reason=f"systemd is not the init system on this host (no {self.systemd_marker})",
            )
        loaded = parse_list_units(
            self.run(
                [
                    "systemctl",
                    "list-units",
                    "--type=service",
                    "--all",
                    "--plain",
                    "--no-legend",
                    "--no-pager",
                ],
                SYSTEMCTL_TIMEOUT,
            )
        )
        files = parse_list_unit_files(
            self.run(
                [
                    "systemctl",
                    "list-unit-files",
                    "--type=service",
                    "--no-legend",
                    "--no-pager",
                ],
                SYSTEMCTL_TIMEOUT,
            )
        )
        units = []
        for name, (load, active, sub) in loaded.items():
            template = _template_of(name)
            enabled = files.get(name) or (files.get(template) if template else None)
            units.append(ServiceUnit(name=name, load=load, active=active, sub=sub, enabled=enabled))
        for name, state in files.items():
            # installed but not loaded, so certainly not running; templates cannot run at all,
            # and an alias is listed under the name of the unit it points to
            if name not in loaded and not name.endswith("@.service") and state != "alias":
                units.append(ServiceUnit(name=name, active="inactive", sub="dead", enabled=state))
        units.sort(key=lambda u: u.name)
        return ServicesData(manager="systemd", available=True, units=units)
