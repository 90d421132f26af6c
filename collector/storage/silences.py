"""Silent hosts: what the housekeeper noticed about hosts that do not report, so that each
silence is announced once, and its end once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import and_, delete, insert, or_, select, update

from fleetwatch.collector.storage.tables import host_silences, hosts

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

    from sqlalchemy import Connection


PENDING = "pending"  # seen silent, within its grace: not announced yet


@dataclass(frozen=True)
class Silence:
    host_id: str
    noticed_at: datetime
    condition: str  # pending (seen silent, not yet announced), never_reported or stale
    announced_at: datetime | None = None


class Silences:
    """The ``host_silences`` table."""

    def all(self, conn: Connection) -> dict[str, Silence]:
        return {r.host_id: Silence(**r._mapping) for r in conn.execute(select(host_silences))}

    def to_check(self, conn: Connection) -> dict[str, Silence]:
        """The silences that may have changed without a policy change: those not announced
        yet (pending), those of hosts that reported since they were noticed, and those of hosts
        that enrolled since, and did not report yet.
        An announced silence of a host not heard from since stays as it is."""
        heard = hosts.c.host_id == host_silences.c.host_id
        query = (
            select(host_silences)
            .outerjoin(hosts, heard)
            .where(
                or_(
                    host_silences.c.condition == PENDING,
                    hosts.c.last_received_at > host_silences.c.noticed_at,
                    and_(
                        hosts.c.last_received_at.is_(None),
                        hosts.c.enrolled_at > host_silences.c.noticed_at,
                    ),
                )
            )
        )
        return {r.host_id: Silence(**r._mapping) for r in conn.execute(query)}

    def add(self, conn: Connection, new: Sequence[Silence]) -> None:
        if new:
            conn.execute(
                insert(host_silences),
                [
                    {
                        "host_id": s.host_id,
                        "noticed_at": s.noticed_at,
                        "condition": s.condition,
                        "announced_at": s.announced_at,
                    }
                    for s in new
                ],
            )

    def announce(self, conn: Connection, host_id: str, condition: str, at: datetime) -> None:
        conn.execute(
            update(host_silences)
            .where(host_silences.c.host_id == host_id)
            .values(condition=condition, announced_at=at)
        )

    def forget(self, conn: Connection, host_ids: Iterable[str]) -> None:
        wanted = sorted(set(host_ids))
        if wanted:
            conn.execute(delete(host_silences).where(host_silences.c.host_id.in_(wanted)))
