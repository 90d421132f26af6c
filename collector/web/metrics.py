"""``GET /metrics``: the Prometheus exposition of the fleet and of the collector itself.

Who may read it: a caller with an API token that sees the whole fleet (``read`` or
``admin``, not limited to a unit), sent as ``Authorization: Bearer`` like every API call.
The fleet figures name every unit, so a unit's token may not read them; and a token of its
own (``fleetwatch token create --kind read --name prometheus``) can be revoked alone. A
separate listen address was the other choice: it would need a second listener in every
worker, or a process of its own, for figures no more secret than ``GET /api/v1/hosts``.

Two kinds of figures:

- **the fleet** (hosts by status and unit, open findings by unit, rule and severity, the
  oldest open finding's age, overdue findings by unit and severity, vulnerabilities by
  severity and exploited, the newest report received), read from the database at scrape
  time without visiting every host: hosts by unit and status from the counts triggers keep
  (`storage.tallies`: a few rows, and the stale hosts found through the index of when facts
  were true), open findings grouped by the unit each host is placed in with their overdue
  count, ``host_vulnerabilities`` grouped, and the newest report from the end of an index
  (`storage.fleet`); kept ``metrics_cache_seconds`` in the process that read them: a
  Prometheus scraping every 15 s costs the database one read of each kind at most per
  interval and worker;
- **the collector's own** (`collector.instruments`): counters and histograms every worker
  process adds to. Under ``fleetwatch serve`` they are in prometheus_client's multiprocess
  mode, in the directory ``serve`` made (``metrics_dir``): whichever worker answers a scrape
  adds up the files of all of them (`web.metrics_files`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from fleetwatch.collector.compliance.placement import default_age
from fleetwatch.collector.compliance.rules.registry import SEVERITIES
from fleetwatch.collector.storage import fleet, tallies
from fleetwatch.collector.web.bearer import fleet_reader

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client.metrics_core import Metric

    from fleetwatch.collector.service import CollectorService

router = APIRouter()

# The severity label of a vulnerability the data does not rate. (A host without a unit has
# the unit label "": an empty label is the same as no label.)
UNRATED = "unrated"


@dataclass(frozen=True)
class FleetFigures:
    """The fleet's figures at one moment, as /metrics shows them."""

    hosts: dict[tuple[str, str], int] = field(default_factory=dict)  # (unit, status)
    open_findings: dict[tuple[str, str, str], int] = field(default_factory=dict)  # unit,rule,sev
    oldest_open: dict[tuple[str, str], datetime] = field(default_factory=dict)  # (unit, severity)
    overdue: dict[tuple[str, str], int] = field(default_factory=dict)  # (unit, severity)
    vulnerabilities: dict[tuple[str, bool], int] = field(default_factory=dict)  # sev, exploited
    last_report: datetime | None = None
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    seconds: float = 0.0  # how long reading them took


