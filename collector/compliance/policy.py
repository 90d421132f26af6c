"""The policy: the baseline each host is held against, from a TOML file.

    [defaults]                 # every host
    allowed_ports = ["tcp/22"]
    max_report_age = 900

    [groups.web]               # hosts that list the group
    allowed_ports = ["tcp/22", "tcp/80", "tcp/443"]

    [hosts."web-01.parks"]     # one host: its unit, its groups, its own overrides
    unit = "parks"
    groups = ["web"]

Units, due dates, verification and waivers (``[units.NAME]``, ``[due_days]``,
``[verification]``, ``[response]``, ``[waivers.NAME]``) are described in `compliance.response`.

A host's baseline is the built-in defaults, then ``[defaults]``, then each of its groups in
the order it lists them, then its own table. Later tables override earlier ones key by key,
as pyinfra's group and host data do.
"""

from __future__ import annotations

import functools
import hashlib
import tomllib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from fleetwatch.collector.compliance import policy_toml
from fleetwatch.collector.compliance.response import (
    DueDays,
    ResponsePolicy,
    ResponseSettings,
    Unit,
    UnitEntry,
    Verification,
    WaiverEntry,
)
from fleetwatch.collector.compliance.rules import REGISTRY, Severity
from fleetwatch.collector.compliance.rules.checks import ChecksSettings
from fleetwatch.collector.compliance.rules.collection import CollectionSettings
from fleetwatch.collector.compliance.rules.packages import PackagesSettings
from fleetwatch.collector.compliance.rules.ports import PortsSettings
from fleetwatch.collector.compliance.rules.resources import ResourcesSettings
from fleetwatch.collector.compliance.rules.services import ServicesSettings
from fleetwatch.collector.compliance.rules.system import SystemSettings
from fleetwatch.collector.compliance.rules.updates import UpdatesSettings
from fleetwatch.collector.compliance.rules.vulnerabilities import VulnerabilitiesSettings
from fleetwatch.schema import HostId

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from pydantic import GetJsonSchemaHandler
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import CoreSchema


def _registered_rule(value: str) -> str:
    if value not in REGISTRY:
        # worded as pydantic words a Literal, which the rule ids were before the registry
        ids = [repr(rule_id) for rule_id in REGISTRY.ids()]
        expected = ids[0] if len(ids) == 1 else f"{', '.join(ids[:-1])} or {ids[-1]}"
        raise PydanticCustomError(
            "literal_error", "Input should be {expected}", {"expected": expected}
        )
    return value


class _RegisteredRuleSchema:
    """A rule id's JSON schema: the ids registered when the schema is made."""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # a string type with an enum: pydantic turns it into the dict's propertyNames
        return {"type": "string", "enum": list(REGISTRY.ids())}


RuleId = Annotated[str, AfterValidator(_registered_rule), _RegisteredRuleSchema()]
"""The id of a registered rule: the keys the policy's ``severity`` table accepts."""


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the table and key."""


class Baseline(
    CollectionSettings,
    ChecksSettings,
    ResourcesSettings,
    SystemSettings,
    VulnerabilitiesSettings,
    UpdatesSettings,
    PackagesSettings,
    ServicesSettings,
    PortsSettings,
):
    """What a host must look like: every rule module's policy keys, and the host's own.

    Each rules module declares the keys of its rules (``PortsSettings`` in
    `rules.ports`...), so a rule and its settings live in one file. Unset rules are off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_report_age: Annotated[float, Field(gt=0)] = Field(
        default=900.0,
        description="Seconds after its last report that a host becomes stale.",
    )
    severity: dict[RuleId, Severity] = Field(default={}, description="Severity overrides per rule.")

    def severity_of(self, rule: str) -> str:
        """A rule's severity for this baseline: its override, else the rule's default."""
        return self.severity.get(rule, REGISTRY[rule].severity)


class HostEntry(Baseline):
    unit: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    groups: list[str] = Field(default_factory=list)


class _PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaults: Baseline = Baseline()
    groups: dict[str, Baseline] = {}
    hosts: dict[HostId, HostEntry] = {}
    units: dict[Annotated[str, Field(min_length=1, max_length=255)], UnitEntry] = {}
    due_days: DueDays = DueDays()
    verification: Verification = Verification()
    response: ResponseSettings = ResponseSettings()
    waivers: dict[Annotated[str, Field(min_length=1, max_length=255)], WaiverEntry] = {}


_HOST_IDS = TypeAdapter(list[HostId])


