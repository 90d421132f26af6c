"""The wire contract between agent and collector.

This module is the protocol. The agent builds a `Report` from it and the collector validates
every request body against it, so a change here is a change to what crosses the network:
bump `SCHEMA_VERSION` and keep a test that reports of every supported version still parse.

A report carries one `Section` per kind of fact. A section is sent in one of three forms:

* ``{"hash": H, "data": {...}}``: the full content and its hash;
* ``{"hash": H}``: unchanged since the last report the collector acknowledged, which
  told the agent that it holds the content under hash ``H``;
* ``{"error": "..."}``: the agent could not collect it this time.

Every string, list, number and timestamp is bounded, so an absurd report is refused at
validation time instead of being stored: no number is infinite or NaN, and every timestamp
lies between 1970 and 3000 (UTC), which both databases store and every clock computation
survives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator  # noqa: TC003  (pydantic reads annotations)
from datetime import UTC, datetime
from typing import Annotated, Generic, Literal, NamedTuple, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})

Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Version = Annotated[str, StringConstraints(min_length=1, max_length=255)]
ShortText = Annotated[str, StringConstraints(max_length=1024)]
ErrorText = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
ContentHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
HostId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,252}$"),
]
"""The name the fleet knows a host by: letters, digits and ``. _ : @ -``, up to 253 characters."""
InstanceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Port = Annotated[int, Field(ge=0, le=65535)]
Count = Annotated[int, Field(ge=0, le=2**62)]
Bytes = Annotated[int, Field(ge=0, le=2**63 - 1)]
Percent = Annotated[float, Field(ge=0, le=100)]

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def _in_range(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-23:59 is past the last datetime in UTC
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        msg = f"timestamp out of range: from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} (UTC)"
        raise ValueError(msg)
    return value


Timestamp = Annotated[AwareDatetime, AfterValidator(_in_range)]
"""A time with its UTC offset, from 1970 to 3000."""

MAX_PACKAGES = 100_000
MAX_LISTENERS = 20_000
MAX_UNITS = 20_000
MAX_CHECKS = 1_000
MAX_MOUNTS = 1_000


class _Model(BaseModel):
    # Infinity and NaN (also 1e400, which JSON parsing turns into infinity) are never facts
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# -- sections -----------------------------------------------------------------------------


class OsRelease(_Model):
    """What ``/etc/os-release`` says."""

    id: Name | None = None
    version_id: Name | None = None
    codename: Name | None = None
    pretty_name: ShortText | None = None


class SystemData(_Model):
    """Identity of the host and whether it waits for a reboot."""

    hostname: Name
    machine_id: Name | None = None
    os: OsRelease
    architecture: Name
    kernel: Name
    boot_time: Timestamp
    reboot_required: bool
    reboot_required_packages: Annotated[list[Name], Field(max_length=10_000)] = []
    reboot_required_since: Timestamp | None = None
    kernel_latest_installed: Name | None = None
    kernel_outdated: bool | None = Field(
        default=None,
        description="True when a newer kernel package than the running one is installed; "
        "null when the running kernel does not come from a known package.",
    )


class Package(NamedTuple):
    """One installed package. CVE data is keyed by source package, so that is kept too."""

    name: str
    version: str
    architecture: str
    source: str
    source_version: str


PackageRow = tuple[Name, Version, Name, Name, Version]
"""A package on the wire: ``[name, version, architecture, source, source_version]``.

