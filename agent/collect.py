"""Running the collectors and assembling their sections into a report.

Each collector runs in its own thread with a deadline. One that raises or misses the deadline
becomes an error entry; the other sections are intact. A collector still stuck from an earlier
cycle is not started again until it returns.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import structlog

from fleetwatch import __version__
from fleetwatch.agent.collectors.checks import ChecksCollector
from fleetwatch.agent.collectors.packages import InstalledPackages, PackagesCollector
from fleetwatch.agent.collectors.ports import PortsCollector
from fleetwatch.agent.collectors.resources import ResourcesCollector
from fleetwatch.agent.collectors.services import ServicesCollector
from fleetwatch.agent.collectors.system import SystemCollector
from fleetwatch.agent.collectors.updates import UpdatesCollector
from fleetwatch.agent.package_managers import NoPackageManagerError, detect
from fleetwatch.schema import SCHEMA_VERSION, Report, Sections, section_hash

if TYPE_CHECKING:
    from pydantic import BaseModel

    from fleetwatch.agent.collectors import Collector
    from fleetwatch.agent.settings import AgentSettings
    from fleetwatch.schema import SectionName

log = structlog.get_logger(__name__)


class Unavailable:
    """Stands in for a collector this host cannot run, so its section says why."""

    def __init__(self, name: SectionName, reason: str) -> None:
        self.name = name
        self.reason = reason

    def collect(self) -> BaseModel:
        raise RuntimeError(self.reason)


def default_collectors(settings: AgentSettings) -> list[Collector]:
    """The collectors for this host, reading from the real system."""
    collectors: list[Collector] = []
    try:
        manager = detect()
    except NoPackageManagerError as exc:
        installed = None
        collectors += [
            Unavailable("packages", str(exc)),
            Unavailable("updates", str(exc)),
        ]
    else:
        installed = InstalledPackages(manager)
        collectors += [
            PackagesCollector(installed),
            UpdatesCollector(manager, settings.state_dir / "cache" / "updates.json"),
        ]
    collectors += [
        SystemCollector(installed),
        PortsCollector(),
        ServicesCollector(),
        ChecksCollector(settings.active_checks),
        ResourcesCollector(),
    ]
    return collectors


@dataclass
class _Run:
    thread: threading.Thread
    started: float
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class ReportBuilder:
    """Collects every section, each within ``timeout`` seconds."""

    def __init__(self, collectors: list[Collector], timeout: float) -> None:
        self.collectors = collectors
        self.timeout = timeout
        self._stuck: dict[str, _Run] = {}

    def collect_sections(self) -> Sections:
        runs: dict[str, _Run] = {}
        errors: dict[str, str] = {}
        for collector in self.collectors:
            stuck = self._stuck.get(collector.name)
            if stuck is not None and not stuck.done.is_set():
                errors[collector.name] = (
                    f"still running after {time.monotonic() - stuck.started:.0f} s "
                    "(since an earlier report)"
                )
                continue
            self._stuck.pop(collector.name, None)
            runs[collector.name] = self._start(collector)
        deadline = time.monotonic() + self.timeout
        sections: dict[str, dict[str, Any]] = {}
        for name, run in runs.items():
            if not run.done.wait(max(0.0, deadline - time.monotonic())):
                self._stuck[name] = run
                errors[name] = f"no result within {self.timeout:g} s"
            elif run.error is not None:
                errors[name] = f"{type(run.error).__name__}: {run.error}"[:4000]
            else:
                sections[name] = {"hash": section_hash(run.result), "data": run.result}
        for name, error in errors.items():
            log.warning("collector failed", section=name, error=error)
            sections[name] = {"error": error}
        return Sections.model_validate(sections)

    @staticmethod
    def _start(collector: Collector) -> _Run:
        def target() -> None:
            try:
                run.result = collector.collect()
            except BaseException as exc:  # noqa: BLE001  (recorded as the section's error)
                run.error = exc
            finally:
                run.done.set()

        thread = threading.Thread(target=target, name=f"collect-{collector.name}", daemon=True)
        run = _Run(thread=thread, started=time.monotonic())
        thread.start()
        return run


def build_report(sections: Sections, *, host_id: str, instance_id: str, sequence: int) -> Report:
    return Report(
        schema_version=SCHEMA_VERSION,
        host_id=host_id,
        instance_id=instance_id,
        sequence=sequence,
        collected_at=datetime.now(timezone.utc),
        agent_version=__version__,
        sections=sections,
    )
