"""Showing API data to a person: tables for terminals, JSON for scripts.

Everything a host reported is untrusted. Before it reaches a terminal, control characters,
escape sequences and bidirectional overrides are replaced by visible escapes, so a hostile
hostname or process name cannot rewrite the screen or hide itself. JSON output is encoded
with ASCII escapes, which keeps it valid and equally inert.
"""

from __future__ import annotations

import json
import textwrap
import unicodedata
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

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


def stream(
    pages: Iterable[list[dict[str, Any]]],
    as_json: bool,
    as_table: Callable[..., str],
) -> int:
    """Print a list page by page as it comes: one JSON list (as `to_json` would print it
    whole), or table rows under one header. How many rows were printed."""
    if as_json:
        return stream_json(pages)
    count = 0
    for page in pages:
        if page:
            print(as_table(page, header=count == 0), flush=True)
            count += len(page)
    return count


def stream_json(pages: Iterable[list[Any]]) -> int:
    """Print a list page by page as it comes, as one JSON list (as `to_json` would print it
    whole). How many rows were printed."""
    count = 0
    for page in pages:
        for row in page:
            print(("[\n" if count == 0 else ",\n") + textwrap.indent(to_json(row), "  "), end="")
            count += 1
    print("\n]" if count else "[]", flush=True)
    return count


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


def table(headers: list[str], rows: list[list[object]], *, header: bool = True) -> str:
    """Aligned columns; the last column is left unpadded so long details do not wrap early.
    Without ``header``: rows that follow an earlier table's (a later page of a list)."""
    cells = [[clean(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headers, *cells] if header else cells:
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


def nothing_found(what: str, filters: dict[str, object]) -> str:
    """What an empty answer says instead of a bare header: which filters matched nothing."""
    given = [
        f"--{name.replace('_', '-')}" + ("" if value is True else f" {clean(value)}")
        for name, value in filters.items()
        if value not in (None, False)
    ]
    return f"no {what} match {' '.join(given)}" if given else f"no {what}"


def hosts_table(hosts: list[dict[str, Any]], *, header: bool = True) -> str:
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
    return table(
        ["HOST", "UNIT", "STATUS", "LAST REPORT", "AGENT", "OPEN FINDINGS"], rows, header=header
    )


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


def findings_table(findings: list[dict[str, Any]], *, header: bool = True) -> str:
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
    return table(
        ["ID", "HOST", "RULE", "SEVERITY", "STATE", "DUE", "AGE", "DETAIL"], rows, header=header
    )


def tokens_table(tokens: list[dict[str, Any]]) -> str:
    """Tokens kept in the database, and those the collector reads from its environment
    (``source: environment``: no id, no dates, never the value)."""
    rows = [
        [
            "-" if t.get("id") is None else t["id"],
            t["name"],
            t["kind"],
            t.get("unit") or "-",
            (t.get("created_at") or "")[:19] or "-",
            "from environment"
            if t.get("source") == "environment"
            else ("revoked" if t.get("revoked_at") else "active"),
        ]
        for t in tokens
    ]
    return table(["ID", "NAME", "KIND", "UNIT", "CREATED", "STATE"], rows)


MAX_LISTED_UPDATES = 50


def updates_lines(data: dict[str, Any]) -> list[str]:
    """The pending updates in a line, then each held-back upgrade and new install with why."""
    pending = data.get("updates") or []
    held = [u for u in pending if u.get("held_back")]
    new = data.get("new_installs") or []
    security = sum(1 for u in pending if u.get("security"))
    plural = "" if len(new) == 1 else "s"
    summary = f"{len(pending)} pending ({security} security), {len(held)} held back"
    lines = [f"updates:       {summary}, {len(new)} new install{plural}"]
    lines += [_held_line(update) for update in held[:MAX_LISTED_UPDATES]]
    lines += [
        f"  {'new':<9} {_arch_name(update)} {clean(update['candidate_version'])}"
        for update in new[:MAX_LISTED_UPDATES]
    ]
    hidden = max(0, len(held) - MAX_LISTED_UPDATES) + max(0, len(new) - MAX_LISTED_UPDATES)
    if hidden:
        lines.append(f"  ... and {hidden} more (--json lists them all)")
    return lines


def _held_line(update: dict[str, Any]) -> str:
    security = " security" if update.get("security") else ""
    return (
        f"  {clean(update['held_back']):<9} {_arch_name(update)} "
        f"{clean(update.get('installed_version'))} -> {clean(update['candidate_version'])}"
        f"{security}: {clean(update.get('reason') or '-')}"
    )


def _arch_name(update: dict[str, Any]) -> str:
    return f"{clean(update['name'])}:{clean(update['architecture'])}"
