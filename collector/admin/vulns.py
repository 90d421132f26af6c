"""``fleetwatch vulns``: vulnerabilities by host, unit or CVE; importing the data; its status.

fleetwatch vulns [--host H] [--unit U] [--cve CVE] [--severity S] [--fixable] [--json]
                                              every page of the listing, a host at a time
fleetwatch vulns import PATH [--format F]     on the collector's host, into its database
fleetwatch vulns status [--json]              what data is loaded, from where and when

Listing asks the API; importing writes to the database directly (the data is tens of
megabytes, and an air-gapped collector's host is where the file is carried to). The running
collector notices the new data at its next housekeeping round and evaluates every host
against it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetwatch.collector.admin import render

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable, Iterator

FORMATS = ("debian-tracker", "osv", "kev")


def add_parser(subparsers: Any) -> None:
    """The ``vulns`` command and its subcommands."""
    vulns = subparsers.add_parser(
        "vulns", help="vulnerabilities hosts carry; import and status of the data"
    )
    vulns.add_argument("--host", help="only this host")
    vulns.add_argument("--unit", help="only hosts of this unit")
    vulns.add_argument("--cve", help="only this vulnerability (the hosts carrying it)")
    vulns.add_argument(
        "--severity",
        action="append",
        choices=["low", "medium", "high", "critical"],
        help="only these severities (repeatable)",
    )
    vulns.add_argument("--fixable", action="store_true", help="only those a pending update fixes")
    vulns.add_argument("--json", action="store_true", help="JSON for scripts")
    vulns.set_defaults(func=cmd_list)
    commands = vulns.add_subparsers(dest="vulns_command")
    importing = commands.add_parser(
        "import", help="import a file or directory of vulnerability data into the database"
    )
    importing.add_argument("path", type=Path, help="tracker JSON, OSV zip/directory/JSON, KEV")
    importing.add_argument("--format", choices=FORMATS, help="the format (default: detected)")
    importing.add_argument(
        "--database-url", help="sqlite:///PATH or postgresql://... (FLEETWATCH_DATABASE_URL)"
    )
    importing.add_argument("--data-dir", type=Path, help="directory of the default SQLite database")
    importing.set_defaults(func=cmd_import)
    status = commands.add_parser("status", help="what data is loaded, from where and when")
    status.add_argument("--json", action="store_true", help="JSON for scripts")
    status.set_defaults(func=cmd_status)


def cmd_list(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin.cli import _client

    pages = _client().pages(
        "/api/v1/vulnerabilities",
        host_id=args.host,
        unit=args.unit,
        cve=args.cve,
        severity=args.severity,
        fixable="true" if args.fixable else None,
    )
    if args.json:
        render.stream_json(pages)
        return 0
    printed = False
    for rows in by_host(pages):
        print(vulnerabilities_text(rows), flush=True)
        printed = True
    if not printed:
        print(vulnerabilities_text([]))
    return 0


def by_host(pages: Iterable[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """The rows of a listing's pages, a host's at a time: the API lists them host by host,
    so a host's text is printed once its last page came, not after the whole fleet's."""
    held: list[dict[str, Any]] = []
    for page in pages:
        for row in page:
            if held and row["host_id"] != held[0]["host_id"]:
                yield held
                held = []
            held.append(row)
    if held:
        yield held


def cmd_import(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin.cli import CliError, _collector_settings
    from fleetwatch.collector.storage.engine import DatabaseURLError, make_engine, upgrade
    from fleetwatch.collector.storage.store import Store
    from fleetwatch.collector.vulns.data import KnownVulnerabilities
    from fleetwatch.collector.vulns.model import DataFormatError
    from fleetwatch.command_line import EXIT_USAGE

    if not args.path.exists():
        msg = f"{args.path}: no such file or directory"
        raise CliError(msg, EXIT_USAGE)
    settings = _collector_settings(args)
    try:
        engine = make_engine(settings.resolved_database_url)
    except DatabaseURLError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    try:
        upgrade(engine)
        infos = KnownVulnerabilities(Store(engine)).import_path(args.path, args.format)
    except DataFormatError as exc:
        msg = f"nothing imported: {exc}"
        raise CliError(msg) from exc
    finally:
        engine.dispose()
    for info in infos:
        counts = ", ".join(f"{v} {k}" for k, v in info.counts.items())
        print(f"imported {info.name}: {counts}")
    print("the collector evaluates every host against it at its next housekeeping round")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin.cli import _client

    data = _client().get("/api/v1/vulnerability-data")
    if args.json:
        print(render.to_json(data))
        return 0
    if not data["datasets"]:
        print("no vulnerability data: import some with `fleetwatch vulns import PATH`")
        return 0
    rows = [
        [
            d["name"],
            render.ago(d["imported_at"]),
            ", ".join(f"{v} {k}" for k, v in d["counts"].items()),
            d["source"],
        ]
        for d in data["datasets"]
    ]
    print(render.table(["DATA", "IMPORTED", "HOLDS", "FROM"], rows))
    print(f"\n{data['host_vulnerabilities']} vulnerabilities on {data['hosts_affected']} hosts")
    return 0


def _cve_phrase(row: dict[str, Any]) -> str:
    words = [row["severity"] or "unrated"]
    if row["cvss"] is not None:
        words.append(f"CVSS {row['cvss']:g}")
    if row["exploited"]:
        words.append("EXPLOITED")
    if row["fixed_version"] is None:
        words.append("no fix yet")
    else:
        words.append(f"fixed in {row['fixed_version']}")
        if row["fixable"]:
            words.append("fix pending")
    words.extend(f for f in row["flags"] if f != "undetermined")
    words.extend(row["advisories"])
    return f"{row['vuln']} ({', '.join(words)})"


def vulnerabilities_text(rows: list[dict[str, Any]]) -> str:
    """Vulnerabilities grouped by host, then source package: the CVEs named, worst first."""
    if not rows:
        return "no vulnerabilities"
    order = {"critical": 0, "high": 1, "medium": 2, None: 2, "low": 3}
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row["host_id"], row["source"]].append(row)
    lines = []
    host = None
    for (host_id, source), items in sorted(grouped.items()):
        if host_id != host:
            host = host_id
            lines.append(f"{render.clean(host_id)}")
        items.sort(key=lambda r: (not r["exploited"], order.get(r["severity"], 2), r["vuln"]))
        first = items[0]
        lines.append(
            f"  {render.clean(source)} {render.clean(first['installed_version'])}"
            f" ({', '.join(render.clean(b) for b in first['binaries'][:4])}"
            f"{', ...' if len(first['binaries']) > 4 else ''}): "
            f"{len(items)} {'vulnerability' if len(items) == 1 else 'vulnerabilities'}"
        )
        lines.extend(f"    {render.clean(_cve_phrase(r))}" for r in items)
        notes = sorted({r["note"] for r in items if r["note"]})
        lines.extend(f"    note: {render.clean(n)}" for n in notes)
    return "\n".join(lines)
