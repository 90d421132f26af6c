"""The response to findings on the command line: units, a finding's case, acknowledgements,
due dates, waivers and the audit log. Each command asks the API (`admin.client`)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleetwatch.collector.admin.client import ApiClient


def moment(text: str) -> str:
    """A date (00:00 UTC that day) or an ISO 8601 date and time (UTC unless it says), as the
    API takes it."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).isoformat()
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"not a date (YYYY-MM-DD) or an ISO 8601 time: {text!r}"
        raise argparse.ArgumentTypeError(msg) from exc
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value).isoformat()


def _client() -> ApiClient:
    from fleetwatch.collector.admin.cli import _client as client

    return client()


def _print_json_or(args: argparse.Namespace, data: Any, text: str) -> None:
    from fleetwatch.collector.admin import render

    print(render.to_json(data) if args.json else text)


def cmd_units(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin import render

    units = _client().get("/api/v1/units")
    rows = [
        [
            u["name"],
            u["title"],
            len(u["hosts"]),
            u["open_findings"],
            u["overdue_findings"],
            u["waived_findings"],
            u["digest"],
            ", ".join(u["emails"] + u["targets"]) or "-",
        ]
        for u in units
    ]
    headers = ["UNIT", "TITLE", "HOSTS", "OPEN", "OVERDUE", "WAIVED", "DIGEST", "CONTACTS"]
    _print_json_or(args, units, render.table(headers, rows))
    return 0


def _event_rows(events: list[dict[str, Any]]) -> list[list[object]]:
    rows: list[list[object]] = []
    for e in events:
        detail = e["detail"]
        said = detail.get("note") or detail.get("reason_ended") or ""
        if e["kind"] == "due_changed":
            said = f"due {(detail.get('due_at') or 'none')[:16]}"
        elif e["kind"] in {"waived", "unwaived"}:
            said = f"waiver {detail.get('waiver_id') or detail.get('previous_waiver_id')}"
        rows.append([e["id"], e["at"][:19], e["kind"], e["actor"], said])
    return rows


def cmd_finding(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin import render

    client = _client()
    finding = client.get(f"/api/v1/findings/{args.id}")
    history = client.get(f"/api/v1/findings/{args.id}/history")
    if args.json:
        print(render.to_json({"finding": finding, "history": history}))
        return 0
    lines = [
        (
            f"finding {finding['id']}: {render.clean(finding['rule'])} "
            f"{render.clean(finding['key'])} on {render.clean(finding['host_id'])}"
        ),
        (
            f"  severity {finding['severity']}; {render.finding_state(finding)}"
            f"; due {finding['due_at'] or '-'}"
        ),
        f"  {render.clean(finding['detail'])}",
    ]
    if finding["acknowledged_by"]:
        lines.append(
            f"  acknowledged by {render.clean(finding['acknowledged_by'])} "
            f"{finding['acknowledged_at'][:19]}: {render.clean(finding['note'] or '')}"
        )
    lines += ["", render.table(["EVENT", "AT", "KIND", "ACTOR", ""], _event_rows(history))]
    print("\n".join(lines))
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    body = {"note": args.note, "due_at": args.due}
    finding = _client().post(f"/api/v1/findings/{args.id}/acknowledge", body)
    due = f"; due {finding['due_at']}" if finding["due_at"] else ""
    _print_json_or(args, finding, f"finding {finding['id']} acknowledged{due}")
    return 0


def cmd_due(args: argparse.Namespace) -> int:
    due = None if args.date == "none" else moment(args.date)
    finding = _client().post(f"/api/v1/findings/{args.id}/due", {"due_at": due, "note": args.note})
    _print_json_or(args, finding, f"finding {finding['id']} due {finding['due_at'] or 'never'}")
    return 0


def cmd_waive(args: argparse.Namespace) -> int:
    scope, target = next(
        (name, getattr(args, name)) for name in ("host", "unit", "group") if getattr(args, name)
    )
    body = {
        "scope": scope,
        "target": target,
        "rule": args.rule,
        "subject": args.subject,
        "reason": args.reason,
        "owner": args.owner,
        "expires_at": args.expires,
    }
    waiver = _client().post("/api/v1/waivers", body)
    _print_json_or(args, waiver, f"waiver {waiver['id']} in force until {waiver['expires_at']}")
    return 0


def cmd_waivers(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin import render

    client = _client()
    if args.revoke is not None:
        body = {"reason": args.reason} if args.reason else None
        waiver = client.post(f"/api/v1/waivers/{args.revoke}/revoke", body)
        _print_json_or(args, waiver, f"waiver {waiver['id']} revoked")
        return 0
    pages = client.pages("/api/v1/waivers", all="true" if args.all else None)
    if not render.stream(pages, args.json, waivers_table) and not args.json:
        print("no waivers in force" if not args.all else "no waivers")
    return 0


def waivers_table(waivers: list[dict[str, Any]], *, header: bool = True) -> str:
    """Waivers as table rows (without ``header``: rows that follow an earlier page's)."""
    from fleetwatch.collector.admin import render

    rows = [
        [
            w["id"],
            f"{w['scope']} {w['target']}",
            w["rule"],
            w["pattern"],
            w["expires_at"][:16],
            w["owner"],
            "in force" if w["in_force"] else ("revoked" if w["revoked_at"] else "expired"),
            w["source"] if w["source"] == "api" else f"policy: {w['name']}",
            w["reason"],
        ]
        for w in waivers
    ]
    headers = ["ID", "FOR", "RULE", "SUBJECT", "EXPIRES", "OWNER", "STATE", "FROM", "REASON"]
    return render.table(headers, rows, header=header)


def cmd_audit(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin import render

    pages = _client().pages(
        "/api/v1/audit",
        args.limit,
        kind=args.kind,
        unit=args.unit,
        host_id=args.host,
        finding_id=args.finding,
        actor=args.actor,
        since=args.since,
        after=args.after,
    )
    if not render.stream(pages, args.json, audit_table) and not args.json:
        print("no events")
    return 0


def audit_table(events: list[dict[str, Any]], *, header: bool = True) -> str:
    """Events as table rows (without ``header``: rows that follow an earlier page's)."""
    from fleetwatch.collector.admin import render

    rows = [
        [
            e["id"],
            e["at"][:19],
            e["kind"],
            e["actor"],
            e["unit"] or "-",
            e["host_id"] or "-",
            e["finding_id"] or "-",
            e["subject"] or "",
        ]
        for e in events
    ]
    headers = ["EVENT", "AT", "KIND", "ACTOR", "UNIT", "HOST", "FINDING", "SUBJECT"]
    return render.table(headers, rows, header=header)


def cmd_report(args: argparse.Namespace) -> int:
    path = (
        f"/api/v1/reports/units/{args.name}"
        if args.report_command == "unit"
        else "/api/v1/reports/fleet"
    )
    text = _client().text(path, since=args.since, until=args.until, format=args.format)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _report_parser(commands: Any) -> None:
    report = commands.add_parser("report", help="rectification reports: a unit's, or every unit's")
    kinds = report.add_subparsers(dest="report_command", required=True)
    unit = kinds.add_parser("unit", help="one unit's report for a period")
    unit.add_argument("name", help="the unit")
    fleet = kinds.add_parser("fleet", help="every unit, ranked by overdue critical findings")
    for parser in (unit, fleet):
        parser.add_argument("--since", type=moment, help="start (default: 30 days before until)")
        parser.add_argument("--until", type=moment, help="end (default: now)")
        parser.add_argument("--format", choices=["csv", "html", "json"], default="csv")
        parser.add_argument("-o", "--output", type=Path, help="write to this file")
    report.set_defaults(func=cmd_report)


def add_parser(commands: Any) -> None:
    """The commands of the response to findings, on the `fleetwatch` command's subparsers."""
    units = commands.add_parser("units", help="units, their contacts and their hosts")
    units.add_argument("--json", action="store_true", help="JSON for scripts")
    units.set_defaults(func=cmd_units)

    finding = commands.add_parser("finding", help="one finding and its history")
    finding.add_argument("id", type=int)
    finding.add_argument("--json", action="store_true", help="JSON for scripts")
    finding.set_defaults(func=cmd_finding)

    ack = commands.add_parser("ack", help="acknowledge a finding (admin or respond token)")
    ack.add_argument("id", type=int, help="the finding's id (`fleetwatch findings`)")
    ack.add_argument("--note", help="what is being done about it")
    ack.add_argument("--due", type=moment, help="when it will be fixed: YYYY-MM-DD or a time")
    ack.add_argument("--json", action="store_true", help="JSON for scripts")
    ack.set_defaults(func=cmd_ack)

    due = commands.add_parser("due", help="set a finding's due date (admin or respond token)")
    due.add_argument("id", type=int)
    due.add_argument("date", help="YYYY-MM-DD, an ISO 8601 time, or none")
    due.add_argument("--note", help="why it moves")
    due.add_argument("--json", action="store_true", help="JSON for scripts")
    due.set_defaults(func=cmd_due)

    waive = commands.add_parser("waive", help="excuse findings until a date (admin)")
    where = waive.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="on this host")
    where.add_argument("--unit", help="on this unit's hosts")
    where.add_argument("--group", help="on this policy group's hosts")
    waive.add_argument("--rule", required=True, help="the rule, as `fleetwatch findings` shows")
    waive.add_argument(
        "--subject", default="*", help="what it found, fnmatch-style: tcp/8081, CVE-2024-*"
    )
    waive.add_argument("--reason", required=True, help="why it is acceptable for now")
    waive.add_argument("--owner", required=True, help="who answers for it")
    waive.add_argument("--expires", required=True, type=moment, help="YYYY-MM-DD or a time")
    waive.add_argument("--json", action="store_true", help="JSON for scripts")
    waive.set_defaults(func=cmd_waive)

    waivers = commands.add_parser("waivers", help="waivers in force; --revoke one (admin)")
    waivers.add_argument("--all", action="store_true", help="revoked and expired ones too")
    waivers.add_argument("--revoke", type=int, metavar="ID", help="end this waiver now (admin)")
    waivers.add_argument("--reason", help="with --revoke: why it ends early")
    waivers.add_argument("--json", action="store_true", help="JSON for scripts")
    waivers.set_defaults(func=cmd_waivers)

    audit = commands.add_parser("audit", help="the audit log (admin)")
    audit.add_argument("--kind", help="only events of this kind (opened, acknowledged...)")
    audit.add_argument("--unit")
    audit.add_argument("--host")
    audit.add_argument("--finding", type=int)
    audit.add_argument("--actor")
    audit.add_argument("--since", type=moment, help="YYYY-MM-DD or a time")
    audit.add_argument("--after", type=int, help="only events after this id")
    audit.add_argument(
        "--limit", type=int, default=1000, help="stop after this many events (default 1000)"
    )
    audit.add_argument("--json", action="store_true", help="JSON for scripts")
    audit.set_defaults(func=cmd_audit)

    _report_parser(commands)


__all__ = ["add_parser", "moment"]
