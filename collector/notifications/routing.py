"""Routing: which targets an event goes to, and whether it waits for a daily digest.

An event about a unit's hosts goes to the unit's own contacts (its e-mail addresses and the
targets it names, immediately or in its daily digest, as the unit chose) and to every target
of every route of the notifications file that matches it (by unit, severity, rule and kind).
A target reached both ways gets the event once, immediately if either way says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from fleetwatch.collector.notifications.config import DEFAULT_KINDS
from fleetwatch.collector.notifications.units import email_target

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fleetwatch.collector.notifications.config import Notifications
    from fleetwatch.collector.notifications.units import UnitContacts
    from fleetwatch.collector.storage.events import EventRow

log = structlog.get_logger(__name__)

# (unit, target) pairs already warned about: a storm of events would repeat each warning
_warned: set[tuple[str, str]] = set()


def _warn_once(message: str, unit: str, target: str) -> None:
    if (unit, target) not in _warned:
        _warned.add((unit, target))
        log.warning(message, unit=unit, target=target)


@dataclass(frozen=True)
class Destination:
    target: str
    daily: bool  # waits for the unit's daily digest


def destinations(
    event: EventRow, notifications: Notifications, units: Mapping[str, UnitContacts]
) -> list[Destination]:
    """The targets ``event`` goes to, each once, in a stable order."""
    chosen: dict[str, bool] = {}  # target -> daily

    def add(target: str, *, daily: bool) -> None:
        chosen[target] = chosen.get(target, daily) and daily

    unit = units.get(event.unit) if event.unit else None
    if unit is not None and event.kind in DEFAULT_KINDS:
        daily = unit.digest == "daily"
        if unit.emails:
            if notifications.smtp is not None:
                add(email_target(unit.name), daily=daily)
            else:
                _warn_once("unit has e-mail contacts but no [smtp] is configured", unit.name, "")
        for name in unit.targets:
            if name in notifications.targets:
                add(name, daily=daily)
            else:
                _warn_once("unit names a target the notifications file lacks", unit.name, name)
    for route in notifications.routes:
        if route.matches(event.kind, event.unit, event.severity, event.rule):
            for name in route.targets:
                add(name, daily=route.digest == "daily")
    return [Destination(target, daily) for target, daily in chosen.items()]
