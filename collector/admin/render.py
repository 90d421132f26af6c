"""Showing API data to a person: tables for terminals, JSON for scripts.

Everything a host reported is untrusted. Before it reaches a terminal, control characters,
escape sequences and bidirectional overrides are replaced by visible escapes, so a hostile
hostname or process name cannot rewrite the screen or hide itself. JSON output is encoded
with ASCII escapes, which keeps it valid and equally inert.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime
from typing import Any

# Characters that reorder or hide text when displayed.
_INVISIBLE = frozenset(
    "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2066\u2067\u2068\u2069\u2028\u2029\ufeff"
)


def clean(value: object) -> str:
    """Text that is safe to print: every control or invisible character made visible."""
    text = "" if value is None else str(value)
    out = []
    for char in text:
        if char in _INVISIBLE or unicodedata.category(char) in {
            "Cc",
            "Cf",
            "Cs",
            "Co",
            "Cn",
        }:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=True, sort_keys=False)


def ago(timestamp: str | None, now: datetime | None = None) -> str:
    if not timestamp:
        return "never"
    when = datetime.fromisoformat(timestamp)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def table(headers: list[str], rows: list[list[object]]) -> str:
    """Aligned columns; the last column is left unpadded so long details do not wrap early."""
    cells = [[clean(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headers, *cells]:
        parts = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*parts, row[-1]]).rstrip())
    return "\n".join(lines)


def severity_counts(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "0"
    order = ["critical", "high", "medium", "low"]
    parts = [f"{counts[s]} {s}" for s in order if counts.get(s)]
    return f"{total} ({', '.join(parts)})"


def hosts_table(hosts: list[dict[str, Any]]) -> str:
    rows = [
        [
            h["host_id"],
            h.get("unit") or "-",
            h["status"],
            ago(h.get("last_report_at")),
            h.get("agent_version") or "-",
            severity_counts(h.get("open_by_severity") or {}),
        ]
        for h in hosts
    ]
    return table(["HOST", "UNIT", "STATUS", "LAST REPORT", "AGENT", "OPEN FINDINGS"], rows)


def finding_state(f: dict[str, Any]) -> str:
    """A finding's state as one word or two: its case, waived, overdue."""
    state = f.get("state") or ("open" if f["open"] else "resolved")
    if not f["open"]:
        when = f.get("verified_at") if state == "verified" else f.get("resolved_at")
        return f"{state} {ago(when)}"
    if f.get("waived"):
        return f"{state}, waived"
    if f.get("overdue"):
        return f"{state}, OVERDUE"
    return str(state)


def findings_table(findings: list[dict[str, Any]]) -> str:
    rows = [
        [
            f["id"],
            f["host_id"],
            f["rule"],
            f["severity"],
            finding_state(f),
            (f.get("due_at") or "-")[:10],
            ago(f["first_seen"]).replace(" ago", ""),
            f["detail"],
        ]
        for f in findings
    ]
    return table(["ID", "HOST", "RULE", "SEVERITY", "STATE", "DUE", "AGE", "DETAIL"], rows)


def host_text(host: dict[str, Any]) -> str:
    lines = [
        f"host:          {clean(host['host_id'])}",
        f"unit:          {clean(host.get('unit') or '-')}",
        f"groups:        {clean(', '.join(host.get('groups') or []) or '-')}",
        f"status:        {clean(host['status'])}",
        f"last report:   {ago(host.get('last_report_at'))}",
        f"agent version: {clean(host.get('agent_version') or '-')}",
    ]
    system = ((host.get("sections") or {}).get("system") or {}).get("data") or {}
    if system:
        os_info = system.get("os") or {}
        lines += [
            f"os:            {clean(os_info.get('pretty_name') or os_info.get('id') or '-')}",
            f"kernel:        {clean(system.get('kernel'))}",
            f"reboot needed: {'yes' if system.get('reboot_required') else 'no'}",
        ]
    if host.get("spool_error"):
        lines.append(f"spool:         {clean(host['spool_error'])}")
    if host.get("dropped_reports"):
        lines.append(f"dropped:       {host['dropped_reports']} reports lost by the agent")
    for name, section in sorted((host.get("sections") or {}).items()):
        problem = section.get("error") or section.get("missing")
        if problem:
            lines.append(f"section {clean(name)}: {clean(problem)}")
    findings = host.get("findings") or []
    lines.append("")
    lines.append(findings_table(findings) if findings else "no open findings")
    return "\n".join(lines)
