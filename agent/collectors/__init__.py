"""Collectors: each gathers one section of the report and stands alone.

A collector has a section ``name`` and a ``collect()`` that returns that section's data model.
It takes its sources (file paths, a command runner, psutil functions) as constructor arguments,
with the real ones as defaults, so tests can feed it files captured from real hosts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pydantic import BaseModel

    from fleetwatch.schema import SectionName


class Collector(Protocol):
    name: SectionName

    def collect(self) -> BaseModel:
        """Gather this section now; raise on failure (the caller records the error)."""
        ...
