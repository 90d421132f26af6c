"""Holding hosts' latest state against their baselines, and keeping their findings current.

A finding opens when a rule first finds a problem, stays open while the problem is still there,
and is resolved when a later evaluation no longer finds it; a
resolved finding is verified when the fix held, or reopened (the same case) if the problem
comes back first (`compliance.lifecycle`). A finding a waiver in force covers is waived.
Each change writes its event. Hosts are evaluated in batches: a few statements serve every
host of a batch, whatever the number of findings that change.

A report that finds the same problems as the one before writes nothing to the findings: while
a finding is open and found again, it was last seen at its host's latest report
(`storage.findings.shown_last_seen`). Its row is written only when it changes -- it opens,
its severity, detail or waiver change, the rules cannot tell any more (``last_seen`` then
stays at the report before), it resolves, reopens or is verified.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from fleetwatch.collector.compliance import lifecycle
from fleetwatch.collector.compliance.response import waiver_covers
from fleetwatch.collector.compliance.rules import Evaluation, Memo, evaluate
from fleetwatch.collector.compliance.rules.vulnerabilities import vulnerability_key
from fleetwatch.collector.storage.findings import NewFinding
from fleetwatch.collector.storage.host_vulnerabilities import HostVulnerability
from fleetwatch.collector.storage.hosts import SectionState
from fleetwatch.collector.storage.text import storable
from fleetwatch.schema import SECTION_TYPES, PackagesData, SystemData, UpdatesData

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    from sqlalchemy import Connection

    from fleetwatch.collector.compliance.policy import HostPolicy
    from fleetwatch.collector.storage.events import NewEvent
    from fleetwatch.collector.storage.findings import FindingRow
    from fleetwatch.collector.storage.hosts import Conditions
    from fleetwatch.collector.storage.store import Store
    from fleetwatch.collector.storage.waivers import WaiverRow
    from fleetwatch.collector.vulns.data import KnownVulnerabilities
    from fleetwatch.collector.vulns.matching import Match, VulnIndex


_NO_STATE = SectionState()


class HostFacts:
    """A host's latest sections for the rules, decoded from storage only when a rule asks."""

    def __init__(
        self,
        now: datetime,
        sections: Mapping[str, SectionState],
        conditions: Conditions,
        load: Callable[[str, str], BaseModel | None],
        fresh: Mapping[str, BaseModel] | None = None,
    ) -> None:
        self.now = now
        self._sections = sections
        self._conditions = conditions
        self._load = load
        self._data: dict[str, BaseModel | None] = dict(fresh or {})
        self._vulnerabilities: Sequence[Match] = ()
        self._vulnerabilities_since: dict[str, datetime] = {}

    def section_hash(self, name: str) -> str | None:
        state = self._sections.get(name)
        return None if state is None else state.current

    def section(self, name: str) -> Any:
        if name not in self._data:
            content_hash = self.section_hash(name)
            self._data[name] = None if content_hash is None else self._load(content_hash, name)
        return self._data[name]

    def errors(self) -> Mapping[str, str]:
        return {name: state.error for name, state in self._sections.items() if state.error}

    def since(self, kind: str, key: str) -> datetime:
        if kind == "vulnerability":
            return self._vulnerabilities_since.get(key, self.now)
        return self._conditions.get(kind, {}).get(key, self.now)

    def vulnerabilities(self) -> Sequence[Match]:
        return self._vulnerabilities

    def carry(self, matches: Sequence[Match], since: dict[str, datetime]) -> None:
        """The host's vulnerabilities, and since when the host has each."""
        self._vulnerabilities = matches
        self._vulnerabilities_since = since

    @property
    def carried_since(self) -> dict[str, datetime]:
        return self._vulnerabilities_since


