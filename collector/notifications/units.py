"""Units as notifications see them: who to tell about a unit's hosts, and how often.

The policy declares units and their contacts (``[units.NAME]``, `compliance.response.Unit`).
This module is the one place that reads them, through the small shape below: of the policy's
unit the sender needs only these four things.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from fleetwatch.collector.compliance.policy import Policy

EMAIL_TARGET_PREFIX = "unit:"  # "unit:parks": the e-mail addresses of unit parks


class UnitContacts(Protocol):
    """A unit's contacts: its e-mail addresses, targets by name, and digest choice."""

    @property
    def name(self) -> str: ...
    @property
    def emails(self) -> Sequence[str]: ...
    @property
    def targets(self) -> Sequence[str]: ...
    @property
    def digest(self) -> Literal["immediate", "daily"]: ...


def units_of(policy: Policy) -> Mapping[str, UnitContacts]:
    """The units of a compiled policy, by name (a unit only named on hosts has no contacts)."""
    return policy.units


def email_target(unit: str) -> str:
    """The name under which a unit's e-mail addresses are a target."""
    return f"{EMAIL_TARGET_PREFIX}{unit}"
