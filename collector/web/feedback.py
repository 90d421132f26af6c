"""Unit reports and the office's summary over HTTP, as JSON, CSV or a printable HTML page.

Everything a host reported (subjects, details) reaches these pages: the HTML is rendered with
autoescaping (Jinja2), and CSV cells that a spreadsheet would run as a formula (starting with
``=``, ``+``, ``-``, ``@``, tab or carriage return) are prefixed with ``'``.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import jinja2
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from fleetwatch.collector.compliance.feedback import Feedback, FleetSummary, UnitReport
from fleetwatch.collector.refusals import InvalidRequest, NoSuchUnit
from fleetwatch.collector.web.bearer import Reader, fleet_reader
from fleetwatch.collector.web.casework_views import UtcTime  # noqa: TC001  (FastAPI reads it)

if TYPE_CHECKING:
    from collections.abc import Callable

    from fleetwatch.collector.service import CollectorService

router = APIRouter()
Format = Literal["json", "csv", "html"]
DEFAULT_PERIOD = timedelta(days=30)


def _service(request: Request) -> CollectorService:
    return request.app.state.service  # type: ignore[no-any-return]


def _period(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    until = until or datetime.now(UTC)
    since = since or until - DEFAULT_PERIOD
    if since >= until:
        raise InvalidRequest("since must be before until")
    try:
        since - (until - since)  # the previous period, which the summary compares with
    except OverflowError as exc:
        raise InvalidRequest("since is too long ago: the period before it has no dates") from exc
    return since, until


# -- CSV ----------------------------------------------------------------------------------


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text, never runs as a formula."""
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text if text[:1] in {"=", "+", "-", "@", "\t", "\r"} else text


FINDING_COLUMNS = (
    "id", "host_id", "rule", "subject", "severity", "state", "first_seen", "age_days",
    "due_at", "overdue", "acknowledged_by", "note", "resolved_at", "verified_at",
    "waiver_id", "detail",
)  # fmt: skip


def unit_csv(report: UnitReport) -> str:
    """One table: a row per finding with the section it belongs to (open, overdue, fixed,
    verified, waived), then a row per waiver."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["section", *FINDING_COLUMNS])
    for section in ("open", "overdue", "fixed", "verified", "waived"):
        for line in getattr(report, section):
            writer.writerow([section, *(_cell(getattr(line, c)) for c in FINDING_COLUMNS)])
    writer.writerow([])
    writer.writerow(["waiver", "id", "scope", "target", "rule", "pattern", "expires_at",
                     "expiring", "findings", "owner", "reason"])  # fmt: skip
    for w in report.waivers:
        values = (w.id, w.scope, w.target, w.rule, w.pattern, w.expires_at, w.expiring)
        rest = (w.findings, w.owner, w.reason)
        writer.writerow(["waiver", *(_cell(v) for v in (*values, *rest))])
    return out.getvalue()


UNIT_COLUMNS = (
    "unit", "title", "hosts", "open", "overdue", "overdue_critical", "waived", "opened",
    "fixed", "verified", "previous_opened", "previous_fixed", "previous_verified",
    "open_at_start",
)  # fmt: skip


def fleet_csv(summary: FleetSummary) -> str:
    """A row per unit, ranked by overdue critical findings."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["rank", *UNIT_COLUMNS])
    for rank, line in enumerate(summary.units, 1):
        writer.writerow([rank, *(_cell(getattr(line, c)) for c in UNIT_COLUMNS)])
    return out.getvalue()


# -- HTML ---------------------------------------------------------------------------------

_ENVIRONMENT = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_ENVIRONMENT.filters["day"] = lambda v: "-" if v is None else v.strftime("%Y-%m-%d")
_ENVIRONMENT.filters["minute"] = lambda v: "-" if v is None else v.strftime("%Y-%m-%d %H:%M")

