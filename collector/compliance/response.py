"""The policy's side of the response to findings: units, due dates, verification, waivers.

[units.parks]                      # who answers for hosts with unit = "parks"
title = "Parks and Gardens"
emails = ["it@parks.example.org"]
targets = ["parks-webhook"]        # notification targets, by name
digest = "daily"                   # or "immediate" (the default)

[due_days]                         # days to rectify, by severity
critical = 2
high = 7

[verification]                     # a fix is verified when it held for either
reports = 3                        # this many reports (0: not counted)
hours = 24                         # or this long (0: not timed)

[response]
waiver_warning_days = 7            # announce a waiver's expiry this long before

[waivers.legacy-ftp]               # a waiver reviewed like code: expiry mandatory
host = "files-01.parks"            # or unit = "parks", or group = "web"
rule = "allowed_ports"
subject = "tcp/21"                 # fnmatch-style: "CVE-2024-*", "openssl*"...
reason = "replaced by SFTP in January"
owner = "parks IT"
expires = 2027-01-31               # a date (00:00 UTC) or a date and time
"""

from __future__ import annotations

import fnmatch
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from fleetwatch.collector.compliance.rules import REGISTRY

WaiverScope = Literal["host", "unit", "group"]
Name = Annotated[str, Field(min_length=1, max_length=255)]

_EMAIL = re.compile(r"[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+")


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        msg = f"not an e-mail address: {value!r}"
        raise ValueError(msg)
    return value


def _rule(value: str) -> str:
    if value not in REGISTRY:
        msg = f"no rule {value!r}"
        raise ValueError(msg)
    return value


class Unit(BaseModel):
    """An organisation answerable for its hosts, and how it is told about them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    title: str
    emails: list[str] = []
    targets: list[str] = []
    digest: Literal["immediate", "daily"] = "immediate"


class UnitEntry(BaseModel):
    """A ``[units.NAME]`` table."""

    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, Field(max_length=255)] | None = None
    emails: list[Annotated[str, AfterValidator(_email)]] = []
    targets: list[Name] = []
    digest: Literal["immediate", "daily"] = "immediate"

    def unit(self, name: str) -> Unit:
        return Unit(
            name=name,
            title=self.title or name,
            emails=list(self.emails),
            targets=list(self.targets),
            digest=self.digest,
        )


def _as_utc(value: date | datetime) -> datetime:
    """A TOML date (00:00 UTC that day) or date-time (UTC when it names no offset)."""
    if not isinstance(value, datetime):
        return datetime.combine(value, time(0), tzinfo=UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class WaiverEntry(BaseModel):
    """A ``[waivers.NAME]`` table: exactly one of host, unit or group; expiry mandatory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: Name | None = None
    unit: Name | None = None
    group: Name | None = None
    rule: Annotated[str, AfterValidator(_rule)]
    subject: Annotated[str, Field(min_length=1, max_length=512)] = "*"
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    owner: Name
    expires: date | datetime

    @model_validator(mode="after")
    def _one_scope(self) -> WaiverEntry:
        given = [s for s in ("host", "unit", "group") if getattr(self, s) is not None]
        if len(given) != 1:
            msg = "name exactly one of host, unit or group"
            raise ValueError(msg)
        return self

    @property
    def scope(self) -> WaiverScope:
        return "host" if self.host else ("unit" if self.unit else "group")

    @property
    def target(self) -> str:
        return self.host or self.unit or self.group or ""

    @property
    def expires_at(self) -> datetime:
        return _as_utc(self.expires)


class Verification(BaseModel):
    """When a resolved finding counts as fixed for good: whichever comes first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reports: Annotated[int, Field(ge=0, le=1000)] = 3
    hours: Annotated[float, Field(ge=0, le=24 * 366)] = 0

    @model_validator(mode="after")
    def _something(self) -> Verification:
        if not self.reports and not self.hours:
            msg = "set reports or hours (or both) above 0"
            raise ValueError(msg)
        return self

    def held(self, clean_reports: int, resolved_at: datetime, now: datetime) -> bool:
        """Whether a fix resolved at ``resolved_at`` is now verified."""
        if self.reports and clean_reports >= self.reports:
            return True
        return bool(self.hours) and now - resolved_at >= timedelta(hours=self.hours)


Days = Annotated[float, Field(gt=0, le=3660)]


class DueDays(BaseModel):
    """Days a unit has to rectify a finding, by severity; a severity left out has no due date."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: Days | None = None
    medium: Days | None = None
    high: Days | None = None
    critical: Days | None = None

    def due(self, severity: str, opened: datetime) -> datetime | None:
        days = getattr(self, severity, None)
        return None if days is None else opened + timedelta(days=days)


class ResponseSettings(BaseModel):
    """The ``[response]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    waiver_warning_days: Annotated[float, Field(ge=0, le=366)] = 7


class ResponsePolicy(BaseModel):
    """Everything the response to findings reads from the policy, for every host alike."""

    model_config = ConfigDict(frozen=True)

    due_days: DueDays = DueDays()
    verification: Verification = Verification()
    response: ResponseSettings = ResponseSettings()


def waiver_covers(  # noqa: PLR0913  (a waiver's and a finding's coordinates)
    scope: str,
    target: str,
    rule: str,
    pattern: str,
    *,
    host_id: str,
    unit: str | None,
    groups: tuple[str, ...] | list[str],
    finding_rule: str,
    key: str,
) -> bool:
    """Whether a waiver with these coordinates excuses a finding of a host."""
    if rule != finding_rule:
        return False
    if scope == "host" and target != host_id:
        return False
    if scope == "unit" and target != unit:
        return False
    if scope == "group" and target not in groups:
        return False
    return fnmatch.fnmatchcase(key, pattern)
