"""The API's models for the response to findings: units, events, waivers, and the bodies
of acknowledgements, due dates and waivers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fleetwatch.collector.storage.waivers import NewWaiver


def utc(value: datetime | None) -> datetime | None:
    """A time as UTC; one that names no offset is taken to be UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcTime = Annotated[datetime, AfterValidator(utc)]
Note = Annotated[str, Field(min_length=1, max_length=2000)]


class UnitView(BaseModel):
    name: str
    title: str
    emails: list[str]
    targets: list[str]
    digest: str
    declared: bool  # a [units.NAME] table, not only a name on hosts
    hosts: list[str]
    open_findings: int
    overdue_findings: int
    waived_findings: int


class EventView(BaseModel):
    # built from an EventRow: EventView.model_validate(row)
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    kind: str
    actor: str
    host_id: str | None
    unit: str | None
    finding_id: int | None
    rule: str | None
    severity: str | None
    subject: str | None
    detail: dict[str, Any]


class WaiverView(BaseModel):
    # built from a WaiverRow: WaiverView.model_validate(row)
    model_config = ConfigDict(from_attributes=True)

    id: int
    source: str
    name: str | None
    scope: str
    target: str
    rule: str
    pattern: str
    reason: str
    owner: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    in_force: bool = True


class AcknowledgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Note | None = None
    due_at: UtcTime | None = None


class DueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    due_at: UtcTime | None
    note: Note | None = None


class WaiverRequest(BaseModel):
    """A waiver: whom (a host, unit or group), what (a rule and a subject pattern), why, who
    owns it, and until when (mandatory)."""

    model_config = ConfigDict(extra="forbid")

    scope: Literal["host", "unit", "group"]
    target: Annotated[str, Field(min_length=1, max_length=255)]
    rule: Annotated[str, Field(min_length=1, max_length=64)]
    subject: Annotated[str, Field(min_length=1, max_length=512)] = "*"
    reason: Note
    owner: Annotated[str, Field(min_length=1, max_length=255)]
    expires_at: UtcTime

    def waiver(self, created_by: str, now: datetime) -> NewWaiver:
        """The waiver this asks for, made by ``created_by`` through the API or the dashboard."""
        return NewWaiver(
            source="api",
            name=None,
            scope=self.scope,
            target=self.target,
            rule=self.rule,
            pattern=self.subject,
            reason=self.reason,
            owner=self.owner,
            created_by=created_by,
            created_at=now,
            expires_at=self.expires_at,
        )


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Note | None = None
