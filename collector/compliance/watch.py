"""Silent hosts: a host that never reported, or stopped reporting, is announced once; when
it reports again, that is announced once too.

A host is silent when its latest report is older than its ``max_report_age`` (stale), or
when it has none: an enrolled host ``max_report_age`` after it enrolled, a host only listed
in the policy ``max_report_age`` after the collector first noticed it (never reported).
`storage.silences` remembers what was noticed and announced. Run by the housekeeper, once
per fleet (`Casework.tick`), every few seconds, and never reading every host of the fleet:

- a *full* round (the first in a process, after a policy change, and every
  ``FULL_ROUND_EVERY``) reads the hosts quiet for longer than the shortest report age the
  policy allows, every silence, and the policy's hosts not enrolled;
- the rounds between read only what can have changed without a policy change: hosts quiet
  for that long with no silence noticed, silences not announced yet, and silences of hosts
  that reported or enrolled since they were noticed. A fleet with many hosts silent for
  good (switched off, not yet removed) costs these rounds nothing per such host.

Only when each host was last heard from is read (`storage.hosts.Heard`), never its sections.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fleetwatch.collector.compliance.lifecycle import iso
from fleetwatch.collector.storage.events import NewEvent
from fleetwatch.collector.storage.silences import PENDING, Silence

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Connection

    from fleetwatch.collector.compliance.policy import Policy
    from fleetwatch.collector.storage.hosts import Heard
    from fleetwatch.collector.storage.store import Store

AGE = "max_report_age"
# A round that reads every silence again, to catch what the rounds between cannot see: hosts
# deleted, a silence's host enrolled again with an earlier clock.
FULL_ROUND_EVERY = timedelta(minutes=10)


_shortest: dict[str, float] = {}  # by policy digest


def shortest_age(policy: Policy) -> float:
    """The shortest report age the policy allows any host (seconds)."""
    if policy.digest not in _shortest:
        layers = [*policy.groups.values(), *policy.hosts.values()]
        ages = [layer.max_report_age for layer in layers if AGE in layer.model_fields_set]
        _shortest.clear()  # one policy in force at a time
        _shortest[policy.digest] = min([policy.defaults.max_report_age, *ages])
    return _shortest[policy.digest]


def _condition(
    host: Heard | None, noticed: datetime | None, age: timedelta, now: datetime
) -> str | None:
    """never_reported, stale, pending (silent, within its grace) or None (reporting)."""
    if host is not None and host.observed_at is not None:
        return "stale" if now - host.observed_at > age else None
    since = host.enrolled_at if host is not None else (noticed or now)
    return "never_reported" if now - since >= age else PENDING


def _host_event(
    kind: str,
    *,
    host_id: str,
    host: Heard | None,
    unit: str | None,
    age: timedelta,
    now: datetime,
) -> NewEvent:
    detail: dict[str, Any] = {
        "enrolled": host is not None,
        "last_report_at": iso(host.observed_at) if host else None,
        "max_report_age": age.total_seconds(),
    }
    return NewEvent(at=now, kind=kind, host_id=host_id, unit=unit, detail=detail)


class HostWatch:
    """Announces hosts that fell silent and those that came back (see the module); holds when
    this process last made a full round, and by which policy."""

    def __init__(self) -> None:
        self._full: tuple[str, datetime] | None = None  # policy digest, when

    def _full_due(self, policy: Policy, now: datetime) -> bool:
        if self._full is None:
            return True
        digest, at = self._full
        return digest != policy.digest or not at <= now < at + FULL_ROUND_EVERY

    def round(
        self, conn: Connection, store: Store, policy: Policy, now: datetime
    ) -> list[NewEvent]:
        """One round: the events to append (their silences are written here)."""
        cutoff = now - timedelta(seconds=shortest_age(policy))
        if self._full_due(policy, now):
            silences = store.silences.all(conn)
            hosts = store.hosts.heard_before(conn, cutoff)
            hosts.update(store.hosts.heard_of(conn, set(silences) - set(hosts)))
            unenrolled = set(policy.hosts) - store.hosts.enrolled_among(conn, policy.hosts)
            self._full = (policy.digest, now)
        else:
            silences = store.silences.to_check(conn)
            hosts = store.hosts.heard_before(conn, cutoff, unsilenced=True)
            hosts.update(store.hosts.heard_of(conn, silences))
            unenrolled = {h for h in silences if h not in hosts and h in policy.hosts}
        return _announce(conn, store, policy, now, hosts, silences, unenrolled)


def _announce(
    conn: Connection,
    store: Store,
    policy: Policy,
    now: datetime,
    hosts: dict[str, Heard],
    silences: dict[str, Silence],
    unenrolled: set[str],
) -> list[NewEvent]:
    """Announce what changed among the hosts and silences a round read."""
    events: list[NewEvent] = []
    new: list[Silence] = []
    back: list[str] = []
    for host_id in sorted(set(hosts) | unenrolled):
        host = hosts.get(host_id)
        resolved = policy.for_host(host_id)
        age = timedelta(seconds=resolved.baseline.max_report_age)
        silence = silences.get(host_id)
        condition = _condition(host, silence.noticed_at if silence else None, age, now)
        unit = resolved.unit or (host.unit if host else None)

        event = functools.partial(
            _host_event, host_id=host_id, host=host, unit=unit, age=age, now=now
        )
        announced = silence is not None and silence.announced_at is not None
        if condition is None or (announced and silence and condition != silence.condition):
            if silence is not None:
                back.append(host_id)
                if announced:
                    events.append(event("host_back"))
            if condition is None:
                continue
            silence = None
        if silence is None:
            if condition == PENDING:
                new.append(Silence(host_id, now, PENDING))
            else:
                new.append(Silence(host_id, now, condition, now))
                events.append(event(f"host_{condition}"))
        elif silence.condition == PENDING and condition != PENDING:
            store.silences.announce(conn, host_id, condition, now)
            events.append(event(f"host_{condition}"))
    gone = [h for h in silences if h not in hosts and h not in policy.hosts]
    store.silences.forget(conn, back + gone)
    store.silences.add(conn, new)
    return events