_STYLE = """
body { font: 10.5pt/1.35 system-ui, sans-serif; margin: 2em; color: #111; }
h1 { font-size: 16pt; margin: 0 } h2 { font-size: 12.5pt; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; width: 100%; margin-bottom: .5em; }
th, td { border-bottom: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #eee; } td.n { text-align: right; } .overdue { color: #a00; font-weight: 600; }
.muted { color: #666; } @media print { body { margin: 0 } h2 { break-after: avoid; }
tr { break-inside: avoid; } }
"""

_FINDINGS = """
{% macro findings(lines, closed=False) %}
{% if lines %}<table><tr><th>#</th><th>host</th><th>rule</th><th>subject</th><th>severity</th>
<th>state</th><th>age (days)</th><th>due</th>{% if closed %}<th>resolved</th><th>verified</th>
{% endif %}<th>detail</th></tr>
{% for f in lines %}<tr{% if f.overdue %} class="overdue"{% endif %}><td>{{ f.id }}</td>
<td>{{ f.host_id }}</td><td>{{ f.rule }}</td><td>{{ f.subject }}</td><td>{{ f.severity }}</td>
<td>{{ f.state }}{% if f.overdue %}, overdue{% endif %}</td><td class="n">{{ f.age_days }}</td>
<td>{{ f.due_at | day }}</td>{% if closed %}<td>{{ f.resolved_at | minute }}</td>
<td>{{ f.verified_at | minute }}</td>{% endif %}<td>{{ f.detail }}
{% if f.note %}<br><span class="muted">{{ f.acknowledged_by }}: {{ f.note }}</span>{% endif %}
</td></tr>{% endfor %}</table>{% else %}<p class="muted">None.</p>{% endif %}
{% endmacro %}
"""

UNIT_PAGE = _ENVIRONMENT.from_string(
    _FINDINGS
    + """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{{ r.title }}: rectification report {{ r.since | day }} to {{ r.until | day }}</title>
<style>{{ style }}</style></head><body>
<h1>{{ r.title }} <span class="muted">({{ r.unit }})</span></h1>
<p>Rectification report, {{ r.since | minute }} to {{ r.until | minute }} UTC.
{% if r.emails %}Contacts: {{ r.emails | join(", ") }}.{% endif %}</p>
<p>Open findings: {% for s, n in r.open_by_severity.items() %}{{ n }} {{ s }}{% if not loop.last %},
{% endif %}{% else %}none{% endfor %}; overdue: {{ r.overdue | length }};
fixed in the period: {{ r.fixed | length }}; verified: {{ r.verified | length }};
waived: {{ r.waived | length }}.</p>
<h2>Overdue</h2>{{ findings(r.overdue) }}
<h2>Open</h2>{{ findings(r.open) }}
<h2>Fixed in the period</h2>{{ findings(r.fixed, closed=True) }}
<h2>Verified in the period</h2>{{ findings(r.verified, closed=True) }}
<h2>Waived</h2>{{ findings(r.waived) }}
<h2>Waivers in force</h2>
{% if r.waivers %}<table><tr><th>#</th><th>for</th><th>rule</th><th>subject</th><th>expires</th>
<th>findings</th><th>owner</th><th>reason</th></tr>
{% for w in r.waivers %}<tr{% if w.expiring %} class="overdue"{% endif %}><td>{{ w.id }}</td>
<td>{{ w.scope }} {{ w.target }}</td><td>{{ w.rule }}</td><td>{{ w.pattern }}</td>
<td>{{ w.expires_at | day }}{% if w.expiring %} (expiring){% endif %}</td>
<td class="n">{{ w.findings }}</td><td>{{ w.owner }}</td><td>{{ w.reason }}</td></tr>
{% endfor %}</table>{% else %}<p class="muted">None.</p>{% endif %}
<h2>Hosts</h2><table><tr><th>host</th><th>last report</th><th>open</th><th>overdue</th></tr>
{% for h in r.hosts %}<tr><td>{{ h.host_id }}</td><td>{{ h.last_report_at | minute }}</td>
<td class="n">{{ h.open_findings }}</td><td class="n">{{ h.overdue_findings }}</td></tr>
{% endfor %}</table></body></html>
"""
)

