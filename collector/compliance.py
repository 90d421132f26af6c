"""Holding a host's latest state against its baseline, and keeping its findings current.

A finding opens when a rule first finds a problem, stays open (``last_seen`` moving on) while
the problem is still there, and is resolved when a later evaluation no longer finds it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from agent.schema import SECTION_TYPES, SystemData, UpdatesData
from collector.rules import Evaluation, Memo, evaluate
from collector.store import storable

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from datetime import datetime

    from sqlalchemy import Connection

    from collector.policy import HostPolicy
    from collector.store import Store

MISSING_BASE = "sent as a hash the collector does not hold"


class HostFacts:
    """A host's latest sections for the rules, decoded from storage only when a rule asks."""

    def __init__(
        self,
        now: datetime,
        sections: Mapping[str, Mapping[str, Any]],
        conditions: Mapping[tuple[str, str], datetime],
        load: Callable[[str, str], BaseModel | None],
        fresh: Mapping[str, BaseModel] | None = None,
    ) -> None:
        self.now = now
        self._sections = sections
        self._conditions = conditions
        self._load = load
        self._data: dict[str, BaseModel | None] = dict(fresh or {})

    def _known_hash(self, name: str) -> str | None:
        state = self._sections.get(name)
        if not state or state.get("error") or state.get("missing"):
            return None
        return state.get("hash")

    def section_hash(self, name: str) -> str | None:
        return self._known_hash(name)

    def section(self, name: str) -> Any:
        if name not in self._data:
            content_hash = self._known_hash(name)
            self._data[name] = None if content_hash is None else self._load(content_hash, name)
        return self._data[name]

    def errors(self) -> Mapping[str, str]:
        return {
            name: state["error"] for name, state in self._sections.items() if state.get("error")
        }

    def since(self, kind: str, key: str) -> datetime:
        return self._conditions.get((kind, key), self.now)


class Compliance:
    """Applies rules to hosts and writes the resulting findings."""

    def __init__(self, store: Store, memo: Memo | None = None) -> None:
        self.store = store
        self.memo = memo or Memo()
        # decoded sections by hash: the latest reports of a fleet repeat a few contents
        self.load = functools.lru_cache(maxsize=512)(self._decode)

    def _decode(self, content_hash: str, section: str) -> BaseModel | None:
        with self.store.read() as conn:
            payload = self.store.get_blob(conn, content_hash)
        if payload is None:
            return None
        try:
            return SECTION_TYPES[section].model_validate_json(payload)  # type: ignore[index]
        except ValidationError:
            return None  # stored by an older schema that no longer parses: unknown

    def update_conditions(
        self,
        conn: Connection,
        host_id: str,
        fresh: Mapping[str, BaseModel],
        now: datetime,
    ) -> dict[tuple[str, str], datetime]:
        """Record since when each aging condition holds, from the sections that changed."""
        existing = self.store.conditions(conn, host_id)
        updates = fresh.get("updates")
        if isinstance(updates, UpdatesData):
            keys = {storable(u.name) for u in updates.updates if u.security}
            self.store.set_conditions(conn, host_id, "security_update", keys, now, existing)
        system = fresh.get("system")
        if isinstance(system, SystemData):
            wanted = system.reboot_required or bool(system.kernel_outdated)
            self.store.set_conditions(
                conn,
                host_id,
                "reboot_required",
                {""} if wanted else set(),
                now,
                existing,
            )
        if isinstance(updates, UpdatesData) or isinstance(system, SystemData):
            existing = self.store.conditions(conn, host_id)
        return existing

    def apply(
        self,
        conn: Connection,
        host_id: str,
        policy: HostPolicy,
        sections: Mapping[str, Mapping[str, Any]],
        now: datetime,
        fresh: Mapping[str, BaseModel] | None = None,
    ) -> Evaluation:
        """Evaluate the host's latest sections and bring its findings up to date."""
        conditions = self.update_conditions(conn, host_id, fresh or {}, now)
        facts = HostFacts(now, sections, conditions, self.load, fresh)
        evaluation = evaluate(policy.baseline, facts, self.memo, policy.digest)
        self._reconcile(conn, host_id, evaluation, now)
        return evaluation

    def _reconcile(
        self, conn: Connection, host_id: str, evaluation: Evaluation, now: datetime
    ) -> None:
        current = {(f.rule, storable(f.key)[:512]): f for f in evaluation.findings}
        still_open = []
        resolved = []
        for row in self.store.open_findings(conn, host_id):
            finding = current.pop((row.rule, row.key), None)
            if finding is None:
                if row.rule not in evaluation.undetermined:
                    resolved.append(row.id)
                continue
            detail = storable(finding.detail)
            if detail != row.detail or finding.severity != row.severity:
                self.store.change_finding(
                    conn,
                    row.id,
                    detail=detail,
                    severity=finding.severity,
                    last_seen=now,
                )
            else:
                still_open.append(row.id)
        self.store.touch_findings(conn, still_open, now)
        self.store.resolve_findings(conn, resolved, now)
        self.store.add_findings(
            conn,
            [
                {
                    "host_id": host_id,
                    "rule": rule,
                    "key": key,
                    "severity": f.severity,
                    "detail": storable(f.detail),
                    "first_seen": now,
                    "last_seen": now,
                }
                for (rule, key), f in current.items()
            ],
        )