def age_conditions(
    conditions: Conditions, fresh: Mapping[str, BaseModel], now: datetime
) -> Conditions:
    """Since when each aging condition holds, after sections that just arrived.

    A pending security update or a wanted reboot keeps the time it was first seen for as long
    as it stays; one that went away is forgotten.
    """
    wanted: dict[str, set[str]] = {}
    updates = fresh.get("updates")
    if isinstance(updates, UpdatesData):
        wanted["security_update"] = {storable(u.name) for u in updates.updates if u.security}
    system = fresh.get("system")
    if isinstance(system, SystemData):
        wanted["reboot_required"] = (
            {""} if system.reboot_required or system.kernel_outdated else set()
        )
    aged = {kind: dict(keys) for kind, keys in conditions.items()}
    for kind, keys in wanted.items():
        have = aged.get(kind, {})
        aged[kind] = {key: have.get(key, now) for key in sorted(keys)}
    return {kind: keys for kind, keys in aged.items() if keys}


MATCHED_HOSTS = 20_000
"""Hosts whose latest matches a process keeps, to answer a report that repeats the last."""
MATCHED_CONTENTS = 2_000
"""Sets of contents (packages, system, updates) whose matches a process keeps."""


@dataclass(frozen=True, slots=True)
class HostUpdate:
    """One host to evaluate: its baseline, its latest sections, and what just arrived."""

    host_id: str
    policy: HostPolicy
    sections: Mapping[str, SectionState]
    conditions: Conditions
    observed_at: datetime
    fresh: Mapping[str, BaseModel] = field(default_factory=dict)
    # when the host's evaluation before this one was observed: a finding it found but this one
    # does not was last seen then (None: unknown, the finding's row tells)
    seen_before: datetime | None = None


@dataclass
class _Changes:
    added: list[NewFinding] = field(default_factory=list)
    changed: list[FindingRow] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)
    units: dict[str, str | None] = field(default_factory=dict)  # host -> unit, for new ones
    vulns_added: list[HostVulnerability] = field(default_factory=list)
    vulns_changed: list[HostVulnerability] = field(default_factory=list)
    vulns_gone: list[tuple[str, str, str]] = field(default_factory=list)


def covering_waiver(
    waivers: list[WaiverRow], policy: HostPolicy, rule: str, key: str
) -> int | None:
    """The waiver in force that excuses a finding (the one that lasts longest), if any."""
    best: WaiverRow | None = None
    for waiver in waivers:
        if waiver_covers(
            waiver.scope,
            waiver.target,
            waiver.rule,
            waiver.pattern,
            host_id=policy.host_id,
            unit=policy.unit,
            groups=policy.groups,
            finding_rule=rule,
            key=key,
        ) and (best is None or waiver.expires_at > best.expires_at):
            best = waiver
    return None if best is None else best.id


