"""The notifications file: targets, the mail server, and routes. Collector-side, not the policy.

The policy is generated from the pyinfra inventory and reviewed like code; it names each
unit's contacts (e-mail addresses, and targets by name) but holds no secret. The URLs, signing
secrets and mail password live here, in a file on the collector (``FLEETWATCH_NOTIFICATIONS``)
whose secrets are themselves files (``*_file``), readable by the collector's user only::

    [smtp]
    host = "mail.office.example"
    port = 587
    security = "starttls"                # starttls | tls | none
    username = "fleetwatch"
    password_file = "/etc/fleetwatch/smtp-password"
    sender = "fleetwatch@office.example"

    [targets.office-hook]
    kind = "webhook"                      # webhook | alertmanager | slack | email
    url = "https://hooks.office.example/fleetwatch"
    secret_file = "/etc/fleetwatch/office-hook.secret"

    [[routes]]
    units = ["parks", "schools"]          # any unit when absent
    min_severity = "high"
    rules = ["allowed_ports"]             # any rule when absent
    targets = ["office-hook"]
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fleetwatch.collector.compliance.rules import SEVERITIES, Severity

TARGET_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
TargetName = Annotated[str, Field(pattern=TARGET_NAME)]

# What is worth a message unless a route says otherwise: the list (a finding opened,
# overdue, reopened or resolved; a waiver about to expire or expired; a host gone stale or
# never heard from).
DEFAULT_KINDS = (
    "opened",
    "reopened",
    "overdue",
    "resolved",
    "waiver_expiring",
    "waiver_expired",
    "host_stale",
    "host_never_reported",
)
Digest = Literal["immediate", "daily"]


class NotificationsError(ValueError):
    """A notifications file that cannot be used; the message names the file and key."""


def read_secret(path: Path, what: str) -> str:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        msg = f"{what}: cannot read {path}: {exc.strerror}"
        raise ValueError(msg) from exc
    if not text:
        msg = f"{what}: {path} is empty"
        raise ValueError(msg)
    return text


class Smtp(BaseModel):
    """The mail server every e-mail target sends through."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_file: Path | None = None
    sender: str = Field(min_length=3, pattern=r"^[^\s<>@]+@[^\s<>@]+$")
    ca_file: Path | None = None  # CAs to check the server's certificate; the system's if unset
    timeout: Annotated[float, Field(gt=0)] = 20.0

    @model_validator(mode="after")
    def _auth_in_pairs(self) -> Smtp:
        if (self.username is None) != (self.password_file is None):
            msg = "username and password_file go together"
            raise ValueError(msg)
        if self.username is not None and self.security == "none":
            msg = "a password is never sent over a connection without TLS (security = 'none')"
            raise ValueError(msg)
        return self

    def password(self) -> str | None:
        return None if self.password_file is None else read_secret(self.password_file, "smtp")


class Target(BaseModel):
    """Where messages go: a signed JSON webhook, an Alertmanager-style or Slack-style webhook,
    or e-mail addresses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["webhook", "alertmanager", "slack", "email"]
    url: str | None = Field(default=None, pattern=r"^https?://")
    url_file: Path | None = None  # a Slack URL is itself the secret
    secret_file: Path | None = None  # HMAC-SHA256 key; required for kind webhook
    ca_file: Path | None = None
    to: list[Annotated[str, Field(pattern=r"^[^\s<>@,]+@[^\s<>@,]+$")]] = []
    timeout: Annotated[float, Field(gt=0)] = 10.0

    @model_validator(mode="after")
    def _complete(self) -> Target:
        if self.kind == "email":
            if not self.to:
                raise ValueError("an email target needs addresses in 'to'")
            if self.url or self.url_file or self.secret_file:
                raise ValueError("an email target has 'to', not url, url_file or secret_file")
            return self
        if (self.url is None) == (self.url_file is None):
            raise ValueError(f"a {self.kind} target needs one of url or url_file")
        if self.kind == "webhook" and self.secret_file is None:
            raise ValueError("a webhook target signs its messages: set secret_file")
        if self.to:
            raise ValueError(f"a {self.kind} target has no 'to'")
        return self


class Route(BaseModel):
    """Which events go to which targets, besides each unit's own contacts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    units: list[str] | None = None
    min_severity: Severity | None = None
    rules: list[str] | None = None
    kinds: list[str] = list(DEFAULT_KINDS)
    targets: list[TargetName] = Field(min_length=1)
    digest: Digest = "immediate"

    def matches(self, kind: str, unit: str | None, severity: str | None, rule: str | None) -> bool:
        """Whether an event of this kind, unit, severity and rule is this route's.

        An event without a severity (a host gone stale, a waiver's) passes ``min_severity``;
        one without a rule does not pass ``rules``.
        """
        if kind not in self.kinds:
            return False
        if self.units is not None and unit not in self.units:
            return False
        if self.rules is not None and rule not in self.rules:
            return False
        if self.min_severity is not None and severity in SEVERITIES:
            return SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity)
        return True


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    smtp: Smtp | None = None
    targets: dict[TargetName, Target] = {}
    routes: list[Route] = []
    external_url: str = ""  # the collector's address, for links in messages

    @model_validator(mode="after")
    def _references(self) -> _File:
        for number, route in enumerate(self.routes, 1):
            unknown = sorted(set(route.targets) - set(self.targets))
            if unknown:
                msg = f"routes[{number}]: no target named {', '.join(map(repr, unknown))}"
                raise ValueError(msg)
        if self.smtp is None and any(t.kind == "email" for t in self.targets.values()):
            raise ValueError("email targets need an [smtp] table")
        return self


@dataclass(frozen=True)
class Notifications:
    """A loaded notifications file (or none: no targets, no routes, no mail server)."""

    source: str
    smtp: Smtp | None
    targets: dict[str, Target]
    routes: tuple[Route, ...]
    external_url: str = ""

    @classmethod
    def empty(cls) -> Notifications:
        return cls("(none)", None, {}, ())

    @classmethod
    def load(cls, path: Path) -> Notifications:
        """Read and check a notifications file; NotificationsError says what is wrong where."""
        try:
            raw: dict[str, Any] = tomllib.loads(path.read_text())
        except OSError as exc:
            raise NotificationsError(f"{path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise NotificationsError(f"{path}: not TOML: {exc}") from exc
        try:
            parsed = _File.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "top level"
            raise NotificationsError(f"{path}: {where}: {error['msg']}") from exc
        return cls(
            str(path), parsed.smtp, dict(parsed.targets), tuple(parsed.routes), parsed.external_url
        )


class NotificationsSource:
    """The notifications file, followed: read again when it changes; a bad new file is
    reported and the previous one stays in force."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.error: str | None = None
        self._stamp: tuple[int, int] | None = None
        self.current = Notifications.empty()
        if path is not None:
            self.current = Notifications.load(path)  # a bad file at start is a start error
            self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            info = os.stat(self.path)  # noqa: PTH116  (both fields in one call)
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def reload_if_changed(self) -> bool:
        """Read the file again if it changed; True when a new one is in force."""
        stamp = self._stat()
        if self.path is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.current = Notifications.load(self.path)
        except NotificationsError as exc:
            self.error = str(exc)
            return False
        self.error = None
        return True