Rows rather than objects: a host has a thousand or more packages, and a list of arrays
validates about four times faster than a list of objects, which is what lets a collector
take hundreds of full reports a second.
"""


class PackagesData(_Model):
    manager: Name
    packages: Annotated[list[PackageRow], Field(max_length=MAX_PACKAGES)] = Field(
        description="Rows of [name, version, architecture, source, source_version], "
        "sorted by name and architecture."
    )

    def rows(self) -> Iterator[Package]:
        """The packages with named fields."""
        return map(Package._make, self.packages)


def _unset(value: object) -> bool:
    """A field added to schema 1 at its default: left out of the JSON (and the hash)."""
    return value is None or value == []


class PendingUpdate(_Model):
    """An upgrade the package manager would install, and whether it is a security update.

    Also an upgrade it would *not* install although a newer version is there: then
    ``held_back`` says how (held, kept back, pinned) and ``reason`` why.
    """

    name: Name
    architecture: Name
    installed_version: Version | None = None
    candidate_version: Version
    security: bool = Field(
        description="True when a security archive offers a version newer than the installed "
        "one, whichever archive the candidate comes from."
    )
    origins: Annotated[list[ShortText], Field(max_length=32)] = []
    # Additions to schema 1 below: optional, and left out of the JSON while unset, so that the
    # content hash of a section of today's shape stays what older agents computed.
    security_version: Version | None = Field(
        default=None,
        exclude_if=_unset,
        description="The newest version above the installed one that a security archive "
        "offers; null when there is none or the agent did not look.",
    )
    held_back: Literal["held", "kept-back", "pinned"] | None = Field(
        default=None,
        exclude_if=_unset,
        description="Set when the package manager will not install this upgrade: held "
        "(apt-mark hold), kept-back (its resolver will not, e.g. a multi-arch twin cannot "
        "follow) or pinned (pin priorities keep a newer security version away).",
    )
    reason: ShortText | None = Field(
        default=None, exclude_if=_unset, description="Why the upgrade is held back, in words."
    )


class UpdatesData(_Model):
    manager: Name
    index_refreshed_at: Timestamp | None = None
    updates: Annotated[list[PendingUpdate], Field(max_length=MAX_PACKAGES)]
    new_installs: Annotated[list[PendingUpdate], Field(max_length=MAX_PACKAGES)] = Field(
        default=[],
        exclude_if=_unset,
        description="Packages an upgrade would newly install (a new kernel ABI package): "
        "not pending updates. Absent from older reports.",
    )


class Listener(_Model):
    """A listening TCP socket or a bound UDP socket."""

    protocol: Literal["tcp", "udp"]
    address: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    port: Port
    pid: Count | None = None
    process: Name | None = None
    user: Name | None = None


class PortsData(_Model):
    listeners: Annotated[list[Listener], Field(max_length=MAX_LISTENERS)]


class ServiceUnit(_Model):
    """A systemd service unit: its load, active and sub state, and its unit-file state."""

    name: Name
    load: Name | None = None
    active: Name | None = None
    sub: Name | None = None
    enabled: Name | None = Field(
        default=None,
        description="Unit-file state: enabled, disabled, static, masked...",
    )


class ServicesData(_Model):
    manager: Name | None = None
    available: bool
    reason: ShortText | None = Field(
        default=None,
        description="Why no service states are known, when available is false.",
    )
    units: Annotated[list[ServiceUnit], Field(max_length=MAX_UNITS)] = []


class CheckResult(_Model):
    """The outcome of one active check configured for the host."""

    name: Name
    kind: Literal["tcp", "http", "process"]
    target: ShortText
    ok: bool
    reason: ShortText | None = None
    latency_ms: Annotated[float, Field(ge=0)] | None = None
    status_code: Annotated[int, Field(ge=100, le=999)] | None = None


class ChecksData(_Model):
    results: Annotated[list[CheckResult], Field(max_length=MAX_CHECKS)]


class MountUsage(_Model):
    mountpoint: ShortText
    device: ShortText
    fstype: Name
    total_bytes: Bytes
    used_bytes: Bytes
    percent: Percent


class MemoryUsage(_Model):
    total_bytes: Bytes
    available_bytes: Bytes
    percent: Percent


class ResourcesData(_Model):
    mounts: Annotated[list[MountUsage], Field(max_length=MAX_MOUNTS)]
    memory: MemoryUsage
    load_average: tuple[
        Annotated[float, Field(ge=0)],
        Annotated[float, Field(ge=0)],
        Annotated[float, Field(ge=0)],
    ]
    cpu_count: Annotated[int, Field(ge=1, le=1_000_000)] | None = None


DataT = TypeVar("DataT", bound=BaseModel)


class Section(_Model, Generic[DataT]):
    """One section in full, as its hash alone, or as the error that prevented collecting it."""

    hash: ContentHash | None = None
    data: DataT | None = None
    error: ErrorText | None = None

    @model_validator(mode="after")
    def _exactly_one_form(self) -> Section[DataT]:
        if self.error is not None:
            if self.data is not None or self.hash is not None:
                msg = "a section with an error carries neither data nor hash"
                raise ValueError(msg)
        elif self.hash is None:
            msg = "a section needs its hash (with or without data) or an error"
            raise ValueError(msg)
        return self


class Sections(_Model):
    system: Section[SystemData] | None = None
    packages: Section[PackagesData] | None = None
    updates: Section[UpdatesData] | None = None
    ports: Section[PortsData] | None = None
    services: Section[ServicesData] | None = None
    checks: Section[ChecksData] | None = None
    resources: Section[ResourcesData] | None = None


SectionName = Literal["system", "packages", "updates", "ports", "services", "checks", "resources"]
SECTION_NAMES: tuple[SectionName, ...] = (
    "system",
    "packages",
    "updates",
    "ports",
    "services",
    "checks",
    "resources",
)
SECTION_TYPES: dict[SectionName, type[BaseModel]] = {
    "system": SystemData,
    "packages": PackagesData,
    "updates": UpdatesData,
    "ports": PortsData,
    "services": ServicesData,
    "checks": ChecksData,
    "resources": ResourcesData,
}


class Delivery(_Model):
    """What the agent knows about its own delivery: losses are carried, never silent."""

    dropped_reports: Count = Field(
        default=0,
        description="Reports the agent discarded since the last acknowledged one.",
    )
    spool_error: ShortText | None = Field(
        default=None,
        description="Why the agent could not spool its last report, if it could not.",
    )


class Report(_Model):
    schema_version: int
    host_id: HostId
    instance_id: InstanceId = Field(
        description="Random id of the agent's state directory; with sequence it names a report."
    )
    sequence: Annotated[int, Field(ge=1, le=2**62)]
    collected_at: Timestamp
    agent_version: Name
    delivery: Delivery = Delivery()
    sections: Sections


# -- requests and answers -----------------------------------------------------------------


class EnrollRequest(_Model):
    host_id: HostId
    enroll_secret: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class EnrollResponse(_Model):
    token: str


class ReportAck(_Model):
    """The collector's answer to a report: it is committed, and under which hashes."""

    status: Literal["stored", "duplicate"]
    sequence: int
    sections: dict[SectionName, ContentHash] = Field(
        default={},
        description="Sections of this report the collector now holds, by hash.",
    )
    missing: list[SectionName] = Field(
        default=[],
        description="Sections sent as a hash the collector does not hold: send them in full.",
    )


def section_hash(data: BaseModel) -> str:
    """The content hash of a section's data: SHA-256 of its canonical JSON encoding."""
    return hashlib.sha256(data.model_dump_json().encode()).hexdigest()
