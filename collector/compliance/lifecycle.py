"""A finding's case: how it moves from open to verified, and the event each move writes.

    open ──acknowledge──▶ acknowledged
      │                        │
      └──── a report no longer finds it ────▶ resolved ──held N reports or T time──▶ verified
                                                 │
                  found again before verified ◀──┘  reopened: the same case, same id

Beside the state, a finding may be waived (a waiver in force excuses it: it does not count
against its host and is never overdue) and may have a due date (from ``[due_days]`` when it
opens, or set when acknowledged); an open, unwaived finding past its due date is overdue,
announced once per due date. Every move here returns the events it writes; callers append
them in the transaction that saves the finding, so a change and its event go together.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fleetwatch.collector.storage.events import COLLECTOR, NewEvent

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.response import Verification
    from fleetwatch.collector.storage.findings import FindingRow
    from fleetwatch.collector.storage.waivers import WaiverRow


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def finding_event(
    kind: str,
    row: FindingRow,
    unit: str | None,
    at: datetime,
    actor: str = COLLECTOR,
    **detail: Any,
) -> NewEvent:
    """An event about a finding, with the finding's coordinates and what a reader of the log
    needs to tell someone without looking the finding up."""
    values = {
        "detail": row.detail,
        "state": row.state,
        "due_at": iso(row.due_at),
        "first_seen": iso(row.first_seen),
        "waiver_id": row.waiver_id,
    }
    values.update({k: iso(v) if isinstance(v, datetime) else v for k, v in detail.items()})
    return NewEvent(
        at=at,
        kind=kind,
        actor=actor,
        host_id=row.host_id,
        unit=unit,
        finding_id=row.id,
        rule=row.rule,
        severity=row.severity,
        subject=row.key,
        detail=values,
    )


def waiver_event(
    kind: str,
    waiver: WaiverRow,
    unit: str | None,
    at: datetime,
    actor: str = COLLECTOR,
    **detail: Any,
) -> NewEvent:
    """An event about a waiver: its pattern is the subject, its unit the one it concerns."""
    values: dict[str, Any] = {
        "waiver_id": waiver.id,
        "scope": waiver.scope,
        "target": waiver.target,
        "reason": waiver.reason,
        "owner": waiver.owner,
        "source": waiver.source,
        "name": waiver.name,
        "expires_at": iso(waiver.expires_at),
    }
    values.update({k: iso(v) if isinstance(v, datetime) else v for k, v in detail.items()})
    return NewEvent(
        at=at,
        kind=kind,
        actor=actor,
        host_id=waiver.target if waiver.scope == "host" else None,
        unit=unit,
        rule=waiver.rule,
        subject=waiver.pattern,
        detail=values,
    )


def resolve(row: FindingRow, now: datetime, verification: Verification) -> FindingRow:
    """A report no longer finds the problem (that report is the first clean one)."""
    resolved = dataclasses.replace(row, state="resolved", resolved_at=now, clean_reports=1)
    return verify_if_held(resolved, now, verification)


def count_clean(row: FindingRow, now: datetime, verification: Verification) -> FindingRow:
    """Another report without the problem, while the fix is being verified."""
    counted = dataclasses.replace(row, clean_reports=row.clean_reports + 1)
    return verify_if_held(counted, now, verification)


def verify_if_held(row: FindingRow, now: datetime, verification: Verification) -> FindingRow:
    if (
        row.state == "resolved"
        and row.resolved_at is not None
        and verification.held(row.clean_reports, row.resolved_at, now)
    ):
        return dataclasses.replace(row, state="verified", verified_at=now)
    return row


def reopen(row: FindingRow, now: datetime, severity: str, detail: str) -> FindingRow:
    """The problem is back before the fix was verified: the same case opens again.

    The acknowledgement is cleared (the fix it promised did not hold); the due date stands,
    and is announced again if it has passed.
    """
    return dataclasses.replace(
        row,
        state="open",
        resolved_at=None,
        last_seen=now,
        severity=severity,
        detail=detail,
        clean_reports=0,
        reopened=row.reopened + 1,
        acknowledged_by=None,
        acknowledged_at=None,
        note=None,
        overdue_at=None,
    )


def acknowledge(
    row: FindingRow, actor: str, now: datetime, note: str | None, due_at: datetime | None
) -> FindingRow:
    """Someone answerable has seen it: who, when, a note and perhaps a due date."""
    changed = dataclasses.replace(
        row, state="acknowledged", acknowledged_by=actor, acknowledged_at=now, note=note
    )
    return set_due(changed, due_at) if due_at is not None else changed


def set_due(row: FindingRow, due_at: datetime | None) -> FindingRow:
    """A new due date; a finding announced overdue may be announced again at the new one."""
    return dataclasses.replace(row, due_at=due_at, overdue_at=None)


def waive(row: FindingRow, waiver_id: int | None) -> FindingRow:
    """Put a finding under a waiver (or none). A waived finding is not overdue: if it is past
    its due date when the waiver ends, that is announced again."""
    return dataclasses.replace(
        row, waiver_id=waiver_id, overdue_at=None if waiver_id is not None else row.overdue_at
    )


def moves(before: FindingRow, after: FindingRow) -> list[str]:
    """The event kinds a report's change to a finding makes, in order."""
    kinds: list[str] = []
    if before.state != "resolved" and after.state in {"resolved", "verified"}:
        kinds.append("resolved")
    if before.state == "resolved" and after.state == "open":
        kinds.append("reopened")
    if after.state == "verified" and before.state != "verified":
        kinds.append("verified")
    if after.open and before.waiver_id != after.waiver_id:
        kinds.append("waived" if after.waiver_id is not None else "unwaived")
    return kinds