def _validated(data: dict[str, Any]) -> _PolicyFile:
    """The policy file's tables, validated; ``ValidationError`` as the whole file's model raises.

    A large fleet's file is mostly ``[hosts."NAME"]`` tables alike but for the name (a unit
    and a list of groups): each different table (of strings, integers, booleans and lists
    of strings) is validated once and its entry shared by the hosts that list the same
    (entries are frozen). Should anything fail, the whole file is validated again as one
    model, so that the error reported is the one it names first.
    """
    hosts = data.get("hosts")
    if isinstance(hosts, dict):
        rest = {table: value for table, value in data.items() if table != "hosts"}
        try:
            parsed = _PolicyFile.model_validate(rest)
            parsed.hosts = _host_entries(hosts)
        except ValidationError:
            pass  # the whole file again, below, for the error it names first
        else:
            return parsed
    return _PolicyFile.model_validate(data)


def _host_entries(tables: dict[Any, Any]) -> dict[str, HostEntry]:
    """The ``[hosts]`` tables as entries, tables of the same values sharing one entry."""
    _HOST_IDS.validate_python(list(tables))
    entries: dict[str, HostEntry] = {}
    shared: dict[tuple[tuple[str, type, object], ...], HostEntry] = {}
    for host_id, table in tables.items():
        key = _sharing_key(table)
        entry = shared.get(key) if key is not None else None
        if entry is None:
            entry = HostEntry.model_validate(table)
            if key is not None:
                shared[key] = entry
        entries[host_id] = entry
    return entries


# values equal only when they are the same policy value (not floats: -0.0 == 0.0)
_SCALARS = frozenset({str, int, bool})


def _sharing_key(table: object) -> tuple[tuple[str, type, object], ...] | None:
    """A host table of strings, integers, booleans and lists of strings, as a key; else None.

    Each value is keyed with its exact type: ``1`` and ``true`` are equal in Python but not
    the same policy value.
    """
    if type(table) is not dict:
        return None
    key: list[tuple[str, type, object]] = []
    for name, value in table.items():
        kind = type(value)
        if kind in _SCALARS:
            key.append((name, kind, value))
        elif kind is list and all(type(item) is str for item in value):
            key.append((name, kind, tuple(value)))
        else:
            return None
    return tuple(key)


@dataclass(frozen=True)
class HostPolicy:
    """A host's resolved baseline, with its unit and groups as the policy names them."""

    host_id: str
    unit: str | None
    groups: tuple[str, ...]
    baseline: Baseline
    listed: bool
    response: ResponsePolicy = field(default_factory=ResponsePolicy)

    # the baseline's digest, when the policy resolved it already for a host of the same layers
    known_digest: str = field(default="", repr=False, compare=False)

    @functools.cached_property
    def digest(self) -> str:
        """The baseline's: hosts with one baseline share the memo of their rules."""
        return self.known_digest or _baseline_digest(self.baseline)

    @functools.cached_property
    def evaluation_digest(self) -> str:
        """What an evaluation of this host reads from the policy: its baseline, and its unit
        and groups (which waivers cover its findings, which unit its events name).

        The response policy is left out: due days apply to findings as they open and
        verification to the evaluations after, so neither changes what the rules find.
        """
        return _evaluation_digest(self.digest, self.unit, self.groups)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        msg = f"{path}: cannot read: {exc.strerror}"
        raise PolicyError(msg) from exc


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _baseline_digest(baseline: Baseline) -> str:
    return hashlib.sha256(baseline.model_dump_json().encode()).hexdigest()


@functools.lru_cache(maxsize=65_536)
def _evaluation_digest(baseline: str, unit: str | None, groups: tuple[str, ...]) -> str:
    text = "\n".join([baseline, unit or "", *groups])
    return hashlib.sha256(text.encode()).hexdigest()


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"groups", "hosts", "units", "waivers"} and len(parts) >= 2:
        table = f'[{parts[0]}."{parts[1]}"]'
        rest = parts[2:]
    elif parts and parts[0] in {"defaults", "due_days", "verification", "response"}:
        table, rest = f"[{parts[0]}]", parts[1:]
    else:
        table, rest = "top level", parts
    key = rest[0] if rest else ""
    for part in rest[1:]:
        key += f"[{part}]" if part.isdigit() else f".{part}"
    return f"{table} {key}".strip()