def read_fleet_figures(svc: CollectorService, now: datetime | None = None) -> FleetFigures:
    """The fleet's figures, read from the database now."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    with svc.store.read() as conn:
        units = tallies.hosts_by_status(conn, now, default_age(svc.policy.current))
        by_unit = list(fleet.open_findings_by_unit(conn, now))
        last_report = fleet.last_received(conn)
        vulnerabilities = {
            (v.severity or UNRATED, v.exploited): v.count for v in fleet.vulnerabilities(conn)
        }
    hosts = {
        (unit, status): count
        for unit, counted in units.items()
        for status, count in counted.by_status.items()
    }
    open_findings: Counter[tuple[str, str, str]] = Counter()
    oldest: dict[tuple[str, str], datetime] = {}
    overdue: Counter[tuple[str, str]] = Counter()
    for row in by_unit:
        open_findings[row.owner, row.rule, row.severity] += row.count
        overdue[row.owner, row.severity] += row.overdue
        if (row.owner, row.severity) not in oldest or row.oldest < oldest[row.owner, row.severity]:
            oldest[row.owner, row.severity] = row.oldest
    return FleetFigures(
        hosts=hosts,
        open_findings=dict(open_findings),
        oldest_open=oldest,
        overdue=dict(overdue),
        vulnerabilities=vulnerabilities,
        last_report=last_report,
        taken_at=now,
        seconds=time.perf_counter() - started,
    )


class FleetCollector:
    """A prometheus_client collector of the fleet's figures, read at most every
    ``max_age`` seconds (one reader at a time: concurrent scrapes wait for its figures)."""

    def __init__(
        self,
        read: Callable[[], FleetFigures],
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._figures: FleetFigures | None = None
        self._read_at = 0.0

    def figures(self) -> FleetFigures:
        with self._lock:
            now = self._clock()
            if self._figures is None or now - self._read_at >= self._max_age:
                self._figures = self._read()
                self._read_at = now
            return self._figures

    def collect(self) -> Iterator[Metric]:
        figures = self.figures()
        hosts = GaugeMetricFamily(
            "fleetwatch_hosts",
            "Hosts by unit and status (compliant, noncompliant, stale, never_reported).",
            labels=["unit", "status"],
        )
        for (unit, status), count in sorted(figures.hosts.items()):
            hosts.add_metric([unit, status], count)
        yield hosts
        findings = GaugeMetricFamily(
            "fleetwatch_open_findings",
            "Open findings by unit, rule and severity.",
            labels=["unit", "rule", "severity"],
        )
        for (unit, rule, severity), count in sorted(figures.open_findings.items()):
            findings.add_metric([unit, rule, severity], count)
        yield findings
        oldest = GaugeMetricFamily(
            "fleetwatch_oldest_open_finding_age_seconds",
            "Age of the oldest open finding by unit and severity (since it was first seen); "
            "absent where the unit has no open finding of that severity.",
            labels=["unit", "severity"],
        )
        order: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
        for (unit, severity), since in sorted(
            figures.oldest_open.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], -1))
        ):
            oldest.add_metric([unit, severity], (figures.taken_at - since).total_seconds())
        yield oldest
        overdue = GaugeMetricFamily(
            "fleetwatch_overdue_findings",
            "Open findings past their due date by unit and severity (waived ones are not "
            "overdue); zero where a unit has open findings of that severity, none overdue.",
            labels=["unit", "severity"],
        )
        for (unit, severity), count in sorted(
            figures.overdue.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], -1))
        ):
            overdue.add_metric([unit, severity], count)
        yield overdue
        vulnerabilities = GaugeMetricFamily(
            "fleetwatch_vulnerabilities",
            "Vulnerabilities the hosts carry (one per host, CVE and source package) by "
            "severity (unrated: the data gives none) and whether known exploited (KEV); "
            "absent without vulnerability data.",
            labels=["severity", "exploited"],
        )
        for (severity, exploited), count in sorted(figures.vulnerabilities.items()):
            vulnerabilities.add_metric([severity, "true" if exploited else "false"], count)
        yield vulnerabilities
        last = GaugeMetricFamily(
            "fleetwatch_last_report_received_timestamp_seconds",
            "When the collector last stored a report of any host (Unix time; every worker "
            "alike, read from the database); absent before the first report.",
        )
        if figures.last_report is not None:
            last.add_metric([], figures.last_report.timestamp())
        yield last
        yield GaugeMetricFamily(
            "fleetwatch_fleet_figures_read_seconds",
            "Seconds the last read of the fleet figures from the database took.",
            value=figures.seconds,
        )
        yield GaugeMetricFamily(
            "fleetwatch_fleet_figures_age_seconds",
            "Seconds since the fleet figures of this scrape were read from the database.",
            value=(datetime.now(UTC) - figures.taken_at).total_seconds(),
        )


class _ThisProcess:
    """The default registry of this process (its instruments, its process and platform
    figures), when there are no other workers' files to add up."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def exposition(svc: CollectorService, fleet_collector: FleetCollector) -> bytes:
    """The text of ``/metrics``: the fleet, and the collector summed over its workers."""
    registry = CollectorRegistry(auto_describe=False)
    metrics_dir = svc.settings.metrics_dir
    if metrics_dir is not None:
        MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(fleet_collector)
    return generate_latest(registry)


@router.get(
    "/metrics",
    tags=["read"],
    dependencies=[Depends(fleet_reader)],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Exposition"}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics: the fleet's figures and the collector's own (a token that sees
    the whole fleet: read or admin, not limited to a unit)."""
    state = request.app.state
    return Response(exposition(state.service, state.fleet_metrics), media_type=CONTENT_TYPE_LATEST)


def install(app_state: object, svc: CollectorService) -> None:
    """Give the application the fleet collector ``/metrics`` reads through."""
    app_state.fleet_metrics = FleetCollector(  # type: ignore[attr-defined]
        lambda: read_fleet_figures(svc), svc.settings.metrics_cache_seconds
    )


__all__ = ["router"]
