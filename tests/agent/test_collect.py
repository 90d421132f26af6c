"""Assembling a report: one failing or hanging collector never spoils the others."""

from __future__ import annotations

import threading
import time

from pydantic import BaseModel

from fleetwatch.agent.collect import ReportBuilder, Unavailable
from fleetwatch.schema import ChecksData, PortsData, SectionName


class Fixed:
    def __init__(self, name: SectionName, data: BaseModel) -> None:
        self.name = name
        self.data = data

    def collect(self) -> BaseModel:
        return self.data


class Failing:
    name: SectionName = "ports"

    def collect(self) -> BaseModel:
        raise PermissionError("cannot read /proc/net/tcp")


class Hanging:
    name: SectionName = "ports"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0

    def collect(self) -> BaseModel:
        self.started += 1
        self.release.wait(30)
        return PortsData(listeners=[])


class TestReportBuilder:
    def test_sections_carry_data_and_hash(self) -> None:
        """A collector's data goes in its section with the content hash."""
        sections = ReportBuilder([Fixed("checks", ChecksData(results=[]))], 5).collect_sections()
        assert sections.checks is not None
        assert sections.checks.data == ChecksData(results=[])
        assert sections.checks.hash is not None

    def test_a_failing_collector_becomes_an_error_entry(self) -> None:
        """An exception is the section's error; the other sections are intact."""
        sections = ReportBuilder(
            [Failing(), Fixed("checks", ChecksData(results=[]))], 5
        ).collect_sections()
        assert sections.ports is not None
        assert sections.ports.data is None
        assert sections.ports.error == "PermissionError: cannot read /proc/net/tcp"
        assert sections.checks is not None
        assert sections.checks.data is not None

    def test_a_hanging_collector_times_out(self) -> None:
        """A collector past its deadline is an error; the report does not wait for it."""
        hanging = Hanging()
        builder = ReportBuilder([hanging, Fixed("checks", ChecksData(results=[]))], 0.3)
        started = time.monotonic()
        sections = builder.collect_sections()
        assert time.monotonic() - started < 3
        assert sections.ports is not None
        assert sections.ports.error == "no result within 0.3 s"
        assert sections.checks is not None
        assert sections.checks.data is not None
        # next cycle: still stuck, so it is not started a second time
        again = builder.collect_sections()
        assert again.ports is not None
        assert "still running" in (again.ports.error or "")
        assert hanging.started == 1
        hanging.release.set()
        time.sleep(0.1)
        assert builder.collect_sections().ports.data is not None  # type: ignore[union-attr]

    def test_unavailable_collector(self) -> None:
        """A host without a package manager says why in the section."""
        sections = ReportBuilder([Unavailable("packages", "no dpkg")], 5).collect_sections()
        assert sections.packages is not None
        assert sections.packages.error == "RuntimeError: no dpkg"