class Compliance:
    """Applies rules to hosts and writes the resulting findings."""

    def __init__(
        self,
        store: Store,
        memo: Memo | None = None,
        vulnerabilities: KnownVulnerabilities | None = None,
    ) -> None:
        self.store = store
        self.memo = memo or Memo()
        self.vulnerabilities = vulnerabilities
        # host -> (what its matches followed from, the matches, since when it has each)
        self._matched: dict[
            str, tuple[tuple[str | None, ...], Sequence[Match], dict[str, datetime]]
        ] = {}
        # (data, packages, system, updates) -> the matches of hosts holding those contents
        self._by_contents: dict[tuple[str | None, ...], list[Match]] = {}
        self._contents_index: VulnIndex | None = None
        # decoded sections by hash: the latest reports of a fleet repeat a few contents
        self.load = functools.lru_cache(maxsize=512)(self._decode)

    def _decode(self, content_hash: str, section: str) -> BaseModel | None:
        with self.store.read() as conn:
            payload = self.store.blobs.get(conn, content_hash)
        if payload is None:
            return None
        try:
            return SECTION_TYPES[section].model_validate_json(payload)  # type: ignore[index]
        except ValidationError:
            return None  # stored by an older schema that no longer parses: unknown

    def apply(self, conn: Connection, updates: list[HostUpdate]) -> dict[str, Evaluation]:
        """Evaluate these hosts and bring their findings (and the event log) up to date."""
        live_rows = self.store.findings.live_by_host(conn, [u.host_id for u in updates])
        now = max((u.observed_at for u in updates), default=None)
        waivers = (
            []
            if now is None
            else self.store.waivers.in_force_over(
                conn,
                now,
                hosts=[u.host_id for u in updates],
                units=[u.policy.unit for u in updates if u.policy.unit is not None],
                groups=[g for u in updates for g in u.policy.groups],
            )
        )
        index = self.vulnerabilities.index if self.vulnerabilities else None
        states = {u.host_id: self._match_state(u, index) for u in updates} if index else {}
        stale = [h for h, state in states.items() if self._matched.get(h, (None,))[0] != state]
        carried = self.store.host_vulnerabilities.of_hosts(conn, stale) if stale else {}
        changes = _Changes()
        evaluations = {}
        for update in updates:
            facts = HostFacts(
                update.observed_at, update.sections, update.conditions, self.load, update.fresh
            )
            if index:
                self._vulnerabilities(update, facts, index, states, carried, changes)
            evaluation = evaluate(update.policy.baseline, facts, self.memo, update.policy.digest)
            self._reconcile(update, evaluation, live_rows[update.host_id], waivers, changes)
            evaluations[update.host_id] = evaluation
        self.store.findings.save(conn, changes.changed)
        opened = self.store.findings.open_new(conn, changes.added)
        for row in opened:
            unit = changes.units[row.host_id]
            changes.events.append(lifecycle.finding_event("opened", row, unit, row.first_seen))
            if row.waiver_id is not None:
                changes.events.append(lifecycle.finding_event("waived", row, unit, row.first_seen))
        self.store.events.append(conn, changes.events)
        self.store.host_vulnerabilities.apply(
            conn, changes.vulns_added, changes.vulns_changed, changes.vulns_gone
        )
        return evaluations

    @staticmethod
    def _match_state(update: HostUpdate, index: VulnIndex) -> tuple[str | None, ...]:
        """What a host's matches follow from: the data, and its sections' contents."""
        names = ("packages", "system", "updates")
        return (index.generation, *(update.sections.get(n, _NO_STATE).current for n in names))

    def _vulnerabilities(
        self,
        update: HostUpdate,
        facts: HostFacts,
        index: VulnIndex,
        states: dict[str, tuple[str | None, ...]],
        carried: dict[str, dict[tuple[str, str], HostVulnerability]],
        changes: _Changes,
    ) -> None:
        """The host's matches for its facts: from this process's memory when nothing they
        follow from changed since it last matched the host (most reports repeat the last),
        else matched again and the stored rows brought up to date."""
        state = states[update.host_id]
        known = self._matched.get(update.host_id)
        if known is not None and known[0] == state:
            facts.carry(known[1], known[2])
            return
        if _match(
            update,
            facts,
            self._match_contents(state, index),
            carried.get(update.host_id, {}),
            changes,
        ):
            if len(self._matched) >= MATCHED_HOSTS:
                self._matched.clear()
            self._matched[update.host_id] = (state, facts.vulnerabilities(), facts.carried_since)

    def _match_contents(
        self, state: tuple[str | None, ...], index: VulnIndex
    ) -> Callable[[HostFacts], list[Match] | None]:
        """Matching by contents: hosts holding the same packages, system and updates carry the
        same vulnerabilities, matched once (new data evaluates every host: a fleet of a few
        images costs a few matchings). Each host gets its own list (`rules.vulnerabilities`
        keeps verdicts by the list)."""

        if index is not self._contents_index:  # other data: what was matched is no more
            self._by_contents.clear()
            self._contents_index = index

        def match(facts: HostFacts) -> list[Match] | None:
            known = self._by_contents.get(state)
            if known is None:
                packages, system = facts.section("packages"), facts.section("system")
                if not isinstance(packages, PackagesData) or not isinstance(system, SystemData):
                    return None
                updates = facts.section("updates")
                known = index.match(
                    system.os.codename,
                    packages,
                    updates if isinstance(updates, UpdatesData) else None,
                    system,
                )
                if len(self._by_contents) >= MATCHED_CONTENTS:
                    self._by_contents.clear()
                self._by_contents[state] = known
            return list(known)

        return match

    @staticmethod
    def _reconcile(
        update: HostUpdate,
        evaluation: Evaluation,
        live_rows: list[FindingRow],
        waivers: list[WaiverRow],
        changes: _Changes,
    ) -> None:
        now = update.observed_at
        policy = update.policy
        verification = policy.response.verification
        unit = policy.unit
        current = {(f.rule, storable(f.key)[:512]): f for f in evaluation.findings}
        for row in sorted(live_rows, key=lambda r: r.resolved_at is not None):
            finding = current.pop((row.rule, row.key), None)
            if finding is None:
                if row.rule in evaluation.undetermined:
                    # unknown now: neither confirmed nor cleared, last seen where it was
                    after = _not_seen(row, update)
                elif row.state == "resolved":
                    after = lifecycle.count_clean(row, now, verification)
                else:
                    after = lifecycle.resolve(_not_seen(row, update), now, verification)
            else:
                severity, detail = finding.severity, storable(finding.detail)
                if row.state == "resolved":
                    after = lifecycle.reopen(row, now, severity, detail)
                    after = dataclasses.replace(after, seen_in_latest=True)
                elif (severity, detail) != (row.severity, row.detail) or not row.seen_in_latest:
                    after = dataclasses.replace(
                        row, severity=severity, detail=detail, last_seen=now, seen_in_latest=True
                    )
                else:
                    after = row  # seen again, unchanged: its host's report says when
                waiver_id = covering_waiver(waivers, policy, row.rule, row.key)
                if waiver_id != row.waiver_id:
                    after = lifecycle.waive(after, waiver_id)
            if after == row:
                continue
            changes.changed.append(after)
            changes.events.extend(
                lifecycle.finding_event(kind, after, unit, now)
                for kind in lifecycle.moves(row, after)
            )
        changes.units[update.host_id] = unit
        due_days = policy.response.due_days
        changes.added.extend(
            NewFinding(
                host_id=update.host_id,
                rule=rule,
                key=key,
                severity=f.severity,
                detail=storable(f.detail),
                first_seen=now,
                last_seen=now,
                due_at=due_days.due(f.severity, now),
                waiver_id=covering_waiver(waivers, policy, rule, key),
            )
            for (rule, key), f in current.items()
        )


