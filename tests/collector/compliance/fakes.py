"""A host's facts for the rules, built from section data as the agent sends it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fleetwatch.schema import SECTION_TYPES

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class Facts:
    """Sections, collection errors, first-seen times and vulnerabilities, as a test states
    them."""

    def __init__(
        self,
        sections: Mapping[str, Any] | None = None,
        errors: Mapping[str, str] | None = None,
        since: Mapping[tuple[str, str], datetime] | None = None,
        vulnerabilities: Any = (),
    ) -> None:
        self._vulnerabilities = vulnerabilities
        self.now = NOW
        self._sections = {
            name: SECTION_TYPES[name].model_validate(data)  # type: ignore[index]
            for name, data in (sections or {}).items()
            if data is not None
        }
        self._errors = dict(errors or {})
        self._since = dict(since or {})
        self.loads: list[str] = []

    def section(self, name: str) -> Any:
        self.loads.append(name)
        return self._sections.get(name)

    def section_hash(self, name: str) -> str | None:
        return f"hash-of-{name}" if name in self._sections else None

    def errors(self) -> Mapping[str, str]:
        return self._errors

    def since(self, kind: str, key: str) -> datetime:
        return self._since.get((kind, key), NOW)

    def vulnerabilities(self) -> Any:
        return self._vulnerabilities