FLEET_PAGE = _ENVIRONMENT.from_string(
    """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>fleetwatch: units {{ s.since | day }} to {{ s.until | day }}</title>
<style>{{ style }}</style></head><body>
<h1>Units, {{ s.since | minute }} to {{ s.until | minute }} UTC</h1>
<p>Ranked by overdue critical findings, then overdue findings. In brackets: the previous
period of the same length.</p>
<table><tr><th>#</th><th>unit</th><th>hosts</th><th>open (at start)</th><th>overdue</th>
<th>overdue critical</th><th>waived</th><th>opened</th><th>fixed</th><th>verified</th></tr>
{% for u in s.units %}<tr{% if u.overdue_critical %} class="overdue"{% endif %}>
<td>{{ loop.index }}</td><td>{{ u.title }} <span class="muted">({{ u.unit }})</span></td>
<td class="n">{{ u.hosts }}</td><td class="n">{{ u.open }} ({{ u.open_at_start }})</td>
<td class="n">{{ u.overdue }}</td><td class="n">{{ u.overdue_critical }}</td>
<td class="n">{{ u.waived }}</td><td class="n">{{ u.opened }} ({{ u.previous_opened }})</td>
<td class="n">{{ u.fixed }} ({{ u.previous_fixed }})</td>
<td class="n">{{ u.verified }} ({{ u.previous_verified }})</td></tr>{% endfor %}
</table></body></html>
"""
)


def unit_html(report: UnitReport) -> str:
    return UNIT_PAGE.render(r=report, style=_STYLE)


def fleet_html(summary: FleetSummary) -> str:
    return FLEET_PAGE.render(s=summary, style=_STYLE)


# -- routes -------------------------------------------------------------------------------


R = TypeVar("R", bound=BaseModel)


def _answer(
    fmt: Format, report: R, as_csv: Callable[[R], str], as_html: Callable[[R], str], stem: str
) -> Response:
    if fmt == "csv":
        return Response(
            as_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{stem}.csv"'},
        )
    if fmt == "html":
        return Response(as_html(report), media_type="text/html; charset=utf-8")
    return Response(report.model_dump_json(), media_type="application/json")


@router.get("/api/v1/reports/units/{name}", response_model=UnitReport, tags=["response"])
async def unit_report(
    request: Request,
    name: Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[\w.-]+$")],
    principal: Reader,
    since: UtcTime | None = None,
    until: UtcTime | None = None,
    fmt: Annotated[Format, Query(alias="format")] = "json",
) -> Response:
    """A unit's rectification report for a period (default: the last 30 days): hosts, open
    findings by severity with age and due date, overdue, fixed and verified in the period,
    waivers in force and expiring; as JSON, CSV or printable HTML."""
    if not principal.may_see(name):
        raise NoSuchUnit(f"no unit {name!r}")
    start, end = _period(since, until)
    svc = _service(request)
    report = await run_in_threadpool(Feedback(svc.store, svc.policy.current).unit, name, start, end)
    stem = f"{name}-{start:%Y%m%d}-{end:%Y%m%d}"
    return _answer(fmt, report, unit_csv, unit_html, stem)


@router.get(
    "/api/v1/reports/fleet",
    response_model=FleetSummary,
    tags=["response"],
    dependencies=[Depends(fleet_reader)],
)
async def fleet_report(
    request: Request,
    since: UtcTime | None = None,
    until: UtcTime | None = None,
    fmt: Annotated[Format, Query(alias="format")] = "json",
) -> Response:
    """Every unit for a period, ranked by overdue critical findings, with the previous
    period beside it (a token not limited to a unit)."""
    start, end = _period(since, until)
    svc = _service(request)
    summary = await run_in_threadpool(Feedback(svc.store, svc.policy.current).fleet, start, end)
    stem = f"units-{start:%Y%m%d}-{end:%Y%m%d}"
    return _answer(fmt, summary, fleet_csv, fleet_html, stem)


__all__ = ["router"]