@dataclass
class Policy:
    """A loaded policy file."""

    source: str
    digest: str
    defaults: Baseline = field(default_factory=Baseline)
    groups: dict[str, Baseline] = field(default_factory=dict)
    hosts: dict[str, HostEntry] = field(default_factory=dict)
    # every unit the policy declares or a host names (one named only on hosts: no contacts)
    units: dict[str, Unit] = field(default_factory=dict)
    declared_units: frozenset[str] = frozenset()  # those with a [units.NAME] table
    waivers: dict[str, WaiverEntry] = field(default_factory=dict)
    response: ResponsePolicy = field(default_factory=ResponsePolicy)
    _resolved: dict[str, HostPolicy] = field(default_factory=dict, repr=False)
    _baselines: dict[tuple[object, ...], tuple[Baseline, str]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def empty(cls) -> Policy:
        return cls(source="(no policy file)", digest=hashlib.sha256(b"").hexdigest())

    @classmethod
    def from_text(cls, text: str, source: str = "policy") -> Policy:  # noqa: C901  (a check per table)
        try:
            data = policy_toml.loads(text)
        except tomllib.TOMLDecodeError as exc:
            msg = f"{source}: not valid TOML: {exc}"
            raise PolicyError(msg) from exc
        try:
            parsed = _validated(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            what = error["msg"]
            if error["type"] == "extra_forbidden":
                what = "unknown key"
            msg = f"{source}: {_where(error['loc'])}: {what}"
            raise PolicyError(msg) from exc
        for host_id, entry in parsed.hosts.items():
            for group in entry.groups:
                if group not in parsed.groups:
                    msg = f'{source}: [hosts."{host_id}"] groups: no table [groups.{group}]'
                    raise PolicyError(msg)
        for name, waiver in parsed.waivers.items():
            if waiver.group is not None and waiver.group not in parsed.groups:
                msg = f'{source}: [waivers."{name}"] group: no table [groups.{waiver.group}]'
                raise PolicyError(msg)
        units = {name: entry.unit(name) for name, entry in parsed.units.items()}
        for entry in parsed.hosts.values():
            if entry.unit is not None and entry.unit not in units:
                units[entry.unit] = Unit(name=entry.unit, title=entry.unit)
        return cls(
            source=source,
            digest=_text_digest(text),
            defaults=parsed.defaults,
            groups=parsed.groups,
            hosts=parsed.hosts,
            units=dict(sorted(units.items())),
            declared_units=frozenset(parsed.units),
            waivers=parsed.waivers,
            response=ResponsePolicy(
                due_days=parsed.due_days,
                verification=parsed.verification,
                response=parsed.response,
            ),
        )

    @classmethod
    def from_file(cls, path: Path) -> Policy:
        return cls.from_text(_read(path), str(path))

    def hosts_of_unit(self, unit: str) -> list[str]:
        """The hosts the policy places in a unit."""
        return sorted(h for h, entry in self.hosts.items() if entry.unit == unit)

    def for_host(self, host_id: str) -> HostPolicy:
        cached = self._resolved.get(host_id)
        if cached is not None:
            return cached
        entry = self.hosts.get(host_id)
        baseline, digest = self._baseline(entry)
        resolved = HostPolicy(
            host_id=host_id,
            unit=entry.unit if entry else None,
            groups=tuple(entry.groups) if entry else (),
            baseline=baseline,
            listed=entry is not None,
            response=self.response,
            known_digest=digest,
        )
        self._resolved[host_id] = resolved
        return resolved

    def _baseline(self, entry: HostEntry | None) -> tuple[Baseline, str]:
        """The baseline of a host listed so (or not at all), and its digest.

        Most hosts of a large fleet differ only by unit and groups: those with no keys of
        their own share one baseline per list of groups, resolved and hashed once.
        """
        own = set() if entry is None else entry.model_fields_set - {"unit", "groups"}
        key: tuple[object, ...] | None = None
        if not own:
            key = () if entry is None else tuple(entry.groups)
            known = self._baselines.get(key)
            if known is not None:
                return known
        layers: list[BaseModel] = [self.defaults]
        if entry is not None:
            layers += [self.groups[g] for g in entry.groups]
            layers.append(entry)
        merged: dict[str, Any] = {}
        for layer in layers:
            merged.update(layer.model_dump(exclude_unset=True, exclude={"unit", "groups"}))
        baseline = Baseline.model_validate(merged)
        resolved = (baseline, _baseline_digest(baseline))
        if key is not None:
            self._baselines[key] = resolved
        return resolved


class PolicySource:
    """The policy file in use, re-read when it changes on disk.

    A new file that fails to load is logged and ignored: the last good policy stays in force.
    ``on_reload`` hears of every change of the file read: ``loaded``, ``rejected`` or
    ``unchanged`` (the same policy, written again).
    """

    def __init__(self, path: Path | None, on_reload: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._on_reload = on_reload or (lambda _outcome: None)
        self.error: str | None = None
        self._stamp = self._file_stamp()
        self.current = Policy.from_file(path) if path else Policy.empty()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def reload_if_changed(self) -> bool:
        """Load the file again if it changed; True when a different policy is now in force."""
        stamp = self._file_stamp()
        if self.path is None or stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            text = _read(self.path)
            # the same text written again is the same policy: not parsed a second time
            same = _text_digest(text) == self.current.digest
            policy = self.current if same else Policy.from_text(text, str(self.path))
        except PolicyError as exc:
            self.error = str(exc)
            self._on_reload("rejected")
            return False
        self.error = None
        if same:
            self._on_reload("unchanged")
            return False
        self.current = policy
        self._on_reload("loaded")
        return True