def _not_seen(row: FindingRow, update: HostUpdate) -> FindingRow:
    """A live finding this evaluation does not find, with ``last_seen`` at the latest
    evaluation that did (unchanged for one not found in the evaluation before either)."""
    if not row.open or not row.seen_in_latest:
        return row
    last_seen = row.last_seen
    if update.seen_before is not None:
        last_seen = max(last_seen, min(update.seen_before, update.observed_at))
    return dataclasses.replace(row, last_seen=last_seen, seen_in_latest=False)


def _match(
    update: HostUpdate,
    facts: HostFacts,
    match: Callable[[HostFacts], list[Match] | None],
    stored: dict[tuple[str, str], HostVulnerability],
    changes: _Changes,
) -> bool:
    """Match the host against the data, hand the matches to its facts, and queue the changes
    to its stored vulnerabilities. With its packages or system unknown, nothing changes
    (False)."""
    matches = match(facts)
    if matches is None:
        return False
    now = update.observed_at
    rows: dict[tuple[str, str], HostVulnerability] = {}
    for m in matches:
        key = (m.vuln, m.source)
        if key in rows:
            continue  # the source at two versions (one per architecture): the first counts
        before = stored.get(key)
        rows[key] = HostVulnerability(
            host_id=update.host_id,
            vuln=m.vuln,
            source=m.source,
            release=m.release,
            installed_version=storable(m.installed_version)[:255],
            fixed_version=m.fixed_version,
            status=m.status,
            severity=m.severity,
            urgency=m.urgency,
            cvss=m.cvss,
            fixable=m.fixable,
            exploited=m.exploited,
            flags=list(m.flags),
            advisories=list(m.advisories),
            binaries=[storable(b) for b in m.binaries],
            fix_since=m.fix_since,
            note=storable(m.note) if m.note else None,
            first_seen=before.first_seen if before else now,
        )
    for key, row in rows.items():
        before = stored.get(key)
        if before is None:
            changes.vulns_added.append(row)
        elif not row.same_as(before):
            changes.vulns_changed.append(row)
    changes.vulns_gone.extend((update.host_id, *key) for key in stored if key not in rows)
    facts.carry(
        matches,
        {vulnerability_key(m): rows[m.vuln, m.source].first_seen for m in matches},
    )
    return True
